"""Tiny Hugging Face checkpoints on disk, built offline, for tests of the real loading path.

Each ``save_tiny_*`` function writes a folder that looks like a user's checkpoint: a
``config.json`` (with ``auto_map`` and the modeling file beside it when ``remote_code`` is
True, as LLaDA and Dream ship theirs), ``model.safetensors`` and a tokenizer built with
``tokenizers`` (word level, the family's special tokens, a chat template), wrapped as a
`transformers.PreTrainedTokenizerFast`. Load them back with `fastremask.models.load` (or
``AutoModel.from_pretrained``) exactly as a real checkpoint is loaded.

The modeling file is `fastremask.models.hf_tiny`, copied into the folder as ``modeling_tiny.py``.
Weights are a pure function of ``seed``.
"""
from __future__ import annotations

import json
import os
import shutil

import torch

from fastremask.models import hf_tiny

__all__ = [
    "WORDS",
    "llada_tokenizer",
    "dream_tokenizer",
    "save_tiny_llada",
    "save_tiny_dream",
    "save_tiny_mdlm",
    "register_tiny_mdlm",
]

WORDS = (
    "hi i am a an the cat dog sat on mat is was years old and or to of in it you what who "
    "hello world yes no one two three four five six seven eight nine ten . , ? ! user assistant system"
).split()

LLADA_CHAT_TEMPLATE = (
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
DREAM_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _word_tokenizer(specials: list[str], chat_template: str, **roles):
    """A word-level `PreTrainedTokenizerFast`: ``specials`` first (ids 0..), then `WORDS`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(specials + ["<unk>"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", **roles)
    fast.chat_template = chat_template
    return fast


def llada_tokenizer(*, mask_token: bool = True):
    """LLaDA's special tokens: ``<|endoftext|>`` (EOS, also pad), ``<|eot_id|>`` (EoT),
    ``<|mdm_mask|>`` (in the vocabulary but, as in LLaDA's tokenizer, not declared as
    ``mask_token``; left out entirely with ``mask_token=False``), header tokens for the chat
    template."""
    specials = ["<|endoftext|>", "<|startoftext|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
    if mask_token:
        specials.append("<|mdm_mask|>")
    return _word_tokenizer(specials, LLADA_CHAT_TEMPLATE, bos_token="<|startoftext|>",
                           eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def dream_tokenizer(*, mask_token: bool = True):
    """Dream's (Qwen's) special tokens: ``<|endoftext|>`` (EOS, pad), ``<|im_start|>``,
    ``<|im_end|>`` (EoT), and ``<|mask|>`` declared as ``mask_token`` (unless ``mask_token=False``)."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    roles = dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    if mask_token:
        specials.append("<|mask|>")
        roles["mask_token"] = "<|mask|>"
    return _word_tokenizer(specials, DREAM_CHAT_TEMPLATE, **roles)


@torch.no_grad()
def _seed_weights(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator(device="cpu").manual_seed(seed)
    for name, p in model.named_parameters():
        if "norm" in name:
            p.fill_(1.0 if name.endswith("weight") else 0.0)
        elif name.endswith("bias"):
            p.zero_()
        else:
            std = 1.0 if p.dim() == 1 or "embed" in name or "pos" in name else 2.0 / p.shape[1] ** 0.5
            p.copy_(torch.randn(p.shape, generator=g) * std)


def _save(folder, model_cls, config, tokenizer, remote_code: bool, seed: int) -> str:
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    if remote_code:
        config.auto_map = {
            "AutoConfig": f"modeling_tiny.{type(config).__name__}",
            "AutoModel": f"modeling_tiny.{model_cls.__name__}",
            "AutoModelForCausalLM": f"modeling_tiny.{model_cls.__name__}",
        }
    model = model_cls(config)
    _seed_weights(model, seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if remote_code:
        shutil.copyfile(hf_tiny.__file__, os.path.join(folder, "modeling_tiny.py"))
    return folder


def save_tiny_llada(folder, *, remote_code: bool = True, mask_token: bool = True,
                    mask_in_config: bool = False, seed: int = 0) -> str:
    """A LLaDA-like checkpoint (``model_type "llada"``) in ``folder``; returns the folder.

    The mask id lives in the tokenizer's vocabulary only (``mask_in_config=True`` also writes
    ``mask_token_id`` into ``config.json``, as LLaDA's own config does)."""
    tok = llada_tokenizer(mask_token=mask_token)
    mask_id = tok.convert_tokens_to_ids("<|mdm_mask|>") if (mask_token and mask_in_config) else None
    config = hf_tiny.TinyLLaDAConfig(vocab_size=len(tok), mask_token_id=mask_id,
                                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return _save(folder, hf_tiny.TinyLLaDAModelLM, config, tok, remote_code, seed)


def save_tiny_dream(folder, *, remote_code: bool = True, mask_token: bool = True,
                    mask_in_config: bool = True, seed: int = 0) -> str:
    """A Dream-like checkpoint (``model_type "Dream"``, shifted logits) in ``folder``."""
    tok = dream_tokenizer(mask_token=mask_token)
    mask_id = tok.mask_token_id if (mask_token and mask_in_config) else None
    config = hf_tiny.TinyDreamConfig(vocab_size=len(tok), mask_token_id=mask_id,
                                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                     bos_token_id=tok.bos_token_id)
    return _save(folder, hf_tiny.TinyDreamModel, config, tok, remote_code, seed)


def save_tiny_mdlm(folder, *, remote_code: bool = True, seed: int = 0) -> str:
    """A checkpoint of a model type fastremask does not know (``"tiny-mdlm"``, LLaDA's
    interface, LLaDA's tokenizer): loading it needs ``family="llada"``. Without remote code,
    `transformers` needs the classes registered first (`register_tiny_mdlm`)."""
    tok = llada_tokenizer()
    config = hf_tiny.TinyMDLMConfig(vocab_size=len(tok), eos_token_id=tok.eos_token_id,
                                    pad_token_id=tok.pad_token_id)
    return _save(folder, hf_tiny.TinyMDLMModel, config, tok, remote_code, seed)


def register_tiny_mdlm() -> None:
    """Register ``"tiny-mdlm"`` with `transformers`' auto classes (as an installed model
    library would), so a checkpoint without remote code loads; idempotent."""
    from transformers import AutoConfig, AutoModel

    try:
        AutoConfig.register(hf_tiny.TinyMDLMConfig.model_type, hf_tiny.TinyMDLMConfig)
        AutoModel.register(hf_tiny.TinyMDLMConfig, hf_tiny.TinyMDLMModel)
    except ValueError:  # already registered
        pass


def read_config(folder) -> dict:
    with open(os.path.join(os.fspath(folder), "config.json")) as f:
        return json.load(f)
