"""SDAR / TraDo (dense), written from the published architecture.

The published checkpoint (``model_type "sdar"``, ``SDARForCausalLM``; JetLM's SDAR-1.7B/4B/8B
and Gen-Verse's TraDo-4B/8B) is Qwen3's decoder trained for block diffusion, under Qwen3's
weight names ``model.{embed_tokens, layers.N.*, norm}`` and ``lm_head``. Per layer, pre-norm::

    q = q_norm(q_proj(n)), k = k_norm(k_proj(n))      per head, before the rotary embedding
    h = x + o_proj(attention(rope(q), rope(k), v_proj(n)))        n = input_layernorm(x)
    y = h + down_proj(silu(gate_proj(m)) * up_proj(m))            m = post_attention_layernorm(h)

RMSNorm everywhere (``rms_norm_eps``; fp32 statistics, cast back, then the weight), ``q_norm``
and ``k_norm`` over the head dimension (``head_dim``, which need not be ``hidden_size /
num_attention_heads``), rotary embeddings on the whole head (``rope_theta``, rotate-half, cos/sin
cast to the activations' dtype as in Qwen3), grouped-query attention
(``num_key_value_heads``), q/k/v/o biases when ``attention_bias``, ``norm`` then ``lm_head``
(the embedding when ``tie_word_embeddings``).

**Attention is block-causal**: bidirectional inside a block of ``block_size`` positions (4 in
the published configs), causal across blocks, blocks counted from position 0 (from the first
real token under left padding; `fastremask.sampler.block.block_causal_mask`). The
output at position ``i`` scores the token at ``i`` (no shift). Rotary positions are ``0 .. L-1``
(``cumsum(mask) - 1``, clamped at 0, under padding). It implements
`fastremask.sampler.block`'s ``block_logits`` (the exact block cache).

Config fields read: ``hidden_size``, ``num_attention_heads``, ``num_key_value_heads``,
``head_dim``, ``num_hidden_layers``, ``intermediate_size``, ``vocab_size``, ``rms_norm_eps``,
``rope_theta``, ``attention_bias``, ``tie_word_embeddings``, ``block_size``; ``hidden_act``
must be ``silu``, ``rope_scaling`` null and ``use_sliding_window`` false (the published
values), anything else is a clear error.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from fastremask.models.kv import attend
from fastremask.models.native.common import (NativeConfig, NativeModel, RMSNorm, Rotary, SwiGLU, _error,
                                             apply_rotary)

__all__ = ["SDARModel", "sdar_config"]


def _heads(c: NativeConfig, path: str, heads: str, kv: str) -> None:
    c.n_heads = c.field(heads)
    c.kv_heads = c.field(kv, default=c.n_heads)
    if c.n_heads % c.kv_heads:
        raise _error(f"{path}: field {heads!r} ({c.n_heads}) is not a multiple of {kv!r} ({c.kv_heads})")
    hd = c.raw.get("head_dim")
    if hd is None:
        if c.d_model % c.n_heads:
            raise _error(f"{path}: field 'hidden_size' ({c.d_model}) is not a multiple of {heads!r} "
                         f"({c.n_heads}) and there is no 'head_dim'")
        c.head_dim = c.d_model // c.n_heads
    else:
        c.head_dim = c.field("head_dim")
    if c.head_dim % 2:
        raise _error(f"{path}: the head dimension {c.head_dim} is odd; rotary embeddings need an even one")


def sdar_config(raw: dict, path: str) -> NativeConfig:
    """Check an SDAR (Qwen3-style) ``config.json`` and derive the shape fields."""
    c = NativeConfig(raw, path)
    c.d_model = c.field("hidden_size")
    c.n_layers = c.field("num_hidden_layers")
    c.mlp_hidden = c.field("intermediate_size")
    c.embed_rows = c.field("vocab_size")
    _heads(c, path, "num_attention_heads", "num_key_value_heads")
    act = raw.get("hidden_act", "silu")
    if act != "silu":
        raise _error(f"{path}: field 'hidden_act' is {act!r}; the native SDAR supports 'silu' (SDAR's)")
    scaling = raw.get("rope_scaling")
    if scaling not in (None, {}) and (not isinstance(scaling, dict)
                                      or scaling.get("rope_type", scaling.get("type")) != "default"):
        raise _error(f"{path}: field 'rope_scaling' is {scaling!r}; the native SDAR supports plain rotary "
                     "embeddings only (SDAR: null)")
    c.field("max_position_embeddings", required=False)      # read by generate's length check
    if c.field("use_sliding_window", bool, default=False):
        raise _error(f"{path}: field 'use_sliding_window' is true; the native SDAR supports full windows only "
                     "(SDAR: false)")
    c.rope_theta = float(c.field("rope_theta", float, default=10000.0))
    c.eps = float(c.field("rms_norm_eps", float, default=1e-6))
    c.tied = c.field("tie_word_embeddings", bool, default=False)
    c.bias = c.field("attention_bias", bool, default=False)
    c.block_length = c.field("block_size", required=False)   # absent: the family record's (4)
    return c


class _Layer(nn.Module):
    """One SDAR (Qwen3) decoder layer under the published names."""

    def __init__(self, c: NativeConfig, device):
        super().__init__()
        d, hd = c.d_model, c.head_dim
        self.n_heads, self.n_kv = c.n_heads, c.kv_heads
        self.input_layernorm = RMSNorm(d, c.eps, device=device)
        self.post_attention_layernorm = RMSNorm(d, c.eps, device=device)
        a = self.self_attn = nn.Module()
        a.q_proj = nn.Linear(d, c.n_heads * hd, bias=c.bias, device=device)
        a.k_proj = nn.Linear(d, c.kv_heads * hd, bias=c.bias, device=device)
        a.v_proj = nn.Linear(d, c.kv_heads * hd, bias=c.bias, device=device)
        a.o_proj = nn.Linear(c.n_heads * hd, d, bias=c.bias, device=device)
        a.q_norm = RMSNorm(hd, c.eps, device=device)
        a.k_norm = RMSNorm(hd, c.eps, device=device)
        self.mlp = SwiGLU(d, c.mlp_hidden, bias=False, names=("gate_proj", "up_proj", "down_proj"), device=device)

    def _attention(self, n, cos, sin, key_ok, cache, layer: int, q0: int):
        a = self.self_attn
        B, L, _ = n.shape
        q = a.q_norm(a.q_proj(n).view(B, L, self.n_heads, -1)).transpose(1, 2)
        k = a.k_norm(a.k_proj(n).view(B, L, self.n_kv, -1)).transpose(1, 2)
        v = a.v_proj(n).view(B, L, self.n_kv, -1).transpose(1, 2)
        c, s = cos.to(n.dtype), sin.to(n.dtype)
        q, k = apply_rotary(q, c, s), apply_rotary(k, c, s)
        o = attend(q, k, v, key_ok, cache, layer, q0)                 # [B, H, L, Dh]
        return a.o_proj(o.transpose(1, 2).reshape(B, L, -1))

    def forward(self, x, cos, sin, key_ok, cache, layer: int, q0: int):
        x = x + self._attention(self.input_layernorm(x), cos, sin, key_ok, cache, layer, q0)
        return x + self.mlp(self.post_attention_layernorm(x))


class SDARModel(NativeModel):
    """SDAR's forward, natively, with its block-causal attention (see the module docstring):
    ``model(ids, attention_mask).logits[:, i]`` scores the token at ``i``."""

    family = "sdar"
    check_config = staticmethod(sdar_config)

    tied_head_weight = "lm_head.weight"

    def __init__(self, config: NativeConfig, device="meta"):
        super().__init__(config)
        c = config
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(c.embed_rows, c.d_model, device=device)
        self.model.layers = nn.ModuleList(_Layer(c, device) for _ in range(c.n_layers))
        self.model.norm = RMSNorm(c.d_model, c.eps, device=device)
        if not c.tied:
            self.lm_head = nn.Linear(c.d_model, c.embed_rows, bias=False, device=device)
        self.rotary = Rotary(c.head_dim, c.rope_theta)

    def _embed(self, ids):
        return self.model.embed_tokens(ids)

    def _layers(self):
        return self.model.layers

    def _final_norm(self, h):
        return self.model.norm(h)

    def _head(self, h):
        return F.linear(h, self.model.embed_tokens.weight) if self.config.tied else self.lm_head(h)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.model.embed_tokens if self.config.tied else self.lm_head
