"""Adapters: every supported model presented with LLaDA's call interface, which `generate` calls.

``adapter(x [B, L], attention_mask [B, L] | None).logits`` is ``[B, L, V]``, the output at
position ``i`` scoring the token *at* ``i``; ``adapter.device``, the special ids, the tokenizer
and the window and cache hooks of the sampler's protocol (`fastremask.sampler.protocol`). One
`Adapter` subclass per way of calling a model; which one a model gets is its family record's
(`fastremask.models.family`), a native model always `NativeAdapter`. `wrap` adapts a built
model; `pad_batch` left-pads prompts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from fastremask.models.family import FAMILIES, family_for, family_of_model, get_family, model_types
from fastremask.models.ids import first_int, resolve_ids
from fastremask.models.shift import shifted_rows, source_span
from fastremask.models.tokenizer import tiny_tokenizer
from fastremask.sampler.protocol import (ModelLoadError, no_head_message, output_head, restricted_head)

__all__ = ["Adapter", "CallableAdapter", "TinyAdapter", "DreamAdapter", "NativeAdapter", "ModelOutput",
           "PadIsMaskError", "pad_batch", "detect_family", "wrap"]


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
    attributes ``family`` (a name in `fastremask.models.family.FAMILIES`), ``model`` (the wrapped model), ``tokenizer`` (or None),
    ``mask_id``, ``eos_id``, ``eot_id``, ``pad_id`` (ints or None), ``chat_template`` (or None),
    ``device``, ``name``. Calls run under ``torch.no_grad()``.
    """

    family = "llada"

    def __init__(self, model, tokenizer=None, *, mask_id: int, eos_id: int | None = None,
                 eot_id: int | None = None, pad_id: int | None = None, device=None, name: str = "model",
                 family: str | None = None):
        if family is not None:
            self.family = family                 # else the class's (a record's adapter serves it)
        self.model = model
        self.tokenizer = tokenizer
        self.mask_id = int(mask_id)
        self.eos_id = eos_id
        self.eot_id = eot_id
        self.pad_id = pad_id
        self.name = name
        self._device = torch.device(device) if device is not None else None

    @classmethod
    def check_model(cls, model, name: str) -> None:
        """A `ModelLoadError` when ``model`` cannot be called the way this adapter calls it
        (the loader asks before adapting a `transformers` model); nothing by default."""

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

    @property
    def record(self):
        """This adapter's family record (`fastremask.models.family.Family`), or None for a name
        no longer registered."""
        return FAMILIES.get(self.family)

    @property
    def logits_shift(self) -> int:
        """The family's ``logits_shift`` (`fastremask.models.family`): 1 when the wrapped
        model's output at ``i - 1`` scores the token at ``i`` (Dream), undone here."""
        record = self.record
        return record.logits_shift if record is not None else 0

    @property
    def attention(self) -> str:
        """The family's attention kind: ``"full"`` or ``"block_causal"``."""
        record = self.record
        return record.attention if record is not None else "full"

    @property
    def block_length(self) -> int | None:
        """The block length the family was trained with (block-causal families), else None."""
        record = self.record
        return record.block_length if record is not None else None

    def _forward(self, x, attention_mask):
        logits = self._raw(x, attention_mask)
        shift = self.logits_shift
        return shifted_rows(logits, 0, 0, logits.shape[1], shift) if shift else logits

    # --- logits for the current block only (generate(..., logits_window=True))

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
            raise ModelLoadError(no_head_message(self.model, self.name))
        shift = self.logits_shift
        lo, hi = source_span(start, start + length, shift)     # the head's rows for the window
        with torch.no_grad(), restricted_head(head, lo, hi, L, self.name):
            logits = self._raw(input_ids, attention_mask)
        return shifted_rows(logits, lo, start, start + length, shift) if shift else logits

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
    ``i - 1`` scores the token at ``i`` (the dream record's ``logits_shift``, undone by
    `Adapter`); position 0 keeps its own output, as in Dream.
    """

    family = "dream"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cached = None  # (mask tensor, its version, 4-D mask or None, tok_idx or None)

    @classmethod
    def check_model(cls, model, name: str) -> None:
        """This adapter calls ``model(x, attention_mask, position_ids)`` positionally."""
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



class NativeAdapter(Adapter):
    """A native model (`fastremask.models.native`): logits as it returns them (the native Dream
    applies Dream's shift and positions itself, so nothing is shifted here), its own
    `window_logits` and ``cached_logits``, and for the block-causal families (SDAR, LLaDA2) the
    protocol of `fastremask.sampler.block`. ``family`` is the model's record name."""

    def __init__(self, model, tokenizer=None, **kwargs):
        kwargs.setdefault("family", model.family)
        super().__init__(model, tokenizer, **kwargs)

    @property
    def logits_shift(self) -> int:
        return 0                                 # the native model applies its family's shift

    @property
    def supports_cache(self) -> bool:
        """The family record's ``cache`` (what the native forward implements)."""
        record = self.record
        return bool(record is not None and record.cache) and super().supports_cache

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

    # --- the block-causal protocol (fastremask.sampler.block): SDAR, LLaDA2

    @property
    def attention(self) -> str:
        """``"full"`` or ``"block_causal"``: the model's family record's."""
        return self.model.attention

    @property
    def block_length(self):
        """The block length a block-causal model was trained with (None for a full one)."""
        return self.model.block_length

    @property
    def token_editing(self) -> bool:
        return getattr(self.model, "token_editing", False)

    def block_logits(self, input_ids, attention_mask, **kwargs) -> torch.Tensor:
        """The native model's `block_logits` (`fastremask.sampler.block`), without autograd."""
        with torch.no_grad():
            return self.model.block_logits(input_ids, attention_mask, **kwargs)


def detect_family(model_type: str | None, *, name: str = "the model") -> str:
    """Family of a ``config.json`` ``model_type``; `ModelLoadError` when unknown."""
    record = family_for(model_type)
    if record is None:
        known = ", ".join(sorted(model_types()))
        raise ModelLoadError(
            f"model_type {model_type!r} of {name} is not one fastremask knows ({known}). Pass "
            "family='llada' if the model's output at position i scores the token at i, or "
            "family='dream' if it scores the token at i + 1 (CLI: --family); see docs/models/custom.md."
        )
    return record.name

def wrap(model, tokenizer=None, *, family: str | None = None, mask_id: int | None = None,
         eos_id: int | None = None, eot_id: int | None = None, pad_id: int | None = None,
         device=None, name: str | None = None) -> Adapter:
    """Adapt an already-built model (or any callable) for `generate`.

    ``family`` None: from ``model.config.model_type``, the record whose ``classes`` the model is
    an instance of (``"tiny"`` for a `TinyMaskedLM`), and
    ``"callable"`` for anything without a config; a ``family`` that contradicts a known
    ``model_type`` is a `ModelLoadError`. A native model (`fastremask.models.native`) gets a
    `NativeAdapter` (no second shift for Dream). Ids are resolved as in `load`.
    """
    from fastremask.models.native import NativeModel
    from fastremask.models.tiny import TinyMaskedLM

    if isinstance(model, Adapter):
        return model
    config = getattr(model, "config", None)
    name = name or type(model).__name__
    record = family_for(getattr(config, "model_type", None)) if config is not None else None
    known = record.name if record is not None else None
    if family is not None and known is not None and family != known:
        raise ModelLoadError(
            f"family={family!r} contradicts {name}'s config.model_type {config.model_type!r}, a {known} model; "
            "drop the family (it is for model types fastremask does not know)")
    if isinstance(model, NativeModel):
        if family is not None and family != model.family:
            raise ModelLoadError(f"family={family!r} contradicts {name}, a native {model.family} model")
        vocab_size = first_int(getattr(config, "vocab_size", None))
        ids = resolve_ids(config, tokenizer, model.family, vocab_size, mask_id=mask_id, eos_id=eos_id,
                          eot_id=eot_id, pad_id=pad_id, name=name)
        return NativeAdapter(model, tokenizer, device=device, name=name, **ids)
    if family is None:
        own = family_of_model(model)                  # the project's own models (the tiny one)
        if own is not None:
            family = own.name
        elif config is not None and hasattr(config, "model_type"):
            family = detect_family(config.model_type, name=name)
        elif callable(model):
            family = "callable"
        else:
            raise ModelLoadError(f"{name} is not callable; expected a model(x, attention_mask) -> logits")
    try:
        record = get_family(family)
    except ValueError as e:
        raise ModelLoadError(str(e)) from None
    if isinstance(model, TinyMaskedLM) and tokenizer is None:
        tokenizer = tiny_tokenizer(model.config.vocab_size)
    vocab_size = first_int(getattr(config, "vocab_size", None))
    if isinstance(model, TinyMaskedLM) and mask_id is None:
        mask_id = model.config.mask_id
    ids = resolve_ids(config, tokenizer, family, vocab_size, mask_id=mask_id, eos_id=eos_id, eot_id=eot_id,
                      pad_id=pad_id, name=name)
    return record.adapter_class()(model, tokenizer, device=device, name=name, family=record.name, **ids)

