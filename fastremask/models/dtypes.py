"""The one table of dtype names every loading path accepts (``dtype=`` of `fastremask.models.load`,
``--dtype``, ``torch_dtype`` in ``config.json``)."""
from __future__ import annotations

import torch

__all__ = ["DTYPES", "dtype_by_name", "unknown_dtype"]

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


def dtype_by_name(name) -> torch.dtype | None:
    """The dtype a name stands for (``"torch.bfloat16"`` too), else None."""
    if not isinstance(name, str):
        return None
    return DTYPES.get(name[len("torch."):] if name.startswith("torch.") else name)


def unknown_dtype(dtype) -> str:
    """The one message for a dtype name that is not in `DTYPES`."""
    return f"unknown dtype {dtype!r}; expected auto, {', '.join(DTYPES)}"
