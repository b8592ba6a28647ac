"""``python -m fastremask ARGS`` is ``fastremask ARGS`` (and ``torchrun -m fastremask ARGS``)."""
from fastremask.tools.cli import main

raise SystemExit(main())
