"""Dream (Dream-v0 Base/Instruct 7B), written from the published architecture.

Dream is Qwen2.5-7B's transformer with the causal mask removed (``model_type "Dream"``,
``DreamModel``), under Qwen2's weight names ``model.{embed_tokens, layers.N.*, norm}`` and
``lm_head``. Per layer, pre-norm::

    h = x + o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n)))   n = input_layernorm(x)
    y = h + down_proj(silu(gate_proj(m)) * up_proj(m))                       m = post_attention_layernorm(h)

q/k/v projections with biases, ``o_proj`` and the MLP without; RMSNorm (``rms_norm_eps``),
rotary embeddings (``rope_theta``, rotate-half, cos/sin cast to the activations' dtype as in
Qwen2), grouped-query attention (``num_key_value_heads``), ``norm`` then ``lm_head`` (the
embedding when ``tie_word_embeddings``).

Two things Dream's own ``generate`` does are done here, so the model has LLaDA's interface:

* **positions**: under left padding the rotary positions are ``cumsum(mask) - 1`` (1 on
  padding), as Dream's ``generation_utils`` passes them; without padding ``0 .. L - 1``.
  Padding keys are hidden from every query (Dream's 4-D mask; a padding query here still
  attends to the real tokens instead of to nothing, so its garbage output is finite).
* **the shift**: Dream keeps its autoregressive parent's alignment (the output at ``i - 1``
  scores the token at ``i``); the logits are returned shifted right by one, position 0
  keeping its own output, as ``generation_utils`` does. Do not shift them again.
"""
from __future__ import annotations

import torch.nn as nn

from fastremask.models.native.common import (DecoderModel, NativeConfig, RMSNorm, SwiGLU, _error,
                                             attention)

__all__ = ["DreamModel", "dream_config"]

_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj")


def dream_config(raw: dict, path: str) -> NativeConfig:
    """Check a Dream (Qwen2-style) ``config.json`` and derive the shape fields."""
    c = NativeConfig(raw, path)
    c.d_model = c.field("hidden_size")
    c.n_heads = c.field("num_attention_heads")
    c.n_layers = c.field("num_hidden_layers")
    c.mlp_hidden = c.field("intermediate_size")
    c.embed_rows = c.field("vocab_size")
    c.kv_heads = c.field("num_key_value_heads", default=c.n_heads)
    c.field("max_position_embeddings", required=False)      # read by generate's length check
    if c.d_model % c.n_heads:
        raise _error(f"{path}: field 'hidden_size' ({c.d_model}) is not a multiple of "
                     f"'num_attention_heads' ({c.n_heads})")
    c.head_dim = c.d_model // c.n_heads
    if c.head_dim % 2:
        raise _error(f"{path}: hidden_size / num_attention_heads = {c.head_dim} is odd; rotary "
                     "embeddings need an even head size")
    if c.n_heads % c.kv_heads:
        raise _error(f"{path}: field 'num_attention_heads' ({c.n_heads}) is not a multiple of "
                     f"'num_key_value_heads' ({c.kv_heads})")
    act = raw.get("hidden_act", "silu")
    if act != "silu":
        raise _error(f"{path}: field 'hidden_act' is {act!r}; the native Dream supports 'silu' (Dream-v0's)")
    scaling = raw.get("rope_scaling")
    if scaling not in (None, {}) and (not isinstance(scaling, dict)
                                      or scaling.get("rope_type", scaling.get("type")) != "default"):
        raise _error(f"{path}: field 'rope_scaling' is {scaling!r}; the native Dream supports plain "
                     "rotary embeddings only (Dream-v0: null); load with native=False")
    c.rope_theta = float(c.field("rope_theta", float, default=10000.0))
    c.eps = float(c.field("rms_norm_eps", float, default=1e-6))
    c.tied = c.field("tie_word_embeddings", bool, default=False)
    return c


class _Layer(nn.Module):
    """One Qwen2 decoder layer, bidirectional, under the published names."""

    def __init__(self, c: NativeConfig, device):
        super().__init__()
        d, kv = c.d_model, c.kv_heads * c.head_dim
        self.n_heads, self.n_kv = c.n_heads, c.kv_heads
        self.input_layernorm = RMSNorm(d, c.eps, device=device)
        self.post_attention_layernorm = RMSNorm(d, c.eps, device=device)
        a = self.self_attn = nn.Module()
        a.q_proj = nn.Linear(d, d, bias=True, device=device)
        a.k_proj = nn.Linear(d, kv, bias=True, device=device)
        a.v_proj = nn.Linear(d, kv, bias=True, device=device)
        a.o_proj = nn.Linear(d, d, bias=False, device=device)
        self.mlp = SwiGLU(d, c.mlp_hidden, bias=False, names=("gate_proj", "up_proj", "down_proj"), device=device)

    def forward(self, x, cos, sin, key_ok, cache, layer: int, q0: int):
        x = x + attention(self.self_attn, _NAMES, self.n_heads, self.n_kv, False, self.input_layernorm(x),
                          cos, sin, key_ok, cache, layer, q0)
        return x + self.mlp(self.post_attention_layernorm(x))


class DreamModel(DecoderModel):
    """Dream's forward, natively, with Dream's positions and its shift applied (see the module
    docstring): ``model(ids, attention_mask).logits[:, i]`` scores the token at ``i``."""

    family = "dream"
    check_config = staticmethod(dream_config)

    def __init__(self, config: NativeConfig, device="meta"):
        super().__init__(config)
        c = config
        self._build([_Layer(c, device) for _ in range(c.n_layers)], c.head_dim, device)

    def _uses_mask_positions(self) -> bool:
        return True

