"""Devices named by the user, checked before any work (a leaf: no torch at import time).

`check_device` is the one check of a ``--device`` option or a ``device=`` argument, shared
by the ``fastremask`` commands (`fastremask.tools`) and the evaluation.
"""
from __future__ import annotations

__all__ = ["check_device"]


def check_device(value, option: str = "--device"):
    """``value`` as a `torch.device` that exists here (None stays None); a ValueError naming
    ``option`` otherwise: an unknown device type, CUDA without CUDA, a GPU index past the last."""
    if value is None:
        return None
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{option} {value!r} is not a device; expected cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is built without CUDA" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise ValueError(f"{option} {value}: CUDA is not available ({why}); use --device cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"{option} {value}: this machine has {n} CUDA device{'s' * (n != 1)} "
                             f"(cuda:0 to cuda:{n - 1})")
        return dev
    mps = getattr(torch.backends, "mps", None)
    if dev.type == "mps" and mps is not None and mps.is_available():
        return dev
    raise ValueError(f"{option} {value}: fastremask runs on cpu or cuda (cuda:N), not on {dev.type!r}")
