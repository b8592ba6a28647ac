"""A tiny bidirectional transformer with LLaDA's call interface.

`TinyMaskedLM` stands in for LLaDA in tests, examples and benchmarks of the sampling step:
``model(input_ids, attention_mask=None).logits`` is ``[B, L, V]``, ``model.device`` says where
it lives, and there is no causal mask. Its weights are a pure function of ``TinyConfig``
(``seed`` included), so two builds of one config are identical, bit for bit, and building one
takes milliseconds on a CPU. An untrained model is not a language model, but its logits are
finite, varied and reproducible, which is what a sampler's tests need; a trained copy can be
shipped with ``save_pretrained`` and loaded with ``from_pretrained``.

Padding: ``attention_mask`` ``[B, L]`` (1 = a real token, 0 = padding) hides padding keys, and
position ids are ``cumsum(attention_mask) - 1``, so a left-padded prompt sees the same
positions (and, up to fp32 rounding in the matmuls, the same logits) as the same prompt alone.

Mask id: ``TinyConfig.mask_id`` defaults to ``vocab_size - 1`` (127 for the default vocab of
128). Pass it as ``mask_id=`` to ``generate``; LLaDA's own default (126336) is outside this
vocabulary.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastremask.models.kv import KVCache, attend
from fastremask.sampler.block import BLOCK_CAUSAL, BlockCache, begin_call, block_causal_mask

__all__ = ["TinyConfig", "TinyOutput", "TinyMaskedLM", "tiny_model", "load_folder", "check_config"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "fastremask-tiny"


@dataclass
class TinyConfig:
    """Shape and seed of a `TinyMaskedLM`.

    ``mask_id`` ``None`` means ``vocab_size - 1``; ``d_ff`` ``None`` means ``4 * d_model``.
    ``attention``: ``"full"`` (bidirectional, the default) or ``"block_causal"`` (a block-diffusion
    model: bidirectional inside blocks of ``block_length`` from position 0, causal across them;
    `fastremask.sampler.block`).
    """

    vocab_size: int = 128
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    max_len: int = 256
    mask_id: int | None = None
    seed: int = 0
    d_ff: int | None = None
    eps: float = 1e-5
    attention: str = "full"
    block_length: int | None = None

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TinyConfig.{name} must be a positive int, got {value!r}")
        if self.mask_id is not None and (isinstance(self.mask_id, bool) or not isinstance(self.mask_id, int)):
            raise ValueError(f"TinyConfig.mask_id must be an int id, got {self.mask_id!r}")
        if self.d_ff is not None and (isinstance(self.d_ff, bool) or not isinstance(self.d_ff, int) or self.d_ff < 1):
            raise ValueError(f"TinyConfig.d_ff must be a positive int or None, got {self.d_ff!r}")
        if (isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not math.isfinite(self.eps)
                or self.eps <= 0):
            raise ValueError(f"TinyConfig.eps must be a positive number, got {self.eps!r}")
        self.eps = float(self.eps)
        if self.d_model % self.n_heads:
            raise ValueError(
                f"TinyConfig.d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})"
            )
        if self.mask_id is None:
            self.mask_id = self.vocab_size - 1
        if not 0 <= self.mask_id < self.vocab_size:
            raise ValueError(
                f"TinyConfig.mask_id must lie in [0, vocab_size={self.vocab_size}), got {self.mask_id}"
            )
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ValueError(f"TinyConfig.seed must be an int in [0, 2**63), got {self.seed!r}")
        if self.attention not in ("full", BLOCK_CAUSAL):
            raise ValueError(f"TinyConfig.attention must be 'full' or {BLOCK_CAUSAL!r}, got {self.attention!r}")
        if self.attention == BLOCK_CAUSAL:
            c = self.block_length
            if isinstance(c, bool) or not isinstance(c, int) or c < 1:
                raise ValueError(f"TinyConfig.block_length must be a positive int for attention="
                                 f"{BLOCK_CAUSAL!r}, got {c!r}")
        elif self.block_length is not None:
            raise ValueError("TinyConfig.block_length is for attention='block_causal' only, "
                             f"got block_length={self.block_length!r} with attention={self.attention!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TinyConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TinyOutput:
    """What `TinyMaskedLM.forward` returns; ``logits`` is ``[B, L, V]``."""

    logits: torch.Tensor


class _Block(nn.Module):
    """Pre-norm transformer block: bidirectional self-attention, then a GELU MLP."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.up = nn.Linear(cfg.d_model, cfg.d_ff)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, h: torch.Tensor, key_ok: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0, q0: int = 0, block_cache: BlockCache | None = None) -> torch.Tensor:
        B, L, D = h.shape                       # L: the query positions q0:q0 + L
        q, k, v = self.qkv(self.norm1(h)).view(B, L, 3, self.n_heads, D // self.n_heads).unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if block_cache is not None:             # the exact block cache: keys/values 0:L as views
            k, v = block_cache.update(layer, k, v)
        # [B, H, L, Dh]; key_ok [B, 1, 1, L_all] (True = may be attended to; no causal mask), or
        # a block-causal model's [B, 1, L, L_all]
        a = attend(q, k, v, key_ok, cache, layer, q0)
        h = h + self.proj(a.transpose(1, 2).reshape(B, L, D))
        return h + self.down(F.gelu(self.up(self.norm2(h))))


class TinyMaskedLM(nn.Module):
    """A tiny bidirectional transformer masked LM, deterministic from ``config.seed``.

    ``forward(input_ids [B, L] int64, attention_mask [B, L] | None) -> TinyOutput(logits
    [B, L, V])``, logits in the parameters' dtype. Learned absolute positions (``max_len``
    of them), pre-norm blocks, untied output head.
    """

    def __init__(self, config: TinyConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else TinyConfig()
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.pos = nn.Embedding(config.max_len, config.d_model)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model, eps=config.eps)
        self.head = nn.Linear(config.d_model, config.vocab_size)
        self.reset_parameters()
        self.eval()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Set every weight from ``config.seed`` alone (CPU generator, fixed order)."""
        g = torch.Generator(device="cpu").manual_seed(self.config.seed)
        for name, p in self.named_parameters():
            if "norm" in name:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                # embeddings ~ N(0, 1); linear ~ N(0, 1/fan_in), which keeps activations O(1);
                # the head 3x that, so the logits are varied (some positions confident, some not)
                if name in ("embed.weight", "pos.weight"):
                    std = 1.0
                else:
                    std = (3.0 if name == "head.weight" else 1.0) / math.sqrt(p.shape[1])
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * std)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    @property
    def mask_id(self) -> int:
        return self.config.mask_id

    @property
    def attention(self) -> str:
        """``"full"`` or ``"block_causal"`` (`fastremask.sampler.block`)."""
        return self.config.attention

    @property
    def block_length(self) -> int | None:
        """The block length a block-causal model was trained with (None for a full one)."""
        return self.config.block_length

    def get_output_embeddings(self) -> nn.Linear:
        """The output head (as Hugging Face models name it); `fastremask.models.window_logits`
        restricts it to the current block's positions."""
        return self.head

    def _positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
        """``(positions [B, L], key_ok [B, 1, 1, L] or None)`` of a checked input."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
        B, L = input_ids.shape
        if L > self.config.max_len:
            raise ValueError(f"sequence length {L} exceeds TinyConfig.max_len={self.config.max_len}")
        if attention_mask is None:
            return torch.arange(L, device=input_ids.device).expand(B, L), None
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}"
            )
        m = attention_mask.to(torch.long)
        # left padding: the first real token gets position 0, as it would alone
        positions = (m.cumsum(-1) - 1).clamp_min(0)
        ok = m.bool()
        # a row of padding only: let it attend everywhere (finite garbage, not NaN)
        ok = ok | ~ok.any(-1, keepdim=True)
        return positions, ok[:, None, None, :]  # [B, 1, 1, L]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> TinyOutput:
        if self.config.attention == BLOCK_CAUSAL:
            return TinyOutput(logits=self.block_logits(input_ids, attention_mask,
                                                       block_length=self.config.block_length))
        positions, key_ok = self._positions(input_ids, attention_mask)
        h = self.embed(input_ids) + self.pos(positions)
        for block in self.blocks:
            h = block(h, key_ok)
        return TinyOutput(logits=self.head(self.norm(h)))

    def cached_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: KVCache,
                      *, query: tuple, out: tuple) -> torch.Tensor:
        """The block-cache protocol (`fastremask.models.kv`): hidden states for positions
        ``query`` only, the others' keys and values from ``cache``; logits ``[B, o1 - o0, V]``."""
        positions, key_ok = self._positions(input_ids, attention_mask)
        cache.check(tuple(input_ids.shape), query, out)
        (q0, q1), (o0, o1) = query, out
        h = self.embed(input_ids[:, q0:q1]) + self.pos(positions[:, q0:q1])
        for i, block in enumerate(self.blocks):
            h = block(h, key_ok, cache, i, q0)
        return self.head(self.norm(h[:, o0 - q0:o1 - q0]))

    def block_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *, block_length: int,
                     cache: BlockCache | None = None, start: int = 0, commit: int = 0,
                     logits_from: int | None = None) -> torch.Tensor:
        """The block-causal protocol (`fastremask.sampler.block`): columns ``start:L`` run against
        the cache's final keys of ``0:start`` (``cache=None``: the whole window, ``start=0``),
        blocks of ``block_length`` from each row's position 0; logits ``[B, L - logits_from, V]``."""
        if self.config.attention != BLOCK_CAUSAL:
            raise ValueError("block_logits needs a block-causal model (TinyConfig.attention='block_causal')")
        positions, _ = self._positions(input_ids, attention_mask)
        B, L = input_ids.shape
        logits_from = begin_call(cache, start, L, commit, logits_from)
        mask = block_causal_mask(attention_mask, B, L, block_length, start, input_ids.device)
        h = self.embed(input_ids[:, start:]) + self.pos(positions[:, start:])
        for i, block in enumerate(self.blocks):
            h = block(h, mask, layer=i, block_cache=cache)
        if cache is not None:
            cache.commit(commit)
        return self.head(self.norm(h[:, logits_from - start:]))

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created)."""
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, CONFIG_NAME), "w") as f:
            json.dump({"model_type": MODEL_TYPE, **self.config.to_dict()}, f, indent=2, sort_keys=True)
            f.write("\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, os.path.join(directory, WEIGHTS_NAME), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> "TinyMaskedLM":
        """Load what `save_pretrained` wrote; weights exactly as saved. A bad ``config.json``
        field, or weights it does not describe, is a `fastremask.models.ModelLoadError` naming
        the file and the field (`load_folder`)."""
        model, _ = load_folder(directory, dtype=dtype, device=device)
        return model


def check_config(raw: dict, path: str) -> TinyConfig:
    """The `TinyConfig` of a checkpoint's ``config.json`` (``raw``), every field it reads checked
    with the file and the field named (`fastremask.models.checks`): the shapes positive
    integers, ``mask_id`` an id inside ``vocab_size``, ``eps`` a positive number, ``seed`` in
    ``[0, 2**63)``, ``attention`` ``"full"`` or ``"block_causal"`` with its ``block_length``.
    Absent fields take `TinyConfig`'s defaults."""
    from fastremask.models.checks import check_field
    from fastremask.sampler.protocol import ModelLoadError

    if raw.get("model_type", MODEL_TYPE) != MODEL_TYPE:
        raise ModelLoadError(f"{path}: field 'model_type' is {raw['model_type']!r}, not {MODEL_TYPE!r}")
    d = TinyConfig()
    kw = {n: check_field(raw, path, n, default=getattr(d, n), null=False)
          for n in ("vocab_size", "d_model", "n_layers", "n_heads", "max_len")}
    kw["d_ff"] = check_field(raw, path, "d_ff", default=None)                 # null: 4 * d_model
    kw["eps"] = float(check_field(raw, path, "eps", float, default=d.eps, null=False))
    kw["seed"] = check_field(raw, path, "seed", positive=False, below=2**63, below_name="the seed limit",
                             default=d.seed, null=False)
    kw["mask_id"] = check_field(raw, path, "mask_id", positive=False, below=kw["vocab_size"], default=None)  # null: vocab_size - 1
    if kw["d_model"] % kw["n_heads"]:
        raise ModelLoadError(f"{path}: field 'd_model' ({kw['d_model']}) is not a multiple of "
                             f"'n_heads' ({kw['n_heads']})")
    kw["attention"] = check_field(raw, path, "attention", str, default=d.attention, null=False)
    if kw["attention"] not in ("full", BLOCK_CAUSAL):
        raise ModelLoadError(f"{path}: field 'attention' must be 'full' or {BLOCK_CAUSAL!r}, got {kw['attention']!r}")
    kw["block_length"] = check_field(raw, path, "block_length", default=None)
    if (kw["attention"] == BLOCK_CAUSAL) != (kw["block_length"] is not None):
        raise ModelLoadError(f"{path}: field 'block_length' ({kw['block_length']!r}) goes with attention="
                             f"{BLOCK_CAUSAL!r} only, and that attention needs it (attention {kw['attention']!r})")
    return TinyConfig(**kw)


# which config.json fields give each tensor's shape (for a mismatch named as a config error)
_SHAPE_FIELDS = {"embed": "vocab_size, d_model", "pos": "max_len, d_model", "head": "vocab_size, d_model",
                 "up": "d_ff, d_model", "down": "d_ff, d_model", "qkv": "d_model", "proj": "d_model",
                 "norm": "d_model", "blocks": "n_layers"}


def _check_weights(model: "TinyMaskedLM", weights: str, path: str) -> None:
    """Every tensor of ``weights`` present with the shape ``config.json`` (``path``) describes;
    otherwise a `ModelLoadError` blaming the config, with every mismatch in full."""
    from safetensors import safe_open

    from fastremask.sampler.protocol import ModelLoadError

    want = {n: list(t.shape) for n, t in model.state_dict().items()}
    with safe_open(weights, framework="pt") as f:
        got = {n: list(f.get_slice(n).get_shape()) for n in f.keys()}
    problems = [f"tensor {n!r} is {got[n]} in the weights, {want[n]} by the config"
                f" ({_SHAPE_FIELDS.get(n.split('.')[-2] if n.startswith('blocks.') else n.split('.')[0], 'd_model')})"
                for n in want if n in got and got[n] != want[n]]
    missing = [n for n in want if n not in got]
    extra = [n for n in got if n not in want]
    if missing:
        problems.append(f"tensors {missing} are missing from the weights (n_layers?)")
    if extra:
        problems.append(f"the weights have tensors the config does not describe, {extra} (n_layers?)")
    if problems:
        raise ModelLoadError(f"{path} does not describe the weights {weights}: " + "; ".join(problems))


def load_folder(folder, *, dtype: torch.dtype | None = None, device=None):
    """``(model, tokenizer or None)`` of a checkpoint folder written by `TinyMaskedLM.save_pretrained`
    (the tiny family's loader, `fastremask.models.family`): ``config.json`` checked field by
    field (`check_config`), the weights checked against it, the tokenizer from ``demo.json`` or
    the vocabulary size (`fastremask.models.tokenizer.tiny_tokenizer`)."""
    from safetensors.torch import load_file

    from fastremask.models.native.common import read_config
    from fastremask.models.tokenizer import tiny_tokenizer

    folder = os.fspath(folder)
    path = os.path.join(folder, CONFIG_NAME)
    config = check_config(read_config(folder), path)
    weights = os.path.join(folder, WEIGHTS_NAME)
    model = TinyMaskedLM(config)
    if os.path.isfile(weights):
        _check_weights(model, weights, path)
    model.load_state_dict(load_file(weights), strict=True)     # a missing file: the loader names it
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model, tiny_tokenizer(config.vocab_size, folder)


def tiny_model(**overrides) -> TinyMaskedLM:
    """The default tiny model: vocab 128, d_model 64, 2 layers, 4 heads, max_len 256,
    mask id 127 (``vocab_size - 1`` unless ``mask_id`` is given), seed 0.

    Any `TinyConfig` field can be overridden, e.g. ``tiny_model(vocab_size=7, seed=3)``.
    """
    return TinyMaskedLM(TinyConfig(**overrides))
