"""Native forward passes for LLaDA, Dream, SDAR and LLaDA2: the published checkpoints without their code.

`fastremask.models.load` uses these for ``config.json`` ``model_type`` ``llada`` (LLaDA-8B
Base/Instruct, LLaDA-1.5; not ``lladamoe``), ``Dream`` (Dream-v0 7B), ``sdar`` (SDAR / TraDo,
dense), ``sdar_moe`` (SDAR-30B-A3B, MoE) and ``llada2_moe`` (LLaDA2.0/2.1 mini and flash), whatever the installed
`transformers` version, and needs no ``trust_remote_code``. The models read ``config.json`` and
the safetensors weights (``model.safetensors``, or shards listed in
``model.safetensors.index.json``) under the published weight names, in fp32/bf16/fp16 on CPU or
CUDA, and present the interface `fastremask.generate` calls::

    model(input_ids [B, L], attention_mask [B, L] | None).logits   # [B, L, V], i scores token i
    model.window_logits(input_ids, attention_mask, start, length)  # [B, length, V]
    model.cached_logits(input_ids, attention_mask, cache, query=(q0, q1), out=(o0, o1))
    model.device, model.dtype, model.config.vocab_size

The last is the block KV-cache protocol of `fastremask.models.kv`. The block-diffusion models
(SDAR, LLaDA2) attend block-causally and implement `fastremask.sampler.block`'s
``block_logits`` (the exact block cache) as well. Which model type each
class reads, its published embedding name and its logits shift (Dream's right shift, applied
inside the model by `NativeModel`) are the family records' (`fastremask.models.family`).

>>> from fastremask.models import native, testing
>>> m = native.from_folder(testing.save_llada_checkpoint("tiny-llada"), device="cpu")
"""
from __future__ import annotations

import os
from typing import Optional

from fastremask.models.family import FAMILIES, Family, family_for
from fastremask.models.native.common import (INDEX_NAME, SINGLE_NAME, NativeConfig, NativeModel, NativeOutput,
                                             _error, load_weights, parse_dtype, read_config, weight_names)
from fastremask.models.native.dream import DreamModel, dream_config
from fastremask.models.native.llada import LLaDAModel, llada_config
from fastremask.models.native.llada2 import LLaDA2Model, llada2_config
from fastremask.models.native.sdar import SDARModel, sdar_config

__all__ = ["NativeConfig", "NativeModel", "NativeOutput", "LLaDAModel", "DreamModel", "SDARModel", "LLaDA2Model",
           "llada_config", "dream_config", "sdar_config", "llada2_config", "from_folder", "native_family",
           "native_record", "published_layout"]


def native_record(model_type) -> Optional[Family]:
    """The family record whose native forward reads ``model_type`` (its ``native_types``),
    else None."""
    record = family_for(model_type)
    if record is None or str(model_type).lower() not in record.native_types:
        return None
    return record


def native_family(model_type) -> Optional[str]:
    """``"llada"`` / ``"dream"`` for a model type with a native forward, else None."""
    record = native_record(model_type)
    return record.name if record is not None else None


def published_layout(folder: str, model_type) -> Optional[bool]:
    """Whether ``folder``'s safetensors weights use the published names of ``model_type``
    (judged by the family record's ``embedding``: ``model.transformer.wte.weight`` for LLaDA,
    ``model.embed_tokens.weight`` for Dream); None when the folder holds no safetensors
    weights (or no index) to judge by."""
    record = native_record(model_type)
    if record is None:
        return False
    names = weight_names(os.fspath(folder))
    if names is None:
        return None
    return record.embedding in names


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
    record = native_record(mt) if isinstance(mt, str) else None
    if record is None:
        natives = ", ".join(repr(t) for f in FAMILIES.values() for t in f.native_types)
        raise _error(f"{cfg_path}: field 'model_type' is {mt!r}; the native models are {natives}")
    cls = record.native_class()
    config = cls.check_config(raw, cfg_path)
    cls.check_checkpoint(config, weight_names(folder) or set())
    tdtype = parse_dtype(dtype, raw, cfg_path)
    model = cls(config, device="meta")
    load_weights(model, folder, dtype=tdtype, device=device, ignore=cls.ignored_weights(config))
    model.requires_grad_(False)
    model.prepare()
    return model.eval()


# re-exported for the loader's messages
WEIGHT_FILES = (SINGLE_NAME, INDEX_NAME)
