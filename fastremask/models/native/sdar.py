"""SDAR / TraDo (dense and MoE), written from the published architecture.

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

**SDAR-MoE** (``model_type "sdar_moe"``, ``SDARMoeForCausalLM``: JetLM's SDAR-30B-A3B, the TraDo
MoE) is the same decoder with Qwen3-MoE's sparse MLP in the layers ``i`` with ``(i + 1) %
decoder_sparse_step == 0`` that are not in ``mlp_only_layers`` (every layer in the published
config), the others dense SwiGLU of ``intermediate_size``. The sparse MLP, under the names
``mlp.gate.weight`` ``[E, d]`` (no bias) and ``mlp.experts.E.{gate,up,down}_proj.weight``::

    probs = softmax(gate(x), fp32)         the router's logits in the activations' dtype
    w, e = topk(probs, num_experts_per_tok)            torch.topk's order
    w = w / w.sum() if norm_topk_prob; w = w.to(x.dtype)
    y = sum over the chosen experts, in ascending expert index, of expert_e(x) * w_e

(in the activations' dtype, from zeros: the published expert loop's ``index_add_`` order). No
shared expert. The experts run through the grouped dispatch of `fastremask.models.native.moe`.
Fields read beside the dense ones: ``num_experts``, ``num_experts_per_tok``,
``moe_intermediate_size``, ``norm_topk_prob``, ``decoder_sparse_step``, ``mlp_only_layers``;
the checkpoint's expert count must match ``num_experts``, checked from the weight names before
any tensor is read.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastremask.models.kv import attend
from fastremask.models.native.common import (DecoderModel, NativeConfig, RMSNorm, SwiGLU, _error,
                                             apply_rotary)
from fastremask.models.native.moe import ExpertBank, MoEModel, check_experts

__all__ = ["SDARModel", "sdar_config", "sdar_route"]

MOE_TYPE = "sdar_moe"


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
    _moe_fields(c, raw, path)
    if c.moe_layers != frozenset(range(c.n_layers)):         # some layer is dense
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


def _moe_fields(c: NativeConfig, raw: dict, path: str) -> None:
    """SDAR-MoE's fields (``model_type "sdar_moe"``; Qwen3-MoE's): which layers are sparse, the
    experts' shape and the router's options. Dense SDAR: no sparse layer."""
    c.moe_layers = frozenset()
    c.n_experts = None
    if str(raw.get("model_type", "")).lower() != MOE_TYPE:
        return
    c.n_experts = c.field("num_experts")
    c.top_k = c.field("num_experts_per_tok")
    if c.top_k > c.n_experts:
        raise _error(f"{path}: field 'num_experts_per_tok' ({c.top_k}) exceeds 'num_experts' ({c.n_experts})")
    c.moe_hidden = c.field("moe_intermediate_size")
    c.norm_topk = c.field("norm_topk_prob", bool, default=False)        # Qwen3MoeConfig's default
    step = c.field("decoder_sparse_step", default=1)
    only = raw.get("mlp_only_layers", [])
    only = [] if only is None else only
    if not isinstance(only, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in only):
        raise _error(f"{path}: field 'mlp_only_layers' must be a list of layer indices, got {only!r}")
    bad = [i for i in only if not 0 <= i < c.n_layers]
    if bad:
        raise _error(f"{path}: field 'mlp_only_layers' holds {bad[0]}, but 'num_hidden_layers' is {c.n_layers}")
    c.moe_layers = frozenset(i for i in range(c.n_layers) if (i + 1) % step == 0 and i not in only)
    c.dense_why = f"field 'decoder_sparse_step' is {step}, 'mlp_only_layers' {only}"


def sdar_route(x: torch.Tensor, weight: torch.Tensor, *, top_k: int, norm: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """SDAR-MoE's (Qwen3-MoE's) router on tokens ``x`` ``[T, d]``: ``(experts [T, top_k] int64,
    weights [T, top_k] in x's dtype)``, in `torch.topk`'s order (see the module docstring)."""
    probs = torch.softmax(F.linear(x, weight), dim=-1, dtype=torch.float32)
    w, experts = probs.topk(top_k, dim=-1)
    if norm:
        w = w / w.sum(-1, keepdim=True)
    return experts, w.to(x.dtype)


class _SparseMoe(ExpertBank):
    """SDAR-MoE's sparse MLP under the published names ``gate.weight``, ``experts.E.*``."""

    def __init__(self, c: NativeConfig, device):
        super().__init__(c.d_model, c.moe_hidden, c.n_experts, device)
        self.top_k, self.norm = c.top_k, c.norm_topk
        self.gate = nn.Linear(c.d_model, c.n_experts, bias=False, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])                                             # [T, d]
        experts, w = sdar_route(x2, self.gate.weight, top_k=self.top_k, norm=self.norm)
        y = self.expert_outputs(x2, experts) * w[..., None]                       # [T, K, d], x's dtype
        # the published loop adds the experts' outputs in ascending expert index, from zeros
        by_index = experts.argsort(dim=1)
        y = y.gather(1, by_index[..., None].expand(-1, -1, y.shape[-1]))
        out = torch.zeros_like(x2)
        for k in range(y.shape[1]):
            out = out + y[:, k]
        return out.view(shape)


class _Layer(nn.Module):
    """One SDAR (Qwen3) decoder layer under the published names."""

    def __init__(self, c: NativeConfig, index: int, device):
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
        if index in c.moe_layers:
            self.mlp = _SparseMoe(c, device)
        else:
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


class SDARModel(MoEModel, DecoderModel):
    """SDAR's forward (dense, and SDAR-MoE's), natively, with its block-causal attention (see the
    module docstring): ``model(ids, attention_mask).logits[:, i]`` scores the token at ``i``."""

    family = "sdar"
    check_config = staticmethod(sdar_config)

    @classmethod
    def check_checkpoint(cls, config: NativeConfig, names) -> None:
        if config.n_experts is not None:
            check_experts(config, names)

    def __init__(self, config: NativeConfig, device="meta"):
        super().__init__(config)
        c = config
        self._build([_Layer(c, i, device) for i in range(c.n_layers)], c.head_dim, device)

