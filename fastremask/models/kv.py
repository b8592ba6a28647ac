"""Block KV caches: how a model implements ``generate(..., cache="prefix" | "dual")``.

A masked diffusion LM attends bidirectionally, so every step changes the keys and values of
every position in principle; Fast-dLLM's block caches (Wu et al., 2025) approximate them:

* ``prefix``: at the first step of each block the whole sequence runs once and every layer's
  keys and values are stored; the block's other steps run only positions ``start:L`` (the block
  and the masked suffix) and read the prompt's and the finished blocks' keys from the cache.
* ``dual``: the same refresh; the other steps run only the block ``start:end`` and read the
  suffix's keys too.

The protocol, implemented by `fastremask.models.tiny.TinyMaskedLM` and the native LLaDA and
Dream models (`fastremask.models.native`)::

    model.cached_logits(input_ids [B, L], attention_mask [B, L] | None, cache: KVCache, *,
                        query=(q0, q1), out=(o0, o1)) -> logits [B, o1 - o0, V]

``query`` are the positions whose hidden states are computed (``(0, L)``: a refresh, which
(re)fills ``cache``); every other position's keys and values come from ``cache``, filled by the
last refresh of the same ``[B, L]`` shape. ``out`` (inside ``query``) are the positions whose
logits are returned, position ``i`` scoring the token at ``i`` (a model whose output at ``i - 1``
scores ``i``, like Dream, computes ``q0 - 1`` as well). The query's fresh keys and values are
written into the cache at their positions, so attention reads one tensor per layer; they are
recomputed at every step anyway, so this is what Fast-dLLM computes.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from fastremask.sampler.protocol import KVCache   # the container is the sampler's (it builds one per run)

__all__ = ["KVCache", "attend"]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_ok: Optional[torch.Tensor],
           cache: Optional[KVCache], layer: int, q0: int) -> torch.Tensor:
    """Bidirectional attention of ``q`` ``[B, H, Lq, Dh]`` (positions ``q0:q0 + Lq``) over the
    whole sequence: with a cache, ``k``/``v`` (the query's own) are written into it and the
    cached ones attended to. ``key_ok`` ``[B, 1, 1, L]`` bool (True = may be attended) or None.
    Grouped-query attention (fewer key heads): SDPA's ``enable_gqa`` where torch has it."""
    if cache is not None:
        k, v = cache.update(layer, k, v, q0)
    if k.shape[1] == q.shape[1]:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_ok)
    if _HAS_GQA:                                # no copy of the keys per query head
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_ok, enable_gqa=True)
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_ok)


def _has_gqa() -> bool:
    import inspect

    try:
        return "enable_gqa" in inspect.signature(F.scaled_dot_product_attention).parameters
    except (TypeError, ValueError):          # a builtin without a signature (torch < 2.5 style)
        return "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "")


_HAS_GQA = _has_gqa()
