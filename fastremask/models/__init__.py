"""Loading checkpoints and adapting models to the interface `fastremask.generate` calls.

`generate` calls ``model(x, attention_mask=...)`` and reads ``.logits`` (``[B, L, V]``, the
output at position ``i`` scoring the token *at* ``i``) and ``model.device``, which is LLaDA's
interface. An `Adapter` presents exactly that for every supported family; the families are
records (`fastremask.models.family.FAMILIES`: ``"llada"`` — LLaDA-8B Base/Instruct, LLaDA-1.5,
LLaDA-MoE —, ``"dream"`` — Dream-v0 7B, whose output at ``i - 1`` scores the token at ``i`` —,
``"tiny"`` — the built-in `TinyMaskedLM` —, ``"callable"`` — any ``model(x, attention_mask) ->
logits``).

`load` runs ``llada`` and ``Dream`` checkpoints in the published layout with the project's own
forward passes (`fastremask.models.native`: no remote code, any `transformers` version); other
models load through `transformers`, with their remote code when they ship it. The mask id,
EOS/EoT and pad ids and the chat template come from the checkpoint where they exist; the
family's published ids are used only as a last resort and only when they fit the vocabulary.

This module is the package's face: the names below are defined in

====================  ==============================================================
`family`              `Family`, `FAMILIES`, `register`, `family_for`: one record per family
`adapters`            `Adapter` and its subclasses, `wrap`, `pad_batch`, `detect_family`
`ids`                 special-id resolution (`MASK_TOKENS`, ...)
`loading`             `load` (a dispatcher over the tiny, native and transformers paths),
                      `max_positions`, `REMOTE_CODE_TRANSFORMERS`
`fastremask.sampler.protocol`  `window_logits`, `check_window_support`, `output_head`,
                      `ModelLoadError` (the model-call protocol the models implement)
====================  ==============================================================

and are imported on first use (PEP 562), so ``fastremask.models.family`` can be read without
torch (the command line's ``--family`` choices).

>>> adapter = load("GSAI-ML/LLaDA-8B-Instruct", dtype=torch.bfloat16)
>>> ids, mask = adapter.encode(["What is 2 + 2?"], chat=True)
>>> out = fastremask.generate(adapter, ids, mask, mask_id=adapter.mask_id, ...)
"""
import importlib

# public name -> the module that defines it
_LAZY = {
    "Adapter": "fastremask.models.adapters",
    "CallableAdapter": "fastremask.models.adapters",
    "TinyAdapter": "fastremask.models.adapters",
    "DreamAdapter": "fastremask.models.adapters",
    "NativeAdapter": "fastremask.models.adapters",
    "ModelOutput": "fastremask.models.adapters",
    "PadIsMaskError": "fastremask.models.adapters",
    "detect_family": "fastremask.models.adapters",
    "pad_batch": "fastremask.models.adapters",
    "wrap": "fastremask.models.adapters",
    "Family": "fastremask.models.family",
    "FAMILIES": "fastremask.models.family",
    "register": "fastremask.models.family",
    "family_for": "fastremask.models.family",
    "MASK_TOKENS": "fastremask.models.ids",
    "EOS_TOKENS": "fastremask.models.ids",
    "EOT_TOKENS": "fastremask.models.ids",
    "load": "fastremask.models.loading",
    "max_positions": "fastremask.models.loading",
    "REMOTE_CODE_TRANSFORMERS": "fastremask.models.loading",
    "tiny_tokenizer": "fastremask.models.tokenizer",
    "ModelLoadError": "fastremask.sampler.protocol",
    "check_window_support": "fastremask.sampler.protocol",
    "output_head": "fastremask.sampler.protocol",
    "window_logits": "fastremask.sampler.protocol",
}
_SUBMODULES = ("adapters", "checks", "demo", "dtypes", "family", "hf_tiny", "ids", "kv", "loading", "native", "shift",
               "testing", "tiny", "tokenizer")

__all__ = ["Adapter", "DreamAdapter", "NativeAdapter", "REMOTE_CODE_TRANSFORMERS", "FAMILIES", "MODEL_TYPES",
           "Family", "ModelLoadError", "ModelOutput", "PadIsMaskError", "check_window_support", "detect_family",
           "family_for", "load", "max_positions", "pad_batch", "output_head", "register", "tiny_tokenizer",
           "window_logits", "wrap"]


def __getattr__(name):
    if name == "MODEL_TYPES":            # {model_type: family}, read from the registry at each access
        from fastremask.models.family import model_types
        return model_types()
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value          # later lookups skip __getattr__
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY, *_SUBMODULES, "MODEL_TYPES"})
