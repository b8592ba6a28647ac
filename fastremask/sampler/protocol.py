"""What `generate` asks of a model beyond ``model(x, attention_mask).logits``: the protocol.

The sampler defines it and the models implement it (`fastremask.models` imports this module,
never the other way round):

* **the block-only window** (``generate(..., logits_window=True)``): a model's
  ``window_logits(input_ids, attention_mask, start, length) -> [B, length, V]``, else a module
  whose ``get_output_embeddings()`` is an ``nn.Linear`` (its input is restricted to the window
  by a forward pre-hook). An object may declare ``supports_window`` (a bool) to say whether its
  ``window_logits`` can serve it (an `Adapter` does). `window_logits`, `check_window_support`.
* **the block KV cache** (``generate(..., cache="prefix" | "dual")``): a model's
  ``cached_logits(input_ids, attention_mask, cache: KVCache, *, query=(q0, q1), out=(o0, o1))
  -> [B, o1 - o0, V]`` with the `KVCache` container below (`fastremask.models.kv` says how a
  model fills it); ``supports_cache`` may declare it.

`ModelLoadError` (a ValueError) is what a model that cannot serve a request raises, here and in
`fastremask.models` (which re-exports it).
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

__all__ = ["ModelLoadError", "KVCache", "output_head", "window_logits", "check_window_support",
           "restricted_head", "no_head_message"]


class ModelLoadError(ValueError):
    """A checkpoint or model could not be loaded or adapted, or cannot serve what a call needs
    (a window, a cache); the message says what to pass instead."""


# ----------------------------------------------------------------------------- the block KV cache


class KVCache:
    """Keys and values ``[B, H, L, Dh]`` of every layer, from the last refresh."""

    def __init__(self):
        self.keys: list = []
        self.values: list = []
        self.shape: Optional[tuple] = None          # (B, L) of the refresh

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def check(self, shape: tuple, query: tuple, out: tuple) -> bool:
        """True for a refresh (``query`` covers the sequence); else the cache must hold ``shape``.
        ``out`` must lie inside ``query``."""
        B, L = shape
        (q0, q1), (o0, o1) = query, out
        if not (0 <= q0 < q1 <= L):
            raise ValueError(f"cached_logits: query {q0}:{q1} is outside a sequence of length {L}")
        if not (q0 <= o0 < o1 <= q1):
            raise ValueError(f"cached_logits: out {o0}:{o1} is not inside query {q0}:{q1}")
        if (q0, q1) == (0, L):
            self.keys, self.values, self.shape = [], [], (B, L)
            return True
        if self.shape != (B, L):
            raise ValueError(f"cached_logits: the cache holds {self.shape or 'nothing'}, not [B, L] = "
                             f"{[B, L]}; refresh it first with query=(0, L)")
        return False

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, q0: int):
        """Store (refresh) or overwrite positions ``q0:q0 + Lq`` of ``layer``; returns the
        layer's whole keys and values."""
        if layer == len(self.keys):                         # a refresh: k, v cover [0, L)
            self.keys.append(k.contiguous())
            self.values.append(v.contiguous())
        else:
            q1 = q0 + k.shape[2]
            self.keys[layer][:, :, q0:q1] = k
            self.values[layer][:, :, q0:q1] = v
        return self.keys[layer], self.values[layer]


# ----------------------------------------------------------------------------- logits for a window
#
# generate(..., logits_window=True) asks the model for the logits of the current block only.
# The transformer body still runs on the whole sequence (bidirectional attention needs it); what
# is saved is the output projection for the other positions and the [B, L, V] tensor (LLaDA-8B:
# 126,464 logits per position). The projection is restricted by a forward pre-hook on the
# model's output head that slices its input to the window's positions.


def output_head(model) -> torch.nn.Linear | None:
    """The model's output projection (``get_output_embeddings()``) when it is an ``nn.Linear``
    that can be restricted to some positions, else None.

    A weight-tied head that the model applies as ``F.linear(h, embedding.weight)`` (LLaDA with
    ``weight_tying``) returns its ``nn.Embedding`` here, which is never called on the hidden
    states: None.
    """
    get = getattr(model, "get_output_embeddings", None)
    if not callable(get):
        return None
    try:
        head = get()
    except (NotImplementedError, AttributeError):
        return None
    return head if isinstance(head, torch.nn.Linear) else None


def no_head_message(model, name) -> str:
    return (
        f"logits_window=True needs the output head of {name} as an nn.Linear from "
        f"get_output_embeddings() (got {type(model).__name__}, which has none or a tied one); "
        "use logits_window=False, or give the model a window_logits(input_ids, attention_mask, "
        "start, length) method (docs/api.md)"
    )


@contextlib.contextmanager
def restricted_head(head: torch.nn.Linear, lo: int, hi: int, length: int, name: str):
    """Within the block, ``head`` sees only positions ``lo:hi`` of its ``[B, length, D]`` input;
    afterwards it must have been called exactly once."""
    calls = []

    def hook(module, args):
        h = args[0] if args else None
        if not isinstance(h, torch.Tensor) or h.dim() != 3 or h.shape[1] != length:
            raise RuntimeError(
                f"logits_window: the output head of {name} got an input of shape "
                f"{tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__}, not the "
                f"hidden states [B, {length}, D] of every position; use logits_window=False")
        calls.append(None)
        return (h[:, lo:hi], *args[1:])

    handle = head.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()
    if len(calls) != 1:
        raise RuntimeError(
            f"logits_window: the output head of {name} ran {len(calls)} times in one forward, not "
            "once; use logits_window=False")


def check_window_support(model) -> None:
    """Raise a `ModelLoadError` (a ValueError) unless `window_logits` can serve ``model``.

    A model that declares ``supports_window`` (an `Adapter`) is taken at its word; otherwise it
    needs a ``window_logits`` method or an ``nn.Linear`` output head."""
    supports = getattr(model, "supports_window", None)
    if supports is not None:
        if not supports:
            inner = getattr(model, "model", model)
            raise ModelLoadError(no_head_message(inner, getattr(model, "name", type(inner).__name__)))
    elif not callable(getattr(model, "window_logits", None)) and output_head(model) is None:
        raise ModelLoadError(no_head_message(model, type(model).__name__))


def window_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  start: int, length: int) -> torch.Tensor:
    """``[B, length, V]``: ``model``'s logits for positions ``start:start + length`` only.

    * an object with a ``window_logits(input_ids, attention_mask, start, length)`` method (an
      `Adapter`, which also handles Dream's shift; or a user's model implementing it): that;
    * else a module whose ``get_output_embeddings()`` is an ``nn.Linear`` (`TinyMaskedLM`, a
      Hugging Face LLaDA): called as `generate` calls a model (``model(x)`` or ``model(x,
      attention_mask=...)``), position ``i`` scoring the token at ``i``, with the head
      restricted to the window;
    * else a `ModelLoadError` (there is no silent fallback to the full logits).
    """
    method = getattr(model, "window_logits", None)
    if callable(method):
        return method(input_ids, attention_mask, start, length)
    head = output_head(model)
    if head is None:
        raise ModelLoadError(no_head_message(model, type(model).__name__))
    L = input_ids.shape[1]
    if not (0 <= start and 1 <= length and start + length <= L):
        raise ValueError(f"window {start}:{start + length} is outside a sequence of length {L}")
    with torch.no_grad(), restricted_head(head, start, start + length, L, type(model).__name__):
        out = model(input_ids) if attention_mask is None else model(input_ids, attention_mask=attention_mask)
    return out if isinstance(out, torch.Tensor) else getattr(out, "logits", out)
