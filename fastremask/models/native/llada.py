"""LLaDA (LLaDA-8B Base/Instruct, LLaDA-1.5), written from the published architecture.

The published checkpoint (``model_type "llada"``, ``LLaDAModelLM``) is an OLMo-style
``LLaDAModel`` with ``block_type "llama"`` blocks, under the weight names
``model.transformer.{wte, blocks.N.*, ln_f, ff_out}``. Per block, pre-norm::

    h = x + attn_out(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n)))   n = attn_norm(x)
    y = h + ff_out(silu(ff_proj(m)) * up_proj(m))                              m = ff_norm(h)

RMSNorm (``rms_norm_eps``; fp32 statistics, cast back, then the weight), rotary embeddings
(``rope_theta``, rotate-half pairing of the head's two halves, q and k rotated in fp32 when
``rope_full_precision``), bidirectional attention (no causal mask), grouped-query attention when
``n_kv_heads < n_heads``, ``ln_f`` then ``ff_out`` (or the embedding when ``weight_tying``).
Rotary positions are the absolute indices ``0 .. L - 1`` (as in the published code), also under
left padding; padding keys are hidden by the attention mask (the published forward ignores
``attention_mask``: LLaDA issue #89; LLaDA's own batched examples pad and mask like this).

Config fields read: ``d_model``, ``n_heads``, ``n_kv_heads`` (``multi_query_attention``),
``n_layers``, ``mlp_hidden_size`` (else ``mlp_ratio * d_model``), ``vocab_size``,
``embedding_size``, ``rope_theta``, ``rms_norm_eps``, ``weight_tying``, ``include_bias``,
``include_qkv_bias``, ``bias_for_layer_norm``, ``input_emb_norm``, ``scale_logits``,
``rope_full_precision``; the model's other choices (``block_type``, ``layer_norm_type``,
``activation_type``, ``rope``, ``alibi``, ``attention_layer_norm``, ``block_group_size``,
``layer_norm_with_affine``) must have LLaDA-8B's values, anything else is a clear error.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastremask.models.native.common import (NativeConfig, NativeModel, RMSNorm, Rotary, _error, attention)

__all__ = ["LLaDAModel", "llada_config"]

# field: the value LLaDA-8B has, the only one this implementation supports
_FIXED = {"block_type": "llama", "layer_norm_type": "rms", "activation_type": "silu", "rope": True,
          "alibi": False, "attention_layer_norm": False, "block_group_size": 1, "layer_norm_with_affine": True}
_NAMES = ("q_proj", "k_proj", "v_proj", "attn_out")


def llada_config(raw: dict, path: str) -> NativeConfig:
    """Check a LLaDA ``config.json`` and derive the shape fields (``head_dim``, ``kv_heads``, ...)."""
    c = NativeConfig(raw, path)
    for name, want in _FIXED.items():
        got = raw.get(name, want)
        if got != want and not (isinstance(want, str) and str(got).lower() == want):
            raise _error(f"{path}: field {name!r} is {got!r}; the native LLaDA supports {want!r} only "
                         "(LLaDA-8B's); load with native=False to run the checkpoint's own code")
    c.d_model = c.field("d_model")
    c.n_heads = c.field("n_heads")
    c.n_layers = c.field("n_layers")
    vocab = c.field("vocab_size")
    c.embed_rows = c.field("embedding_size", default=vocab)
    if c.embed_rows < vocab:
        raise _error(f"{path}: field 'embedding_size' ({c.embed_rows}) is below 'vocab_size' ({vocab})")
    if c.d_model % c.n_heads:
        raise _error(f"{path}: field 'd_model' ({c.d_model}) is not a multiple of 'n_heads' ({c.n_heads})")
    c.head_dim = c.d_model // c.n_heads
    if c.head_dim % 2:
        raise _error(f"{path}: d_model / n_heads = {c.head_dim} is odd; rotary embeddings need an even head size")
    c.field("max_sequence_length", required=False)          # read by generate's length check
    if c.field("multi_query_attention", bool, default=False):
        c.kv_heads = 1
    else:
        c.kv_heads = c.field("n_kv_heads", default=c.n_heads)
    if c.n_heads % c.kv_heads:
        raise _error(f"{path}: field 'n_heads' ({c.n_heads}) is not a multiple of 'n_kv_heads' ({c.kv_heads})")
    mlp = c.field("mlp_hidden_size", required=False)
    c.mlp_hidden = mlp if mlp is not None else c.field("mlp_ratio") * c.d_model
    c.rope_theta = float(c.field("rope_theta", float, default=10000.0))
    c.eps = float(c.field("rms_norm_eps", float, default=1e-5))
    c.tied = c.field("weight_tying", bool, default=False)
    c.bias = c.field("include_bias", bool, default=False)
    c.qkv_bias = c.bias or c.field("include_qkv_bias", bool, default=False)
    nb = raw.get("bias_for_layer_norm")
    c.norm_bias = c.bias if nb is None else c.field("bias_for_layer_norm", bool)
    c.emb_norm = c.field("input_emb_norm", bool, default=False)
    c.scale_logits = c.field("scale_logits", bool, default=False)
    c.rope_fp32 = c.field("rope_full_precision", bool, default=True)
    return c


class _Block(nn.Module):
    """One ``block_type "llama"`` block under the published names."""

    def __init__(self, c: NativeConfig, device):
        super().__init__()
        d, kv = c.d_model, c.kv_heads * c.head_dim
        self.n_heads, self.n_kv, self.rope_fp32 = c.n_heads, c.kv_heads, c.rope_fp32
        self.attn_norm = RMSNorm(d, c.eps, c.norm_bias, device=device)
        self.ff_norm = RMSNorm(d, c.eps, c.norm_bias, device=device)
        self.q_proj = nn.Linear(d, d, bias=c.qkv_bias, device=device)
        self.k_proj = nn.Linear(d, kv, bias=c.qkv_bias, device=device)
        self.v_proj = nn.Linear(d, kv, bias=c.qkv_bias, device=device)
        self.attn_out = nn.Linear(d, d, bias=c.bias, device=device)
        self.ff_proj = nn.Linear(d, c.mlp_hidden, bias=c.bias, device=device)
        self.up_proj = nn.Linear(d, c.mlp_hidden, bias=c.bias, device=device)
        self.ff_out = nn.Linear(c.mlp_hidden, d, bias=c.bias, device=device)

    def forward(self, x, cos, sin, key_ok, cache, layer: int, q0: int):
        x = x + attention(self, _NAMES, self.n_heads, self.n_kv, self.rope_fp32, self.attn_norm(x),
                          cos, sin, key_ok, cache, layer, q0)
        m = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(m)) * self.up_proj(m))


class LLaDAModel(NativeModel):
    """LLaDA's forward, natively: see the module docstring. Build with `from_folder`."""

    family = "llada"
    check_config = staticmethod(llada_config)

    def __init__(self, config: NativeConfig, device="meta"):
        super().__init__(config)
        c = config
        t = nn.ModuleDict({
            "wte": nn.Embedding(c.embed_rows, c.d_model, device=device),
            "blocks": nn.ModuleList(_Block(c, device) for _ in range(c.n_layers)),
            "ln_f": RMSNorm(c.d_model, c.eps, c.norm_bias, device=device),
        })
        if not c.tied:
            t["ff_out"] = nn.Linear(c.d_model, c.embed_rows, bias=c.bias, device=device)
        self.model = nn.Module()
        self.model.transformer = t
        self.rotary = Rotary(c.head_dim, c.rope_theta)
        self._emb_scale = math.sqrt(c.d_model) if c.emb_norm else None
        self._logit_scale = 1.0 / math.sqrt(c.d_model) if c.scale_logits else None

    def _embed(self, ids):
        h = self.model.transformer.wte(ids)
        return h * self._emb_scale if self._emb_scale is not None else h

    def _layers(self):
        return self.model.transformer.blocks

    def _final_norm(self, h):
        return self.model.transformer.ln_f(h)

    def _head(self, h):
        t = self.model.transformer
        logits = F.linear(h, t.wte.weight) if self.config.tied else t.ff_out(h)
        return logits * self._logit_scale if self._logit_scale is not None else logits

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def get_output_embeddings(self):
        """``ff_out`` (an ``nn.Linear``), or the embedding when ``weight_tying`` (as LLaDA's
        own ``get_output_embeddings``); `window_logits` needs neither."""
        t = self.model.transformer
        return t.wte if self.config.tied else t.ff_out
