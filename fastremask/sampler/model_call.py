"""Calling the model: the checked call, the block-only window, classifier-free guidance.

`ModelCall` is built once per `generate` call and called once per step: it holds what does
not change between steps (the extended attention mask, twice with CFG; the window's call).
It is the one place the sampler calls the model (full, window, cached and block calls alike),
so it is where they are counted and where a tool watches them: ``with hooked(hook):`` every
model call runs as ``hook(call)(model, x, attention_mask)`` (`fastremask.tools.profile.Phases`
names the ``model`` phase this way), as `fastremask.sampler.backends.hooked` does for the
backends' steps.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch

from fastremask.sampler.contract import LOGIT_DTYPES
from fastremask.sampler.protocol import window_logits

__all__ = ["call_model", "window_call", "cache_call", "block_call", "check_cache_support", "ModelCall",
           "hooked", "sampling_suppress"]

_HOOKS: list = []       # callables call -> call, applied in order by `ModelCall.__call__`


@contextlib.contextmanager
def hooked(hook: Callable[[Callable], Callable]):
    """``with hooked(hook):`` every model call a `ModelCall` makes runs as ``hook(call)(model, x,
    attention_mask)``, ``call`` being the step's call (`call_model`, `window_call`, `cache_call`,
    `block_call`): one hooked call per model call, a CFG call once (for tools that watch the
    calls: a profiler runs them in its ``model`` range). The hook must return the logits
    ``call`` returns."""
    _HOOKS.append(hook)
    try:
        yield hook
    finally:
        _HOOKS.remove(hook)


def _check_logits(logits, x: torch.Tensor, length: int, what: str, span: str = "") -> torch.Tensor:
    """``span``: which positions of ``x`` the logits are for (the window), for the message."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"model output has no .logits tensor (got {type(logits).__name__})")
    if logits.dim() != 3 or tuple(logits.shape[:2]) != (x.shape[0], length) or logits.shape[2] < 1:
        raise ValueError(
            f"model {what} have shape {tuple(logits.shape)}; expected [B, {'C' if span else 'L'}, V]"
            f" = [{x.shape[0]}, {length}, V] for {span}input of shape {tuple(x.shape)}")
    if logits.dtype not in LOGIT_DTYPES:
        raise TypeError(f"model logits have dtype {logits.dtype}; expected fp32, bf16 or fp16")
    return logits.contiguous()           # the step views them as rows (a copy only if they are not)


def call_model(model, x: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """``model(x, attention_mask=...)`` -> logits ``[B, L, V]``, checked.

    Accepts an output with ``.logits`` (Hugging Face, `fastremask.models.tiny`) or a bare tensor.
    Without an attention mask the model is called as ``model(x)``.
    """
    out = model(x) if attention_mask is None else model(x, attention_mask=attention_mask)
    logits = out if isinstance(out, torch.Tensor) else getattr(out, "logits", out)
    return _check_logits(logits, x, x.shape[1], "logits")


def window_call(start: int, length: int) -> Callable:
    """``call(model, x, attention_mask) -> logits [B, length, V]``: the model's logits for
    positions ``start:start + length`` only (`fastremask.sampler.protocol.window_logits`), checked."""

    def call(model, x, attention_mask):
        logits = window_logits(model, x, attention_mask, start, length)
        return _check_logits(logits, x, length, "window logits", f"positions {start}:{start + length} of ")

    return call


def check_cache_support(model, mode: str) -> None:
    """A clear error, before any model call, when ``model`` cannot serve ``cache=mode``."""
    supports = getattr(model, "supports_cache", None)
    if supports is None:
        supports = callable(getattr(model, "cached_logits", None))
    if not supports:
        raise ValueError(
            f"cache={mode!r} needs a model with cached_logits(input_ids, attention_mask, cache, *, query, "
            f"out) (fastremask.models.kv: the native LLaDA and Dream models, the tiny model); "
            f"{type(model).__name__} has none, and fastremask never falls back to a silent full "
            "recompute: use cache=None")


def cache_call(kv, mode: str, start: int, length: int) -> Callable:
    """``call(model, x, attention_mask) -> logits [B, length, V]`` for one block under a block
    KV cache (`fastremask.sampler.protocol`): the block's first call refreshes ``kv`` (the whole
    sequence runs); later calls run positions ``start:L`` (``prefix``) or the block alone
    (``dual``) against the cached keys and values."""
    fresh = [True]
    end = start + length

    def call(model, x, attention_mask):
        L = x.shape[1]
        query = (0, L) if fresh[0] else (start, L) if mode == "prefix" else (start, end)
        fresh[0] = False
        call.query = query[1] - query[0]            # the positions this call computes, per row
        logits = model.cached_logits(x, attention_mask, kv, query=query, out=(start, end))
        return _check_logits(logits, x, length, "cached logits", f"positions {start}:{end} of ")

    call.query = None
    return call


def block_call(cache, start: int, length: int) -> Callable:
    """``call(model, x, attention_mask) -> logits [B, length, V]`` for the block ``start:start +
    length`` of a block-causal model (`fastremask.sampler.block`): the window ``0:start + length``
    with blocks of ``length``; ``cache=None`` runs the whole window (the published generate's
    recompute), a `BlockCache` runs ``cache.length:end`` and commits every column before the block."""
    end = start + length

    def call(model, x, attention_mask):
        xs = x[:, :end]
        am = None if attention_mask is None else attention_mask[:, :end]
        if cache is None:
            call.query = end                        # the positions this call computes, per row
            logits = model.block_logits(xs, am, block_length=length, logits_from=start)
        else:
            call.query = end - cache.length
            logits = model.block_logits(xs, am, block_length=length, cache=cache, start=cache.length,
                                        commit=start, logits_from=start)
        return _check_logits(logits, x, length, "block logits", f"positions {start}:{end} of ")

    call.query = None
    return call


class ModelCall:
    """``self(x, call) -> (logits, uncond_logits or None)``, one model call per step.

    CFG as LLaDA does it: one call on ``2B`` rows, the second half a copy of ``x`` with the
    whole prompt (padding included) replaced by ``mask_id``, the same attention mask twice.
    ``prompt_columns`` ``[B, L]`` bool: the prompt's columns per row where they differ (a
    block-causal layout: everything before the row's answer; with the exact block cache the
    ``2B`` rows each keep their own keys, the unconditional rows those of the masked prompt).

    The one count of model calls: ``calls`` (forward, window and cached calls alike, a CFG call
    once) and ``positions``, the positions the model computed over all rows it was given (a
    full or window call: rows x length; a cached call: rows x its query, the whole sequence
    at a block's first step, then ``L - start`` (``prefix``) or the block (``dual``); a
    block-causal call: rows x the columns it runs, the window ``0:end`` of the current block
    when it recomputes, the columns after the cache's when it has one). The
    trace reports both (`fastremask.Trace.model_calls`, `Trace.positions`).
    """

    def __init__(self, model, attention_mask: Optional[torch.Tensor], *, prompt_length: int,
                 gen_length: int, cfg_scale: float, mask_id: int, prompt_columns: Optional[torch.Tensor] = None):
        self.model, self.P, self.mask_id = model, prompt_length, mask_id
        self.cfg = cfg_scale > 0
        # [B, L] bool: the columns the unconditional rows mask, where each row's prompt has its own
        # end (a block-causal layout, `fastremask.sampler.block.BlockLayout`); else 0:prompt_length
        self.prompt_columns = prompt_columns
        am = attention_mask
        if am is not None:
            B = am.shape[0]
            am = torch.cat([am, torch.ones(B, gen_length, dtype=am.dtype, device=am.device)], dim=1)
            if self.cfg:
                am = torch.cat([am, am])
        self.attention_mask = am
        self.calls = self.positions = 0

    def __call__(self, x: torch.Tensor, call: Callable = call_model):
        rows = x.shape[0] * (2 if self.cfg else 1)
        run = call
        for hook in _HOOKS:
            run = hook(run)
        if not self.cfg:
            out = run(self.model, x, self.attention_mask), None
        else:
            if self.prompt_columns is None:
                un_x = x.clone()
                un_x[:, :self.P] = self.mask_id
            else:
                un_x = x.masked_fill(self.prompt_columns, self.mask_id)
            both = run(self.model, torch.cat([x, un_x]), self.attention_mask)
            B = x.shape[0]
            out = both[:B], both[B:]
        query = getattr(call, "query", None)
        self.calls += 1
        self.positions += rows * (x.shape[1] if query is None else query)
        return out


def sampling_suppress(suppress_tokens, mask_id: int, vocab: int, device=None,
                      eos_flag: bool = False) -> Optional[torch.Tensor]:
    """The ids `sample_rows` suppresses: ``suppress_tokens`` plus ``mask_id`` when in the vocab.

    The mask token is never sampled, so a finished answer holds no mask. A suppressed id
    outside the vocabulary is a ValueError (a mistake, e.g. LLaDA's EOS id on another model).
    """
    ids = set(suppress_tokens or ())
    if ids and max(ids) >= vocab:
        raise ValueError(
            f"suppress_tokens contains token id {max(ids)}, outside the model's vocabulary of "
            f"{vocab}" + (" (logits_eos_inf suppresses the model's EOS, LLaDA's 126081 unless the "
                          "model names its own)" if eos_flag else "")
        )
    if mask_id < vocab:
        ids.add(mask_id)
    if not ids:
        return None
    return torch.tensor(sorted(ids), dtype=torch.int64, device=device)
