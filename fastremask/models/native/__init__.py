"""Native forward passes for LLaDA and Dream: the published checkpoints without their code.

`fastremask.models.load` uses these for ``config.json`` ``model_type`` ``llada`` (LLaDA-8B
Base/Instruct, LLaDA-1.5; not ``lladamoe``) and ``Dream`` (Dream-v0 7B), whatever the installed
`transformers` version, and needs no ``trust_remote_code``. The models read ``config.json`` and
the safetensors weights (``model.safetensors``, or shards listed in
``model.safetensors.index.json``) under the published weight names, in fp32/bf16/fp16 on CPU or
CUDA, and present the interface `fastremask.generate` calls::

    model(input_ids [B, L], attention_mask [B, L] | None).logits   # [B, L, V], i scores token i
    model.window_logits(input_ids, attention_mask, start, length)  # [B, length, V]
    model.cached_logits(input_ids, attention_mask, cache, query=(q0, q1), out=(o0, o1))
    model.device, model.dtype, model.config.vocab_size

The last is the block KV-cache protocol of `fastremask.models.kv`. Dream's right shift and its
position ids are applied inside `DreamModel`.

>>> from fastremask.models import native, testing
>>> m = native.from_folder(testing.save_llada_checkpoint("tiny-llada"), device="cpu")
"""
from __future__ import annotations

import os
from typing import Optional

from fastremask.models.native.common import (INDEX_NAME, SINGLE_NAME, NativeConfig, NativeModel, NativeOutput,
                                             _error, load_weights, parse_dtype, read_config, weight_names)
from fastremask.models.native.dream import DreamModel, dream_config
from fastremask.models.native.llada import LLaDAModel, llada_config
from fastremask.models.native.llada2 import LLaDA2Model, check_experts, llada2_config
from fastremask.models.native.sdar import SDARModel, sdar_config

__all__ = ["NATIVE_TYPES", "NativeConfig", "NativeModel", "NativeOutput", "LLaDAModel", "DreamModel", "SDARModel",
           "LLaDA2Model",
           "from_folder", "native_family", "published_layout"]

# config.json model_type (lower-cased) -> (family, model class, config check, the embedding's name)
NATIVE_TYPES = {
    "llada": ("llada", LLaDAModel, llada_config, "model.transformer.wte.weight"),
    "dream": ("dream", DreamModel, dream_config, "model.embed_tokens.weight"),
    "sdar": ("sdar", SDARModel, sdar_config, "model.embed_tokens.weight"),
    "llada2_moe": ("llada2", LLaDA2Model, llada2_config, "model.word_embeddings.weight"),
}
_IGNORE = ("rotary_emb.inv_freq",)


def native_family(model_type) -> Optional[str]:
    """``"llada"`` / ``"dream"`` for a model type with a native forward, else None."""
    entry = NATIVE_TYPES.get(str(model_type).lower()) if model_type is not None else None
    return entry[0] if entry else None


def published_layout(folder: str, model_type) -> Optional[bool]:
    """Whether ``folder``'s safetensors weights use the published names of ``model_type``
    (judged by the embedding's name: ``model.transformer.wte.weight`` for LLaDA,
    ``model.embed_tokens.weight`` for Dream); None when the folder holds no safetensors
    weights (or no index) to judge by."""
    entry = NATIVE_TYPES.get(str(model_type).lower())
    if entry is None:
        return False
    names = weight_names(os.fspath(folder))
    if names is None:
        return None
    return entry[3] in names


def from_folder(folder, *, dtype="auto", device="cpu", raw: Optional[dict] = None) -> NativeModel:
    """Build the native model of a checkpoint folder (``config.json`` + safetensors).

    ``dtype``: ``"auto"`` (``config.json``'s ``torch_dtype``, else as stored), a `torch.dtype` or
    a name (``"bf16"``, ...). Errors (a missing shard, a wrong shape, a field out of range) are
    `fastremask.models.ModelLoadError` naming the file and the field or tensor.
    """
    folder = os.fspath(folder)
    if raw is None:
        raw = read_config(folder)
    cfg_path = os.path.join(folder, "config.json")
    mt = raw.get("model_type")
    entry = NATIVE_TYPES.get(str(mt).lower()) if isinstance(mt, str) else None
    if entry is None:
        raise _error(f"{cfg_path}: field 'model_type' is {mt!r}; the native models are "
                     f"{', '.join(repr(k) for k in ('llada', 'Dream', 'sdar', 'llada2_moe'))}")
    _, cls, check, _ = entry
    config = check(raw, cfg_path)
    if cls is LLaDA2Model:
        check_experts(config, weight_names(folder) or ())
    tdtype = parse_dtype(dtype, raw, cfg_path)
    model = cls(config, device="meta")
    ignore = _IGNORE + (("lm_head.weight",) if cls is not LLaDAModel and config.tied else ())
    load_weights(model, folder, dtype=tdtype, device=device, ignore=ignore)
    model.requires_grad_(False)
    model.prepare()
    return model.eval()


# re-exported for the loader's messages
WEIGHT_FILES = (SINGLE_NAME, INDEX_NAME)
