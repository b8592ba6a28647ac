"""The three backends behind one interface, and how ``backend='auto'`` picks one.

A `Backend` is a pair ``sample_rows``/``select`` with the contract of
`fastremask.sampler.reference` (docs/architecture.md). The loop calls the unchecked entry points
(the loop builds valid arguments once per block); the public functions of each backend check
their arguments and then call the same code.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from fastremask.sampler.config import BACKENDS

__all__ = ["Backend", "get_backend", "triton_backend", "BACKENDS", "calling_thread"]


class calling_thread:
    """``with calling_thread(device):`` runs torch's CPU ops on the calling thread only.

    The sampler's CPU work is many small ops: an intra-op parallel region per op costs more
    than the op, and far more on a busy machine (benchmarks/results/threads-probe-2vcpu.md:
    a step 10x slower at torch's default 2 threads beside one busy process). The loop wraps
    each step (not the model call, which keeps the user's threads) in this; off the CPU, or
    at one thread already, it does nothing. Setting and restoring costs under 1 us.
    """

    def __init__(self, device):
        self.on = torch.device(device).type == "cpu"

    def __enter__(self):
        if self.on:
            self.threads = torch.get_num_threads()
            self.on = self.threads > 1
            if self.on:
                torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        if self.on:
            torch.set_num_threads(self.threads)
        return False


@dataclass(frozen=True)
class Backend:
    """``sample_rows(logits, rows, seeds, positions, steps, *, ..., active)`` and
    ``select(confidence, candidate, deferred, k, threshold)``, unchecked.

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
    return Backend("triton", ks._sample_rows, kl._select, fused_write=True)


_triton_error: Optional[BaseException] = None


def get_backend(name: str, device: torch.device) -> Backend:
    """The `Backend` for ``name`` on ``device``: ``'auto'`` is ``'triton'`` on a CUDA device
    where triton imports, ``'torch'`` otherwise."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {list(BACKENDS)}")
    if name == "reference":
        return reference_backend()
    if name == "triton" or (name == "auto" and device.type == "cuda"):
        b = triton_backend()
        if b is not None:
            return b
        if name == "triton":
            raise RuntimeError(
                "backend='triton' is not available: fastremask.kernels does not import "
                f"({_triton_error}); use backend='torch' (same results)") from _triton_error
    return torch_backend()
