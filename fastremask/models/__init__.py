"""Loading checkpoints and adapting models to the interface `fastremask.generate` calls.

`generate` calls ``model(x, attention_mask=...)`` and reads ``.logits`` (``[B, L, V]``, the
output at position ``i`` scoring the token *at* ``i``) and ``model.device``, which is LLaDA's
interface. An `Adapter` presents exactly that for every supported family:

* ``"llada"`` (LLaDA-8B Base/Instruct, LLaDA-1.5, LLaDA-MoE; ``model_type`` ``llada``,
  ``lladamoe``): logits as the model returns them.
* ``"dream"`` (Dream-v0 7B; ``model_type`` ``Dream``): Dream's output at ``i - 1`` scores the
  token at ``i``, so the logits are shifted right by one (position 0 keeps its own output), and
  under left padding the model gets Dream's positions (``cumsum(mask) - 1``).
* ``"tiny"``: the built-in `fastremask.models.tiny.TinyMaskedLM` with the `CharTokenizer`.
* ``"callable"``: any ``model(x, attention_mask) -> logits`` (a tensor, or an object with
  ``.logits``), logits as returned.

`load` runs ``model_type`` ``llada`` and ``Dream`` checkpoints in the published layout with the
project's own forward passes (`fastremask.models.native`: no remote code, any `transformers`
version; `NativeAdapter`); other models (LLaDA-MoE, unknown types with ``family=``, or
``native=False``) load through `transformers`, with their remote code when they ship it
(``trust_remote_code=True``; the published LLaDA/Dream/LLaDA-MoE code needs `transformers`
`REMOTE_CODE_TRANSFORMERS`). The mask id, EOS/EoT and pad ids and the chat template come from
the checkpoint (``config.json`` and the tokenizer) where they exist; the family's published
ids are used only as a last resort and only when they fit the vocabulary. Anything that cannot
be resolved is a clear error.

>>> adapter = load("GSAI-ML/LLaDA-8B-Instruct", dtype=torch.bfloat16)
>>> ids, mask = adapter.encode(["What is 2 + 2?"], chat=True)
>>> out = fastremask.generate(adapter, ids, mask, mask_id=adapter.mask_id, ...)
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import Sequence

import torch

from fastremask.sampler.llada import LLADA_EOS, LLADA_EOT, LLADA_MASK

__all__ = [
    "Adapter",
    "DreamAdapter",
    "NativeAdapter",
    "REMOTE_CODE_TRANSFORMERS",
    "FAMILIES",
    "MODEL_TYPES",
    "ModelLoadError",
    "ModelOutput",
    "PadIsMaskError",
    "check_window_support",
    "detect_family",
    "load",
    "max_positions",
    "pad_batch",
    "output_head",
    "tiny_tokenizer",
    "window_logits",
    "wrap",
]

# config.json model_type (lower-cased) -> family
MODEL_TYPES = {
    "llada": "llada",
    "lladamoe": "llada",
    "llada_moe": "llada",
    "dream": "dream",
    "sdar": "sdar",
    "llada2_moe": "llada2",
    "fastremask-tiny": "tiny",
}
FAMILIES = ("llada", "dream", "sdar", "llada2", "tiny", "callable")

# Published ids, used only when neither config nor tokenizer names the token (and the id fits).
FAMILY_DEFAULTS = {
    "llada": {"mask": LLADA_MASK, "eos": LLADA_EOS, "eot": LLADA_EOT},
    "dream": {"mask": 151666, "eos": 151643, "eot": 151645},
    "sdar": {"mask": 151669, "eos": 151643, "eot": 151645},
    "llada2": {"mask": 156895, "eos": 156892},
}
# The transformers versions the published LLaDA / Dream / LLaDA-MoE modeling files (remote code)
# run with: 4.46 - 4.57 (5.x fails in them: LLaDA's 'all_tied_weights_keys', Dream's rope
# 'default'). Declared as the extra fastremask[remote-code] in pyproject.toml. The native models
# and the project's own look-alike remote code (fastremask/models/hf_tiny.py) need no such pin.
REMOTE_CODE_TRANSFORMERS = ">=4.46,<4.58"
MASK_TOKENS = ("<|mdm_mask|>", "<|mask|>", "[MASK]", "<mask>")
EOS_TOKENS = ("<|endoftext|>",)
EOT_TOKENS = ("<|eot_id|>", "<|im_end|>", "<|end|>")


class ModelLoadError(ValueError):
    """A checkpoint or model could not be adapted; the message says what to pass instead."""


class PadIsMaskError(ValueError):
    """The pad id equals the mask id, so left padding would be generated over."""


@dataclass
class ModelOutput:
    """What an `Adapter` returns: ``logits`` ``[B, L, V]``, position ``i`` scoring token ``i``."""

    logits: torch.Tensor


# ----------------------------------------------------------------------------- batches


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, mask_id: int, device: str | torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Left-pad token id lists into ``ids [B, L]`` int64 and ``attention_mask [B, L]`` int64.

    ``attention_mask`` is None when no row needed padding (what a single prompt gives, as in
    LLaDA's examples). Raises `PadIsMaskError` when padding is needed and ``pad_id ==
    mask_id``: `generate` treats every position holding the mask id as one to generate.
    """
    if not sequences:
        raise ValueError("no prompts given")
    lengths = [len(s) for s in sequences]
    for i, n in enumerate(lengths):
        if n == 0:
            raise ValueError(f"prompt {i} is empty after tokenization")
    L = max(lengths)
    if min(lengths) == L:
        return torch.tensor([list(s) for s in sequences], dtype=torch.long, device=device), None
    if pad_id == mask_id:
        raise PadIsMaskError(
            f"pad id {pad_id} equals the mask id: left padding would be read as masked positions "
            "to generate. Give the tokenizer a different pad token, or pass pad_id= (CLI: --pad-id)."
        )
    ids = torch.full((len(sequences), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), L), dtype=torch.long)
    for i, s in enumerate(sequences):
        if len(s):
            ids[i, L - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[i, L - len(s):] = 1
    return ids.to(device), mask.to(device)


# ----------------------------------------------------------------------------- adapters


class Adapter:
    """A model with LLaDA's call interface plus what sampling needs to know about it.

    ``adapter(x [B, L] int64, attention_mask [B, L] | None) -> ModelOutput(logits [B, L, V])``;
    attributes ``family``, ``model`` (the wrapped model), ``tokenizer`` (or None),
    ``mask_id``, ``eos_id``, ``eot_id``, ``pad_id`` (ints or None), ``chat_template`` (or None),
    ``device``, ``name``. Calls run under ``torch.no_grad()``.
    """

    family = "llada"

    def __init__(self, model, tokenizer=None, *, mask_id: int, eos_id: int | None = None,
                 eot_id: int | None = None, pad_id: int | None = None, device=None, name: str = "model"):
        self.model = model
        self.tokenizer = tokenizer
        self.mask_id = int(mask_id)
        self.eos_id = eos_id
        self.eot_id = eot_id
        self.pad_id = pad_id
        self.name = name
        self._device = torch.device(device) if device is not None else None

    # --- the interface generate uses

    @property
    def device(self) -> torch.device:
        if self._device is not None:
            return self._device
        dev = getattr(self.model, "device", None)
        if dev is None and isinstance(self.model, torch.nn.Module):
            dev = next(self.model.parameters()).device
        return torch.device(dev if dev is not None else "cpu")

    @property
    def config(self):
        """The wrapped model's config (`generate` reads ``config.vocab_size``), or None."""
        return getattr(self.model, "config", None)

    @property
    def dtype(self) -> torch.dtype | None:
        return getattr(self.model, "dtype", None)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_) -> ModelOutput:
        with torch.no_grad():
            return ModelOutput(logits=self._forward(input_ids, attention_mask))

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, L, V]`` logits, position ``i`` scoring the token at ``i``."""
        return self(input_ids, attention_mask).logits

    def _raw(self, x, attention_mask):
        """The wrapped model's logits as it returns them (its own position convention)."""
        out = self.model(x, attention_mask=attention_mask)
        return out if isinstance(out, torch.Tensor) else out.logits

    def _forward(self, x, attention_mask):
        return self._raw(x, attention_mask)

    # --- logits for the current block only (generate(..., logits_window=True))

    def _head_span(self, start: int, length: int) -> tuple[int, int]:
        """The positions of the head's input whose outputs are the logits of ``start:start + length``."""
        return start, start + length

    def _from_span(self, logits: torch.Tensor, start: int) -> torch.Tensor:
        return logits

    def window_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      start: int, length: int) -> torch.Tensor:
        """``[B, length, V]``: the logits of positions ``start:start + length`` only.

        The body runs on the whole sequence; the output head (``get_output_embeddings()`` of
        the wrapped model, an ``nn.Linear``) runs on those positions alone, so the ``[B, L, V]``
        tensor is never built. A `ModelLoadError` when the model has no such head.
        """
        L = input_ids.shape[1]
        if not (0 <= start and 1 <= length and start + length <= L):
            raise ValueError(f"window {start}:{start + length} is outside a sequence of length {L}")
        head = output_head(self.model)
        if head is None:
            raise ModelLoadError(_no_head_message(self.model, self.name))
        lo, hi = self._head_span(start, length)
        with torch.no_grad(), _restricted(head, lo, hi, L, self.name):
            logits = self._raw(input_ids, attention_mask)
        return self._from_span(logits, start)

    @property
    def supports_window(self) -> bool:
        """Whether `window_logits` can serve this model (an ``nn.Linear`` output head)."""
        return output_head(self.model) is not None

    # --- block KV caches (generate(..., cache="prefix" | "dual"), fastremask.models.kv)

    @property
    def supports_cache(self) -> bool:
        """True when the wrapped model implements ``cached_logits`` (the native LLaDA and Dream,
        the tiny model); `generate` refuses ``cache=`` otherwise, before any model call."""
        return callable(getattr(self.model, "cached_logits", None))

    def cached_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache, *,
                      query: tuple, out: tuple) -> torch.Tensor:
        """The wrapped model's ``cached_logits`` (`fastremask.models.kv`), under ``no_grad``;
        logits ``[B, o1 - o0, V]``, position ``i`` scoring the token at ``i``."""
        method = getattr(self.model, "cached_logits", None)
        if not callable(method):
            raise ModelLoadError(
                f"{self.name} ({type(self.model).__name__}) has no cached_logits, so it cannot run with a "
                "block KV cache; use cache=None (the native LLaDA and Dream models and the tiny model have one)")
        with torch.no_grad():
            return method(input_ids, attention_mask, cache, query=query, out=out)

    # --- text in and out

    @property
    def chat_template(self):
        return getattr(self.tokenizer, "chat_template", None)

    @property
    def suppress_eos(self) -> list[int]:
        """Token ids LLaDA's ``logits_eos_inf`` suppresses for this model: EOS."""
        return [self.eos_id] if self.eos_id is not None else []

    @property
    def defer_eos_eot(self) -> list[int]:
        """Token ids LLaDA's ``confidence_eos_eot_inf`` defers for this model: EOS and EoT."""
        return [t for t in dict.fromkeys((self.eos_id, self.eot_id)) if t is not None]

    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise ModelLoadError(f"{self.name} has no tokenizer; pass token ids instead of text")
        return self.tokenizer

    def tokenize(self, prompt: str, *, chat: bool = False, system: str | None = None) -> list[int]:
        """Token ids of one prompt; with ``chat`` the chat template wraps it as the user's
        message and opens the assistant's turn (as LLaDA's and Dream's examples do)."""
        tok = self._need_tokenizer()
        if chat:
            if not self.chat_template:
                raise ModelLoadError(f"the tokenizer of {self.name} has no chat template; drop --chat / chat=True")
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
            prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok(prompt)["input_ids"]
        return list(ids)

    def encode(self, prompts: str | Sequence[str], *, chat: bool = False, system: str | None = None,
               pad_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tokenize and left-pad prompts: ``(ids [B, L], attention_mask [B, L] or None)`` on
        the model's device (see `pad_batch`; the pad id is ``pad_id``, else the adapter's)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        seqs = [self.tokenize(p, chat=chat, system=system) for p in prompts]
        return self.pad(seqs, pad_id=pad_id)

    def pad(self, sequences: Sequence[Sequence[int]], pad_id: int | None = None):
        pad = self.pad_id if pad_id is None else pad_id
        if pad is None:
            pad = self.eos_id if self.eos_id is not None else 0
        return pad_batch(sequences, pad, self.mask_id, device=self.device)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._need_tokenizer().decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_str(self, token_id: int) -> str:
        """One token as text, the way the trace shows it (``' I'``, ``'.'``)."""
        if self.tokenizer is None:
            return str(int(token_id))
        return self.tokenizer.decode([int(token_id)], skip_special_tokens=False)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(family={self.family!r}, name={self.name!r}, mask_id={self.mask_id}, "
                f"eos_id={self.eos_id}, eot_id={self.eot_id}, pad_id={self.pad_id}, device={self.device})")


class CallableAdapter(Adapter):
    """Any ``model(x, attention_mask) -> logits`` (a tensor or an object with ``.logits``)."""

    family = "callable"

    def _raw(self, x, attention_mask):
        out = self.model(x, attention_mask)
        return out if isinstance(out, torch.Tensor) else out.logits


class TinyAdapter(Adapter):
    """The built-in `TinyMaskedLM`: logits as returned."""

    family = "tiny"


class DreamAdapter(Adapter):
    """Dream: shifted logits, Dream's 4-D mask and position ids under left padding.

    Mirrors Dream's ``generation_utils``: when every position is attended to, the model gets
    ``"full"`` and no position ids; otherwise ``tok_idx = cumsum(mask) - 1`` (padding set to 1)
    and the bool mask ``mask[:, None, None, :] & mask[:, None, :, None]``. Its output at
    ``i - 1`` scores the token at ``i``; position 0 keeps its own output, as in Dream.
    """

    family = "dream"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cached = None  # (mask tensor, its version, 4-D mask or None, tok_idx or None)

    def _dream_mask(self, attention_mask):
        if attention_mask is None:
            return "full", None
        c = self._cached
        if c is not None and c[0] is attention_mask and c[1] == attention_mask._version:
            return c[2], c[3]
        # one host sync per distinct mask (generate passes the same tensor every step)
        if bool(attention_mask.bool().all()):
            mask4, tok_idx = "full", None
        else:
            m = attention_mask.bool()
            tok_idx = m.long().cumsum(-1) - 1
            tok_idx.masked_fill_(~m, 1)
            mask4 = m[:, None, None, :] & m[:, None, :, None]  # [B, 1, L, L]
        self._cached = (attention_mask, attention_mask._version, mask4, tok_idx)
        return mask4, tok_idx

    def _raw(self, x, attention_mask):
        mask4, tok_idx = self._dream_mask(attention_mask)
        out = self.model(x, mask4, tok_idx)  # positional, as Dream's generate calls it
        return out if isinstance(out, torch.Tensor) else out.logits

    def _forward(self, x, attention_mask):
        logits = self._raw(x, attention_mask)
        return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)

    def _head_span(self, start, length):
        # the logits of position i are the output at i - 1 (position 0: its own output)
        return (start - 1, start - 1 + length) if start > 0 else (0, length)

    def _from_span(self, logits, start):
        return logits if start > 0 else torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


class NativeAdapter(Adapter):
    """A native LLaDA or Dream model (`fastremask.models.native`): logits as it returns them
    (the native Dream applies Dream's shift and positions itself, so nothing is shifted here),
    its own `window_logits` and ``cached_logits``. ``family`` is the model's (``"llada"`` or
    ``"dream"``)."""

    def __init__(self, model, tokenizer=None, **kwargs):
        super().__init__(model, tokenizer, **kwargs)
        self.family = model.family

    def _raw(self, x, attention_mask):
        return self.model(x, attention_mask).logits

    @property
    def supports_window(self) -> bool:
        return True

    def window_logits(self, input_ids, attention_mask, start: int, length: int) -> torch.Tensor:
        """``[B, length, V]``: the native model's own window (the final norm and the output head
        on those rows only)."""
        with torch.no_grad():
            return self.model.window_logits(input_ids, attention_mask, start, length)

    # --- the block-causal protocol (fastremask.sampler.block), for SDAR and LLaDA2

    @property
    def attention(self) -> str:
        return self.model.attention

    @property
    def block_length(self):
        return self.model.block_length

    @property
    def token_editing(self) -> bool:
        return getattr(self.model, "token_editing", False)

    def block_logits(self, input_ids, attention_mask, **kwargs) -> torch.Tensor:
        """The native model's `block_logits` (`fastremask.sampler.block`), without autograd."""
        with torch.no_grad():
            return self.model.block_logits(input_ids, attention_mask, **kwargs)


_ADAPTERS = {"llada": Adapter, "dream": DreamAdapter, "tiny": TinyAdapter, "callable": CallableAdapter}


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


def _no_head_message(model, name) -> str:
    return (
        f"logits_window=True needs the output head of {name} as an nn.Linear from "
        f"get_output_embeddings() (got {type(model).__name__}, which has none or a tied one); "
        "use logits_window=False, or give the model a window_logits(input_ids, attention_mask, "
        "start, length) method (docs/api.md)"
    )


@contextlib.contextmanager
def _restricted(head: torch.nn.Linear, lo: int, hi: int, length: int, name: str):
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
    """Raise a `ModelLoadError` (a ValueError) unless `window_logits` can serve ``model``."""
    if isinstance(model, Adapter):
        if not model.supports_window:
            raise ModelLoadError(_no_head_message(model.model, model.name))
    elif not callable(getattr(model, "window_logits", None)) and output_head(model) is None:
        raise ModelLoadError(_no_head_message(model, type(model).__name__))


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
        raise ModelLoadError(_no_head_message(model, type(model).__name__))
    L = input_ids.shape[1]
    if not (0 <= start and 1 <= length and start + length <= L):
        raise ValueError(f"window {start}:{start + length} is outside a sequence of length {L}")
    with torch.no_grad(), _restricted(head, start, start + length, L, type(model).__name__):
        out = model(input_ids) if attention_mask is None else model(input_ids, attention_mask=attention_mask)
    return out if isinstance(out, torch.Tensor) else getattr(out, "logits", out)


# ----------------------------------------------------------------------------- detection


def max_positions(config) -> tuple[str, int] | None:
    """``(field, positions)`` a model's config allows (the tiny model's ``max_len``, LLaDA's
    ``max_sequence_length``, Dream's ``max_position_embeddings``), or None."""
    for name in ("max_len", "max_sequence_length", "max_position_embeddings"):
        v = getattr(config, name, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return name, v
    return None


def detect_family(model_type: str | None, *, name: str = "the model") -> str:
    """Family of a ``config.json`` ``model_type``; `ModelLoadError` when unknown."""
    family = MODEL_TYPES.get(str(model_type).lower()) if model_type is not None else None
    if family is None:
        known = ", ".join(sorted(MODEL_TYPES))
        raise ModelLoadError(
            f"model_type {model_type!r} of {name} is not one fastremask knows ({known}). Pass "
            "family='llada' if the model's output at position i scores the token at i, or "
            "family='dream' if it scores the token at i + 1 (CLI: --family); see docs/models/custom.md."
        )
    return family


def _vocab(tokenizer) -> dict:
    if tokenizer is None:
        return {}
    try:
        return tokenizer.get_vocab()
    except (AttributeError, NotImplementedError):
        return {}


def _first_int(*values) -> int | None:
    for v in values:
        if isinstance(v, (list, tuple)):
            v = v[0] if v else None
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _config_file(name: str) -> str:
    """``name/config.json`` for a model folder, else "its config" (for messages)."""
    return os.path.join(name, "config.json") if os.path.isdir(name) else "its config"


def _resolve_ids(config, tokenizer, family: str, vocab_size: int | None, *, mask_id=None, eos_id=None,
                 eot_id=None, pad_id=None, name: str = "the model") -> dict:
    vocab = _vocab(tokenizer)
    cfg_file = _config_file(name)
    defaults = FAMILY_DEFAULTS.get(family, {})

    def by_name(names):
        return next((vocab[t] for t in names if t in vocab), None)

    def fits(i):
        return i if (i is not None and (vocab_size is None or 0 <= i < vocab_size)) else None

    mask = _first_int(
        mask_id,
        getattr(config, "mask_token_id", None),
        getattr(tokenizer, "mask_token_id", None),
        by_name(MASK_TOKENS),
        fits(defaults.get("mask")),
    )
    if mask is None:
        tok = ("it has no tokenizer" if tokenizer is None else
               f"its tokenizer declares no mask_token and has none of {', '.join(MASK_TOKENS)}")
        raise ModelLoadError(
            f"could not find the mask token of {name}: {cfg_file} has no field 'mask_token_id' and "
            f"{tok}. Pass mask_id= (CLI: --mask-id)."
        )
    if vocab_size is not None and not 0 <= mask < vocab_size:
        where = (f" ({cfg_file} field 'mask_token_id')" if mask_id is None
                 and _first_int(getattr(config, "mask_token_id", None)) == mask else "")
        raise ModelLoadError(f"mask id {mask} of {name}{where} is outside its vocabulary of {vocab_size}")
    eos = _first_int(eos_id, by_name(EOS_TOKENS), getattr(tokenizer, "eos_token_id", None),
                     getattr(config, "eos_token_id", None), fits(defaults.get("eos")))
    eot = _first_int(eot_id, by_name(EOT_TOKENS), fits(defaults.get("eot")))
    pad = _first_int(pad_id, getattr(tokenizer, "pad_token_id", None), getattr(config, "pad_token_id", None), eos)
    return {"mask_id": mask, "eos_id": eos, "eot_id": eot, "pad_id": pad}


def wrap(model, tokenizer=None, *, family: str | None = None, mask_id: int | None = None,
         eos_id: int | None = None, eot_id: int | None = None, pad_id: int | None = None,
         device=None, name: str | None = None) -> Adapter:
    """Adapt an already-built model (or any callable) for `generate`.

    ``family`` None: from ``model.config.model_type``, ``"tiny"`` for a `TinyMaskedLM`, and
    ``"callable"`` for anything without a config; a ``family`` that contradicts a known
    ``model_type`` is a `ModelLoadError`. A native model (`fastremask.models.native`) gets a
    `NativeAdapter` (no second shift for Dream). Ids are resolved as in `load`.
    """
    from fastremask.models.tiny import TinyMaskedLM

    from fastremask.models.native import NativeModel

    if isinstance(model, Adapter):
        return model
    config = getattr(model, "config", None)
    name = name or type(model).__name__
    known = MODEL_TYPES.get(str(getattr(config, "model_type", None)).lower()) if config is not None else None
    if family is not None and known is not None and family != known:
        raise ModelLoadError(
            f"family={family!r} contradicts {name}'s config.model_type {config.model_type!r}, a {known} model; "
            "drop the family (it is for model types fastremask does not know)")
    if isinstance(model, NativeModel):
        if family is not None and family != model.family:
            raise ModelLoadError(f"family={family!r} contradicts {name}, a native {model.family} model")
        vocab_size = _first_int(getattr(config, "vocab_size", None))
        ids = _resolve_ids(config, tokenizer, model.family, vocab_size, mask_id=mask_id, eos_id=eos_id,
                           eot_id=eot_id, pad_id=pad_id, name=name)
        return NativeAdapter(model, tokenizer, device=device, name=name, **ids)
    if family is None:
        if isinstance(model, TinyMaskedLM):
            family = "tiny"
        elif config is not None and hasattr(config, "model_type"):
            family = detect_family(config.model_type, name=name)
        elif callable(model):
            family = "callable"
        else:
            raise ModelLoadError(f"{name} is not callable; expected a model(x, attention_mask) -> logits")
    if family not in _ADAPTERS:
        raise ModelLoadError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    if isinstance(model, TinyMaskedLM) and tokenizer is None:
        tokenizer = tiny_tokenizer(model.config.vocab_size)
    vocab_size = _first_int(getattr(config, "vocab_size", None))
    if isinstance(model, TinyMaskedLM) and mask_id is None:
        mask_id = model.config.mask_id
    ids = _resolve_ids(config, tokenizer, family, vocab_size, mask_id=mask_id, eos_id=eos_id, eot_id=eot_id,
                       pad_id=pad_id, name=name)
    return _ADAPTERS[family](model, tokenizer, device=device, name=name, **ids)


# ----------------------------------------------------------------------------- loading


def tiny_tokenizer(vocab_size: int, folder=None):
    """The tokenizer of a `TinyMaskedLM`: the task vocabulary of `fastremask.evaluation.tasks` for a
    folder with ``demo.json`` (the trained demo model), the ASCII `CharTokenizer` for a vocab
    of 128 or more, else None (token ids only)."""
    from fastremask.models.tokenizer import CharTokenizer

    if folder is not None and os.path.isfile(os.path.join(os.fspath(folder), "demo.json")):
        from fastremask.evaluation import tasks

        if vocab_size == len(tasks.VOCAB):
            return CharTokenizer.from_tokens(tasks.VOCAB, pad="<pad>", mask="<mask>")
    if vocab_size >= 128:
        return CharTokenizer(vocab_size)
    return None


def _dtype_kwarg(dtype) -> dict:
    import transformers

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    # transformers 4.56 renamed torch_dtype= to dtype=
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _parse_dtype(dtype):
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return "auto" if dtype is None else dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ModelLoadError(f"unknown dtype {dtype!r}; expected auto, {', '.join(names)}")
    return names[dtype]


def _local_config(path) -> dict | None:
    """``path/config.json`` as a dict (None when there is none); a `ModelLoadError` naming the
    file when it is not a JSON object."""
    cfg = os.path.join(os.fspath(path), "config.json")
    if not os.path.isfile(cfg):
        return None
    try:
        with open(cfg, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{cfg} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    except UnicodeDecodeError as e:
        raise ModelLoadError(f"{cfg} is not UTF-8 text (byte {e.start + 1})") from e
    except OSError as e:
        raise ModelLoadError(f"cannot read {cfg}: {e.strerror or e}") from e
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{cfg} must hold a JSON object (the model's config), got {type(raw).__name__}")
    return raw


def _looks_local(name: str) -> bool:
    """A path rather than a hub id (``org/name``): starts with ``.``, ``/`` or ``~``, has a
    backslash, or more than one ``/``."""
    return (name.startswith((".", "/", "~")) or os.path.isabs(name) or "\\" in name
            or name.count("/") > 1 or name.endswith("/"))


def _weights_files(folder: str) -> str:
    """The weight files of ``folder``, for messages (``model.safetensors``, shards, ``*.bin``)."""
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith((".safetensors", ".bin", ".pt", ".pth")))
    except OSError:
        names = []
    if not names:
        return f"{folder} (no *.safetensors or *.bin weights in it)"
    shown = ", ".join(os.path.join(folder, n) for n in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def _check_family(family: str | None, raw: dict | None, name: str) -> None:
    """A ``family`` given for a ``model_type`` fastremask knows must be that type's family:
    the adapters call the model differently (Dream: shifted logits, positional mask and
    position ids), so the wrong one fails in the model or gives wrong logits."""
    if family is None or raw is None:
        return
    known = MODEL_TYPES.get(str(raw.get("model_type")).lower())
    if known is not None and known != family:
        raise ModelLoadError(
            f"family={family!r} (CLI: --family {family}) contradicts {os.path.join(name, 'config.json')}: "
            f"its model_type {raw.get('model_type')!r} is a {known} model; drop the family (it is for "
            "model types fastremask does not know)")


def _check_dream_forward(model, name: str) -> None:
    """The Dream adapter calls ``model(x, attention_mask, position_ids)`` positionally."""
    import inspect

    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError, AttributeError):
        return
    try:
        sig.bind(None, None, None)
    except TypeError:
        raise ModelLoadError(
            f"family 'dream' calls the model as model(input_ids, attention_mask, position_ids) (Dream's "
            f"forward), but {name}'s {type(model).__name__}.forward{sig} does not take that; is it a "
            "LLaDA-style model? (family='llada', CLI: --family llada)") from None


def _auto_class(config):
    """The `transformers` auto class that builds the model *with* its output head."""
    import transformers

    auto_map = getattr(config, "auto_map", None) or {}
    for key in ("AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM"):
        if key in auto_map:  # remote code: LLaDA and Dream register their LM under AutoModel
            return getattr(transformers, key)
    for cls in (transformers.AutoModelForMaskedLM, transformers.AutoModelForCausalLM):
        if type(config) in cls._model_mapping:
            return cls
    return transformers.AutoModel


def _remote_code_hint(raw: dict | None) -> str:
    """A sentence on the transformers versions the published remote code runs with, when the
    installed one is outside them and the checkpoint ships code; else ""."""
    import transformers

    if not (raw and raw.get("auto_map")):
        return ""
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    if (4, 46) <= (major, minor) < (4, 58):
        return ""
    native = " (or drop native=False: fastremask runs this model natively)" if _native_family(raw) else ""
    return (f"; the published LLaDA / Dream / LLaDA-MoE modeling code runs with transformers "
            f"{REMOTE_CODE_TRANSFORMERS} (installed: {transformers.__version__}): pip install "
            f"'transformers{REMOTE_CODE_TRANSFORMERS}' (the extra fastremask[remote-code]){native}")


def _native_family(raw: dict | None) -> str | None:
    from fastremask.models import native

    return native.native_family(raw.get("model_type")) if raw else None


def _check_remote_files(raw: dict, folder: str, native_hint: bool) -> None:
    """The modules ``auto_map`` names must be in a local folder (else transformers' message
    is about the hub)."""
    auto_map = raw.get("auto_map")
    if not isinstance(auto_map, dict):
        return
    for key, ref in auto_map.items():
        refs = ref if isinstance(ref, (list, tuple)) else [ref]
        for r in refs:
            if not isinstance(r, str) or "--" in r or "." not in r:
                continue                        # None entries, references to other hub repos
            module = r.rsplit(".", 1)[0]
            path = os.path.join(folder, module.replace(".", os.sep) + ".py")
            if not os.path.isfile(path):
                hint = ("; it is in the published layout, so drop native=False to run fastremask's "
                        "native forward" if native_hint else "")
                raise ModelLoadError(
                    f"{os.path.join(folder, 'config.json')}: field 'auto_map' ({key}) names {module}.py, "
                    f"which is not in {folder}: the checkpoint's own modeling code is missing{hint}")


def _hub_folder(name: str, revision: str | None, trust_remote_code: bool) -> str | None:
    """A local snapshot of hub model ``name`` with what the native path reads (config,
    safetensors, tokenizer files), or None when its config cannot be fetched or its
    model_type has no native forward (the transformers path then reports)."""
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError:  # pragma: no cover - a dependency of transformers
        return None
    try:
        cfg = hf_hub_download(name, "config.json", revision=revision)
        with open(cfg, encoding="utf-8") as f:
            raw = json.load(f)
    except Exception:  # noqa: BLE001 - offline, no such repo, not JSON: the transformers path says so
        return None
    if not isinstance(raw, dict) or _native_family(raw) is None:
        return None
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]
    try:
        return snapshot_download(name, revision=revision,
                                 allow_patterns=patterns + (["*.py"] if trust_remote_code else []))
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"could not download {name} from the hub: {_first_line(e)}") from e


def _tokenizer_files(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, n)) for n in
               ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model"))


def _native_tokenizer(folder: str, name: str, trust_remote_code: bool):
    """The folder's tokenizer through `transformers` (None when the folder has no tokenizer
    files: token ids only). Without ``trust_remote_code`` a tokenizer that names its own code
    is read from its ``tokenizer.json`` as a `PreTrainedTokenizerFast`."""
    import transformers

    if not _tokenizer_files(folder):
        return None
    try:
        # a bare config: the tokenizer's own files decide its class (transformers would otherwise
        # read config.json as a model config it does not know, and warn)
        return transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code,
                                                          config=transformers.PretrainedConfig())
    except Exception as e:  # noqa: BLE001 - transformers raises many types here
        if os.path.isfile(os.path.join(folder, "tokenizer.json")):
            try:
                return transformers.PreTrainedTokenizerFast.from_pretrained(folder)
            except Exception:  # noqa: BLE001
                pass
        code = "" if trust_remote_code else " (if it ships its own tokenizer code, pass trust_remote_code=True)"
        raise ModelLoadError(f"could not load the tokenizer of {name}: {_first_line(e)}{code}") from e


def _load_native(folder: str, name: str, raw: dict, *, dtype, device, trust_remote_code: bool, ids: dict) -> Adapter:
    from fastremask.models import native

    model = native.from_folder(folder, dtype=dtype, device=device, raw=raw)
    tokenizer = _native_tokenizer(folder, name, trust_remote_code)
    return wrap(model, tokenizer, name=name, **ids)


def load(model_id_or_path, *, family: str | None = None, dtype="auto", device=None,
         trust_remote_code: bool = False, native: bool | None = None, mask_id: int | None = None,
         eos_id: int | None = None, eot_id: int | None = None, pad_id: int | None = None,
         revision: str | None = None) -> Adapter:
    """Load a checkpoint (local folder or hub id) and its tokenizer, and adapt it.

    Parameters
    ----------
    model_id_or_path : a folder with ``config.json`` or a hub id (hubs need network access).
    family : ``"llada"``, ``"dream"`` or None (from ``config.json``'s ``model_type``); needed
        only for model types fastremask does not know, and refused when it contradicts one it knows.
    dtype : ``"auto"`` (the checkpoint's), a `torch.dtype` or ``"bf16"``/``"fp16"``/``"fp32"``.
    device : where to put the model; None: ``cuda`` if available, else ``cpu``.
    trust_remote_code : run the code shipped with the checkpoint (the transformers path; for a
        native model only its tokenizer's code, if it has any).
    native : None (default): ``model_type`` ``llada`` / ``Dream`` in the published layout run
        natively (`fastremask.models.native`, `NativeAdapter`: no remote code, any transformers
        version), everything else through transformers; a ``llada``/``Dream`` folder whose
        weights do not carry the published names goes to transformers too (it needs its own
        code). True: native or a clear error. False: always transformers (the published LLaDA
        and Dream code needs transformers `REMOTE_CODE_TRANSFORMERS`).
    mask_id, eos_id, eot_id, pad_id : override what the config and tokenizer say.

    A folder written by `TinyMaskedLM.save_pretrained` (``model_type "fastremask-tiny"``)
    loads as the built-in tiny model with the `CharTokenizer`.
    """
    name = os.fspath(model_id_or_path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if family is not None and family not in FAMILIES:
        raise ModelLoadError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    if native not in (None, True, False):
        raise ModelLoadError(f"native must be None, True or False, got {native!r}")
    if not os.path.exists(name) and _looks_local(name):
        raise ModelLoadError(f"the model folder {name} does not exist")
    if os.path.isfile(name):
        raise ModelLoadError(f"{name} is a file; expected a model folder (with config.json) or a hub id")
    ids = dict(mask_id=mask_id, eos_id=eos_id, eot_id=eot_id, pad_id=pad_id)
    raw = _local_config(name)
    _check_family(family, raw, name)
    if raw is not None and raw.get("model_type") == "fastremask-tiny":
        from fastremask.models.tiny import TinyMaskedLM

        tdtype = _parse_dtype(dtype)
        try:
            model = TinyMaskedLM.from_pretrained(name, device=device, dtype=None if tdtype == "auto" else tdtype)
        except (TypeError, ValueError, KeyError) as e:
            raise ModelLoadError(f"{os.path.join(name, 'config.json')}: {_first_line(e)}") from e
        except Exception as e:  # noqa: BLE001 - safetensors' errors have no common base
            raise ModelLoadError(f"cannot load the weights {_weights_files(name)}: {_first_line(e)}") from e
        return wrap(model, tiny_tokenizer(model.config.vocab_size, name), family=family or "tiny", name=name, **ids)
    if raw is None and os.path.exists(name):
        raise ModelLoadError(f"{name} has no config.json; is it a model folder?")

    # --- the native path (LLaDA, Dream in the published layout)
    folder = name if raw is not None else None
    if raw is None and native is not False:          # a hub id: fetch what the native path reads
        folder = _hub_folder(name, revision, trust_remote_code)
        raw = _local_config(folder) if folder else None
        _check_family(family, raw, name)
    nat = _native_family(raw)
    if native is True and nat is None:
        where = os.path.join(folder, "config.json") if folder else name
        raise ModelLoadError(f"native=True, but {where} has model_type {(raw or {}).get('model_type')!r}; "
                             "fastremask has native forward passes for 'llada' and 'Dream' only")
    if nat is not None and native is not False:
        from fastremask.models import native as native_models

        layout = native_models.published_layout(folder, raw.get("model_type"))
        if layout is not False:
            return _load_native(folder, name, raw, dtype=dtype, device=device,
                                trust_remote_code=trust_remote_code, ids=ids)
        emb = native_models.NATIVE_TYPES[raw["model_type"].lower()][3]
        why = (f"{name}: its weights ({_weights_files(folder)}) have no tensor {emb!r}, so they are not in the "
               f"published {nat} layout the native forward reads")
        if native is True:
            raise ModelLoadError(why + "; load it with native=False and trust_remote_code=True if it ships its own code")
        if not raw.get("auto_map"):
            raise ModelLoadError(why + ", and it ships no modeling code (no auto_map in config.json)")
        if not trust_remote_code:
            raise ModelLoadError(why + "; it ships its own modeling code (auto_map in config.json): pass "
                                 "trust_remote_code=True (CLI: --trust-remote-code) after reading it")
        # a checkpoint with its own code and its own weight names: the transformers path

    # --- the transformers path (remote code, registered models)
    import transformers

    if folder is not None and folder != name:
        name_or_folder = folder                        # the hub snapshot
    else:
        name_or_folder = name
    if raw is not None and trust_remote_code and os.path.isdir(name_or_folder):
        _check_remote_files(raw, name_or_folder, native_hint=nat is not None and native is False)
    hub = {"revision": revision} if revision and not os.path.isdir(name_or_folder) else {}
    try:
        config = transformers.AutoConfig.from_pretrained(name_or_folder, trust_remote_code=trust_remote_code, **hub)
    except ValueError as e:
        if raw is not None and raw.get("auto_map") and not trust_remote_code:
            raise ModelLoadError(
                f"{name} ships its own modeling code (auto_map in config.json); pass "
                "trust_remote_code=True (CLI: --trust-remote-code) after reading it"
            ) from e
        if raw is not None and family is None:
            detect_family(raw.get("model_type"), name=name)  # the clearer message, if it applies
        raise ModelLoadError(f"could not load the config of {name}: {e}{_remote_code_hint(raw)}") from e
    except OSError as e:
        if os.path.isdir(name_or_folder):
            raise ModelLoadError(f"could not load the config of {name}: {_first_line(e)}") from e
        raise ModelLoadError(f"could not find {name} (not a local folder; hub unreachable or no such id): {e}") from e
    except Exception as e:  # noqa: BLE001 - remote configuration code may raise anything
        raise ModelLoadError(f"could not load the config of {name}: {_first_line(e)}{_remote_code_hint(raw)}") from e
    family = family or detect_family(getattr(config, "model_type", None), name=name)

    try:
        model = _auto_class(config).from_pretrained(
            name_or_folder, config=config, trust_remote_code=trust_remote_code,
            **_dtype_kwarg(_parse_dtype(dtype)), **hub
        )
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors', torch's and transformers' errors differ
        where = _weights_files(name_or_folder) if os.path.isdir(name_or_folder) else name
        raise ModelLoadError(f"cannot load the weights {where}: {_first_line(e)}{_remote_code_hint(raw)}") from e
    if family == "dream":
        _check_dream_forward(model, name)
    model = model.to(device).eval()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_folder, trust_remote_code=trust_remote_code,
                                                               **hub)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load the tokenizer of {name}: {e}") from e
    return wrap(model, tokenizer, family=family, name=name, **ids)
