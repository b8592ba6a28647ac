"""Model families as records: everything fastremask knows about a family, in one place.

A `Family` is a frozen record; `FAMILIES` maps each family's name to its record, in the order
they were registered. The loader (`fastremask.models.load`, `wrap`), the command line's
``--family`` choices and the docs read the registry; nothing else in the package names a
family. Adding a family is one record (`register`) plus one module with its forward
(docs/architecture.md, "Adding a model family").

This module imports neither torch nor any model code (``fastremask --help`` reads it): the
native class and the adapter are named as ``"module:attribute"`` strings and imported on first
use (`Family.native_class`, `Family.adapter_class`).

>>> from fastremask.models.family import FAMILIES, family_for
>>> family_for("Dream").name, family_for("Dream").logits_shift
('dream', 1)
>>> [name for name in FAMILIES]
['llada', 'dream', 'sdar', 'llada2', 'tiny', 'callable']
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Optional

from fastremask.sampler.names import LLADA_EOS, LLADA_EOT, LLADA_MASK

__all__ = ["Family", "FAMILIES", "ATTENTION_KINDS", "register", "unregister", "family_for", "family_of_model",
           "get_family", "model_types", "checkpoint_families"]

ATTENTION_KINDS = ("full", "block_causal")


@dataclass(frozen=True)
class Family:
    """What fastremask knows about one model family.

    Parameters
    ----------
    name : the family's name (``family=`` in `load` / `wrap`, ``--family`` on the command line);
        lower case, e.g. ``"llada"``.
    model_types : the ``config.json`` ``model_type`` values of the family, lower-cased
        (``("llada", "lladamoe", "llada_moe")``); a model type belongs to one family only.
    architectures : the published model class names (``config.json`` ``architectures``), for
        the docs and messages.
    native : ``"module:Class"`` of the project's own forward (a `NativeModel` subclass with a
        ``check_config(raw, path)`` static method), or None (the family loads through
        `transformers` only).
    native_types : the model types the native forward reads (a subset of ``model_types``;
        default: all of them when ``native`` is set). Other types of the family load through
        `transformers`.
    adapter : ``"module:Class"`` of the `Adapter` that presents a non-native model of the
        family to `generate` (a native model always gets `NativeAdapter`).
    loader : ``"module:function"`` that builds the model of a checkpoint folder of this family
        itself, ``loader(folder, dtype=, device=) -> model`` (the tiny model), instead of the
        native or the `transformers` path; None for those.
    mask_id, eos_id, eot_id : the published special ids, used only when neither the config nor
        the tokenizer names the token, and only when they fit the vocabulary.
    embedding : the published name of the input embedding's weight (how the loader tells the
        published layout, which the native forward reads, from another one).
    logits_shift : 0 when the model's output at ``i`` scores the token at ``i`` (LLaDA); 1 when
        the output at ``i - 1`` does (Dream: an autoregressive parent's alignment), undone by
        `fastremask.models.shift` so that the sampler always sees position ``i`` scoring ``i``.
    attention : ``"full"`` (bidirectional over the whole sequence) or ``"block_causal"``
        (bidirectional inside a block of ``block_length`` tokens, causal across blocks).
    block_length : the block length the model was trained with (required for
        ``"block_causal"``), else None.
    cache : True when the native forward implements ``cached_logits`` (`generate(...,
        cache=...)`); a non-native model declares it by having the method.
    display : the family's name in messages (``"LLaDA"``).
    classes : ``"module:Class"`` of the project's own in-memory model classes of the family
        (`fastremask.models.tiny.TinyMaskedLM`), which `wrap` recognises without a
        ``config.model_type``.
    """

    name: str
    model_types: tuple = ()
    architectures: tuple = ()
    native: Optional[str] = None
    native_types: Optional[tuple] = None
    adapter: str = "fastremask.models.adapters:Adapter"
    loader: Optional[str] = None
    mask_id: Optional[int] = None
    eos_id: Optional[int] = None
    eot_id: Optional[int] = None
    embedding: Optional[str] = None
    logits_shift: int = 0
    attention: str = "full"
    block_length: Optional[int] = None
    cache: bool = False
    display: str = ""
    classes: tuple = ()
    _resolved: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self):
        def bad(what, value):
            raise ValueError(f"Family {self.name!r}: {what}, got {value!r}")

        if not (isinstance(self.name, str) and self.name.isidentifier() and self.name == self.name.lower()):
            bad("name must be a lower-case identifier", self.name)
        for fname in ("model_types", "architectures"):
            value = getattr(self, fname)
            if isinstance(value, str) or not all(isinstance(t, str) and t for t in value):
                bad(f"{fname} must be a tuple of non-empty strings", value)
            object.__setattr__(self, fname, tuple(value))
        if any(t != t.lower() for t in self.model_types):
            bad("model_types must be lower-cased (config.json's model_type is matched lower-cased)",
                self.model_types)
        for fname in ("native", "adapter", "loader"):
            value = getattr(self, fname)
            if value is not None and not (isinstance(value, str) and value.count(":") == 1):
                bad(f"{fname} must be a 'module:attribute' string", value)
        if isinstance(self.classes, str) or not all(isinstance(c, str) and c.count(":") == 1 for c in self.classes):
            bad("classes must be a tuple of 'module:Class' strings", self.classes)
        object.__setattr__(self, "classes", tuple(self.classes))
        if self.native_types is None:
            object.__setattr__(self, "native_types", self.model_types if self.native else ())
        elif not set(self.native_types) <= set(self.model_types) or not self.native:
            bad("native_types must be some of model_types, with native set", self.native_types)
        object.__setattr__(self, "native_types", tuple(self.native_types))
        for fname in ("mask_id", "eos_id", "eot_id", "block_length"):
            value = getattr(self, fname)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0
                                      or (fname == "block_length" and value < 1)):
                bad(f"{fname} must be a {'positive' if fname == 'block_length' else 'non-negative'} "
                    "integer or None", value)
        if self.logits_shift not in (0, 1) or isinstance(self.logits_shift, bool):
            bad("logits_shift must be 0 or 1", self.logits_shift)
        if self.attention not in ATTENTION_KINDS:
            bad(f"attention must be one of {', '.join(ATTENTION_KINDS)}", self.attention)
        if self.attention == "block_causal" and self.block_length is None:
            bad("a block_causal family needs its trained block_length", self.block_length)
        if not isinstance(self.cache, bool):
            bad("cache must be True or False", self.cache)
        if not self.display:
            object.__setattr__(self, "display", self.name)

    def _resolve(self, ref: str):
        if ref not in self._resolved:
            module, attr = ref.split(":")
            self._resolved[ref] = getattr(importlib.import_module(module), attr)
        return self._resolved[ref]

    def native_class(self):
        """The native model class (imported on first use), or None."""
        return self._resolve(self.native) if self.native else None

    def adapter_class(self):
        """The `Adapter` subclass for a non-native model of this family (imported on first use)."""
        return self._resolve(self.adapter)

    def loader_function(self):
        """The family's own folder loader (imported on first use), or None."""
        return self._resolve(self.loader) if self.loader else None

    def special_ids(self) -> dict:
        """``{"mask": .., "eos": .., "eot": ..}``: the published ids (None where there is none)."""
        return {"mask": self.mask_id, "eos": self.eos_id, "eot": self.eot_id}


FAMILIES: dict = {}
_BY_TYPE: dict = {}


def register(family: Family, *, replace: bool = False) -> Family:
    """Add ``family`` to `FAMILIES` (and its model types to the lookup); returns it.

    A name already registered, or a model type another family claims, is a ValueError unless
    ``replace`` (which first removes the record of the same name).
    """
    if not isinstance(family, Family):
        raise TypeError(f"register() takes a Family, got {type(family).__name__}")
    if family.name in FAMILIES:
        if not replace:
            raise ValueError(f"family {family.name!r} is already registered (pass replace=True)")
        unregister(family.name)
    for t in family.model_types:
        other = _BY_TYPE.get(t)
        if other is not None:
            raise ValueError(f"model_type {t!r} of family {family.name!r} already belongs to family {other.name!r}")
    FAMILIES[family.name] = family
    for t in family.model_types:
        _BY_TYPE[t] = family
    return family


def unregister(name: str) -> None:
    """Remove the family ``name`` (tests and plug-ins that registered one for a while)."""
    family = FAMILIES.pop(name)
    for t in family.model_types:
        _BY_TYPE.pop(t, None)


def family_for(model_type) -> Optional[Family]:
    """The family of a ``config.json`` ``model_type`` (matched lower-cased), or None."""
    return _BY_TYPE.get(str(model_type).lower()) if model_type is not None else None


def family_of_model(model) -> Optional[Family]:
    """The family whose ``classes`` ``model`` is an instance of (the project's own models), or None."""
    for record in FAMILIES.values():
        if any(isinstance(model, record._resolve(c)) for c in record.classes):
            return record
    return None


def get_family(name: str) -> Family:
    """The record named ``name``; a ValueError naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown family {name!r}; expected one of {', '.join(FAMILIES)}") from None


def checkpoint_families() -> tuple:
    """The names of the families a checkpoint can be loaded as (those with model types: the
    choices of ``load(family=...)`` that make sense for a folder, and of ``--family``)."""
    return tuple(name for name, f in FAMILIES.items() if f.model_types)


def model_types() -> dict:
    """``{model_type: family name}`` of every registered family (the old ``MODEL_TYPES`` table)."""
    return {t: f.name for t, f in _BY_TYPE.items()}


# ----------------------------------------------------------------------------- the built-in families
#
# One record each. Published ids: LLaDA's from its generate.py / tokenizer (the sampler's
# generate defaults, fastremask.sampler.names), Dream's from Dream-v0's tokenizer config.

register(Family(
    name="llada", display="LLaDA",
    model_types=("llada", "lladamoe", "llada_moe"),
    architectures=("LLaDAModelLM", "LLaDAMoEModelLM"),
    native="fastremask.models.native.llada:LLaDAModel", native_types=("llada",),
    adapter="fastremask.models.adapters:Adapter",
    mask_id=LLADA_MASK, eos_id=LLADA_EOS, eot_id=LLADA_EOT,
    embedding="model.transformer.wte.weight",
    logits_shift=0, attention="full", cache=True,
))
register(Family(
    name="dream", display="Dream",
    model_types=("dream",),
    architectures=("DreamModel",),
    native="fastremask.models.native.dream:DreamModel",
    adapter="fastremask.models.adapters:DreamAdapter",
    mask_id=151666, eos_id=151643, eot_id=151645,
    embedding="model.embed_tokens.weight",
    logits_shift=1, attention="full", cache=True,
))
# The block-diffusion families (issue 22): block-causal attention, no shift, the exact block
# cache (fastremask.sampler.block; `cache` is about the approximate KV caches, which their
# native forwards also take). SDAR's ids from its published config.json (mask_token_id 151669)
# and Qwen3's tokenizer, SDAR-MoE's the same (SGLang's dLLM table: block 4, mask 151669 for both); LLaDA2's from the published generate (mask_id 156895, eos_id 156892).
register(Family(
    name="sdar", display="SDAR",
    model_types=("sdar", "sdar_moe"),           # dense and MoE: one forward, one layout, one tokenizer
    architectures=("SDARForCausalLM", "SDARMoeForCausalLM"),
    native="fastremask.models.native.sdar:SDARModel",
    adapter="fastremask.models.adapters:Adapter",
    mask_id=151669, eos_id=151643, eot_id=151645,
    embedding="model.embed_tokens.weight",
    logits_shift=0, attention="block_causal", block_length=4, cache=True,
))
register(Family(
    name="llada2", display="LLaDA2",
    model_types=("llada2_moe",),
    architectures=("LLaDA2MoeModelLM",),
    native="fastremask.models.native.llada2:LLaDA2Model",
    adapter="fastremask.models.adapters:Adapter",
    mask_id=156895, eos_id=156892,
    embedding="model.word_embeddings.weight",
    logits_shift=0, attention="block_causal", block_length=32, cache=True,
))
register(Family(
    name="tiny", display="tiny",
    model_types=("fastremask-tiny",),
    architectures=("TinyMaskedLM",),
    adapter="fastremask.models.adapters:TinyAdapter", loader="fastremask.models.tiny:load_folder",
    classes=("fastremask.models.tiny:TinyMaskedLM",),
    logits_shift=0, attention="full", cache=True,
))
register(Family(
    name="callable", display="callable",
    adapter="fastremask.models.adapters:CallableAdapter",
    logits_shift=0, attention="full", cache=False,
))
