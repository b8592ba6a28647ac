"""`generate`: LLaDA's signature, exact sampling, a choice of schedules and backends.

``fastremask.generate(model, prompt, ...)`` takes LLaDA's ``generate`` arguments in LLaDA's
order with LLaDA's defaults, so ``from fastremask import generate`` replaces LLaDA's import;
the keywords after ``*`` add the schedule, the threshold, the seed, token suppression and
deferral, the backend and the trace (docs/api.md).

This module checks the arguments, resolves schedule, seeds and backend, and runs either the
reference loop (`fastremask.reference.generate`) or the fast loop below, which the ``torch``
and ``triton`` backends share. Both loops compute the same bits.
"""
from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from fastremask import reference
from fastremask import schedule as _schedule
# LLaDA's mask id (the default mask_id), EOS (logits_eos_inf suppresses it,
# confidence_eos_eot_inf defers it) and EoT (confidence_eos_eot_inf defers it)
from fastremask.llada import LLADA_EOS, LLADA_EOT, LLADA_MASK
from fastremask.reference import (
    REMASKING, Trace, TraceStep, model_logits, sampling_suppress,
)

__all__ = ["generate", "row_seeds", "BACKENDS", "LLADA_EOS", "LLADA_EOT", "LLADA_MASK", "Backend", "get_backend"]

BACKENDS = ("auto", "reference", "torch", "triton")
SEED_LIMIT = 2**63


# ---------------------------------------------------------------------------------------------
# Argument checks: every misuse is a ValueError or TypeError naming the argument and value
# ---------------------------------------------------------------------------------------------

def _int(name: str, value, minimum: int, maximum: Optional[int] = None) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})") from None
    if v < minimum or (maximum is not None and v >= maximum):
        bound = f"in [{minimum}, {maximum})" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}, got {v}")
    return v


def _real(name: str, value, minimum: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype.is_floating_point:
            value = float(value)
        else:
            raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v) or (minimum is not None and v < minimum):
        bound = f"a finite number >= {minimum}" if minimum is not None else "a finite number"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return v


def _bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _token_ids(name: str, value, device) -> Optional[torch.Tensor]:
    """None, an int, a sequence of ints or a 1-D integer tensor -> sorted unique int64 tensor."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool or value.dim() > 1:
            raise TypeError(f"{name} must be token ids (ints), got a {value.dtype} tensor of shape {tuple(value.shape)}")
        ids = value.reshape(-1).tolist()
    elif isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be token ids (ints), got {value!r}")
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        ids = [value]
    else:
        try:
            ids = list(value)
        except TypeError:
            raise TypeError(f"{name} must be token ids (ints), got {value!r}") from None
    ids = [_int(f"{name}[{i}]", v, 0, SEED_LIMIT) for i, v in enumerate(ids)]
    return torch.tensor(sorted(set(ids)), dtype=torch.int64, device=device)


def _union(a: Optional[torch.Tensor], extra: list, device) -> Optional[torch.Tensor]:
    ids = set() if a is None else set(a.tolist())
    ids.update(extra)
    return torch.tensor(sorted(ids), dtype=torch.int64, device=device) if ids else None


def row_seeds(seed, batch: int) -> list:
    """The per-row seeds `generate` uses: one int in ``[0, 2**63)`` per batch row.

    * an int ``s``: row ``b`` gets ``(s + b) % 2**63``, so row ``b`` alone with ``seed=s + b``
      reproduces it, and equal prompts in one batch still get different samples;
    * a sequence (or 1-D tensor) of ``batch`` ints: one per row, as given;
    * None: ``s`` drawn from torch's default generator (so ``torch.manual_seed`` controls it),
      then as an int.
    """
    batch = _int("batch", batch, 1)
    if seed is None:
        seed = int(torch.randint(0, SEED_LIMIT - 1, (), dtype=torch.int64))
    if isinstance(seed, torch.Tensor) and seed.dim() == 0:
        if seed.dtype.is_floating_point or seed.dtype == torch.bool:
            raise TypeError(f"seed must be an int or one int per batch row, got {seed!r}")
        seed = int(seed)
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        s = _int("seed", seed, 0, SEED_LIMIT)
        return [(s + b) % SEED_LIMIT for b in range(batch)]
    if isinstance(seed, (str, bytes, bool, float)):
        raise TypeError(f"seed must be an int or one int per batch row, got {seed!r}")
    if isinstance(seed, torch.Tensor):
        if seed.dtype.is_floating_point or seed.dtype == torch.bool or seed.dim() != 1:
            raise TypeError(f"seed must be an int or one int per batch row, got a {seed.dtype} tensor of shape {tuple(seed.shape)}")
        seed = seed.tolist()
    try:
        seeds = list(seed)
    except TypeError:
        raise TypeError(f"seed must be an int or one int per batch row, got {seed!r}") from None
    if len(seeds) != batch:
        raise ValueError(f"seed has {len(seeds)} values but the prompt has {batch} batch rows")
    return [_int(f"seed[{i}]", s, 0, SEED_LIMIT) for i, s in enumerate(seeds)]


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Backend:
    """A pair ``sample_rows``/``select`` with the contract of `fastremask.reference`.

    ``fixed_shape``: the loop passes every position of the block with an ``active`` mask
    (constant shapes, no host sync to count candidates; what the Triton kernels want)
    instead of only the candidate rows.
    """

    name: str
    sample_rows: Callable
    select: Callable
    fixed_shape: bool = False


def _triton_backend() -> Optional[Backend]:
    try:
        from fastremask import kernels
    except Exception:  # triton missing or broken: the caller decides what that means
        return None
    if not (hasattr(kernels, "sample_rows") and hasattr(kernels, "select")):
        return None
    return Backend("triton", kernels.sample_rows, kernels.select, fixed_shape=True)


def get_backend(name: str, device: torch.device) -> Optional[Backend]:
    """The `Backend` for ``name`` on ``device`` (None for ``'reference'``, which has its own loop).

    ``'auto'``: ``'triton'`` on a CUDA device when `fastremask.kernels` provides
    ``sample_rows`` and ``select``, ``'torch'`` otherwise.
    """
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {list(BACKENDS)}")
    if name == "reference":
        return None
    if name == "triton" or (name == "auto" and device.type == "cuda"):
        b = _triton_backend()
        if b is not None:
            return b
        if name == "triton":
            raise RuntimeError(
                "backend='triton' is not available: fastremask.kernels does not import or does "
                "not yet provide sample_rows/select; use backend='torch' (same results)"
            )
    from fastremask import fast
    return Backend("torch", fast.sample_rows, fast.select)


# ---------------------------------------------------------------------------------------------
# The fast loop (torch and triton backends)
# ---------------------------------------------------------------------------------------------

_NO_ROW = torch.iinfo(torch.int64).max


class _FirstInvalid:
    """The first invalid sampled row of a block, kept on the device: no host sync per step.

    `note` is called after every step; it records, unless an earlier step of the block already
    has, the step's first invalid row (lowest batch row, then position) as ``rec`` ``[4]``
    int64 = (step, batch row, index in ``x``, number of invalid rows in the step; 0: none) and
    that row's model logits (both halves with CFG), which is all the error message needs once
    the step's logits are gone. `count` is the number on the device (threshold mode reads it
    in its per-step sync); `check` reads ``rec`` (one sync) and raises the error
    `reference.raise_invalid` raises, then forgets the block.
    """

    def __init__(self):
        self.rec = self.row = self.urow = None

    def note(self, invalid, key, rows, bi, xpos, step, logits, uncond):
        # invalid [R] bool; key [R] int64 orders rows (batch row, then position); rows [R]:
        # indices into the flat logits [N, V]; bi, xpos [R]: batch row and index in x
        n = invalid.sum()
        i = torch.where(invalid, key, _NO_ROW).argmin().view(1)                   # [1]
        rec = torch.cat([torch.full((1,), step, dtype=torch.int64, device=n.device),
                         bi.gather(0, i), xpos.gather(0, i), n.view(1)])
        r = rows.gather(0, i)
        row = logits.index_select(0, r)                                           # [1, V]
        urow = None if uncond is None else uncond.index_select(0, r)
        if self.rec is None:
            self.rec, self.row, self.urow = rec, row, urow
            return
        old = self.rec[3] > 0                       # an earlier step of the block comes first
        self.rec = torch.where(old, self.rec, rec)
        self.row = torch.where(old, self.row, row)
        if urow is not None:
            self.urow = torch.where(old, self.urow, urow)

    def count(self, device) -> torch.Tensor:
        return torch.zeros((), dtype=torch.int64, device=device) if self.rec is None else self.rec[3]

    def check(self, *, prompt_length, cfg_scale, suppress_tokens) -> None:
        if self.rec is None:
            return
        step, b, p, n = self.rec.tolist()                                         # the sync
        if n:
            raise reference.invalid_error(
                self.row[0], None if self.urow is None else self.urow[0], step=step, batch_row=b,
                position=p, prompt_length=prompt_length, n_invalid=n, cfg_scale=cfg_scale,
                suppress_tokens=suppress_tokens)
        self.rec = self.row = self.urow = None


def _window_call(start: int, length: int):
    """``call(model, x, attention_mask) -> logits [B, length, V]`` for `reference.model_logits`:
    the model's logits for positions ``start:start + length`` only (`models.window_logits`),
    checked like `reference.call_model` checks full logits."""
    from fastremask import models

    def call(model, x, attention_mask):
        logits = models.window_logits(model, x, attention_mask, start, length)
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"window_logits returned {type(logits).__name__}, not a tensor")
        if logits.dim() != 3 or tuple(logits.shape[:2]) != (x.shape[0], length) or logits.shape[2] < 1:
            raise ValueError(
                f"model window logits have shape {tuple(logits.shape)}; expected [B, C, V] = "
                f"[{x.shape[0]}, {length}, V] for positions {start}:{start + length} of input of "
                f"shape {tuple(x.shape)}")
        if logits.dtype not in reference.LOGIT_DTYPES:
            raise TypeError(f"model logits have dtype {logits.dtype}; expected fp32, bf16 or fp16")
        return logits

    return call

@torch.no_grad()
def _fast_generate(
    backend: Backend,
    model,
    prompt: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    *,
    gen_length: int,
    block_length: int,
    steps_per_block: int,
    schedule,
    threshold: Optional[float],
    temperature: float,
    cfg_scale: float,
    remasking: str,
    mask_id: int,
    seeds: torch.Tensor,
    suppress_tokens: Optional[torch.Tensor],
    defer_tokens: Optional[torch.Tensor],
    record: bool,
    callback: Optional[Callable],
    logits_window: bool = False,
) -> tuple:
    """`reference.generate`'s loop, sampling only what is needed; same results, same trace.

    Host synchronisations: schedule mode, one per block: the NaN/inf check is lazy (the first
    invalid row is kept on the device, `_FirstInvalid`) and read at the end of the block,
    which raises the error naming the step it happened in. Threshold mode, one per step: it
    reads how many candidates are left (it has to, to know when the block is done) and, in
    the same read, whether an earlier step had an invalid row. The candidate count of a step
    is known on the host in schedule mode (every row's block starts fully masked and keeps
    exactly its count), so the candidate rows are gathered with a stable argsort instead of
    ``nonzero``.

    After an invalid row the block's remaining steps still run (nothing on the host knows
    yet); an invalid row's ``x0`` is -1 and is never written into ``x`` (``keep`` excludes it),
    so the model keeps getting valid ids until the error is raised.

    ``logits_window``: the model returns logits ``[B, C, V]`` for the current block only
    (`fastremask.models.window_logits`) instead of ``[B, L, V]``.
    """
    B, P = prompt.shape
    L, C = P + gen_length, block_length
    device = prompt.device
    x = torch.full((B, L), mask_id, dtype=torch.int64, device=device)
    x[:, :P] = prompt
    if attention_mask is not None:
        attention_mask = torch.cat(
            [attention_mask, torch.ones(B, gen_length, dtype=attention_mask.dtype, device=device)], dim=1)
    trace = Trace(P, gen_length, block_length)
    if threshold is None:
        # every row's block starts with C masked positions, so all rows share one count list
        plan = schedule.counts(torch.full((B,), C, dtype=torch.int64), steps_per_block)    # [B, S]
        per_step = plan[0].tolist()
        k_table = plan.to(device)
    suppress, V = None, None
    errors = _FirstInvalid()
    global_step = 0
    for block in range(gen_length // C):
        start = P + block * C
        xb = x[:, start:start + C]                                  # a view: written in place
        # logits rows: [B, L] over the sequence, or [B, C] over the block (logits_window)
        Lw, off = (C, start) if logits_window else (L, 0)
        call = _window_call(start, C) if logits_window else reference.call_model
        remaining = C
        for i in range(len(per_step) if threshold is None else C):
            cand = xb == mask_id                                     # [B, C]
            if threshold is None:
                if per_step[i] == 0:                                 # nothing kept: no model call
                    global_step += 1
                    continue
                R = B * remaining
                remaining -= per_step[i]
                k = k_table[:, i]
            else:
                # the one sync per step: is the block done, and did an earlier step go bad?
                R, n_bad = torch.stack([cand.sum(), errors.count(device)]).tolist()
                if n_bad:
                    errors.check(prompt_length=P, cfg_scale=cfg_scale, suppress_tokens=suppress)
                if R == 0:
                    break
                k = None
            logits, uncond = model_logits(model, x, attention_mask, P, cfg_scale, mask_id, call=call)
            if V is None:
                V = logits.shape[-1]
                suppress = sampling_suppress(suppress_tokens, mask_id, V, device)
            elif logits.shape[-1] != V:
                raise ValueError(f"model logits changed vocabulary size from {V} to {logits.shape[-1]}")
            if backend.fixed_shape:
                idx, active = torch.arange(B * C, device=device), cand.reshape(-1)
            else:
                # the R candidate positions, in (row, position) order, without nonzero's sync
                idx = torch.argsort((~cand).reshape(-1).to(torch.int8), stable=True)[:R]
                active = None
            bi, ji = idx // C, idx % C
            rows = bi * Lw + (start - off) + ji
            flat = logits.reshape(B * Lw, V)
            flat_u = None if uncond is None else uncond.reshape(B * Lw, V)
            sample = backend.sample_rows(
                flat, rows, seeds[bi], start - P + ji, global_step,
                temperature=temperature, remasking=remasking, cfg_scale=cfg_scale,
                uncond_logits=flat_u, suppress_tokens=suppress, active=active,
            )
            errors.note(sample.invalid, idx, rows, bi, start + ji, global_step, flat, flat_u)
            x0 = torch.full((B * C,), -1, dtype=torch.int64, device=device).index_copy_(0, idx, sample.x0).view(B, C)
            conf = torch.full((B * C,), float("-inf"), device=device).index_copy_(0, idx, sample.confidence).view(B, C)
            if defer_tokens is not None and defer_tokens.numel():
                deferred = cand & torch.isin(x0, defer_tokens)
            else:
                deferred = torch.zeros_like(cand)
            # x0 >= 0: an invalid row (x0 = -1, its error raised at the end of the block) is
            # never written into x; a no-op otherwise (every kept candidate was sampled)
            keep = backend.select(conf, cand, deferred, k, threshold) & (x0 >= 0)
            xb.copy_(torch.where(keep, x0, xb))
            if record or callback is not None:
                rec = TraceStep(global_step, block, start, cand, x0, conf, keep)
                if record:
                    trace.steps.append(rec)
                if callback is not None:
                    callback(rec)
            global_step += 1
        else:       # schedule mode, or threshold mode out of steps: the block's one check
            errors.check(prompt_length=P, cfg_scale=cfg_scale, suppress_tokens=suppress)
    return x, trace


# ---------------------------------------------------------------------------------------------
# The public entry point
# ---------------------------------------------------------------------------------------------

def _model_device(model, prompt: torch.Tensor) -> torch.device:
    dev = getattr(model, "device", None)
    if isinstance(dev, (torch.device, str)):
        return torch.device(dev)
    return prompt.device


@torch.no_grad()
def generate(
    model,
    prompt,
    attention_mask=None,
    steps=128,
    gen_length=128,
    block_length=128,
    temperature=0.0,
    cfg_scale=0.0,
    remasking="low_confidence",
    mask_id=LLADA_MASK,
    logits_eos_inf=False,
    confidence_eos_eot_inf=False,
    *,
    schedule="uniform",
    factor=1,
    threshold=None,
    seed=None,
    suppress_tokens=None,
    defer_tokens=None,
    backend="auto",
    return_trace=False,
    callback=None,
    logits_window=False,
):
    """Fill ``gen_length`` masked positions after ``prompt`` with a masked diffusion LM.

    The positional parameters are LLaDA's ``generate``'s, in its order, with its defaults;
    docs/api.md describes every parameter, the trace and what is exact.

    Parameters
    ----------
    model : callable, ``model(x [B, L] int64, attention_mask=...)`` -> ``.logits`` ``[B, L, V]``
        (fp32, bf16 or fp16); ``model.device`` (if present) is where ``x`` is built
    prompt : [B, P] integer tensor, left-padded; must not contain ``mask_id``
    attention_mask : [B, P] (1 = token, 0 = padding) or None; ones are appended for the answer
    steps : model-call budget: per block ``steps // num_blocks`` (uniform: exactly that many;
        pyramid: at most that many; unused in threshold mode)
    gen_length, block_length : answer length and semi-autoregressive block length
    temperature : Gumbel-max temperature (0 = greedy)
    cfg_scale : classifier-free guidance scale (0 = off)
    remasking : 'low_confidence' | 'random' | 'margin' | 'entropy'
    mask_id : the mask token id
    logits_eos_inf : suppress LLaDA's EOS (126081)
    confidence_eos_eot_inf : defer LLaDA's EOS (126081) and EoT (126348)
    schedule : 'uniform' | 'pyramid' | list of per-step counts | callable(n, steps) | Schedule
    factor : pyramid dilation (step i keeps ``i // factor + 1``)
    threshold : keep every candidate with confidence >= threshold each step (at least one)
    seed : int, one int per batch row, or None (drawn from torch's default generator)
    suppress_tokens : token ids never generated
    defer_tokens : token ids kept only after every other candidate of the block
    backend : 'auto' | 'reference' | 'torch' | 'triton'
    return_trace : also return a `fastremask.reference.Trace`
    callback : called with each step's `TraceStep` after it is applied
    logits_window : the model computes its output projection for the current block's
        positions only (``[B, block_length, V]`` logits instead of ``[B, L, V]``); needs a model
        `fastremask.models.window_logits` supports; not with ``backend='reference'``. Same
        tokens when the model's logits for a slice equal its full logits' slice, which is not
        promised on every GPU (docs/api.md)

    Returns
    -------
    x : [B, P + gen_length] int64 on the model's device, prompt included
    (x, trace) when ``return_trace``
    """
    # --- the prompt and its mask
    if not isinstance(prompt, torch.Tensor):
        raise TypeError(f"prompt must be a 2-D integer tensor [batch, length], got {type(prompt).__name__}")
    if prompt.dim() != 2 or prompt.dtype.is_floating_point or prompt.dtype.is_complex or prompt.dtype == torch.bool:
        raise TypeError(f"prompt must be a 2-D integer tensor [batch, length], got {prompt.dtype} of shape {tuple(prompt.shape)}")
    if prompt.shape[0] < 1:
        raise ValueError(f"prompt must have at least one batch row, got shape {tuple(prompt.shape)}")
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    device = _model_device(model, prompt)
    prompt = prompt.to(device=device, dtype=torch.int64)
    B, P = prompt.shape
    mask_id = _int("mask_id", mask_id, 0, SEED_LIMIT)
    if prompt.numel() and int(prompt.min()) < 0:
        raise ValueError(f"prompt must hold token ids >= 0, got {int(prompt.min())}")
    masked = torch.nonzero(prompt == mask_id)
    if masked.numel():
        b, p = masked[0].tolist()
        raise ValueError(
            f"prompt contains mask_id={mask_id} at batch row {b}, position {p} "
            f"({masked.shape[0]} in all); masks inside the prompt are not supported: "
            "pad with another token (LLaDA pads with EOS) and mark padding in attention_mask"
        )
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if isinstance(vocab, int) and not isinstance(vocab, bool) and mask_id >= vocab:
        raise ValueError(f"mask_id={mask_id} is outside the model's vocabulary (config.vocab_size={vocab})")
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(f"attention_mask must be a tensor or None, got {type(attention_mask).__name__}")
        if tuple(attention_mask.shape) != (B, P):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected the prompt's {(B, P)}")
        if attention_mask.numel() and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError("attention_mask must hold only 0 and 1")
        attention_mask = attention_mask.to(device)

    # --- lengths, schedule, sampling options
    steps = _int("steps", steps, 1)
    gen_length = _int("gen_length", gen_length, 1)
    block_length = _int("block_length", block_length, 1)
    if gen_length % block_length:
        raise ValueError(f"gen_length={gen_length} must be a multiple of block_length={block_length}")
    num_blocks = gen_length // block_length
    temperature = _real("temperature", temperature, 0.0)
    cfg_scale = _real("cfg_scale", cfg_scale, 0.0)
    if not isinstance(remasking, str) or remasking not in REMASKING:
        raise ValueError(f"unknown remasking {remasking!r}; expected one of {list(REMASKING)}")
    logits_eos_inf = _bool("logits_eos_inf", logits_eos_inf)
    confidence_eos_eot_inf = _bool("confidence_eos_eot_inf", confidence_eos_eot_inf)
    return_trace = _bool("return_trace", return_trace)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {callback!r}")
    logits_window = _bool("logits_window", logits_window)
    sched = _schedule.resolve(schedule, factor)
    if threshold is not None:
        threshold = _real("threshold", threshold)
        steps_per_block = steps
    else:
        if steps % num_blocks:
            raise ValueError(
                f"steps={steps} must be a multiple of the number of blocks "
                f"(gen_length / block_length = {num_blocks})")
        steps_per_block = steps // num_blocks
        sched(block_length, steps_per_block)         # raises now if the schedule cannot use steps
    seeds = torch.tensor(row_seeds(seed, B), dtype=torch.int64, device=device)
    suppress = _token_ids("suppress_tokens", suppress_tokens, device)
    defer = _token_ids("defer_tokens", defer_tokens, device)
    if logits_eos_inf:
        suppress = _union(suppress, [LLADA_EOS], device)
    if confidence_eos_eot_inf:
        defer = _union(defer, [LLADA_EOS, LLADA_EOT], device)
    impl = get_backend(backend, device)
    if logits_window:
        if impl is None:
            raise ValueError("logits_window=True is a fast-path option; backend='reference' (the "
                             "specification) always takes the full [B, L, V] logits")
        from fastremask import models
        models.check_window_support(model)           # a clear error before any model call

    kwargs = dict(
        gen_length=gen_length, block_length=block_length, steps_per_block=steps_per_block,
        schedule=sched, threshold=threshold, temperature=temperature, cfg_scale=cfg_scale,
        remasking=remasking, mask_id=mask_id, seeds=seeds, defer_tokens=defer,
    )
    if impl is None:
        x, trace = reference.generate(model, prompt, attention_mask, suppress_tokens=suppress,
                                      callback=callback, **kwargs)
    else:
        x, trace = _fast_generate(impl, model, prompt, attention_mask, suppress_tokens=suppress,
                                  record=return_trace, callback=callback, logits_window=logits_window,
                                  **kwargs)
    return (x, trace) if return_trace else x
