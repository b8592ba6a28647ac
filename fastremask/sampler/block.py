"""Block diffusion: the block-causal model protocol, its exact cache, and each row's block layout.

A block-diffusion model (LLaDA2.x, SDAR) attends bidirectionally inside a block of
``block_length`` positions and causally across blocks, the blocks counted from each row's
position 0. The keys and values of a finished block never change afterwards, so a cache of
them is exact (docs/cache.md, "Block-causal models"). This module is the sampler's side of that:
what the loop calls, and the buffers it hands the model. It imports no model.

The protocol a block-causal model implements (the tiny block-causal model,
`fastremask.models.tiny.TinyMaskedLM` with ``attention="block_causal"``; the native SDAR and
LLaDA2 forwards)::

    model.attention == "block_causal"          # (until the family record says so)
    model.block_length                         # the block length it was trained with (int)
    model.block_logits(input_ids [B, L], attention_mask [B, L] | None, *, block_length: int,
                       cache: BlockCache | None = None, start: int = 0, commit: int = 0,
                       logits_from: int | None = None) -> logits [B, L - logits_from, V]

* **Positions**: ``p = cumsum(attention_mask) - 1`` clamped at 0 (``arange(L)`` without a mask).
* **Visibility**: the query at column ``i`` sees the key at column ``j`` iff ``j == i``, or
  ``attention_mask[b, j] == 1`` and ``p[b, j] // block_length <= p[b, i] // block_length``
  (`block_causal_mask`). Padding keys are never seen; a padding query sees itself, so nothing
  is NaN. Position ``i``'s logits score the token at ``i`` (no shift).
* ``cache=None``: the whole window ``0:L`` runs (``start`` must be 0): the published generate's
  full-window recompute.
* ``cache`` given: the keys and values of columns ``0:start`` are the cache's committed ones
  (``cache.length == start``); only columns ``start:L`` run, attending to those and to their own
  fresh keys. Every layer writes its fresh keys/values into the cache's buffers at
  ``start:L`` (`BlockCache.update`, which returns the layer's keys/values ``0:L`` as views: no
  concatenation); afterwards the columns ``start:commit`` are final (``cache.length = commit``,
  `BlockCache.commit`). Columns ``commit:L`` stay scratch and are overwritten by the next call.
* ``logits_from`` (default ``start``): the first column whose logits are returned.

The loop calls it once per step with ``start = cache.length`` and ``commit`` the current
block's first column: a block's first call also runs the block that just finished (and at the
answer's first block, the prompt's full blocks) and commits them. A finished block's keys in
that call are computed from the cache and the block itself only (block-causal), which is what a
separate call would compute, so folding costs no extra call and changes nothing but the
matmuls' row counts (fp32 rounding; tests/test_block.py checks the logits within 1e-5 of the
full window). The last block is never committed: nothing follows it.
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["BLOCK_CAUSAL", "BlockCache", "BlockLayout", "block_causal_mask", "block_positions", "begin_call",
           "is_block_causal", "trained_block_length", "check_block_model", "supports_editing", "max_positions"]

BLOCK_CAUSAL = "block_causal"


def is_block_causal(model) -> bool:
    """Whether ``model`` attends block-causally (the one place the loop asks)."""
    return getattr(model, "attention", "full") == BLOCK_CAUSAL


def trained_block_length(model) -> Optional[int]:
    """The block length ``model`` was trained with, or None when it does not say."""
    c = getattr(model, "block_length", None)
    return c if isinstance(c, int) and not isinstance(c, bool) else None


def supports_editing(model) -> bool:
    """Whether ``model``'s family was trained for token editing (LLaDA2.1: ``token_editing``)."""
    return getattr(model, "token_editing", False) is True


def max_positions(model) -> Optional[int]:
    """The most positions ``model`` can take, where it says (``max_position_embeddings``,
    the tiny model's ``max_len``), else None."""
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "max_len"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def check_block_model(model) -> None:
    """A clear error, before any model call, when a block-causal model lacks the protocol."""
    if not callable(getattr(model, "block_logits", None)):
        raise ValueError(
            f"{type(model).__name__} says attention='block_causal' but has no block_logits(input_ids, "
            "attention_mask, *, block_length, cache, start, commit, logits_from) (fastremask.sampler.block)")


def block_positions(attention_mask: Optional[torch.Tensor], B: int, L: int, device) -> torch.Tensor:
    """Position ids ``[B, L]`` int64: ``cumsum(attention_mask) - 1`` clamped at 0, or ``arange(L)``."""
    if attention_mask is None:
        return torch.arange(L, device=device).expand(B, L)
    return (attention_mask.to(torch.int64).cumsum(-1) - 1).clamp_min(0)


def block_causal_mask(attention_mask: Optional[torch.Tensor], B: int, L: int, block_length: int,
                      start: int, device) -> torch.Tensor:
    """``[B, 1, L - start, L]`` bool, True where query column ``start + i`` may see key column ``j``
    (the protocol's visibility rule)."""
    p = block_positions(attention_mask, B, L, device)
    blk = torch.div(p, block_length, rounding_mode="floor")               # [B, L]
    ok = blk[:, None, :] <= blk[:, start:, None]                           # [B, Lq, L]
    if attention_mask is not None:
        ok = ok & attention_mask.bool()[:, None, :]
    cols = torch.arange(L, device=device)
    ok = ok | (cols[None, :] == cols[start:, None])[None]
    return ok[:, None]


def begin_call(cache: Optional["BlockCache"], start: int, L: int, commit: int,
               logits_from: Optional[int]) -> int:
    """A model's `block_logits` call, checked and begun the protocol's way (every model calls
    this): ``start`` needs a cache, ``logits_from`` (default ``start``) lies in ``[start, L)``,
    the cache is told the call (`BlockCache.begin`). Returns ``logits_from``."""
    logits_from = start if logits_from is None else logits_from
    if cache is None:
        if start != 0:
            raise ValueError(f"block_logits: start={start} needs a cache (cache=None runs the whole window)")
    else:
        cache.begin(start, L, commit)
    if not start <= logits_from < L:
        raise ValueError(f"block_logits: logits_from={logits_from} must lie in [{start}, {L})")
    return logits_from


class BlockCache:
    """The exact block cache: per layer, keys and values ``[B, H, max_length, Dh]`` allocated
    once (at a layer's first `update`, in the dtype and shape of its keys) and never grown.

    ``length``: the columns ``0:length`` hold final keys/values. ``nbytes()`` is the memory:
    ``2 x layers x B x max_length x kv_heads x head_dim x`` the dtype's bytes.
    """

    def __init__(self, max_length: int):
        self.max_length = max_length
        self.length = 0
        self.keys: list = []
        self.values: list = []
        self._start = 0

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def begin(self, start: int, L: int, commit: int) -> None:
        """Checks of a call running columns ``start:L`` that will commit ``start:commit``."""
        if start != self.length:
            raise ValueError(f"block_logits: start={start} but the cache holds final keys for columns "
                             f"0:{self.length}; start must equal cache.length")
        if not start <= commit <= L or not start < L:
            raise ValueError(f"block_logits: need start < L and start <= commit <= L, got start={start}, "
                             f"commit={commit}, L={L}")
        if L > self.max_length:
            raise ValueError(f"block_logits: {L} columns exceed the cache's max_length={self.max_length}")
        self._start = start

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write ``k``, ``v`` ``[B, H, L - start, Dh]`` (columns ``start:L``) of ``layer`` and return
        the layer's keys and values for columns ``0:L`` (views of the buffers)."""
        s, n = self._start, k.shape[2]
        if layer == len(self.keys):
            B, H, _, D = k.shape
            self.keys.append(k.new_empty(B, H, self.max_length, D))
            self.values.append(v.new_empty(B, v.shape[1], self.max_length, v.shape[3]))
        kb, vb = self.keys[layer], self.values[layer]
        kb[:, :, s:s + n] = k
        vb[:, :, s:s + n] = v
        return kb[:, :, :s + n], vb[:, :, :s + n]

    def commit(self, commit: int) -> None:
        """After a call: columns ``0:commit`` are final."""
        self.length = commit


class BlockLayout:
    """Where each row's prompt, answer and blocks sit in the working sequence ``x`` ``[B, L]``.

    The published generates (LLaDA2's ``generate``, SDAR's ``block_diffusion_generate``) take one
    unpadded prompt and cut ``[prompt | masks]`` into blocks from position 0, the last prompt
    block partly prompt; the sequence is padded with masks to whole blocks (those extra masks
    are generated too, and dropped). A batch keeps that per row: row ``b`` with ``n_b`` prompt
    tokens has ``m_b = n_b - n_b % C`` of them in full blocks. Rows are left-padded by ``s_b = M -
    m_b`` (``M`` the largest ``m_b``, a multiple of C), so every row's blocks start at the same
    columns and the first answer block is the column block ``M:M + C`` for all rows; row ``b``'s
    answer starts at column ``M + n_b % C``. A row needing one block fewer than another gets
    filler after its last block (attention mask 0, a non-mask token): later blocks never affect
    earlier ones, so a row in a batch computes what it computes alone (as far as the model's
    logits are batch-invariant).
    """

    def __init__(self, prompt: torch.Tensor, attention_mask: Optional[torch.Tensor], gen_length: int,
                 C: int, mask_id: int):
        B, P = prompt.shape
        dev = prompt.device
        n = attention_mask.to(torch.int64).sum(1) if attention_mask is not None else \
            torch.full((B,), P, dtype=torch.int64, device=dev)
        n_l = n.tolist()
        m = [v - v % C for v in n_l]
        M = max(m)
        nb = [-(-(v % C + gen_length) // C) for v in n_l]
        self.B, self.C, self.P, self.G = B, C, P, gen_length
        self.M, self.num_blocks = M, max(nb)
        self.L = M + self.num_blocks * C
        self.gen_start = torch.tensor([M + v % C for v in n_l], dtype=torch.int64, device=dev)   # [B]
        x = torch.empty(B, self.L, dtype=torch.int64, device=dev)
        am = torch.zeros(B, self.L, dtype=torch.int64, device=dev)
        for b in range(B):
            s = M - m[b]
            filler = prompt[b, 0]
            x[b] = filler                                          # a prompt token: never a mask
            x[b, s:s + n_l[b]] = prompt[b, P - n_l[b]:]
            end = M + nb[b] * C
            x[b, s + n_l[b]:end] = mask_id
            am[b, s:end] = 1
        self.x0 = x
        self.attention_mask = None if bool(am.all()) else am
        self.row_end = torch.tensor([M + v * C for v in nb], dtype=torch.int64, device=dev)
        # the most positions a row uses (its own blocks, from its position 0)
        self.longest = max(m[b] + nb[b] * C for b in range(B))
        self.longest_prompt = max(n_l)

    def answer(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """``[B, P + G]``: the prompt as given, then each row's answer."""
        cols = self.gen_start[:, None] + torch.arange(self.G, device=x.device)
        return torch.cat([prompt, x.gather(1, cols)], dim=1)

    def block_start(self, block: int) -> int:
        return self.M + block * self.C
