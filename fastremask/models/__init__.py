"""Loading checkpoints and adapting models to the interface `fastremask.generate` calls.

`generate` calls ``model(x, attention_mask=...)`` and reads ``.logits`` (``[B, L, V]``, the
output at position ``i`` scoring the token *at* ``i``) and ``model.device``, which is LLaDA's
interface. An `Adapter` presents exactly that for every supported family:

* ``"llada"`` (LLaDA-8B Base/Instruct, LLaDA-1.5, LLaDA-MoE; ``model_type`` ``llada``,
  ``lladamoe``): logits as the model returns them.
* ``"dream"`` (Dream-v0 7B; ``model_type`` ``Dream``): Dream's output at ``i - 1`` scores the
  token at ``i``, so the logits are shifted right by one (position 0 keeps its own output), and
  under left padding the model gets Dream's own 4-D mask and position ids.
* ``"tiny"``: the built-in `fastremask.models.tiny.TinyMaskedLM` with the `CharTokenizer`.
* ``"callable"``: any ``model(x, attention_mask) -> logits`` (a tensor, or an object with
  ``.logits``), logits as returned.

The mask id, EOS/EoT and pad ids and the chat template come from the checkpoint (``config.json``
and the tokenizer) where they exist; the family's published ids are used only as a last resort
and only when they fit the vocabulary. Anything that cannot be resolved is a clear error.

>>> adapter = load("GSAI-ML/LLaDA-8B-Instruct", trust_remote_code=True, dtype=torch.bfloat16)
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
    "FAMILIES",
    "MODEL_TYPES",
    "ModelLoadError",
    "ModelOutput",
    "PadIsMaskError",
    "check_window_support",
    "detect_family",
    "load",
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
    "fastremask-tiny": "tiny",
}
FAMILIES = ("llada", "dream", "tiny", "callable")

# Published ids, used only when neither config nor tokenizer names the token (and the id fits).
FAMILY_DEFAULTS = {
    "llada": {"mask": LLADA_MASK, "eos": LLADA_EOS, "eot": LLADA_EOT},
    "dream": {"mask": 151666, "eos": 151643, "eot": 151645},
}
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
        if output_head(model.model) is None:
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


def _resolve_ids(config, tokenizer, family: str, vocab_size: int | None, *, mask_id=None, eos_id=None,
                 eot_id=None, pad_id=None, name: str = "the model") -> dict:
    vocab = _vocab(tokenizer)
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
        raise ModelLoadError(
            f"could not find the mask token of {name}: its config has no mask_token_id, its "
            f"tokenizer declares no mask_token and has none of {', '.join(MASK_TOKENS)}. "
            "Pass mask_id= (CLI: --mask-id)."
        )
    if vocab_size is not None and not 0 <= mask < vocab_size:
        raise ModelLoadError(f"mask id {mask} of {name} is outside its vocabulary of {vocab_size}")
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
    ``"callable"`` for anything without a config. Ids are resolved as in `load`.
    """
    from fastremask.models.tiny import TinyMaskedLM

    if isinstance(model, Adapter):
        return model
    config = getattr(model, "config", None)
    name = name or type(model).__name__
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


def load(model_id_or_path, *, family: str | None = None, dtype="auto", device=None,
         trust_remote_code: bool = False, mask_id: int | None = None, eos_id: int | None = None,
         eot_id: int | None = None, pad_id: int | None = None, revision: str | None = None) -> Adapter:
    """Load a checkpoint (local folder or hub id) and its tokenizer, and adapt it.

    Parameters
    ----------
    model_id_or_path : a folder with ``config.json`` or a hub id (hubs need network access).
    family : ``"llada"``, ``"dream"`` or None (from ``config.json``'s ``model_type``).
    dtype : ``"auto"`` (the checkpoint's), a `torch.dtype` or ``"bf16"``/``"fp16"``/``"fp32"``.
    device : where to put the model; None: ``cuda`` if available, else ``cpu``.
    trust_remote_code : run the modeling code shipped with the checkpoint (LLaDA and Dream
        need it).
    mask_id, eos_id, eot_id, pad_id : override what the config and tokenizer say.

    A folder written by `TinyMaskedLM.save_pretrained` (``model_type "fastremask-tiny"``)
    loads as the built-in tiny model with the `CharTokenizer`.
    """
    name = os.fspath(model_id_or_path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if family is not None and family not in FAMILIES:
        raise ModelLoadError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    if not os.path.exists(name) and _looks_local(name):
        raise ModelLoadError(f"the model folder {name} does not exist")
    if os.path.isfile(name):
        raise ModelLoadError(f"{name} is a file; expected a model folder (with config.json) or a hub id")
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
        return wrap(model, tiny_tokenizer(model.config.vocab_size, name), family=family or "tiny",
                    mask_id=mask_id, eos_id=eos_id, eot_id=eot_id, pad_id=pad_id, name=name)
    if raw is None and os.path.exists(name):
        raise ModelLoadError(f"{name} has no config.json; is it a model folder?")

    import transformers

    hub = {"revision": revision} if revision else {}
    try:
        config = transformers.AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, **hub)
    except ValueError as e:
        if raw is not None and raw.get("auto_map") and not trust_remote_code:
            raise ModelLoadError(
                f"{name} ships its own modeling code (auto_map in config.json); pass "
                "trust_remote_code=True (CLI: --trust-remote-code) after reading it"
            ) from e
        if raw is not None and family is None:
            detect_family(raw.get("model_type"), name=name)  # the clearer message, if it applies
        raise ModelLoadError(f"could not load the config of {name}: {e}") from e
    except OSError as e:
        raise ModelLoadError(f"could not find {name} (not a local folder; hub unreachable or no such id): {e}") from e
    family = family or detect_family(getattr(config, "model_type", None), name=name)

    try:
        model = _auto_class(config).from_pretrained(
            name, config=config, trust_remote_code=trust_remote_code, **_dtype_kwarg(_parse_dtype(dtype)), **hub
        )
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors', torch's and transformers' errors differ
        where = _weights_files(name) if os.path.isdir(name) else name
        raise ModelLoadError(f"cannot load the weights {where}: {_first_line(e)}") from e
    if family == "dream":
        _check_dream_forward(model, name)
    model = model.to(device).eval()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, **hub)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load the tokenizer of {name}: {e}") from e
    return wrap(model, tokenizer, family=family, mask_id=mask_id, eos_id=eos_id, eot_id=eot_id, pad_id=pad_id,
                name=name)
