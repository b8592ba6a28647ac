"""The native LLaDA and Dream forward passes (`fastremask.models.native`).

Checkpoints in the published layouts are built by `fastremask.models.testing` (real
``config.json`` fields, the published weight names, safetensors shards). The reference is
`transformers`' own ``LlamaForCausalLM`` (LLaDA's ``block_type "llama"`` block) and
``Qwen2ForCausalLM`` (Dream) with the same weights, run with a non-causal 4-D mask: these classes
exist in every transformers version, unlike LLaDA's and Dream's remote code.

Tolerances (fp32 on CPU): native vs transformers within ``atol = rtol = 1e-5`` (measured: 0,
bit for bit, with and without left padding, on torch 2.13 / transformers 5.24); the window
against the full forward the same (measured: 0); cached queries against the full forward the
same (measured up to 8e-6 on logits up to 37: the query rows run through GEMMs of other
shapes); bf16 and fp16 within ``atol 0.25, rtol 0.02`` of the fp32 forward and of
transformers' bf16 forward (logits of std ~3, max ~11; measured up to 0.13 in bf16, 0.013 in fp16).
"""
from __future__ import annotations

import json
import os
import re

import pytest
import torch

from fastremask import generate, models
from fastremask.models import ModelLoadError, native, testing
from fastremask.models.kv import KVCache
from fastremask.models.native.common import apply_rotary

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402

TIGHT = dict(atol=1e-5, rtol=1e-5)
LOOSE = dict(atol=0.25, rtol=0.02)


# ----------------------------------------------------------------------------- references


def _state(folder) -> dict:
    """Every tensor of a folder's safetensors (one file or shards), fp32."""
    names = [n for n in os.listdir(folder) if n.endswith(".safetensors")]
    out = {}
    for n in names:
        out.update(load_file(os.path.join(folder, n)))
    return {k: v.float() for k, v in out.items()}


def _cfg(folder) -> dict:
    return json.loads(open(os.path.join(folder, "config.json")).read())


def _hf(cls, config, state, dtype=torch.float32):
    config._attn_implementation = "sdpa"
    model = cls(config).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    return model.to(dtype)


def llama_reference(folder, dtype=torch.float32):
    """transformers' Llama with LLaDA's weights: the names mapped one to one."""
    c = _cfg(folder)
    conf = transformers.LlamaConfig(
        vocab_size=c["embedding_size"], hidden_size=c["d_model"], intermediate_size=c["mlp_hidden_size"],
        num_hidden_layers=c["n_layers"], num_attention_heads=c["n_heads"], num_key_value_heads=c["n_kv_heads"],
        rms_norm_eps=c["rms_norm_eps"], rope_theta=c["rope_theta"], tie_word_embeddings=c["weight_tying"],
        max_position_embeddings=4096, attention_bias=False, mlp_bias=False)
    block = {"attn_norm": "input_layernorm", "ff_norm": "post_attention_layernorm", "q_proj": "self_attn.q_proj",
             "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj", "attn_out": "self_attn.o_proj",
             "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "ff_out": "mlp.down_proj"}
    top = {"model.transformer.wte.weight": "model.embed_tokens.weight", "model.transformer.ln_f.weight": "model.norm.weight",
           "model.transformer.ff_out.weight": "lm_head.weight"}
    state = {}
    for k, v in _state(folder).items():
        if k in top:
            state[top[k]] = v
        else:
            m = re.fullmatch(r"model\.transformer\.blocks\.(\d+)\.(\w+)\.weight", k)
            state[f"model.layers.{m.group(1)}.{block[m.group(2)]}.weight"] = v
    if c["weight_tying"]:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    return _hf(transformers.LlamaForCausalLM, conf, state, dtype)


def qwen2_reference(folder, dtype=torch.float32):
    """transformers' Qwen2 with Dream's weights (the same names)."""
    c = _cfg(folder)
    conf = transformers.Qwen2Config(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
        num_hidden_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
        num_key_value_heads=c["num_key_value_heads"], rms_norm_eps=c["rms_norm_eps"], rope_theta=c["rope_theta"],
        tie_word_embeddings=c["tie_word_embeddings"], max_position_embeddings=4096, use_sliding_window=False)
    return _hf(transformers.Qwen2ForCausalLM, conf, _state(folder), dtype)


def hf_logits(model, x, attention_mask=None, *, dream: bool):
    """The reference forward without a causal mask: a 4-D bool mask (True = attend), which
    transformers passes to SDPA as given. LLaDA: padding keys hidden, absolute positions.
    Dream: its generate's mask (pairs of real tokens) and positions ``cumsum(mask) - 1``
    (1 on padding), then its shift."""
    B, L = x.shape
    m = torch.ones(B, L, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    if dream:
        mask4 = m[:, None, None, :] & m[:, None, :, None]
        pos = (m.long().cumsum(-1) - 1).masked_fill(~m, 1)
    else:
        mask4 = m[:, None, None, :].expand(B, 1, L, L)
        pos = torch.arange(L).expand(B, L)
    with torch.no_grad():
        out = model(input_ids=x, attention_mask=mask4, position_ids=pos).logits
    return torch.cat([out[:, :1], out[:, :-1]], 1) if dream else out


# ----------------------------------------------------------------------------- fixtures

SAVE = {"llada": testing.save_llada_checkpoint, "dream": testing.save_dream_checkpoint}
REFERENCE = {"llada": llama_reference, "dream": qwen2_reference}
VARIANTS = {  # name: (family, builder overrides)
    "llada": ("llada", {}),
    "llada-gqa": ("llada", {"n_kv_heads": 2}),
    "llada-tied": ("llada", {"weight_tying": True}),
    "dream": ("dream", {}),
    "dream-gqa": ("dream", {"num_key_value_heads": 2}),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("native")
    return {k: SAVE[fam](root / k, seed=i, **kw) for i, (k, (fam, kw)) in enumerate(VARIANTS.items())}


@pytest.fixture(scope="module")
def nat(folders):
    return {k: native.from_folder(f) for k, f in folders.items()}


def _ids(B, L, V, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, L), generator=g)


def _padded(B, L):
    am = torch.ones(B, L, dtype=torch.long)
    am[0, :5] = 0
    am[1, :2] = 0
    return am


# ----------------------------------------------------------------------------- equal to transformers


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_equals_transformers_fp32(folders, nat, variant):
    fam = VARIANTS[variant][0]
    ref = REFERENCE[fam](folders[variant])
    m = nat[variant]
    x = _ids(2, 23, m.config.vocab_size)
    got = m(x).logits
    want = hf_logits(ref, x, dream=fam == "dream")
    assert got.shape == want.shape == (2, 23, m.config.vocab_size) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, **TIGHT)
    # an all-ones mask is no mask
    torch.testing.assert_close(m(x, torch.ones_like(x)).logits, got, atol=0, rtol=0)


@pytest.mark.parametrize("variant", ["llada", "llada-gqa", "dream", "dream-gqa"])
def test_equals_transformers_with_left_padding(folders, nat, variant):
    fam = VARIANTS[variant][0]
    ref = REFERENCE[fam](folders[variant])
    m = nat[variant]
    x = _ids(3, 21, m.config.vocab_size, seed=1)
    am = torch.ones(3, 21, dtype=torch.long)
    am[0, :5] = 0
    am[1, :2] = 0
    got = m(x, am).logits
    want = hf_logits(ref, x, am, dream=fam == "dream")
    first = am.argmax(-1)
    for b in range(3):
        # real positions only (Dream: the first real token's logits are a padding row's output)
        s = int(first[b]) + (1 if fam == "dream" and first[b] > 0 else 0)
        torch.testing.assert_close(got[b, s:], want[b, s:], **TIGHT)
    assert torch.isfinite(got).all()
    # the padded row scores like its prompt alone (LLaDA: shifted absolute positions, the same
    # relative ones, so equal up to rounding; Dream: the same positions)
    alone = m(x[:1, 5:]).logits
    s = 6 if fam == "dream" else 5
    torch.testing.assert_close(got[:1, s:], alone[:, s - 5:], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variant", ["llada", "dream-gqa"])
def test_bf16_and_fp16(folders, nat, variant):
    fam = VARIANTS[variant][0]
    m32 = nat[variant]
    x = _ids(2, 19, m32.config.vocab_size, seed=2)
    want = m32(x).logits
    for dtype in (torch.bfloat16, torch.float16):
        m = native.from_folder(folders[variant], dtype=dtype)
        assert m.dtype == dtype and all(p.dtype == dtype for p in m.parameters())
        got = m(x, _padded(2, 19)).logits[:, 6:]
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), m32(x, _padded(2, 19)).logits[:, 6:], **LOOSE)
    # and against transformers' own bf16 forward (Dream: the same bf16 rotary; LLaDA rotates in fp32)
    ref = REFERENCE[fam](folders[variant], torch.bfloat16)
    m = native.from_folder(folders[variant], dtype=torch.bfloat16)
    torch.testing.assert_close(m(x).logits.float(), hf_logits(ref, x, dream=fam == "dream").float(),
                               **LOOSE)
    torch.testing.assert_close(m(x).logits.float(), want, **LOOSE)


def test_rotary_convention_is_the_published_one():
    """LLaDA's published RotaryEmbedding: inv_freq = 1 / theta^(arange(0, Dh, 2) / Dh), angles
    cat(freqs, freqs), rotate_half splitting the head into two halves [x1 | x2] -> [-x2 | x1];
    transformers' Llama/Qwen2 (and Dream's copy of it) compute the same."""
    from transformers.models.llama.modeling_llama import LlamaConfig, LlamaRotaryEmbedding, apply_rotary_pos_emb

    B, H, L, Dh, theta = 2, 3, 17, 16, 500000.0
    x = torch.randn(B, H, L, Dh, generator=torch.Generator().manual_seed(0))
    # the published formula, written out
    inv = 1.0 / (theta ** (torch.arange(0, Dh, 2, dtype=torch.float) / Dh))
    freqs = torch.einsum("i,j->ij", torch.arange(L, dtype=torch.float), inv)
    ang = torch.cat((freqs, freqs), dim=-1)[None, None]
    x1, x2 = x.view(B, H, L, 2, Dh // 2).unbind(dim=-2)
    published = x * ang.cos() + torch.cat((-x2, x1), dim=-1) * ang.sin()
    from fastremask.models.native.common import Rotary       # both families' tables

    cos, sin = Rotary(Dh, theta).arange(0, L, "cpu")
    assert torch.equal(apply_rotary(x, cos, sin), published)
    gathered = Rotary(Dh, theta)(torch.arange(L)[None].expand(B, L), L)
    assert torch.equal(apply_rotary(x, *gathered), published)
    conf = LlamaConfig(hidden_size=H * Dh, num_attention_heads=H, rope_theta=theta)
    hf_cos, hf_sin = LlamaRotaryEmbedding(conf)(x, torch.arange(L)[None])
    q, _ = apply_rotary_pos_emb(x, x, hf_cos, hf_sin)
    assert torch.equal(q, published)


# ----------------------------------------------------------------------------- window and cache


@pytest.mark.parametrize("variant", ["llada", "llada-tied", "dream", "dream-gqa"])
def test_window_logits_are_the_forward_rows(nat, variant):
    m = nat[variant]
    x = _ids(2, 20, m.config.vocab_size, seed=3)
    am = _padded(2, 20)
    full = m(x, am).logits
    for start, length in ((0, 4), (1, 5), (8, 8), (12, 8)):
        w = m.window_logits(x, am, start, length)
        assert w.shape == (2, length, m.config.vocab_size)
        torch.testing.assert_close(w, full[:, start:start + length], **TIGHT)
    with pytest.raises(ValueError, match="outside a sequence of length 20"):
        m.window_logits(x, am, 16, 8)


@pytest.mark.parametrize("variant", ["llada", "llada-gqa", "dream", "dream-gqa"])
@pytest.mark.parametrize("padded", [False, True], ids=["nopad", "leftpad"])
def test_cache_refresh_and_queries_reproduce_the_forward(nat, variant, padded):
    """Over an unchanged sequence, the keys and values of a refresh are exactly what the
    cached queries need: prefix (start:L) and dual (start:end) queries give the full forward's
    logits of the block, for every block, Dream's shift included (its query starts at q0 - 1)."""
    m = nat[variant]
    B, P, G, blk = 2, 7, 16, 4
    L = P + G
    x = _ids(B, L, m.config.vocab_size, seed=4)
    am = _padded(B, L) if padded else None
    full = m(x, am).logits
    for start in range(P, L, blk):
        end = start + blk
        kv = KVCache()
        r = m.cached_logits(x, am, kv, query=(0, L), out=(start, end))
        torch.testing.assert_close(r, full[:, start:end], **TIGHT)
        assert kv.shape == (B, L) and len(kv.keys) == m.config.n_layers
        kv_heads = m.config.kv_heads
        assert kv.keys[0].shape == (B, kv_heads, L, m.config.head_dim)
        for query in ((start, L), (start, end)):
            got = m.cached_logits(x, am, kv, query=query, out=(start, end))
            torch.testing.assert_close(got, full[:, start:end], **TIGHT)
    # a query at the very start (Dream: position 0 keeps its own output)
    kv = KVCache()
    m.cached_logits(x, am, kv, query=(0, L), out=(0, blk))
    torch.testing.assert_close(m.cached_logits(x, am, kv, query=(0, blk), out=(0, blk)), full[:, :blk], **TIGHT)
    torch.testing.assert_close(m.cached_logits(x, am, kv, query=(1, blk + 1), out=(1, blk)), full[:, 1:blk], **TIGHT)


def test_cache_protocol_errors(nat):
    m = nat["llada"]
    x = _ids(1, 12, m.config.vocab_size)
    kv = KVCache()
    with pytest.raises(ValueError, match="refresh it first"):
        m.cached_logits(x, None, kv, query=(4, 8), out=(4, 8))
    m.cached_logits(x, None, kv, query=(0, 12), out=(4, 8))
    with pytest.raises(ValueError, match="not inside query"):
        m.cached_logits(x, None, kv, query=(4, 8), out=(2, 8))
    with pytest.raises(ValueError, match="refresh it first"):
        m.cached_logits(_ids(2, 12, 10), None, kv, query=(4, 8), out=(4, 8))


# ----------------------------------------------------------------------------- loading


def test_shards_load_like_one_file(tmp_path):
    one = native.from_folder(testing.save_llada_checkpoint(tmp_path / "one", seed=5))
    three = testing.save_llada_checkpoint(tmp_path / "three", seed=5, shards=3)
    index = json.loads((tmp_path / "three" / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    assert "model.transformer.blocks.1.ff_out.weight" in index["weight_map"]
    sharded = native.from_folder(three)
    for (n1, p1), (n2, p2) in zip(one.state_dict().items(), sharded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_published_config_fields(folders):
    c = _cfg(folders["llada"])
    assert c["model_type"] == "llada" and c["architectures"] == ["LLaDAModelLM"]
    assert c["auto_map"]["AutoModel"] == "modeling_llada.LLaDAModelLM" and c["block_type"] == "llama"
    assert not os.path.exists(os.path.join(folders["llada"], "modeling_llada.py"))
    d = _cfg(folders["dream"])
    assert d["model_type"] == "Dream" and d["architectures"] == ["DreamModel"]
    assert d["auto_map"] == {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"}
    names = set(load_file(os.path.join(folders["dream-gqa"], "model.safetensors")))
    assert {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.bias", "model.layers.1.mlp.down_proj.weight",
            "model.norm.weight", "lm_head.weight"} <= names


@pytest.mark.parametrize("variant", ["llada", "dream-gqa"])
def test_load_runs_natively_without_remote_code(folders, variant):
    a = models.load(folders[variant], device="cpu")
    fam = VARIANTS[variant][0]
    assert type(a) is models.NativeAdapter and a.family == fam and isinstance(a.model, native.NativeModel)
    assert a.supports_cache and a.supports_window and a.dtype == torch.float32
    assert a.mask_id == _cfg(folders[variant])["mask_token_id"] == a.tokenizer.convert_tokens_to_ids(
        "<|mdm_mask|>" if fam == "llada" else "<|mask|>")
    assert a.eos_id == a.tokenizer.eos_token_id and a.eot_id is not None
    x = _ids(2, 11, a.config.vocab_size, seed=6)
    am = _padded(2, 11)
    # the adapter neither shifts again (Dream) nor changes the logits
    assert torch.equal(a(x, am).logits, a.model(x, am).logits)
    assert torch.equal(models.window_logits(a, x, am, 4, 4), a.model.window_logits(x, am, 4, 4))
    kv = KVCache()
    assert torch.equal(a.cached_logits(x, am, kv, query=(0, 11), out=(4, 8)),
                       a.model.cached_logits(x, am, KVCache(), query=(0, 11), out=(4, 8)))
    ids, mask = a.encode(["hi i am", "the cat sat on the mat"], chat=True)
    out = generate(a, ids, mask, steps=4, gen_length=4, block_length=2, mask_id=a.mask_id, seed=0)
    assert out.shape == (2, ids.shape[1] + 4) and not (out == a.mask_id).any()
    win = generate(a, ids, mask, steps=4, gen_length=4, block_length=2, mask_id=a.mask_id, seed=0, logits_window=True)
    assert torch.equal(win, out)


def test_load_dtype_and_auto(tmp_path):
    p = testing.save_dream_checkpoint(tmp_path / "d", dtype=torch.bfloat16)
    assert models.load(p, device="cpu").dtype == torch.bfloat16          # config.json torch_dtype
    assert models.load(p, device="cpu", dtype="fp32").dtype == torch.float32
    assert models.load(p, device="cpu", dtype=torch.float16).dtype == torch.float16


def test_wrap_native_and_family_checks(nat, tmp_path):
    a = models.wrap(nat["dream"], testing.dream_tokenizer())
    assert type(a) is models.NativeAdapter and a.family == "dream" and a.mask_id == nat["dream"].config.mask_token_id
    x = _ids(1, 9, a.config.vocab_size)
    assert torch.equal(a(x).logits, nat["dream"](x).logits)          # not shifted twice
    with pytest.raises(ModelLoadError, match="family='llada' contradicts"):
        models.wrap(nat["dream"], family="llada")
    # any model whose config names a known model_type
    look_alike = models.load(testing.save_tiny_dream(tmp_path / "d"), trust_remote_code=True, device="cpu").model
    with pytest.raises(ModelLoadError, match=r"family='llada' contradicts .*'Dream', a dream model"):
        models.wrap(look_alike, family="llada")


def test_look_alike_layout_goes_to_remote_code(tmp_path):
    """model_type 'llada' with weights under other names (the project's look-alike): not the
    published layout, so its own code runs (trust_remote_code) and the error says why."""
    p = testing.save_tiny_llada(tmp_path / "l")
    with pytest.raises(ModelLoadError, match=r"no tensor 'model.transformer.wte.weight'.*trust_remote_code=True"):
        models.load(p, device="cpu")
    with pytest.raises(ModelLoadError, match=r"not in the published llada layout.*native=False"):
        models.load(p, device="cpu", native=True, trust_remote_code=True)
    a = models.load(p, device="cpu", trust_remote_code=True)
    assert type(a) is models.Adapter and type(a.model).__name__ == "TinyLLaDAModelLM"


def test_native_false_needs_the_published_code(folders):
    with pytest.raises(ModelLoadError, match=r"'auto_map' \(AutoConfig\) names configuration_llada.py, which is "
                                             r"not in .*drop native=False"):
        models.load(folders["llada"], device="cpu", native=False, trust_remote_code=True)
    with pytest.raises(ModelLoadError, match="trust_remote_code=True"):
        models.load(folders["dream"], device="cpu", native=False)
    with pytest.raises(ModelLoadError, match="native must be None, True or False"):
        models.load(folders["dream"], native="yes")


# ----------------------------------------------------------------------------- the remote-code range


def test_remote_code_range_is_declared():
    import tomllib

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["optional-dependencies"]["remote-code"] == [f"transformers{models.REMOTE_CODE_TRANSFORMERS}"]
    assert models.REMOTE_CODE_TRANSFORMERS == ">=4.46,<4.58"
    assert any(d.startswith("transformers>=4.46") for d in project["dependencies"])


FAILING_CODE = '''
from transformers import PretrainedConfig, PreTrainedModel


class BrokenConfig(PretrainedConfig):
    model_type = "lladamoe"


class BrokenModel(PreTrainedModel):
    config_class = BrokenConfig

    def __init__(self, config):
        super().__init__(config)
        raise AttributeError("'BrokenModel' object has no attribute 'all_tied_weights_keys'")
'''


def test_failing_remote_code_names_the_supported_range(tmp_path):
    """Remote code that fails (as the published LLaDA / Dream / LLaDA-MoE code does on 5.x):
    the error says which transformers versions it needs when the installed one is outside."""
    folder = tmp_path / "moe"
    folder.mkdir()
    (folder / "modeling_broken.py").write_text(FAILING_CODE)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "lladamoe", "architectures": ["BrokenModel"], "vocab_size": 8,
        "auto_map": {"AutoConfig": "modeling_broken.BrokenConfig", "AutoModel": "modeling_broken.BrokenModel"}}))
    save_file({"w": torch.zeros(1)}, str(folder / "model.safetensors"))
    major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
    with pytest.raises(ModelLoadError, match="all_tied_weights_keys") as e:
        models.load(folder, device="cpu", trust_remote_code=True)
    if not (4, 46) <= (major, minor) < (4, 58):
        assert "transformers >=4.46,<4.58" in str(e.value) and "fastremask[remote-code]" in str(e.value)


# ----------------------------------------------------------------------------- bad input


def _edit_config(folder, **changes):
    path = os.path.join(folder, "config.json")
    c = json.loads(open(path).read())
    for k, v in changes.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    open(path, "w").write(json.dumps(c))


def test_missing_shard(tmp_path):
    p = testing.save_llada_checkpoint(tmp_path / "l", shards=3)
    os.remove(os.path.join(p, "model-00002-of-00003.safetensors"))
    with pytest.raises(ModelLoadError, match=r"model.safetensors.index.json: shard model-00002-of-00003.safetensors "
                                             r"is missing .*holds 'model.transformer"):
        models.load(p, device="cpu")


def test_wrong_shape(tmp_path):
    p = testing.save_dream_checkpoint(tmp_path / "d")
    _edit_config(p, intermediate_size=48)
    with pytest.raises(ModelLoadError, match=r"model.safetensors: tensor 'model.layers.0.mlp.gate_proj.weight' has "
                                             r"shape \[64, 32\], but config.json describes \[48, 32\]"):
        models.load(p, device="cpu")
    p = testing.save_llada_checkpoint(tmp_path / "l", n_kv_heads=2)
    _edit_config(p, n_kv_heads=4)
    with pytest.raises(ModelLoadError, match=r"tensor 'model.transformer.blocks.0.k_proj.weight' has shape \[16, 32\]"):
        models.load(p, device="cpu")


def test_missing_and_unexpected_tensors(tmp_path):
    p = testing.save_llada_checkpoint(tmp_path / "l")
    st = load_file(os.path.join(p, "model.safetensors"))
    save_file({k: v for k, v in st.items() if k != "model.transformer.ln_f.weight"}, os.path.join(p, "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"model.safetensors: tensor 'model.transformer.ln_f.weight' is missing"):
        models.load(p, device="cpu")
    p = testing.save_llada_checkpoint(tmp_path / "tied", weight_tying=False)
    _edit_config(p, weight_tying=True)
    with pytest.raises(ModelLoadError, match=r"unexpected tensor 'model.transformer.ff_out.weight'"):
        models.load(p, device="cpu")


def test_config_fields(tmp_path):
    p = testing.save_llada_checkpoint(tmp_path / "l")
    cfg = os.path.join(p, "config.json")
    _edit_config(p, d_model=None)
    with pytest.raises(ModelLoadError, match=re.escape(f"{cfg}: field 'd_model' is missing")):
        models.load(p, device="cpu")
    _edit_config(p, d_model=30)
    with pytest.raises(ModelLoadError, match=r"field 'd_model' \(30\) is not a multiple of 'n_heads' \(4\)"):
        models.load(p, device="cpu")
    _edit_config(p, d_model=32, block_type="sequential")
    with pytest.raises(ModelLoadError, match=r"field 'block_type' is 'sequential'; the native LLaDA supports 'llama'"):
        models.load(p, device="cpu")
    _edit_config(p, block_type="llama", n_heads="four")
    with pytest.raises(ModelLoadError, match=r"field 'n_heads' must be a positive integer, got 'four'"):
        models.load(p, device="cpu")
    q = testing.save_dream_checkpoint(tmp_path / "d")
    _edit_config(q, rope_scaling={"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(ModelLoadError, match=r"field 'rope_scaling'.*native=False"):
        models.load(q, device="cpu")
    _edit_config(q, rope_scaling=None, torch_dtype="int8")
    with pytest.raises(ModelLoadError, match=r"field 'torch_dtype' is 'int8'"):
        models.load(q, device="cpu")


def test_config_without_the_ids(tmp_path):
    p = testing.save_dream_checkpoint(tmp_path / "d")
    _edit_config(p, mask_token_id=None)
    # the tokenizer still declares <|mask|>: found there
    assert models.load(p, device="cpu").mask_id == testing.dream_tokenizer().mask_token_id
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if os.path.exists(os.path.join(p, name)):
            os.remove(os.path.join(p, name))
    cfg = os.path.join(p, "config.json")
    with pytest.raises(ModelLoadError, match=re.escape(f"{cfg} has no field 'mask_token_id' and it has no tokenizer")):
        models.load(p, device="cpu")
    a = models.load(p, device="cpu", mask_id=3)             # token ids only
    assert a.tokenizer is None and a.mask_id == 3
    _edit_config(p, mask_token_id=999)
    with pytest.raises(ModelLoadError, match=r"mask id 999 of .*field 'mask_token_id'\) is outside its vocabulary of"):
        models.load(p, device="cpu")


def test_unknown_model_type_and_no_weights(tmp_path):
    p = testing.save_llada_checkpoint(tmp_path / "l")
    _edit_config(p, model_type="gpt-llada")
    with pytest.raises(ModelLoadError, match=r"native=True, but .*config.json has model_type 'gpt-llada'"):
        models.load(p, device="cpu", native=True)
    with pytest.raises(ModelLoadError, match=r"field 'model_type' is 'gpt-llada'"):
        native.from_folder(p)
    q = testing.save_dream_checkpoint(tmp_path / "d")
    os.remove(os.path.join(q, "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"has no model.safetensors and no model.safetensors.index.json"):
        models.load(q, device="cpu")
    torch.save({}, os.path.join(q, "pytorch_model.bin"))
    with pytest.raises(ModelLoadError, match=r"pytorch_model.bin: PyTorch pickles.*native=False"):
        models.load(q, device="cpu")


def test_broken_index(tmp_path):
    p = testing.save_dream_checkpoint(tmp_path / "d", shards=2)
    index = os.path.join(p, "model.safetensors.index.json")
    open(index, "w").write("{not json")
    with pytest.raises(ModelLoadError, match=re.escape(f"{index} is not valid JSON")):
        models.load(p, device="cpu")
    open(index, "w").write(json.dumps({"weight_map": {"model.norm.weight": "../x.safetensors"}}))
    with pytest.raises(ModelLoadError, match=r"points outside the folder"):
        models.load(p, device="cpu")


def test_tokenizer_that_names_its_own_code(tmp_path):
    """Dream-v0's tokenizer_config.json names tokenization_dream.py: without trust_remote_code
    the tokenizer is read from tokenizer.json (special tokens and chat template kept)."""
    p = testing.save_dream_checkpoint(tmp_path / "d")
    path = os.path.join(p, "tokenizer_config.json")
    tc = json.loads(open(path).read())
    tc.update(tokenizer_class="DreamTokenizer", auto_map={"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]})
    open(path, "w").write(json.dumps(tc))
    a = models.load(p, device="cpu")
    want = testing.dream_tokenizer()
    assert a.mask_id == want.mask_token_id and a.eos_id == want.eos_token_id
    assert a.tokenizer.convert_ids_to_tokens(a.tokenize("hi", chat=True))[-2:] == ["<|im_start|>", "assistant"]
    os.remove(os.path.join(p, "tokenizer.json"))
    with pytest.raises(ModelLoadError, match=r"could not load the tokenizer of .*trust_remote_code=True"):
        models.load(p, device="cpu")
