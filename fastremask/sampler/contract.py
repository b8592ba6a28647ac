"""The interface every backend implements: names, dtypes, the result type and its checks.

A backend is a pair of functions with the signatures of `fastremask.sampler.reference.sample_rows`
and `fastremask.sampler.reference.select` (docs/architecture.md). This module holds what the
specification (`fastremask.sampler.reference`), the ``torch`` backend (`fastremask.sampler.fast`) and the
``triton`` backend (`fastremask.kernels`) share, so that no backend imports another.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch

from fastremask.sampler.names import CONFIDENCE_KINDS, REMASKING, THRESHOLD_RULES, TRUNCATION_ORDERS
from fastremask.sampler.numerics import tempered_scales

__all__ = ["REMASKING", "LOGIT_DTYPES", "RULES", "EB_GAMMA_LIMIT", "RowSample", "Truncation", "NO_TRUNCATION",
           "check_truncation", "CONFIDENCE_KINDS", "check_confidence", "sampling_confidence", "Backend", "check_sample_args", "check_select_args", "check_rule", "write_kept",
           "row_steps", "same_bits", "assert_bits_equal"]

RULES = THRESHOLD_RULES          # the one list of rule names (names.py, read by the CLI too)
EB_GAMMA_LIMIT = 32.0            # 'eb' takes gamma in [0, 32) nats (so no sum can overflow)

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


def check_confidence(kind, remasking: str) -> str:
    """A known confidence kind (numerics.md §6a) that can serve ``remasking``: one error naming
    the option and the value otherwise. Returns ``kind``."""
    if not isinstance(kind, str) or kind not in CONFIDENCE_KINDS:
        raise ValueError(f"unknown confidence {kind!r}; expected one of {list(CONFIDENCE_KINDS)}")
    if kind == "dream" and remasking == "random":
        raise ValueError("confidence='dream' scores a token by Dream's sampling distribution; remasking='random' "
                         "has no confidence to take from it (use confidence='llada' with remasking='random')")
    if kind == "llada2" and remasking != "low_confidence":
        raise ValueError(f"confidence='llada2' is LLaDA2's probability of the sampled token: it needs "
                         f"remasking='low_confidence', got remasking={remasking!r} (confidence='dream' "
                         "gives margin and entropy on the tempered, truncated distribution)")
    return kind


def sampling_confidence(kind: str, temperature: float, remasking: str) -> bool:
    """Whether the confidence is taken on the tempered, truncated distribution (numerics.md §6a)
    rather than LLaDA's untempered full softmax (§6): ``'dream'`` at every temperature,
    ``'llada2'`` at ``T > 0`` (LLaDA2 takes the full softmax at ``T = 0``); never for ``random``."""
    if remasking == "random":
        return False
    return kind == "dream" or (kind == "llada2" and float(temperature) > 0.0)


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


@dataclass(frozen=True)
class Backend:
    """What each backend exports (one object per backend; `fastremask.sampler.backends` hands it
    to the loop). Both functions have the signatures of the public ones of every backend, without
    their argument checks (the loop builds valid arguments once per block):

    * ``sample_rows(logits, rows, seeds, positions, steps, *, temperature, remasking,
      cfg_scale=0.0, uncond_logits=None, suppress_tokens=None, active=None,
      truncation=NO_TRUNCATION, confidence='llada') -> RowSample``;
    * ``select(confidence, candidate, deferred, k, threshold=None, *, rule='fixed', x=None,
      x0=None, start=0, out=None) -> keep``: with ``x`` and ``x0`` it also writes the kept
      ``x0[b, i]`` into ``x[b, start + i]`` in place (`write_kept`); ``out``: a preallocated
      ``keep``.

    ``capturable``: its steps have no host synchronisation, so a CUDA graph can hold them (the
    ``triton`` backend; the ``torch`` backend compacts the active rows with ``nonzero``).
    """

    name: str
    sample_rows: Callable
    select: Callable
    capturable: bool = False


def _index(name: str, t, r: int, device) -> None:
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be an int64 tensor of shape [{r}], got {type(t).__name__}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device}, logits on {device}: put them on one device")
    if t.shape != (r,):
        raise ValueError(f"{name} must have shape [{r}] (one per row), got {list(t.shape)}")
    if t.dtype != torch.int64:
        raise TypeError(f"{name} must be int64, got {t.dtype}")


def check_sample_args(logits, rows, seeds, positions, steps, *, temperature, remasking, cfg_scale=0.0,
                      uncond_logits=None, suppress_tokens=None, active=None,
                      truncation: Truncation = NO_TRUNCATION, confidence: str = "llada") -> torch.Tensor:
    """The argument checks of every backend's public `sample_rows` (the loop skips them): the
    same exception type and message on every backend. Returns ``steps`` as an int64 ``[R]``
    tensor (`row_steps`)."""
    if not torch.is_tensor(logits) or logits.dim() != 2:
        got = f"shape {tuple(logits.shape)}" if torch.is_tensor(logits) else type(logits).__name__
        raise ValueError(f"logits must be a tensor [N, V], got {got}")
    if logits.dtype not in LOGIT_DTYPES:
        raise TypeError(f"logits must be fp32, bf16 or fp16, got {logits.dtype}")
    if remasking not in REMASKING:
        raise ValueError(f"unknown remasking {remasking!r}; expected one of {list(REMASKING)}")
    if not isinstance(truncation, Truncation):
        raise TypeError(f"truncation must be a contract.Truncation (check_truncation), got {truncation!r}")
    check_truncation(*truncation)
    check_confidence(confidence, remasking)
    t = _real("temperature", temperature)
    if not (t >= 0.0 and math.isfinite(t)):
        raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
    if t > 0.0:
        tempered_scales(t)      # 1/T must be a finite fp32
    s = _real("cfg_scale", cfg_scale)
    if not (s >= 0.0 and math.isfinite(s)):
        raise ValueError(f"cfg_scale must be finite and >= 0, got {cfg_scale}")
    device, v = logits.device, logits.shape[1]
    r = rows.shape[0] if torch.is_tensor(rows) and rows.dim() == 1 else -1
    for name, x in (("rows", rows), ("seeds", seeds), ("positions", positions)):
        _index(name, x, r, device)
    steps = row_steps(steps, r, device)
    if uncond_logits is not None:
        if not torch.is_tensor(uncond_logits) or uncond_logits.shape != logits.shape \
                or uncond_logits.dtype != logits.dtype:
            got = f"{list(uncond_logits.shape)}, {uncond_logits.dtype}" if torch.is_tensor(uncond_logits) \
                else type(uncond_logits).__name__
            raise ValueError(f"uncond_logits must match logits ({list(logits.shape)}, {logits.dtype}), got {got}")
        if uncond_logits.device != device:
            raise ValueError(f"uncond_logits is on {uncond_logits.device}, logits on {device}: put them on one device")
    if active is not None:
        if not torch.is_tensor(active) or active.shape != (r,) or active.dtype != torch.bool:
            got = f"{active.dtype} {list(active.shape)}" if torch.is_tensor(active) else type(active).__name__
            raise ValueError(f"active must be bool [{r}], got {got}")
        if active.device != device:
            raise ValueError(f"active is on {active.device}, logits on {device}: put them on one device")
    if suppress_tokens is not None:
        if torch.is_tensor(suppress_tokens):
            if suppress_tokens.device != device:
                raise ValueError(f"suppress_tokens is on {suppress_tokens.device}, logits on {device}: "
                                 "put them on one device")
            if suppress_tokens.dtype.is_floating_point or suppress_tokens.dtype == torch.bool:
                raise TypeError(f"suppress_tokens must be int64 token ids, got {suppress_tokens.dtype}")
            ids = suppress_tokens.reshape(-1).tolist()
        else:
            ids = [int(i) for i in suppress_tokens]
        if any(i < 0 or i >= v for i in ids):
            raise ValueError(f"suppress_tokens must lie in [0, {v}), got {ids}")
    return steps


def check_rule(rule: str, threshold) -> None:
    """A known threshold rule, with a threshold where it needs one, in its range (no tensor read)."""
    if rule not in RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; expected one of {list(RULES)}")
    if threshold is None:
        if rule != "fixed":
            raise ValueError(f"threshold_rule={rule!r} needs a threshold (its parameter)")
        return
    t = _real("threshold", threshold)
    if rule == "factor" and not t > 0.0:                        # also NaN
        raise ValueError(f"threshold_rule='factor' needs f > 0, got {t!r}")
    if rule == "eb" and not 0.0 <= t < EB_GAMMA_LIMIT:         # also NaN
        raise ValueError(f"threshold_rule='eb' needs gamma in [0, {EB_GAMMA_LIMIT:g}) nats, got {t!r}")


def check_select_args(confidence, candidate, deferred, k, threshold=None, *, rule="fixed", x=None, x0=None,
                      start=0, out=None) -> None:
    """The argument checks of every backend's public `select`: the same exception type and
    message on every backend."""
    if not torch.is_tensor(confidence) or confidence.dim() != 2 or confidence.dtype != torch.float32:
        raise ValueError("confidence must be an fp32 tensor [B, C]")
    device = confidence.device
    b, c = confidence.shape
    for name, t in (("candidate", candidate), ("deferred", deferred)):
        if not torch.is_tensor(t) or t.shape != (b, c) or t.dtype != torch.bool or t.device != device:
            raise ValueError(f"{name} must be a bool tensor [{b}, {c}] on {device}")
    check_rule(rule, threshold)
    if threshold is None and (not torch.is_tensor(k) or k.shape != (b,) or k.dtype != torch.int64
                              or k.device != device):
        raise ValueError(f"k must be an int64 tensor [{b}] on {device} (or give threshold)")
    if x is not None or x0 is not None:
        if not torch.is_tensor(x0) or x0.shape != (b, c) or x0.dtype != torch.int64 or x0.device != device:
            raise ValueError(f"x0 must be an int64 tensor [{b}, {c}] on {device} when x is given")
        if not torch.is_tensor(x) or x.dim() != 2 or x.shape[0] != b or x.dtype != torch.int64 or x.device != device:
            raise ValueError(f"x must be an int64 tensor [{b}, L] on {device}")
        if x.stride(1) != 1:
            raise ValueError("x must have unit stride along its length (it is written in place)")
        if isinstance(start, bool) or not isinstance(start, numbers.Integral):
            raise TypeError(f"start must be an int, got {start!r}")
        if not 0 <= start <= x.shape[1] - c:
            raise ValueError(f"block [{start}, {start + c}) does not fit in x of length {x.shape[1]}")
    if out is not None and (not torch.is_tensor(out) or out.shape != (b, c) or out.dtype != torch.bool
                            or out.device != device or out.stride(1) != 1):
        raise ValueError(f"out must be a bool tensor [{b}, {c}] on {device} with unit last stride")


def write_kept(keep: torch.Tensor, x, x0, start: int, out=None) -> torch.Tensor:
    """``select``'s outputs from its ``keep``: ``out`` filled when given, and with ``x`` the kept
    ``x0[b, i]`` written into ``x[b, start + i]`` in place."""
    if out is not None:
        keep = out.copy_(keep)
    if x is not None:
        xs = x[:, start:start + keep.shape[1]]                 # a view: written in place
        torch.where(keep, x0, xs, out=xs)
    return keep


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
