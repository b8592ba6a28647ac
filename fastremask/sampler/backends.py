"""The three backends behind one interface, and how ``backend='auto'`` picks one.

A `Backend` is a pair ``sample_rows``/``select`` with the contract of
`fastremask.sampler.reference` (docs/architecture.md). The loop calls the unchecked entry points
(the loop builds valid arguments once per block); the public functions of each backend check
their arguments and then call the same code.
"""
from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from fastremask.sampler.config import BACKENDS
from fastremask.sampler.threads import calling_thread   # re-exported (a leaf module: fast.py imports it too)

__all__ = ["Backend", "get_backend", "triton_backend", "triton_unavailable", "select_with_rules", "BACKENDS", "calling_thread"]


@dataclass(frozen=True)
class Backend:
    """``sample_rows(logits, rows, seeds, positions, steps, *, ..., active)`` and
    ``select(confidence, candidate, deferred, k, threshold, *, rule='fixed')``, unchecked
    (``rule``: the threshold rule, `fastremask.sampler.reference.select`).

    ``fused_write``: ``select`` also takes ``x=, x0=, start=`` and writes the kept tokens into
    ``x`` in the same launch (the ``triton`` backend).
    """

    name: str
    sample_rows: Callable
    select: Callable
    fused_write: bool = False


def reference_backend() -> Backend:
    from fastremask.sampler import reference
    return Backend("reference", reference.sample_rows, reference.select)


def torch_backend() -> Backend:
    from fastremask.sampler import fast
    return Backend("torch", fast._sample_rows_active, fast.select)


def triton_backend() -> Optional[Backend]:
    """The Triton kernels, or None where triton does not import (its cause is kept for the error)."""
    global _triton_error
    try:   # the modules: the package's `select` is the function
        ks = importlib.import_module("fastremask.kernels.sample")
        kl = importlib.import_module("fastremask.kernels.select")
    except ImportError as e:
        _triton_error = e
        return None
    select = functools.partial(select_with_rules, kl._select)
    functools.update_wrapper(select, kl._select, assigned=())   # its attributes (e.g. a profiler's mark)
    return Backend("triton", ks._sample_rows, select, fused_write=True)


def select_with_rules(kernel_select: Callable, confidence, candidate, deferred, k, threshold=None, *,
                      rule: str = "fixed", x=None, x0=None, start: int = 0, out=None):
    """The ``triton`` backend's `select`: the kernel (``kernel_select``, `fastremask.kernels.select`'s
    launcher) for schedule mode and the ``'fixed'`` rule; the ``'factor'`` and ``'eb'`` rules
    (which the kernel does not have) as torch ops on the same device (`fastremask.sampler.rules`:
    one sort, an int64 prefix sum; no host sync, capturable in a CUDA graph), with the kernel's
    fused write: the kept ``x0[b, i]`` go to ``x[b, start + i]`` in place. Same bits as
    `fastremask.sampler.reference.select` with ``rule=``."""
    if rule == "fixed":
        return kernel_select(confidence, candidate, deferred, k, threshold, x=x, x0=x0, start=start, out=out)
    from fastremask.sampler import rules
    rules.check_rule(rule, threshold)
    rank = rules.ranks(confidence, candidate, deferred)
    keep = rules.rule_keep(confidence, candidate, deferred, rank, threshold, rule)
    if out is not None:
        keep = out.copy_(keep)
    if x is not None:
        xs = x[:, start:start + confidence.shape[1]]                # a view: written in place
        torch.where(keep, x0, xs, out=xs)
    return keep


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
