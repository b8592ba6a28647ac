"""What the native LLaDA and Dream models share: config reading, RMSNorm, rotary embeddings,
safetensors loading (one file or shards with ``model.safetensors.index.json``) and the forward
skeleton (full forward, block window, block KV cache).

Every error about a checkpoint is a `fastremask.models.ModelLoadError` naming the file and the
field or tensor at fault.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastremask.models.checks import MISSING, check_field, read_json_object
from fastremask.models.dtypes import DTYPES, dtype_by_name, unknown_dtype
from fastremask.models.family import get_family
from fastremask.models.kv import KVCache, attend
from fastremask.models.shift import shifted_rows
from fastremask.sampler.block import BLOCK_CAUSAL, BlockCache, begin_call, block_causal_mask, block_positions
from fastremask.sampler.protocol import ModelLoadError

__all__ = [
    "NativeConfig",
    "NativeModel",
    "NativeOutput",
    "RMSNorm",
    "Rotary",
    "apply_rotary",
    "apply_partial_rotary",
    "read_config",
    "weight_names",
    "load_weights",
    "parse_dtype",
    "INDEX_NAME",
    "SINGLE_NAME",
]

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

_IGNORE = ("rotary_emb.inv_freq",)      # a tensor some checkpoints carry that no model uses


def _error(msg: str) -> Exception:
    return ModelLoadError(msg)


@dataclass
class NativeOutput:
    """``logits`` ``[B, L, V]``: position ``i`` scores the token at ``i`` (Dream's shift applied)."""

    logits: torch.Tensor


# ----------------------------------------------------------------------------- config


class NativeConfig:
    """``config.json`` as attributes (every field, as written), plus the derived shape fields a
    native model reads (``d_model``, ``n_heads``, ``n_kv_heads``, ``head_dim``, ...).

    ``vocab_size`` is the width of the logits (what `generate` checks ids against).
    """

    def __init__(self, raw: dict, path: str):
        self.raw = dict(raw)
        self.path = path
        for k, v in raw.items():
            if isinstance(k, str) and k.isidentifier() and not k.startswith("__"):
                setattr(self, k, v)

    def field(self, name: str, kind=int, *, default=None, required: bool = True, positive: bool = True):
        """``raw[name]`` checked to be a ``kind`` (int: positive unless told;
        `fastremask.models.checks.check_field`); a `ModelLoadError` naming ``config.json`` and
        the field otherwise. Absent: ``default``, or an error when ``required`` and no default."""
        fallback = MISSING if (default is None and required) else default
        return check_field(self.raw, self.path, name, kind, default=fallback, positive=positive)

    def to_dict(self) -> dict:
        return dict(self.raw)

    def __repr__(self) -> str:
        return f"NativeConfig(model_type={self.raw.get('model_type')!r}, path={self.path!r})"


def read_config(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise _error(f"{folder} has no config.json; is it a model folder?")
    return read_json_object(path, " (the model's config)")


def parse_dtype(dtype, raw: dict, path: str) -> Optional[torch.dtype]:
    """``"auto"``/None: the checkpoint's ``torch_dtype`` (or ``dtype``) field, else None (the
    stored tensors' dtype); a `torch.dtype` or a name otherwise."""
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise _error(f"dtype {dtype} is not supported; use float32, bfloat16 or float16")
        return dtype
    if dtype is None or dtype == "auto":
        name = raw.get("torch_dtype", raw.get("dtype"))
        if name is None:
            return None
        if dtype_by_name(name) is not None:
            return dtype_by_name(name)
        raise _error(f"{path}: field 'torch_dtype' is {name!r}; expected float32, bfloat16 or float16 "
                     "(or pass dtype=)")
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise _error(unknown_dtype(dtype))


# ----------------------------------------------------------------------------- weights


def _read_index(folder: str) -> dict:
    path = os.path.join(folder, INDEX_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except json.JSONDecodeError as e:
        raise _error(f"{path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    wm = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(wm, dict) or not wm or not all(isinstance(v, str) for v in wm.values()):
        raise _error(f"{path}: field 'weight_map' must map tensor names to shard file names")
    for shard in set(wm.values()):
        if os.path.isabs(shard) or ".." in shard.replace("\\", "/").split("/"):
            raise _error(f"{path}: shard name {shard!r} points outside the folder")
    return wm


def _shards(folder: str) -> tuple[Optional[str], dict]:
    """``(index file or None, {tensor name: shard file})`` from the index, or from the header
    of ``model.safetensors``; ``(None, {})`` when the folder has no safetensors weights."""
    from safetensors import safe_open

    if os.path.isfile(os.path.join(folder, INDEX_NAME)):
        wm = _read_index(folder)
        return os.path.join(folder, INDEX_NAME), {k: os.path.join(folder, v) for k, v in wm.items()}
    single = os.path.join(folder, SINGLE_NAME)
    if os.path.isfile(single):
        try:
            with safe_open(single, framework="pt") as f:
                return None, {k: single for k in f.keys()}
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise _error(f"cannot read the weights {single}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    return None, {}


def weight_names(folder: str) -> Optional[set]:
    """The tensor names of a folder's safetensors weights (from the index alone when sharded),
    or None when it has none."""
    _, where = _shards(folder)
    return set(where) or None


def load_weights(model: nn.Module, folder: str, *, dtype: Optional[torch.dtype], device,
                 ignore: tuple = ()) -> None:
    """Fill ``model`` (built on the ``meta`` device) from ``folder``'s safetensors: every
    parameter by its name, shape-checked, converted to ``dtype`` (None: as stored) on ``device``.

    A missing file or shard, a missing tensor, a tensor of the wrong shape or an unexpected
    tensor is a `ModelLoadError` naming the file and the tensor. ``ignore``: name suffixes of
    tensors a checkpoint may carry that the model does not use.
    """
    from safetensors import safe_open

    index, where = _shards(folder)
    if not where:
        others = sorted(n for n in os.listdir(folder) if n.endswith((".bin", ".pt", ".pth")))
        extra = (f" (it has {', '.join(others[:3])}: PyTorch pickles, which the native path does "
                 "not read; use native=False)") if others else ""
        raise _error(f"{folder} has no {SINGLE_NAME} and no {INDEX_NAME}{extra}")
    expected = dict(model.named_parameters())
    source = index or os.path.join(folder, SINGLE_NAME)
    missing = [n for n in expected if n not in where]
    if missing:
        raise _error(f"{source}: tensor {missing[0]!r} is missing"
                     + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                     + f"; expected the published {model.family_name} weight names")
    unexpected = [n for n in where if n not in expected and not n.endswith(ignore)]
    if unexpected:
        raise _error(f"{source}: unexpected tensor {unexpected[0]!r}"
                     + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
                     + "; its config.json does not describe these weights")
    by_file: dict = {}
    for n in expected:
        by_file.setdefault(where[n], []).append(n)
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    state = {}
    for path, names in by_file.items():
        if not os.path.isfile(path):
            raise _error(f"{index or folder}: shard {os.path.basename(path)} is missing "
                         f"({path} does not exist; it holds {names[0]!r})")
        try:
            # straight to the GPU (no host copy of an 8B model); other devices through the CPU
            f = safe_open(path, framework="pt", device=str(dev) if dev.type == "cuda" else "cpu")
        except Exception as e:  # noqa: BLE001
            raise _error(f"cannot read the weights {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
        with f:
            keys = set(f.keys())
            for n in names:
                if n not in keys:
                    raise _error(f"{path}: tensor {n!r} is not in this shard, although {index} says it is")
                want = tuple(expected[n].shape)
                got = tuple(f.get_slice(n).get_shape())
                if got != want:
                    raise _error(f"{path}: tensor {n!r} has shape {list(got)}, but config.json describes "
                                 f"{list(want)}")
                t = f.get_tensor(n)
                if not t.is_floating_point():
                    raise _error(f"{path}: tensor {n!r} has dtype {t.dtype}; expected floating point weights")
                state[n] = t.to(device=dev, dtype=dtype if dtype is not None else t.dtype)
    model.load_state_dict(state, strict=True, assign=True)


# ----------------------------------------------------------------------------- layers


class RMSNorm(nn.Module):
    """``weight * (x / rms(x))`` computed in fp32 and cast back to ``x``'s dtype before the
    weight is applied (LLaDA's and Llama's/Qwen2's order), optional bias (LLaDA ``include_bias``)."""

    def __init__(self, size: int, eps: float, bias: bool = False, device=None):
        super().__init__()
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.empty(size, device=device))
        self.bias = nn.Parameter(torch.empty(size, device=device)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        h = self.weight * h.to(x.dtype)
        return h + self.bias if self.bias is not None else h


class Rotary:
    """Rotary tables: ``inv_freq = 1 / theta ** (arange(0, Dh, 2) / Dh)``, angle ``pos *
    inv_freq``, both halves of the head (``cat(freqs, freqs)``), in fp32; cached for positions
    ``0 .. n - 1`` and gathered for others (the same products, so the same bits)."""

    def __init__(self, head_dim: int, theta: float):
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
        self.head_dim, self.theta = head_dim, float(theta)
        self._cos = self._sin = None

    def _table(self, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cos is None or self._cos.shape[0] < n or self._cos.device != torch.device(device):
            n = max(n, 256 if self._cos is None else 2 * self._cos.shape[0])
            inv = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device)
                                        / self.head_dim))
            freqs = torch.arange(n, dtype=torch.float32, device=device)[:, None] * inv[None, :]
            emb = torch.cat([freqs, freqs], dim=-1)
            self._cos, self._sin = emb.cos(), emb.sin()
        return self._cos, self._sin

    def __call__(self, positions: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions`` ``[1 or B, Lq]`` int64, all below ``n`` -> ``(cos, sin)`` ``[1 or B, 1,
        Lq, Dh]`` fp32."""
        cos, sin = self._table(n, positions.device)
        return cos[positions][:, None], sin[positions][:, None]

    def arange(self, q0: int, q1: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables for the absolute positions ``q0 .. q1 - 1`` (no gather, no host sync)."""
        cos, sin = self._table(q1, device)
        return cos[None, None, q0:q1], sin[None, None, q0:q1]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = cat(-x[..., Dh/2:], x[..., :Dh/2])``
    (the first half of the head pairs with the second), in the dtype of ``cos``/``sin``."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def apply_partial_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`apply_rotary` on the first ``cos.shape[-1]`` entries of the head, the rest passed through
    (``partial_rotary_factor < 1``, LLaDA2); the whole head when the tables cover it."""
    rd = cos.shape[-1]
    if rd == x.shape[-1]:
        return apply_rotary(x, cos, sin)
    return torch.cat([apply_rotary(x[..., :rd], cos, sin), x[..., rd:]], dim=-1)


def attention(holder: nn.Module, names: tuple, n_heads: int, n_kv: int, rope_fp32: bool, h, cos, sin,
              key_ok, cache: Optional[KVCache], layer: int, q0: int) -> torch.Tensor:
    """Bidirectional grouped-query attention with rotary positions and the block KV cache.

    ``holder``'s attributes ``names`` = (q, k, v, out) are the projections (the published
    weight names); ``rope_fp32``: rotate q and k in fp32 and cast back (LLaDA's
    ``rope_full_precision``) instead of in the activations' dtype (Llama/Qwen2, Dream)."""
    B, L, _ = h.shape
    qn, kn, vn, on = names
    q = getattr(holder, qn)(h).view(B, L, n_heads, -1).transpose(1, 2)
    k = getattr(holder, kn)(h).view(B, L, n_kv, -1).transpose(1, 2)
    v = getattr(holder, vn)(h).view(B, L, n_kv, -1).transpose(1, 2)
    if rope_fp32 and h.dtype != torch.float32:
        q = apply_rotary(q.float(), cos, sin).to(h.dtype)
        k = apply_rotary(k.float(), cos, sin).to(h.dtype)
    else:
        c, s = cos.to(h.dtype), sin.to(h.dtype)
        q, k = apply_rotary(q, c, s), apply_rotary(k, c, s)
    a = attend(q, k, v, key_ok, cache, layer, q0)            # [B, H, L, Dh]
    return getattr(holder, on)(a.transpose(1, 2).reshape(B, L, -1))


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` under the given attribute names."""

    def __init__(self, d: int, hidden: int, *, bias: bool, names: tuple, device):
        super().__init__()
        self.names = names
        gate, up, down = names
        setattr(self, gate, nn.Linear(d, hidden, bias=bias, device=device))
        setattr(self, up, nn.Linear(d, hidden, bias=bias, device=device))
        setattr(self, down, nn.Linear(hidden, d, bias=bias, device=device))

    def forward(self, x):
        gate, up, down = self.names
        return getattr(self, down)(F.silu(getattr(self, gate)(x)) * getattr(self, up)(x))


# ----------------------------------------------------------------------------- the model skeleton


class NativeModel(nn.Module):
    """The forward passes shared by the native models.

    ``model(input_ids [B, L], attention_mask [B, L] | None) -> NativeOutput(logits [B, L, V])``,
    position ``i`` scoring the token at ``i``; `window_logits` (the output head on a block only);
    `cached_logits` (the block KV-cache protocol of `fastremask.models.kv`). Subclasses provide
    the parts: ``_embed``, ``_layers``, ``_final_norm``, ``_head``, ``_uses_mask_positions``, the
    class attribute ``family`` (the name of its record in `fastremask.models.family`, which
    gives the logits shift and the display name) and ``check_config(raw, path) -> NativeConfig``.
    """

    family = "llada"

    @staticmethod
    def check_config(raw: dict, path: str) -> NativeConfig:  # pragma: no cover - abstract
        raise NotImplementedError

    # the output head's published weight name where a tied checkpoint may still carry it (the
    # embedding then serves as the head); None where tied checkpoints have no head tensor
    tied_head_weight: Optional[str] = None

    @classmethod
    def ignored_weights(cls, config: NativeConfig) -> tuple:
        """Name suffixes of tensors a checkpoint may carry that this model does not read."""
        tied = (cls.tied_head_weight,) if config.tied and cls.tied_head_weight else ()
        return _IGNORE + tied

    @property
    def shift(self) -> int:
        """The family record's ``logits_shift`` (1: the output at ``i - 1`` scores ``i``, Dream)."""
        return get_family(self.family).logits_shift

    @classmethod
    def check_checkpoint(cls, config: NativeConfig, names) -> None:
        """Checks of the checkpoint's weight names (a set, read from the index or the file's
        header) against the config, before any tensor is read (LLaDA2: the expert count)."""

    @property
    def family_name(self) -> str:
        return get_family(self.family).display

    @property
    def attention(self) -> str:
        """The family record's attention kind: ``"full"`` or ``"block_causal"`` (SDAR, LLaDA2;
        `fastremask.sampler.block`)."""
        return get_family(self.family).attention

    def __init__(self, config: NativeConfig):
        super().__init__()
        self.config = config
        # the trained block of a block-causal model: its config's (SDAR's block_size), else the record's
        self.block_length = getattr(config, "block_length", None) or get_family(self.family).block_length
        self._mask_memo = None
        self._block_memo = None

    # --- parts (subclasses)

    def _embed(self, ids):  # pragma: no cover - abstract
        raise NotImplementedError

    def _layers(self):  # pragma: no cover
        raise NotImplementedError

    def _final_norm(self, h):  # pragma: no cover
        raise NotImplementedError

    def _head(self, h):  # pragma: no cover
        raise NotImplementedError

    def _uses_mask_positions(self) -> bool:
        """True: rotary positions count real tokens only (``cumsum(mask) - 1``, Dream's
        generate, and the block models, whose blocks are counted from the first real token);
        False: absolute positions ``0 .. L - 1`` (LLaDA)."""
        return self.attention == BLOCK_CAUSAL

    def prepare(self) -> None:
        """Called once after the weights are loaded (the MoE stacks its experts here)."""

    # --- properties generate reads

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # --- inputs

    def _inputs(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]):
        """``(positions [1 or B, L] or None for 0..L-1, key_ok [B, 1, 1, L] or None)``."""
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise ValueError(f"input_ids must be a [B, L] tensor, got "
                             f"{tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__}")
        if attention_mask is None:
            return None, None
        if not isinstance(attention_mask, torch.Tensor) or tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(f"attention_mask must be a [B, L] tensor like input_ids {tuple(input_ids.shape)}, got "
                             f"{tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask).__name__}")
        memo = self._mask_memo
        if memo is not None and memo[0] is attention_mask and memo[1] == attention_mask._version:
            return memo[2], memo[3]
        m = attention_mask.to(device=input_ids.device).bool()
        # one host sync per distinct mask (generate passes the same tensor at every step): an
        # all-ones mask is no mask (SDPA's fast kernels, and the same bits as without one)
        if bool(m.all()):
            positions = key_ok = None
        else:
            ok = m | ~m.any(-1, keepdim=True)          # a row of padding only: finite garbage, not NaN
            key_ok = ok[:, None, None, :]
            positions = None
            if self._uses_mask_positions():
                positions = (m.long().cumsum(-1) - 1).masked_fill_(~m, 1)   # Dream: padding gets 1
        self._mask_memo = (attention_mask, attention_mask._version, positions, key_ok)
        return positions, key_ok

    def _block(self, block_length) -> int:
        bl = self.block_length if block_length is None else block_length
        if not isinstance(bl, int) or isinstance(bl, bool) or bl < 1:
            raise ValueError(f"block_length must be a positive integer, got {bl!r}")
        return bl

    def _masks(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], block_length=None,
               start: int = 0):
        """``(positions, attention mask)``: `_inputs` for full attention (the mask's rows are all
        positions); for block-causal attention the positions of
        `fastremask.sampler.block.block_positions` (None for ``0 .. L - 1`` without a mask) and the
        rows ``start:L`` of its `block_causal_mask`, ``[B or 1, 1, L - start, L]``, built on the
        device without a host synchronisation (the block loop hands a new mask slice at every
        call; the last one is remembered)."""
        if self.attention != BLOCK_CAUSAL:
            return self._inputs(input_ids, attention_mask)
        bl = self._block(block_length)
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            self._inputs(input_ids, None)                          # its error
        if attention_mask is not None and (not isinstance(attention_mask, torch.Tensor)
                                           or tuple(attention_mask.shape) != tuple(input_ids.shape)):
            self._inputs(input_ids, attention_mask)                # its error
        B, L = input_ids.shape
        dev = input_ids.device
        key = (attention_mask, None if attention_mask is None else attention_mask._version, L, bl, start, dev)
        memo = self._block_memo
        if memo is not None and memo[0][0] is key[0] and memo[0][1:] == key[1:]:
            return memo[1], memo[2]
        if attention_mask is not None:
            m = attention_mask.to(device=dev)
            positions = block_positions(m, B, L, dev)
            mask = block_causal_mask(m, B, L, bl, start, dev)
        else:
            positions, mask = None, block_causal_mask(None, 1, L, bl, start, dev)
        self._block_memo = (key, positions, mask)
        return positions, mask

    @staticmethod
    def _query_rows(key_ok, q0: int, q1: int, rows_from: int = 0):
        """The rows of positions ``q0:q1`` of a ``[B, 1, Lq, L]`` mask whose first row is position
        ``rows_from`` (a ``[B, 1, 1, L]`` key mask as it is)."""
        if key_ok is None or key_ok.shape[2] == 1:
            return key_ok
        return key_ok[:, :, q0 - rows_from:q1 - rows_from]

    def _rope(self, positions, q0: int, q1: int, device):
        if positions is None:
            return self.rotary.arange(q0, q1, device)
        return self.rotary(positions[:, q0:q1], positions.shape[1])    # positions < L

    def _run(self, input_ids, positions, key_ok, q0: int, q1: int, cache: Optional[KVCache] = None,
             rows_from: int = 0):
        """Hidden states (before the final norm) of positions ``q0:q1``; ``key_ok``'s first row is
        position ``rows_from``."""
        h = self._embed(input_ids[:, q0:q1])
        cos, sin = self._rope(positions, q0, q1, input_ids.device)
        key_ok = self._query_rows(key_ok, q0, q1, rows_from)
        for i, layer in enumerate(self._layers()):
            h = layer(h, cos, sin, key_ok, cache, i, q0)
        return h

    def _rows(self, h: torch.Tensor, h0: int, o0: int, o1: int) -> torch.Tensor:
        """The hidden rows whose head outputs are the logits of positions ``o0:o1``; ``h`` holds
        positions ``h0 ..``. Dream: the output at ``i - 1`` scores ``i``; position 0 its own."""
        return shifted_rows(h, h0, o0, o1, self.shift)

    # --- the three entry points

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, *,
                block_length: Optional[int] = None, **_) -> NativeOutput:
        """Logits ``[B, L, V]`` of the whole window (block-causal models: blocks of
        ``block_length``, default the trained one)."""
        positions, key_ok = self._masks(input_ids, attention_mask, block_length)
        L = input_ids.shape[1]
        h = self._run(input_ids, positions, key_ok, 0, L)
        return NativeOutput(logits=self._head(self._final_norm(self._rows(h, 0, 0, L))))

    def window_logits(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                      start: int, length: int, *, block_length: Optional[int] = None) -> torch.Tensor:
        """``[B, length, V]``: the logits of positions ``start:start + length``; the body runs on
        the whole sequence (block-causal models: only up to the last column the window can see,
        as the published LLaDA2 generate cuts its window at the current block's end), the final
        norm and the output head on those rows only."""
        L = input_ids.shape[1]
        if not (0 <= start and 1 <= length and start + length <= L):
            raise ValueError(f"window {start}:{start + length} is outside a sequence of length {L}")
        positions, key_ok = self._masks(input_ids, attention_mask, block_length)
        end = L
        if self.attention == BLOCK_CAUSAL:
            # the keys any window row sees: a prefix of the columns (block ids never decrease)
            if positions is None:
                bl = self._block(block_length)
                end = -(-(start + length) // bl) * bl
            else:
                seen = key_ok[:, 0, start:start + length].any(1)                         # [B, L]
                end = int((seen * torch.arange(1, L + 1, device=seen.device)).amax())   # one sync
            end = min(max(end, start + length), L)
            if end < L:
                input_ids = input_ids[:, :end]
                positions = positions[:, :end] if positions is not None else None
                key_ok = key_ok[:, :, :end, :end]
        h = self._run(input_ids, positions, key_ok, 0, end)
        return self._head(self._final_norm(self._rows(h, 0, start, start + length)))

    def cached_logits(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], cache: KVCache,
                      *, query: tuple, out: tuple, block_length: Optional[int] = None) -> torch.Tensor:
        """The block-cache protocol (`fastremask.models.kv`): hidden states for positions
        ``query`` only (Dream: from ``q0 - 1``, for its shift), every other position's keys and
        values from ``cache``; logits ``[B, o1 - o0, V]`` of positions ``out``. Block-causal
        models attend with their block-causal mask (the query's rows)."""
        positions, key_ok = self._masks(input_ids, attention_mask, block_length)
        refresh = cache.check(tuple(input_ids.shape), tuple(query), tuple(out))
        (q0, q1), (o0, o1) = query, out
        if self.shift and not refresh and q0 > 0:
            q0 -= 1                                   # the output at o0 - 1 scores o0
        h = self._run(input_ids, positions, key_ok, q0, q1, cache)
        return self._head(self._final_norm(self._rows(h, q0, o0, o1)))

    def block_logits(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], *,
                     block_length: Optional[int] = None, cache: Optional[BlockCache] = None, start: int = 0,
                     commit: int = 0, logits_from: Optional[int] = None) -> torch.Tensor:
        """The block-causal protocol (`fastremask.sampler.block`): columns ``start:L`` run against
        the cache's final keys and values of ``0:start`` (``cache=None``: the whole window,
        ``start=0``), their own keys written into the cache's preallocated buffers, ``0:commit``
        final afterwards; logits ``[B, L - logits_from, V]`` (``logits_from`` default ``start``)."""
        if self.attention != BLOCK_CAUSAL:
            raise ValueError(f"block_logits needs a block-causal model; {self.family_name} attends fully")
        B, L = input_ids.shape
        logits_from = begin_call(cache, start, L, commit, logits_from)
        positions, mask = self._masks(input_ids, attention_mask, block_length, start)
        h = self._run(input_ids, positions, mask, start, L, _BlockCacheView(cache) if cache is not None else None,
                      rows_from=start)
        if cache is not None:
            cache.commit(commit)
        return self._head(self._final_norm(h[:, logits_from - start:]))

    def extra_repr(self) -> str:
        return f"family={self.family!r}, path={self.config.path!r}"


class DecoderModel(NativeModel):
    """A `NativeModel` in the Hugging Face decoder layout that Dream, SDAR and LLaDA2 publish:
    ``model.<embedding>``, ``model.layers.N``, ``model.norm`` and ``lm_head`` (absent when
    tied: the embedding is the head). The embedding's attribute is the one the family record
    names (``Family.embedding``: ``model.embed_tokens.weight``, ``model.word_embeddings.weight``)."""

    tied_head_weight = "lm_head.weight"

    def _build(self, layers, rotary_dim: int, device) -> None:
        """The modules, ``layers`` the decoder layers (built on ``device``)."""
        c = self.config
        self.model = nn.Module()
        setattr(self.model, self._embedding_name(), nn.Embedding(c.embed_rows, c.d_model, device=device))
        self.model.layers = nn.ModuleList(layers)
        self.model.norm = RMSNorm(c.d_model, c.eps, device=device)
        if not c.tied:
            self.lm_head = nn.Linear(c.d_model, c.embed_rows, bias=False, device=device)
        self.rotary = Rotary(rotary_dim, c.rope_theta)

    @classmethod
    def _embedding_name(cls) -> str:
        return get_family(cls.family).embedding.split(".")[1]      # "model.<name>.weight"

    def _embed(self, ids):
        return self.get_input_embeddings()(ids)

    def _layers(self):
        return self.model.layers

    def _final_norm(self, h):
        return self.model.norm(h)

    def _head(self, h):
        return F.linear(h, self.get_input_embeddings().weight) if self.config.tied else self.lm_head(h)

    def get_input_embeddings(self) -> nn.Embedding:
        return getattr(self.model, self._embedding_name())

    def get_output_embeddings(self):
        return self.get_input_embeddings() if self.config.tied else self.lm_head


class _BlockCacheView:
    """A `BlockCache` under the ``update(layer, k, v, q0)`` call `fastremask.models.kv.attend` makes
    (the block cache knows its own start)."""

    __slots__ = ("cache",)

    def __init__(self, cache: BlockCache):
        self.cache = cache

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, q0: int):
        return self.cache.update(layer, k, v)
