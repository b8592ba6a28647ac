"""The interface every backend implements: names, dtypes, the result type and its checks.

A backend is a pair of functions with the signatures of `fastremask.sampler.reference.sample_rows`
and `fastremask.sampler.reference.select` (docs/architecture.md). This module holds what the
specification (`fastremask.sampler.reference`), the ``torch`` backend (`fastremask.sampler.fast`) and the
``triton`` backend (`fastremask.kernels`) share, so that no backend imports another.
"""
from __future__ import annotations

import numbers
from typing import NamedTuple, Optional

import torch

from fastremask.sampler.names import REMASKING, TRUNCATION_ORDERS
from fastremask.sampler.numerics import tempered_scales

__all__ = ["REMASKING", "LOGIT_DTYPES", "RowSample", "Truncation", "NO_TRUNCATION", "check_truncation",
           "check_sample_args", "row_steps", "same_bits", "assert_bits_equal"]

LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
STEP_LIMIT = 2**32          # a step counter is one 32-bit Philox counter word


class RowSample(NamedTuple):
    """What `sample_rows` returns, one entry per requested row (all ``[R]``).

    ``x0`` int64: the sampled token; ``confidence`` fp32: the remasking score (higher is kept
    first); ``invalid`` bool: the row's logits hold NaN or ``+inf`` or no finite value.
    Inactive rows: ``x0 = -1``, ``confidence = -inf``, ``invalid = False``. Invalid rows:
    ``x0 = -1``, ``confidence = NaN``.
    """

    x0: torch.Tensor
    confidence: torch.Tensor
    invalid: torch.Tensor


class Truncation(NamedTuple):
    """Top-k, top-p and min-p (numerics.md §4a), as every backend's ``sample_rows`` takes them.

    ``top_k`` None or an int >= 1; ``top_p`` in (0, 1] (1: off); ``min_p`` in [0, 1) (0: off);
    ``order`` ``'top_k_first'`` (LLaDA2's and HF's order: top-p on the mass left after top-k) or
    ``'top_p_first'`` (Dream's: top-p on the whole distribution, then top-k). Build it with
    `check_truncation`, which checks the ranges."""

    top_k: Optional[int] = None
    top_p: float = 1.0
    min_p: float = 0.0
    order: str = "top_k_first"

    @property
    def active(self) -> bool:
        return self.top_k is not None or self.top_p < 1.0 or self.min_p > 0.0

    @property
    def top_p_first(self) -> bool:
        return self.order == "top_p_first"


NO_TRUNCATION = Truncation()


def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    return float(value)


def check_truncation(top_k=None, top_p=1.0, min_p=0.0, order: str = "top_k_first") -> Truncation:
    """A checked `Truncation`: each bad value is one error naming the option and its range."""
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
            raise TypeError(f"top_k must be None or an int >= 1, got {top_k!r}")
        if int(top_k) < 1:
            raise ValueError(f"top_k must be None (off) or an int >= 1, got {int(top_k)}")
        top_k = int(top_k)
    p = _real("top_p", top_p)
    if not 0.0 < p <= 1.0:                       # also NaN
        raise ValueError(f"top_p must lie in (0, 1] (1 is off), got {top_p!r}")
    q = _real("min_p", min_p)
    if not 0.0 <= q < 1.0:                       # also NaN
        raise ValueError(f"min_p must lie in [0, 1) (0 is off), got {min_p!r}")
    if not isinstance(order, str) or order not in TRUNCATION_ORDERS:
        raise ValueError(f"unknown truncation_order {order!r}; expected one of {list(TRUNCATION_ORDERS)}")
    return Truncation(top_k, p, q + 0.0, order)          # -0.0 -> 0.0


def row_steps(steps, r: int, device) -> torch.Tensor:
    """``steps`` (an int for every row, or one per row) as an int64 ``[r]`` tensor on ``device``.

    Each row's step counter is the Philox counter word ``c2`` of its draws (numerics.md §1);
    the loop passes one per row so that a row's noise depends only on its own steps.
    """
    if torch.is_tensor(steps):
        if steps.dtype.is_floating_point or steps.dtype == torch.bool or steps.dim() > 1 or \
                (steps.dim() == 1 and steps.shape[0] != r):
            raise ValueError(f"step must be an int or an integer tensor [{r}], got {steps.dtype} "
                             f"of shape {tuple(steps.shape)}")
        return steps.to(device=device, dtype=torch.int64).expand(r)
    step = int(steps)
    if not 0 <= step < STEP_LIMIT:
        raise ValueError(f"step must lie in [0, 2**32), got {step}")
    return torch.full((r,), step, dtype=torch.int64, device=device)


def check_sample_args(logits, rows, seeds, positions, temperature, remasking, uncond_logits,
                      truncation: Truncation = NO_TRUNCATION) -> None:
    """The argument checks of every backend's public `sample_rows` (the loop skips them)."""
    if not isinstance(truncation, Truncation):
        raise TypeError(f"truncation must be a contract.Truncation (check_truncation), got {truncation!r}")
    check_truncation(*truncation)
    if remasking not in REMASKING:
        raise ValueError(f"unknown remasking {remasking!r}; expected one of {list(REMASKING)}")
    if not torch.is_tensor(logits) or logits.dim() != 2 or logits.dtype not in LOGIT_DTYPES:
        got = f"{logits.dtype} {tuple(logits.shape)}" if torch.is_tensor(logits) else type(logits).__name__
        raise TypeError(f"logits must be [N, V] fp32/bf16/fp16, got {got}")
    if uncond_logits is not None and uncond_logits.shape != logits.shape:
        raise ValueError(f"uncond_logits shape {tuple(uncond_logits.shape)} != logits shape {tuple(logits.shape)}")
    if not all(torch.is_tensor(t) for t in (rows, seeds, positions)) or \
            not (rows.shape == seeds.shape == positions.shape) or rows.dim() != 1:
        raise ValueError("rows, seeds and positions must be 1-D tensors of one length")
    if not float(temperature) >= 0.0 or float(temperature) == float("inf"):
        raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
    if float(temperature) > 0.0:
        tempered_scales(float(temperature))      # 1/T must be a finite fp32


_SAME_WIDTH_INT = {torch.float64: torch.int64, torch.float32: torch.int32, torch.bfloat16: torch.int16,
                   torch.float16: torch.int16}


def _as_bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(_SAME_WIDTH_INT[t.dtype]) if t.dtype in _SAME_WIDTH_INT else t


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bits (``-0.0`` is not ``+0.0``; NaN payloads compared), on any device."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_as_bits(a), _as_bits(b))


def assert_bits_equal(actual: torch.Tensor, expected: torch.Tensor, msg: str = "") -> None:
    """Assert the same dtype, shape and bits: what "bit-equal" means in this project.

    Floats are compared as their bit patterns, so ``-0.0`` and ``+0.0`` differ (which
    ``assert_close(rtol=0, atol=0)`` does not see) and NaNs must have the same payload.
    """
    where = f" ({msg})" if msg else ""
    if actual.dtype != expected.dtype or actual.shape != expected.shape:
        raise AssertionError(f"{actual.dtype} {tuple(actual.shape)} vs {expected.dtype} "
                             f"{tuple(expected.shape)}{where}")
    differ = _as_bits(actual.detach().cpu()) != _as_bits(expected.detach().cpu())
    if bool(differ.any()):
        i = tuple(int(v) for v in differ.nonzero()[0])
        raise AssertionError(f"{int(differ.sum())} of {differ.numel()} elements differ in their bits; first at "
                             f"{i}: {actual.detach().cpu()[i].item()!r} vs {expected.detach().cpu()[i].item()!r}{where}")
