"""fastremask: a fast, exact sampler for masked diffusion language models (LLaDA and kin).

``from fastremask import generate`` is a drop-in for LLaDA's ``generate`` (same positional
parameters and defaults) with exact, seeded sampling, more schedules and remasking rules and a
choice of backends (docs/api.md). Importing the package does not import Triton.
"""
from fastremask.generate import generate, row_seeds
from fastremask.reference import Trace, TraceStep
from fastremask.schedule import cost, pyramid, uniform

__version__ = "0.1.0"

__all__ = ["generate", "row_seeds", "Trace", "TraceStep", "uniform", "pyramid", "cost", "__version__"]
