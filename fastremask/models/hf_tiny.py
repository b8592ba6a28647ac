"""Tiny LLaDA-like and Dream-like models as real `transformers` classes, for tests and examples.

This module imports only ``torch`` and ``transformers`` so that `fastremask.models.testing` can copy it
into a checkpoint folder as the checkpoint's *remote code* (``auto_map`` in ``config.json``,
loaded with ``trust_remote_code=True``), the way LLaDA and Dream ship their modeling files.

* `TinyLLaDAModelLM` (``model_type = "llada"``) takes what LLaDA takes: ``input_ids [B, L]`` and a
  2-D ``attention_mask [B, L]``; position ``i`` of the output predicts the token at ``i``.
* `TinyDreamModel` (``model_type = "Dream"``) takes what Dream's ``generate`` passes it,
  positionally: ``(input_ids, attention_mask, position_ids)`` with ``attention_mask`` either
  ``"full"``/``None`` or a 4-D bool ``[B, 1, L, L]``; and, like Dream (trained from an
  autoregressive model), the output at ``i`` predicts the token at ``i + 1``.

Both are bidirectional transformers with learned absolute positions; untrained, their logits
are finite, varied and a pure function of the weights.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast


class TinyLLaDAConfig(PretrainedConfig):
    model_type = "llada"

    def __init__(self, vocab_size=64, d_model=32, n_layers=2, n_heads=4, max_sequence_length=128,
                 mask_token_id=None, **kwargs):
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.max_sequence_length = max_sequence_length
        self.mask_token_id = mask_token_id
        super().__init__(**kwargs)


class TinyDreamConfig(PretrainedConfig):
    model_type = "Dream"

    def __init__(self, vocab_size=48, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=128, mask_token_id=None, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.mask_token_id = mask_token_id
        super().__init__(**kwargs)


class _Layer(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.up = nn.Linear(d, 2 * d)
        self.down = nn.Linear(2 * d, d)

    def forward(self, h: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        B, L, D = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(B, L, 3, self.n_heads, D // self.n_heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=bias)
        h = h + self.proj(a.transpose(1, 2).reshape(B, L, D))
        return h + self.down(F.gelu(self.up(self.norm2(h))))


class _Body(nn.Module):
    """Embeddings, bidirectional layers, final norm: ``[B, L]`` ids -> ``[B, L, D]`` states."""

    def __init__(self, vocab: int, d: int, n_layers: int, n_heads: int, max_len: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_len, d)
        self.layers = nn.ModuleList(_Layer(d, n_heads) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, input_ids, positions, bias):
        h = self.embed(input_ids) + self.pos(positions)
        for layer in self.layers:
            h = layer(h, bias)
        return self.norm(h)


def _additive(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool ``[B, 1, Lq, Lk]`` (True = attend) -> additive bias; a query row with nothing to
    attend to gets zeros instead of a row of -inf (finite garbage at padding, never NaN)."""
    keep = keep | ~keep.any(-1, keepdim=True)
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


class _TinyPreTrained(PreTrainedModel):
    base_model_prefix = "model"
    _no_split_modules = ["_Layer"]

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, 0.5)
            if getattr(module, "bias", None) is not None:
                module.bias.data.zero_()


class TinyLLaDAModelLM(_TinyPreTrained):
    """LLaDA's interface: ``forward(input_ids, attention_mask=None)`` -> ``.logits [B, L, V]``."""

    config_class = TinyLLaDAConfig

    def __init__(self, config: TinyLLaDAConfig):
        super().__init__(config)
        self.model = _Body(config.vocab_size, config.d_model, config.n_layers, config.n_heads,
                           config.max_sequence_length)
        self.ff_out = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.ff_out

    def forward(self, input_ids, attention_mask=None, **kwargs):
        B, L = input_ids.shape
        if attention_mask is None:
            positions, bias = torch.arange(L, device=input_ids.device).expand(B, L), None
        else:
            m = attention_mask.to(torch.long)
            positions = (m.cumsum(-1) - 1).clamp_min(0)
            keep = m.bool()[:, None, None, :].expand(B, 1, L, L)
            bias = _additive(keep, self.ff_out.weight.dtype)
        return CausalLMOutputWithPast(logits=self.ff_out(self.model(input_ids, positions, bias)))


class TinyDreamModel(_TinyPreTrained):
    """Dream's interface: ``forward(input_ids, attention_mask="full", position_ids=None)``;
    the output at ``i`` predicts the token at ``i + 1``."""

    config_class = TinyDreamConfig

    def __init__(self, config: TinyDreamConfig):
        super().__init__(config)
        self.model = _Body(config.vocab_size, config.hidden_size, config.num_hidden_layers,
                           config.num_attention_heads, config.max_position_embeddings)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids, attention_mask="full", position_ids=None, **kwargs):
        B, L = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(L, device=input_ids.device).expand(B, L)
        if attention_mask is None or isinstance(attention_mask, str):
            bias = None
        else:
            if attention_mask.dim() != 4:
                raise ValueError("TinyDreamModel takes a 4-D [B, 1, L, L] attention mask or 'full'")
            bias = _additive(attention_mask.bool(), self.lm_head.weight.dtype)
        return CausalLMOutputWithPast(logits=self.lm_head(self.model(input_ids, position_ids, bias)))


class TinyMDLMConfig(TinyLLaDAConfig):
    """A model type fastremask does not know: loading it needs ``family=`` (see docs/models/custom.md)."""

    model_type = "tiny-mdlm"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)


class TinyMDLMModel(TinyLLaDAModelLM):
    """`TinyLLaDAModelLM` under an unknown ``model_type``."""

    config_class = TinyMDLMConfig
