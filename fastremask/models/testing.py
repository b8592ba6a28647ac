"""Tiny Hugging Face checkpoints on disk, built offline, for tests of the real loading path.

Two kinds of folders, both with a tokenizer built with ``tokenizers`` (word level, the
family's special tokens, a chat template), wrapped as a `transformers.PreTrainedTokenizerFast`:

* **the published layout** (`save_llada_checkpoint`, `save_dream_checkpoint`): LLaDA's and
  Dream's real ``config.json`` fields (``model_type``, ``architectures``, the published
  ``auto_map``, shapes, ids) and safetensors under the published weight names, in one file or
  in shards with ``model.safetensors.index.json``; tiny and random. The modeling files the
  ``auto_map`` names are absent, as they are to a `transformers` that cannot run them: these
  load through the native models (`fastremask.models.native`).
* **look-alikes with remote code** (``save_tiny_*``): a small model of the family's interface,
  written for `transformers` 5.x (`fastremask.models.hf_tiny`, copied into the folder as
  ``modeling_tiny.py`` and named by ``auto_map``), with its own weight names: these load
  through `transformers` with ``trust_remote_code=True``, the fallback path.

Weights are a pure function of ``seed``.
"""
from __future__ import annotations

import functools
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
    "save_llada_checkpoint",
    "save_dream_checkpoint",
    "llada_state",
    "dream_state",
    "sdar_tokenizer",
    "llada2_tokenizer",
    "save_sdar_checkpoint",
    "save_sdar_moe_checkpoint",
    "save_llada2_checkpoint",
    "sdar_state",
    "llada2_state",
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


LLADA2_CHAT_TEMPLATE = (
    "{% for m in messages %}<role>{{ {'user': 'HUMAN', 'assistant': 'ASSISTANT', 'system': 'SYSTEM'}[m['role']] }}"
    "</role>{{ m['content'] }}<|role_end|>{% endfor %}"
    "{% if add_generation_prompt %}<role>ASSISTANT</role>{% endif %}"
)


def sdar_tokenizer():
    """SDAR's (Qwen3's) special tokens: ``<|endoftext|>`` (EOS, pad), ``<|im_start|>``,
    ``<|im_end|>`` (EoT) and ``<|MASK|>`` (SDAR's mask token, declared as ``mask_token``)."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|MASK|>"]
    return _word_tokenizer(specials, DREAM_CHAT_TEMPLATE, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                           pad_token="<|endoftext|>", mask_token="<|MASK|>")


def llada2_tokenizer():
    """LLaDA2's (Ling's) special tokens: ``<|endoftext|>`` (EOS, pad), ``<|role_end|>`` (end of a
    turn), ``<role>``/``</role>`` for the chat template and ``<|mask|>`` (the mask token)."""
    specials = ["<|endoftext|>", "<|role_end|>", "<role>", "</role>", "<|mask|>"]
    return _word_tokenizer(specials, LLADA2_CHAT_TEMPLATE, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                           pad_token="<|endoftext|>", mask_token="<|mask|>")


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


# ----------------------------------------------------------------------------- the published layouts
#
# The config.json fields below are the ones LLaDA-8B-Instruct's and Dream-v0-Instruct-7B's
# published configs carry (shapes shrunk); the weight names are the published ones.

LLADA_AUTO_MAP = {
    "AutoConfig": "configuration_llada.LLaDAConfig",
    "AutoModel": "modeling_llada.LLaDAModelLM",
    "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
}
DREAM_AUTO_MAP = {
    "AutoConfig": "configuration_dream.DreamConfig",
    "AutoModel": "modeling_dream.DreamModel",
}
SDAR_AUTO_MAP = {
    "AutoConfig": "configuration_sdar.SDARConfig",
    "AutoModel": "modeling_sdar.SDARModel",
    "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM",
}
SDAR_MOE_AUTO_MAP = {
    "AutoConfig": "configuration_sdar_moe.SDARMoeConfig",
    "AutoModel": "modeling_sdar_moe.SDARMoeModel",
    "AutoModelForCausalLM": "modeling_sdar_moe.SDARMoeForCausalLM",
}
LLADA2_AUTO_MAP = {
    "AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
    "AutoModel": "modeling_llada2_moe.LLaDA2MoeModel",
    "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM",
}
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _llada_config(tok, dtype, overrides: dict) -> dict:
    eos = tok.eos_token_id
    cfg = {
        "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
        "auto_map": dict(LLADA_AUTO_MAP), "bias_for_layer_norm": False, "block_group_size": 1,
        "block_type": "llama", "d_model": 32, "embedding_dropout": 0.0, "embedding_size": len(tok),
        "eos_token_id": eos, "flash_attention": False, "include_bias": False, "include_qkv_bias": False,
        "init_cutoff_factor": None, "init_device": "meta", "init_fn": "mitchell", "init_std": 0.02,
        "input_emb_norm": False, "layer_norm_type": "rms", "layer_norm_with_affine": True,
        "mask_token_id": tok.convert_tokens_to_ids("<|mdm_mask|>"), "max_sequence_length": 4096,
        "mlp_hidden_size": 64, "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": None,
        "n_heads": 4, "n_kv_heads": 4, "n_layers": 2, "pad_token_id": eos, "precision": "amp_bf16",
        "residual_dropout": 0.0, "rms_norm_eps": 1e-05, "rope": True, "rope_full_precision": True,
        "rope_theta": 500000.0, "scale_logits": False, "torch_dtype": _DTYPE_NAMES[dtype],
        "transformers_version": "4.46.3", "use_cache": False, "vocab_size": len(tok), "weight_tying": False,
    }
    cfg.update(overrides)
    return cfg


def _dream_config(tok, dtype, overrides: dict) -> dict:
    cfg = {
        "architectures": ["DreamModel"], "attention_dropout": 0.0, "auto_map": dict(DREAM_AUTO_MAP),
        "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "hidden_act": "silu",
        "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 64, "mask_token_id": tok.mask_token_id,
        "max_position_embeddings": 131072, "max_window_layers": 28, "model_type": "Dream",
        "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 4,
        "pad_token_id": tok.pad_token_id, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0,
        "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": _DTYPE_NAMES[dtype],
        "transformers_version": "4.46.2", "use_cache": False, "use_sliding_window": False, "vocab_size": len(tok),
    }
    cfg.update(overrides)
    return cfg


def _sdar_config(tok, dtype, overrides: dict) -> dict:
    """SDAR-1.7B-Chat's config.json fields, shapes shrunk (head_dim 8 while hidden/heads is 4,
    as SDAR's head_dim 128 differs from 2048 / 16)."""
    cfg = {
        "architectures": ["SDARForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "attn_implementation": "flex_attention", "auto_map": dict(SDAR_AUTO_MAP), "block_size": 4,
        "bos_token_id": tok.bos_token_id, "debug": False, "eos_token_id": tok.eos_token_id, "ep_size": 1,
        "fuse_cross_entropy": True, "head_dim": 8, "hidden_act": "silu", "hidden_size": 32,
        "initializer_range": 0.02, "intermediate_size": 64, "mask_token_id": tok.mask_token_id,
        "max_position_embeddings": 32768, "max_window_layers": 28, "micro_forward": False, "model_type": "sdar",
        "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
        "rope_scaling": None, "rope_theta": 1000000, "skip_checkpoint": False, "sliding_window": None,
        "tie_word_embeddings": False, "torch_dtype": _DTYPE_NAMES[dtype], "transformers_version": "4.52.4",
        "use_cache": False, "use_deepep": False, "use_sliding_window": False, "vocab_size": len(tok),
    }
    cfg.update(overrides)
    return cfg


def _sdar_moe_config(tok, dtype, overrides: dict) -> dict:
    """SDAR-30B-A3B-Chat's config.json fields (``sdar_moe``: Qwen3-MoE's, plus ``block_size``),
    shapes shrunk: 8 experts of 16, top-2, ``norm_topk_prob`` true, 3 layers (the middle one
    dense through ``mlp_only_layers``), head_dim 8."""
    cfg = _sdar_config(tok, dtype, {})
    cfg.update({
        "architectures": ["SDARMoeForCausalLM"], "auto_map": dict(SDAR_MOE_AUTO_MAP), "model_type": "sdar_moe",
        "decoder_sparse_step": 1, "mlp_only_layers": [1], "moe_intermediate_size": 16, "norm_topk_prob": True,
        "num_experts": 8, "num_experts_per_tok": 2, "num_hidden_layers": 3, "output_router_logits": False,
        "router_aux_loss_coef": 0.001,
    })
    cfg.update(overrides)
    return cfg


def _llada2_config(tok, dtype, overrides: dict) -> dict:
    """LLaDA2.0-mini's config.json fields (``llada2_moe``), shapes shrunk: 8 experts in 4 groups
    (2 chosen), top-2, one shared expert, the first layer dense."""
    cfg = {
        "architectures": ["LLaDA2MoeModelLM"], "attention_dropout": 0.0, "auto_map": dict(LLADA2_AUTO_MAP),
        "embedding_dropout": 0.0, "eos_token_id": tok.eos_token_id, "first_k_dense_replace": 1, "head_dim": 8,
        "hidden_act": "silu", "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 64,
        "max_position_embeddings": 32768, "max_window_layers": 20, "model_type": "llada2_moe",
        "moe_intermediate_size": 16, "moe_router_enable_expert_bias": True, "n_group": 4, "norm_head": False,
        "norm_topk_prob": True, "num_attention_heads": 4, "num_experts": 8, "num_experts_per_tok": 2,
        "num_hidden_layers": 3, "num_key_value_heads": 2, "num_shared_experts": 1, "output_dropout": 0.0,
        "output_router_logits": False, "pad_token_id": tok.pad_token_id, "partial_rotary_factor": 0.5,
        "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 600000, "routed_scaling_factor": 2.5,
        "router_dtype": "fp32", "score_function": "sigmoid", "tie_word_embeddings": False, "topk_group": 2,
        "torch_dtype": _DTYPE_NAMES[dtype], "transformers_version": "4.52.3", "use_bias": False,
        "use_cache": False, "use_qk_norm": True, "use_qkv_bias": False, "use_rmsnorm": True,
        "use_sliding_window": False, "vocab_size": len(tok),
    }
    cfg.update(overrides)
    return cfg


def _random(g, shape, std):
    return torch.randn(shape, generator=g, dtype=torch.float32) * std


def _linear(st: dict, g, name: str, out: int, inp: int, bias: bool = False) -> None:
    """``st[name.weight]`` ``[out, inp]`` N(0, 1 / inp), and ``st[name.bias]`` 0.1 N(0, 1) with ``bias``."""
    st[name + ".weight"] = _random(g, (out, inp), 1.0 / inp ** 0.5)
    if bias:
        st[name + ".bias"] = _random(g, (out,), 0.1)


def llada_state(cfg: dict, seed: int = 0) -> dict:
    """Random weights for a LLaDA ``config.json`` dict, under the published names (fp32).

    Norm weights are ``1 + 0.1 N(0, 1)`` and biases (``include_bias``) ``0.1 N(0, 1)``, so a
    norm or bias applied in the wrong place shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    d, L, H = cfg["d_model"], cfg["n_layers"], cfg["n_heads"]
    kv = (1 if cfg.get("multi_query_attention") else cfg.get("n_kv_heads") or H) * (d // H)
    hidden = cfg.get("mlp_hidden_size") or cfg["mlp_ratio"] * d
    rows = cfg.get("embedding_size") or cfg["vocab_size"]
    bias = cfg.get("include_bias", False)
    qkv_bias = bias or cfg.get("include_qkv_bias", False)
    nb = cfg.get("bias_for_layer_norm")
    norm_bias = bias if nb is None else nb
    st = {"model.transformer.wte.weight": _random(g, (rows, d), 1.0)}

    lin = functools.partial(_linear, st, g)

    def norm(name):
        st[name + ".weight"] = 1.0 + _random(g, (d,), 0.1)
        if norm_bias:
            st[name + ".bias"] = _random(g, (d,), 0.1)

    for i in range(L):
        p = f"model.transformer.blocks.{i}."
        norm(p + "attn_norm")
        lin(p + "q_proj", d, d, qkv_bias)
        lin(p + "k_proj", kv, d, qkv_bias)
        lin(p + "v_proj", kv, d, qkv_bias)
        lin(p + "attn_out", d, d, bias)
        norm(p + "ff_norm")
        lin(p + "ff_proj", hidden, d, bias)
        lin(p + "up_proj", hidden, d, bias)
        lin(p + "ff_out", d, hidden, bias)
    norm("model.transformer.ln_f")
    if not cfg.get("weight_tying", False):
        st["model.transformer.ff_out.weight"] = _random(g, (rows, d), 3.0 / d ** 0.5)
        if bias:
            st["model.transformer.ff_out.bias"] = _random(g, (rows,), 0.1)
    return st


def dream_state(cfg: dict, seed: int = 0) -> dict:
    """Random weights for a Dream ``config.json`` dict, under the published (Qwen2) names (fp32)."""
    g = torch.Generator().manual_seed(seed)
    d, L, H = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    kv = (cfg.get("num_key_value_heads") or H) * (d // H)
    hidden, V = cfg["intermediate_size"], cfg["vocab_size"]
    st = {"model.embed_tokens.weight": _random(g, (V, d), 1.0)}

    lin = functools.partial(_linear, st, g)

    for i in range(L):
        p = f"model.layers.{i}."
        st[p + "input_layernorm.weight"] = 1.0 + _random(g, (d,), 0.1)
        lin(p + "self_attn.q_proj", d, d, True)
        lin(p + "self_attn.k_proj", kv, d, True)
        lin(p + "self_attn.v_proj", kv, d, True)
        lin(p + "self_attn.o_proj", d, d, False)
        st[p + "post_attention_layernorm.weight"] = 1.0 + _random(g, (d,), 0.1)
        _swiglu(lin, p + "mlp.", hidden, d)
    st["model.norm.weight"] = 1.0 + _random(g, (d,), 0.1)
    if not cfg.get("tie_word_embeddings", False):
        st["lm_head.weight"] = _random(g, (V, d), 3.0 / d ** 0.5)
    return st


def _swiglu(lin, prefix: str, hidden: int, d: int) -> None:
    """A SwiGLU MLP's ``gate_proj``, ``up_proj``, ``down_proj`` under ``prefix`` (Qwen's names)."""
    lin(prefix + "gate_proj", hidden, d)
    lin(prefix + "up_proj", hidden, d)
    lin(prefix + "down_proj", d, hidden)


def _head_dim(cfg, hidden, heads):
    return cfg.get("head_dim") or hidden // heads


def sdar_state(cfg: dict, seed: int = 0) -> dict:
    """Random weights for an SDAR ``config.json`` dict, under the published (Qwen3) names (fp32);
    an ``sdar_moe`` config gets Qwen3-MoE's ``mlp.gate`` and ``mlp.experts.E.*`` in its sparse
    layers.
    Norm weights (also ``q_norm``/``k_norm``) are ``1 + 0.1 N(0, 1)``."""
    g = torch.Generator().manual_seed(seed)
    d, L, H = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    hd = _head_dim(cfg, d, H)
    kv = (cfg.get("num_key_value_heads") or H) * hd
    hidden, V, bias = cfg.get("intermediate_size"), cfg["vocab_size"], cfg.get("attention_bias", False)
    moe = set()
    if cfg.get("model_type") == "sdar_moe":        # Qwen3-MoE's choice of sparse layers
        moe = {i for i in range(L) if (i + 1) % cfg.get("decoder_sparse_step", 1) == 0
               and i not in (cfg.get("mlp_only_layers") or [])}
    st = {"model.embed_tokens.weight": _random(g, (V, d), 1.0)}

    lin = functools.partial(_linear, st, g)

    for i in range(L):
        p = f"model.layers.{i}."
        st[p + "input_layernorm.weight"] = 1.0 + _random(g, (d,), 0.1)
        lin(p + "self_attn.q_proj", H * hd, d, bias)
        lin(p + "self_attn.k_proj", kv, d, bias)
        lin(p + "self_attn.v_proj", kv, d, bias)
        lin(p + "self_attn.o_proj", d, H * hd, bias)
        st[p + "self_attn.q_norm.weight"] = 1.0 + _random(g, (hd,), 0.1)
        st[p + "self_attn.k_norm.weight"] = 1.0 + _random(g, (hd,), 0.1)
        st[p + "post_attention_layernorm.weight"] = 1.0 + _random(g, (d,), 0.1)
        if i in moe:                                   # SDAR-MoE: the router and the experts
            lin(p + "mlp.gate", cfg["num_experts"], d)
            for e in range(cfg["num_experts"]):
                _swiglu(lin, p + f"mlp.experts.{e}.", cfg["moe_intermediate_size"], d)
            continue
        _swiglu(lin, p + "mlp.", hidden, d)
    st["model.norm.weight"] = 1.0 + _random(g, (d,), 0.1)
    if not cfg.get("tie_word_embeddings", False):
        st["lm_head.weight"] = _random(g, (V, d), 3.0 / d ** 0.5)
    return st


def llada2_state(cfg: dict, seed: int = 0) -> dict:
    """Random weights for a LLaDA2 (``llada2_moe``) ``config.json`` dict, under the published
    names (fp32): ``model.word_embeddings``, ``model.layers.N.attention.{query_key_value,
    query_layernorm, key_layernorm, dense}``, dense ``mlp.{gate,up,down}_proj`` in the first
    ``first_k_dense_replace`` layers, else ``mlp.gate.{weight, expert_bias}``,
    ``mlp.experts.E.*`` and ``mlp.shared_experts.*``; ``model.norm``, ``lm_head``. The router's
    ``expert_bias`` is ``0.1 N(0, 1)``, so a bias applied in the wrong place shows in the routing."""
    g = torch.Generator().manual_seed(seed)
    d, L, H = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    hd = _head_dim(cfg, d, H)
    kv = cfg.get("num_key_value_heads") or H
    V, E = cfg["vocab_size"], cfg["num_experts"]
    st = {"model.word_embeddings.weight": _random(g, (V, d), 1.0)}

    lin = functools.partial(_linear, st, g)

    for i in range(L):
        p = f"model.layers.{i}."
        st[p + "input_layernorm.weight"] = 1.0 + _random(g, (d,), 0.1)
        lin(p + "attention.query_key_value", (H + 2 * kv) * hd, d, cfg.get("use_qkv_bias", False))
        if cfg.get("use_qk_norm", True):
            st[p + "attention.query_layernorm.weight"] = 1.0 + _random(g, (hd,), 0.1)
            st[p + "attention.key_layernorm.weight"] = 1.0 + _random(g, (hd,), 0.1)
        lin(p + "attention.dense", d, H * hd, cfg.get("use_bias", True))
        st[p + "post_attention_layernorm.weight"] = 1.0 + _random(g, (d,), 0.1)
        if i < cfg.get("first_k_dense_replace", 0):
            _swiglu(lin, p + "mlp.", cfg["intermediate_size"], d)
            continue
        st[p + "mlp.gate.weight"] = _random(g, (E, d), 1.0 / d ** 0.5)
        st[p + "mlp.gate.expert_bias"] = _random(g, (E,), 0.1)
        for e in range(E):
            _swiglu(lin, p + f"mlp.experts.{e}.", cfg["moe_intermediate_size"], d)
        if cfg.get("num_shared_experts"):
            _swiglu(lin, p + "mlp.shared_experts.", cfg["moe_intermediate_size"] * cfg["num_shared_experts"], d)
    st["model.norm.weight"] = 1.0 + _random(g, (d,), 0.1)
    if not cfg.get("tie_word_embeddings", False):
        st["lm_head.weight"] = _random(g, (V, d), 3.0 / d ** 0.5)
    return st


def _write_weights(folder: str, state: dict, shards: int, dtype) -> None:
    """``model.safetensors``, or ``shards`` files ``model-0000k-of-0000n.safetensors`` (tensors in
    order, split evenly) and ``model.safetensors.index.json``, as `transformers` writes them."""
    from safetensors.torch import save_file

    if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= len(state):
        raise ValueError(f"shards must be an int in [1, {len(state)}], got {shards!r}")
    state = {k: v.to(dtype).contiguous() for k, v in state.items()}
    names = list(state)
    if shards == 1:
        save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        return
    per = -(-len(names) // shards)
    weight_map, total = {}, 0
    for k in range(shards):
        part = names[k * per:(k + 1) * per]
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: state[n] for n in part}, os.path.join(folder, fname), metadata={"format": "pt"})
        for n in part:
            weight_map[n] = fname
            total += state[n].numel() * state[n].element_size()
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")


def _save_published(folder, cfg: dict, state: dict, tok, shards: int, dtype) -> str:
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    _write_weights(folder, state, shards, dtype)
    tok.save_pretrained(folder)
    return folder


def save_llada_checkpoint(folder, *, shards: int = 1, dtype: torch.dtype = torch.float32, seed: int = 0,
                          **config_overrides) -> str:
    """A tiny random LLaDA checkpoint in the published layout in ``folder``; returns the folder.

    ``config.json`` has LLaDA-8B's fields (``model_type "llada"``, ``architectures
    ["LLaDAModelLM"]``, the published ``auto_map``, ``block_type "llama"``, ``rope_theta``
    500000, ``mask_token_id`` ...) with d_model 32, 4 heads, 2 layers, MLP 64 and the
    tokenizer's vocabulary; ``config_overrides`` replace fields (``n_kv_heads=2`` for GQA,
    ``weight_tying=True``, ``include_bias=True``, ...). Weights under the published names
    (``model.transformer.wte.weight``, ``model.transformer.blocks.N.q_proj.weight``, ...) in
    ``dtype``, in ``shards`` files (with ``model.safetensors.index.json`` when more than one).
    """
    tok = llada_tokenizer()
    cfg = _llada_config(tok, dtype, config_overrides)
    return _save_published(folder, cfg, llada_state(cfg, seed), tok, shards, dtype)


def save_dream_checkpoint(folder, *, shards: int = 1, dtype: torch.dtype = torch.float32, seed: int = 0,
                          **config_overrides) -> str:
    """A tiny random Dream checkpoint in the published layout in ``folder``; returns the folder.

    ``config.json`` has Dream-v0's (Qwen2's) fields (``model_type "Dream"``, ``architectures
    ["DreamModel"]``, the published ``auto_map``, ``rope_theta`` 1e6, ``rms_norm_eps`` 1e-6,
    ``mask_token_id`` ...) with hidden_size 32, 4 heads, 2 layers, intermediate 64;
    ``config_overrides`` replace fields (``num_key_value_heads=2`` for GQA, ...). Weights under
    the published names (``model.embed_tokens.weight``, ``model.layers.N.self_attn.q_proj.bias``,
    ``lm_head.weight``, ...) in ``dtype``, in ``shards`` files.
    """
    tok = dream_tokenizer()
    cfg = _dream_config(tok, dtype, config_overrides)
    return _save_published(folder, cfg, dream_state(cfg, seed), tok, shards, dtype)


def save_sdar_checkpoint(folder, *, shards: int = 1, dtype: torch.dtype = torch.float32, seed: int = 0,
                         **config_overrides) -> str:
    """A tiny random SDAR checkpoint in the published layout in ``folder``; returns the folder.

    ``config.json`` has SDAR-1.7B-Chat's fields (``model_type "sdar"``, ``architectures
    ["SDARForCausalLM"]``, the published ``auto_map``, ``block_size`` 4, ``head_dim``,
    ``rope_theta`` 1e6, ``mask_token_id`` ...) with hidden_size 32, 4 heads of 8 (2 key/value
    heads), 2 layers, intermediate 64 and the tokenizer's vocabulary (``<|MASK|>`` the mask);
    ``config_overrides`` replace fields (``tie_word_embeddings=True``, ``attention_bias=True``,
    ``block_size=8``, ...). Weights under the published names (``model.embed_tokens.weight``,
    ``model.layers.N.self_attn.q_norm.weight``, ``lm_head.weight``, ...) in ``dtype``, in
    ``shards`` files (with ``model.safetensors.index.json`` when more than one).
    """
    tok = sdar_tokenizer()
    cfg = _sdar_config(tok, dtype, config_overrides)
    return _save_published(folder, cfg, sdar_state(cfg, seed), tok, shards, dtype)


def save_sdar_moe_checkpoint(folder, *, shards: int = 1, dtype: torch.dtype = torch.float32, seed: int = 0,
                             **config_overrides) -> str:
    """A tiny random SDAR-MoE checkpoint in the published layout in ``folder``; returns the folder.

    ``config.json`` has SDAR-30B-A3B-Chat's fields (``model_type "sdar_moe"``, ``architectures
    ["SDARMoeForCausalLM"]``, the ``auto_map`` of its ``modeling_sdar_moe.py``, Qwen3-MoE's
    ``num_experts``, ``num_experts_per_tok``, ``moe_intermediate_size``, ``norm_topk_prob``,
    ``decoder_sparse_step``, ``mlp_only_layers``, ``block_size`` 4) with SDAR's tiny shapes
    (`save_sdar_checkpoint`), 3 layers of which layer 1 is dense (``mlp_only_layers`` [1]), 8
    experts of 16, top-2; ``config_overrides`` replace fields. Weights under the published names
    (``model.layers.N.mlp.gate.weight``, ``model.layers.N.mlp.experts.E.up_proj.weight``, ...).
    """
    tok = sdar_tokenizer()
    cfg = _sdar_moe_config(tok, dtype, config_overrides)
    return _save_published(folder, cfg, sdar_state(cfg, seed), tok, shards, dtype)


def save_llada2_checkpoint(folder, *, shards: int = 1, dtype: torch.dtype = torch.float32, seed: int = 0,
                           **config_overrides) -> str:
    """A tiny random LLaDA2 (MoE) checkpoint in the published layout in ``folder``; returns it.

    ``config.json`` has LLaDA2.0-mini's fields (``model_type "llada2_moe"``, ``architectures
    ["LLaDA2MoeModelLM"]``, the published ``auto_map``, ``partial_rotary_factor`` 0.5,
    ``rope_theta`` 600000, sigmoid router with expert bias, ``routed_scaling_factor`` 2.5,
    ``first_k_dense_replace`` 1 ...) with hidden_size 32, 4 heads of 8 (2 key/value heads), 3
    layers (the first dense), 8 experts of 16 in 4 groups (``topk_group`` 2), top-2, one shared
    expert, and the tokenizer's vocabulary (``<|mask|>`` the mask); ``config_overrides`` replace
    fields. Weights under the published names in ``dtype``, in ``shards`` files.
    """
    tok = llada2_tokenizer()
    cfg = _llada2_config(tok, dtype, config_overrides)
    return _save_published(folder, cfg, llada2_state(cfg, seed), tok, shards, dtype)
