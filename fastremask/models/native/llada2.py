"""LLaDA2.x (LLaDA2.0/2.1 mini and flash, MoE), written from the published architecture.

The published checkpoint (``model_type "llada2_moe"``, ``LLaDA2MoeModelLM``, inclusionAI) is a
Ling-2.0 (Bailing MoE v2) decoder trained for block diffusion, under the weight names
``model.word_embeddings``, ``model.layers.N.*``, ``model.norm`` and ``lm_head``. Per layer,
pre-norm::

    q, k, v = split(query_key_value(n))            one fused projection, [heads | kv | kv] x head_dim
    q, k = query_layernorm(q), key_layernorm(k)    per head (``use_qk_norm``)
    h = x + dense(attention(rope(q), rope(k), v))  n = input_layernorm(x)
    y = h + mlp(post_attention_layernorm(h))

Rotary embeddings on the first ``partial_rotary_factor * head_dim`` entries of each head only
(0.5 in the published configs; rotate-half within that part, base ``rope_theta``; cos/sin cast
to the activations' dtype), grouped-query attention (``num_key_value_heads``), biases on
``query_key_value`` when ``use_qkv_bias`` and on ``dense`` when ``use_bias``.

The MLP of the first ``first_k_dense_replace`` layers is dense (SwiGLU of
``intermediate_size``); every other layer is a mixture of experts with the published router:

* ``logits = gate.weight @ x`` in fp32, ``scores = sigmoid(logits)``;
* the choice uses ``scores + gate.expert_bias``: the experts are split into ``n_group`` groups,
  a group scores the sum of its two best experts, the best ``topk_group`` groups stay, and the
  ``num_experts_per_tok`` best experts among them are chosen (``torch.topk``);
* the weights are the chosen experts' unbiased ``scores``, divided by their sum (+ 1e-20) when
  more than one expert is chosen (the published gate does so whatever ``norm_topk_prob`` says),
  times ``routed_scaling_factor``;
* ``y = sum_k w_k expert_k(x)`` (the experts' outputs in the activations' dtype, weighted and
  summed in fp32 in the published top-k order, cast back) ``+ shared_experts(x)`` (one SwiGLU of
  ``moe_intermediate_size * num_shared_experts``).

**The MoE without a Python loop per expert per token**: the experts' grouped dispatch
(`fastremask.models.native.moe`, shared with SDAR-MoE; one loop over the experts where torch's
``grouped_mm`` does not run).

**Attention is block-causal** (blocks of 32 in the published generate, counted from position
0; from each row's first real token under padding): `fastremask.sampler.block`. The output at
position ``i`` scores the token at ``i`` (no shift).

Config fields read: ``hidden_size``, ``num_attention_heads``, ``num_key_value_heads``,
``head_dim``, ``num_hidden_layers``, ``intermediate_size``, ``moe_intermediate_size``,
``num_experts``, ``num_experts_per_tok``, ``num_shared_experts``, ``n_group``, ``topk_group``,
``routed_scaling_factor``, ``first_k_dense_replace``, ``partial_rotary_factor``, ``rope_theta``,
``rms_norm_eps``, ``use_qkv_bias``, ``use_qk_norm``, ``use_bias``, ``tie_word_embeddings``;
``hidden_act`` must be ``silu``, ``score_function`` (when present) ``sigmoid`` and
``rope_scaling`` null. The checkpoint's expert count must match ``num_experts``, checked from
the weight names before any tensor is read.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastremask.models.kv import attend
from fastremask.models.native.common import (DecoderModel, NativeConfig, RMSNorm, SwiGLU, _error,
                                             apply_partial_rotary)
from fastremask.models.native.moe import MLP_NAMES as _MLP
from fastremask.models.native.moe import ExpertBank, MoEModel, check_experts

__all__ = ["LLaDA2Model", "llada2_config", "check_experts", "route"]

def llada2_config(raw: dict, path: str) -> NativeConfig:
    """Check a LLaDA2 (``llada2_moe``) ``config.json`` and derive the shape fields."""
    c = NativeConfig(raw, path)
    c.d_model = c.field("hidden_size")
    c.n_layers = c.field("num_hidden_layers")
    c.embed_rows = c.field("vocab_size")
    c.n_heads = c.field("num_attention_heads")
    c.kv_heads = c.field("num_key_value_heads", default=c.n_heads)
    if c.n_heads % c.kv_heads:
        raise _error(f"{path}: field 'num_attention_heads' ({c.n_heads}) is not a multiple of "
                     f"'num_key_value_heads' ({c.kv_heads})")
    if raw.get("head_dim") is None:
        if c.d_model % c.n_heads:
            raise _error(f"{path}: field 'hidden_size' ({c.d_model}) is not a multiple of 'num_attention_heads' "
                         f"({c.n_heads}) and there is no 'head_dim'")
        c.head_dim = c.d_model // c.n_heads
    else:
        c.head_dim = c.field("head_dim")
    factor = c.field("partial_rotary_factor", float, default=0.5)
    if not 0 < factor <= 1:
        raise _error(f"{path}: field 'partial_rotary_factor' must be in (0, 1], got {factor!r}")
    c.rotary_dim = int(c.head_dim * factor)
    if c.rotary_dim < 2 or c.rotary_dim % 2:
        raise _error(f"{path}: head_dim x partial_rotary_factor = {c.head_dim} x {factor} gives {c.rotary_dim} "
                     "rotary entries; rotary embeddings need an even number of at least 2")
    for name, want in (("hidden_act", "silu"), ("score_function", "sigmoid")):
        got = raw.get(name, want)
        if got != want:
            raise _error(f"{path}: field {name!r} is {got!r}; the native LLaDA2 supports {want!r} only "
                         "(the published router and MLP)")
    scaling = raw.get("rope_scaling")
    if scaling not in (None, {}) and (not isinstance(scaling, dict)
                                      or scaling.get("rope_type", scaling.get("type")) != "default"):
        raise _error(f"{path}: field 'rope_scaling' is {scaling!r}; the native LLaDA2 supports plain rotary "
                     "embeddings only (LLaDA2: null)")
    c.field("max_position_embeddings", required=False)      # read by generate's length check
    c.rope_theta = float(c.field("rope_theta", float, default=10000.0))
    c.eps = float(c.field("rms_norm_eps", float, default=1e-5))
    c.tied = c.field("tie_word_embeddings", bool, default=False)
    c.qkv_bias = c.field("use_qkv_bias", bool, default=False)
    c.qk_norm = c.field("use_qk_norm", bool, default=True)
    c.bias = c.field("use_bias", bool, default=True)
    # the mixture of experts
    c.first_dense = c.field("first_k_dense_replace", default=0, positive=False)
    if c.first_dense < 0:
        raise _error(f"{path}: field 'first_k_dense_replace' must be >= 0, got {c.first_dense}")
    # defaults as in the published LLaDA2MoeConfig where it has one; the shapes are required
    c.n_experts = c.field("num_experts", required=False)
    moe = c.n_experts is not None and c.first_dense < c.n_layers
    if c.first_dense > 0 or not moe:
        c.mlp_hidden = c.field("intermediate_size")
    if moe:
        E = c.n_experts
        c.moe_hidden = c.field("moe_intermediate_size")
        c.top_k = c.field("num_experts_per_tok")
        c.n_shared = c.field("num_shared_experts", default=0, positive=False)
        if c.n_shared < 0:
            raise _error(f"{path}: field 'num_shared_experts' must be >= 0, got {c.n_shared}")
        c.n_group = c.field("n_group", default=8)
        c.topk_group = c.field("topk_group", default=4)
        c.scale = float(c.field("routed_scaling_factor", float, default=2.5))
        if E % c.n_group:
            raise _error(f"{path}: field 'num_experts' ({E}) is not a multiple of 'n_group' ({c.n_group})")
        if E // c.n_group < 2:
            raise _error(f"{path}: num_experts / n_group = {E // c.n_group}; the published router scores a group "
                         "by its two best experts, so a group needs at least 2")
        if c.topk_group > c.n_group:
            raise _error(f"{path}: field 'topk_group' ({c.topk_group}) exceeds 'n_group' ({c.n_group})")
        if c.top_k > c.topk_group * (E // c.n_group):
            raise _error(f"{path}: field 'num_experts_per_tok' ({c.top_k}) exceeds the experts of the "
                         f"{c.topk_group} chosen groups ({c.topk_group * (E // c.n_group)})")
    c.moe = moe
    c.moe_layers = frozenset(range(c.first_dense, c.n_layers)) if moe else frozenset()
    c.dense_why = f"field 'first_k_dense_replace' is {c.first_dense}, 'num_experts' {c.n_experts}"
    return c                  # the trained block (32) and the ids are the family record's


# ----------------------------------------------------------------------------- the mixture of experts


class _Gate(nn.Module):
    """The published router's parameters: ``weight`` ``[E, d]`` and ``expert_bias`` ``[E]``."""

    def __init__(self, c: NativeConfig, device):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c.n_experts, c.d_model, device=device))
        self.expert_bias = nn.Parameter(torch.empty(c.n_experts, device=device))


def route(x: torch.Tensor, weight: torch.Tensor, expert_bias: torch.Tensor, *, top_k: int, n_group: int,
          topk_group: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The published router on tokens ``x`` ``[T, d]``: ``(experts [T, top_k] int64, weights
    [T, top_k] fp32)``, in `torch.topk`'s order (see the module docstring)."""
    T = x.shape[0]
    E = weight.shape[0]
    scores = torch.sigmoid(F.linear(x.float(), weight.float()))                  # [T, E] fp32
    choice = scores + expert_bias                                                # the bias only chooses
    groups = choice.view(T, n_group, E // n_group).topk(2, dim=-1)[0].sum(-1)     # [T, G]
    keep = torch.zeros_like(groups).scatter_(1, groups.topk(topk_group, dim=-1, sorted=False)[1], 1.0)
    keep = keep.bool()[:, :, None].expand(T, n_group, E // n_group).reshape(T, E)
    experts = choice.masked_fill(~keep, float("-inf")).topk(top_k, dim=-1)[1]      # [T, K]
    w = scores.gather(1, experts)
    if top_k > 1:
        w = w / (w.sum(-1, keepdim=True) + 1e-20)
    return experts, w * scale


class _MoE(ExpertBank):
    """A mixture-of-experts MLP under the published names: ``gate.{weight, expert_bias}``,
    ``experts.E.{gate,up,down}_proj``, ``shared_experts.*``."""

    def __init__(self, c: NativeConfig, device):
        super().__init__(c.d_model, c.moe_hidden, c.n_experts, device)
        self.top_k, self.n_group, self.topk_group, self.scale = c.top_k, c.n_group, c.topk_group, c.scale
        self.gate = _Gate(c, device)
        self.shared_experts = (SwiGLU(c.d_model, c.moe_hidden * c.n_shared, bias=False, names=_MLP, device=device)
                               if c.n_shared > 0 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])                                             # [T, d]
        experts, w = route(x2, self.gate.weight, self.gate.expert_bias, top_k=self.top_k, n_group=self.n_group,
                           topk_group=self.topk_group, scale=self.scale)
        y = self.expert_outputs(x2, experts)                                      # [T, K, d]
        y = (y.float() * w[..., None]).sum(1).to(x.dtype)                          # fp32, top-k order
        if self.shared_experts is not None:
            y = y + self.shared_experts(x2)
        return y.view(shape)


# ----------------------------------------------------------------------------- layers and model


class _Attention(nn.Module):
    def __init__(self, c: NativeConfig, device):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = c.n_heads, c.kv_heads, c.head_dim
        self.query_key_value = nn.Linear(c.d_model, (c.n_heads + 2 * c.kv_heads) * c.head_dim, bias=c.qkv_bias,
                                         device=device)
        if c.qk_norm:
            self.query_layernorm = RMSNorm(c.head_dim, c.eps, device=device)
            self.key_layernorm = RMSNorm(c.head_dim, c.eps, device=device)
        self.qk_norm = c.qk_norm
        self.dense = nn.Linear(c.n_heads * c.head_dim, c.d_model, bias=c.bias, device=device)

    def forward(self, n, cos, sin, key_ok, cache, layer: int, q0: int):
        B, L, _ = n.shape
        qkv = self.query_key_value(n).view(B, L, self.n_heads + 2 * self.n_kv, self.hd)
        q, k, v = qkv.split([self.n_heads, self.n_kv, self.n_kv], dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if self.qk_norm:
            q, k = self.query_layernorm(q), self.key_layernorm(k)
        c, s = cos.to(n.dtype), sin.to(n.dtype)
        q, k = apply_partial_rotary(q, c, s), apply_partial_rotary(k, c, s)
        o = attend(q, k, v, key_ok, cache, layer, q0)                             # [B, H, L, Dh]
        return self.dense(o.transpose(1, 2).reshape(B, L, -1))


class _Layer(nn.Module):
    def __init__(self, c: NativeConfig, index: int, device):
        super().__init__()
        self.input_layernorm = RMSNorm(c.d_model, c.eps, device=device)
        self.attention = _Attention(c, device)
        self.post_attention_layernorm = RMSNorm(c.d_model, c.eps, device=device)
        if c.moe and index >= c.first_dense:
            self.mlp = _MoE(c, device)
        else:
            self.mlp = SwiGLU(c.d_model, c.mlp_hidden, bias=False, names=_MLP, device=device)

    def forward(self, x, cos, sin, key_ok, cache, layer: int, q0: int):
        x = x + self.attention(self.input_layernorm(x), cos, sin, key_ok, cache, layer, q0)
        return x + self.mlp(self.post_attention_layernorm(x))


class LLaDA2Model(MoEModel, DecoderModel):
    """LLaDA2's forward, natively, with its block-causal attention and mixture of experts (see
    the module docstring): ``model(ids, attention_mask).logits[:, i]`` scores the token at ``i``."""

    family = "llada2"
    check_config = staticmethod(llada2_config)
    token_editing = True      # LLaDA2.1 was trained for token editing (2.0 shares its layout and type)

    @classmethod
    def check_checkpoint(cls, config: NativeConfig, names) -> None:
        check_experts(config, names)

    def __init__(self, config: NativeConfig, device="meta"):
        super().__init__(config)
        c = config
        self._build([_Layer(c, i, device) for i in range(c.n_layers)], c.rotary_dim, device)

