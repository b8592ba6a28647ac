"""The registry of the three backends, and how ``backend='auto'`` picks one.

Each backend exports one `Backend` object (`fastremask.sampler.contract.Backend`:
``reference.BACKEND``, ``fast.BACKEND``, ``fastremask.kernels.BACKEND``) whose ``sample_rows``
and ``select`` have the same signatures: the public functions' without their argument checks
(the loop builds valid arguments once per block; the public functions share
`fastremask.sampler.contract.check_sample_args` / `check_select_args`). Every ``select`` writes the
kept tokens into ``x`` itself, so the loop has no branch on the backend.

`hooks` lets a tool wrap what the registry hands out (`fastremask.tools.profile.Phases` names the
phases this way): while a hook is registered, `get_backend` returns ``hook(backend)``.
"""
from __future__ import annotations

import contextlib
import importlib
import os
from typing import Callable, Optional

import torch

from fastremask.sampler.config import BACKENDS
from fastremask.sampler.contract import Backend
from fastremask.sampler.threads import calling_thread   # re-exported (a leaf module: fast.py imports it too)

__all__ = ["Backend", "get_backend", "triton_backend", "triton_unavailable", "hooked", "BACKENDS",
           "calling_thread"]

_HOOKS: list = []       # callables Backend -> Backend, applied in order by `_hook`


@contextlib.contextmanager
def hooked(hook: Callable[[Backend], Backend]):
    """``with hooked(hook):`` every backend the registry hands out is ``hook(backend)`` (for
    tools that watch the steps: a profiler wraps ``sample_rows``/``select`` in its ranges)."""
    _HOOKS.append(hook)
    try:
        yield hook
    finally:
        _HOOKS.remove(hook)


def _hook(b: Backend) -> Backend:
    for h in _HOOKS:
        b = h(b)
    return b


def reference_backend() -> Backend:
    from fastremask.sampler import reference
    return _hook(reference.BACKEND)


def torch_backend() -> Backend:
    from fastremask.sampler import fast
    return _hook(fast.BACKEND)


def triton_backend() -> Optional[Backend]:
    """The Triton kernels, or None where triton does not import (its cause is kept for the error)."""
    global _triton_error
    try:
        kernels = importlib.import_module("fastremask.kernels")
    except ImportError as e:
        _triton_error = e
        return None
    return _hook(kernels.BACKEND)


_triton_error: Optional[BaseException] = None


def triton_unavailable(device) -> Optional[str]:
    """Why the Triton kernels cannot run on ``device`` (None: they can). They launch on CUDA
    tensors, or in Triton's CPU interpreter when ``TRITON_INTERPRET`` is set (read as
    `fastremask.kernels.numerics.interpreting` reads it; checked before triton is imported)."""
    if torch.device(device).type == "cuda" or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return None
    return "this machine has no CUDA device" if not torch.cuda.is_available() else f"the device is {device}"


def get_backend(name: str, device: torch.device) -> Backend:
    """The `Backend` for ``name`` on ``device``: ``'auto'`` is ``'triton'`` on a CUDA device
    where triton imports, ``'torch'`` otherwise; ``'triton'`` where it cannot run is a
    ValueError saying what it needs (before any work)."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {list(BACKENDS)}")
    if name == "reference":
        return reference_backend()
    why = triton_unavailable(device) if name == "triton" else None
    if why is not None:
        raise ValueError(f"backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before triton is "
                         f"imported (Triton's CPU interpreter, for small tests); {why}. Use backend='torch' "
                         "(same results)")
    if name == "triton" or (name == "auto" and device.type == "cuda"):
        b = triton_backend()
        if b is not None:
            return b
        if name == "triton":
            raise RuntimeError(
                "backend='triton' is not available: fastremask.kernels does not import "
                f"({_triton_error}); use backend='torch' (same results)") from _triton_error
    return torch_backend()
