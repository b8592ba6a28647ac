"""The native block-diffusion forwards: SDAR (`fastremask.models.native.sdar`) and LLaDA2
(`fastremask.models.native.llada2`, MoE).

Checkpoints in the published layouts are built by `fastremask.models.testing` (real
``config.json`` fields and weight names, ``auto_map`` as published, safetensors shards).

* SDAR is Qwen3's decoder: the reference is `transformers`' own ``Qwen3ForCausalLM`` with the
  same weights, given the block-causal mask as a 4-D mask written out here (not the package's
  helper) and, under left padding, the positions ``cumsum(mask) - 1``. Tolerance 1e-5 in fp32
  (measured: 0, bit for bit, torch 2.13 / transformers 5.25 on CPU).
* LLaDA2's reference is a plain restatement of the published ``modeling_llada2_moe.py`` written
  in this file: fused QKV split per head, q/k RMSNorm, partial rotary, every expert computed
  for every token and weighted by the router (sigmoid scores, expert bias for the choice only,
  group-limited top-k, normalised, scaled), the shared expert, dense first layers. Tolerance
  1e-5 in fp32.
"""
from __future__ import annotations

import json
import os

import pytest
import torch

from fastremask import models
from fastremask.models import ModelLoadError, native, testing
from fastremask.models.kv import KVCache

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402

TIGHT = dict(atol=1e-5, rtol=1e-5)


def _state(folder) -> dict:
    out = {}
    for n in os.listdir(folder):
        if n.endswith(".safetensors"):
            out.update(load_file(os.path.join(folder, n)))
    return {k: v.float() for k, v in out.items()}


def _cfg(folder) -> dict:
    with open(os.path.join(folder, "config.json")) as f:
        return json.load(f)


def _ids(B, L, vocab, seed=0, low=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, vocab, (B, L), generator=g)


def reference_block_mask(lengths, L, block):
    """``[B, 1, L, L]`` bool, written out position by position: row ``b`` has ``L - n`` padding
    positions then ``n`` real tokens; real token ``i`` (counted from the row's first real token)
    may see real token ``j`` iff ``j // block <= i // block``. Padding queries see the real tokens
    of the first block (their outputs are never compared)."""
    out = torch.zeros(len(lengths), 1, L, L, dtype=torch.bool)
    for b, n in enumerate(lengths):
        p = L - n
        for i in range(L):
            for j in range(p, L):
                out[b, 0, i, j] = (j - p) // block <= max(i - p, 0) // block
    return out


# ----------------------------------------------------------------------------- SDAR


def qwen3_reference(folder):
    """transformers' Qwen3ForCausalLM with an SDAR checkpoint's weights (the names are Qwen3's)."""
    c = _cfg(folder)
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "attention_bias",
            "tie_word_embeddings", "max_position_embeddings")
    conf = transformers.Qwen3Config(**{k: c[k] for k in keys})
    conf._attn_implementation = "sdpa"
    model = transformers.Qwen3ForCausalLM(conf).eval()
    missing, unexpected = model.load_state_dict(_state(folder), strict=False)
    assert not unexpected and all("rotary" in k or (c["tie_word_embeddings"] and k == "lm_head.weight")
                                  for k in missing), (missing, unexpected)
    if c["tie_word_embeddings"]:
        model.tie_weights()
    return model


SDAR_VARIANTS = {
    "sdar": {},
    "sdar-mha": {"num_key_value_heads": 4},
    "sdar-tied-bias": {"tie_word_embeddings": True, "attention_bias": True},
    "sdar-block8": {"block_size": 8},
}


@pytest.fixture(scope="module")
def sdar_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdar")
    return {k: testing.save_sdar_checkpoint(root / k, **v) for k, v in SDAR_VARIANTS.items()}


@pytest.mark.parametrize("variant", list(SDAR_VARIANTS))
def test_sdar_equals_qwen3_with_the_block_causal_mask(sdar_folders, variant):
    folder = sdar_folders[variant]
    block = _cfg(folder)["block_size"]
    nat, ref = native.from_folder(folder), qwen3_reference(folder)
    assert nat.attention == "block_causal" and nat.block_length == block
    L = 13                                            # a partial last block
    ids = _ids(2, L, nat.config.vocab_size)
    with torch.no_grad():
        got = nat(ids).logits
        want = ref(input_ids=ids, attention_mask=reference_block_mask([L, L], L, block)).logits
        causal = ref(input_ids=ids).logits
    torch.testing.assert_close(got, want, **TIGHT)
    assert not torch.allclose(got, causal, atol=1e-3)     # the mask matters: not Qwen3's causal one
    # inside a block every position sees the whole block: the first position of a block depends
    # on the block's last token, not on the next block's
    ids2 = ids.clone()
    ids2[:, block - 1] = (ids2[:, block - 1] + 1 - 5) % (nat.config.vocab_size - 5) + 5
    with torch.no_grad():
        got2 = nat(ids2).logits
    assert not torch.allclose(got2[:, 0], got[:, 0])
    ids3 = ids.clone()
    ids3[:, block] = (ids3[:, block] + 1 - 5) % (nat.config.vocab_size - 5) + 5
    with torch.no_grad():
        got3 = nat(ids3).logits
    torch.testing.assert_close(got3[:, :block], got[:, :block], rtol=0, atol=0)


def test_sdar_block_length_override(sdar_folders):
    folder = sdar_folders["sdar"]
    nat, ref = native.from_folder(folder), qwen3_reference(folder)
    L = 12
    ids = _ids(1, L, nat.config.vocab_size, seed=3)
    with torch.no_grad():
        got = nat(ids, block_length=6).logits
        want = ref(input_ids=ids, attention_mask=reference_block_mask([L], L, 6)).logits
    torch.testing.assert_close(got, want, **TIGHT)
    with pytest.raises(ValueError, match="block_length must be a positive integer, got 0"):
        nat(ids, block_length=0)


@pytest.mark.parametrize("variant", ["sdar", "sdar-block8"])
def test_sdar_left_padding(sdar_folders, variant):
    """A left-padded row: blocks counted from its first real token, positions cumsum(mask) - 1;
    equal to transformers given the same mask and positions, and to the row alone."""
    folder = sdar_folders[variant]
    block = _cfg(folder)["block_size"]
    nat, ref = native.from_folder(folder), qwen3_reference(folder)
    L, lengths = 14, [14, 9]
    ids = _ids(2, L, nat.config.vocab_size, seed=1)
    am = torch.zeros(2, L, dtype=torch.long)
    for b, n in enumerate(lengths):
        am[b, L - n:] = 1
    ids[1, :L - lengths[1]] = 0
    pos = (am.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        got = nat(ids, am).logits
        want = ref(input_ids=ids, attention_mask=reference_block_mask(lengths, L, block), position_ids=pos).logits
        alone = nat(ids[1:, L - lengths[1]:]).logits
    for b, n in enumerate(lengths):
        torch.testing.assert_close(got[b, L - n:], want[b, L - n:], **TIGHT)
    torch.testing.assert_close(got[1, L - lengths[1]:], alone[0], **TIGHT)
    assert torch.isfinite(got).all()


@pytest.mark.parametrize("padded", [False, True], ids=["nopad", "leftpad"])
def test_sdar_window_logits(sdar_folders, padded):
    nat = native.from_folder(sdar_folders["sdar"])
    L = 14
    ids = _ids(2, L, nat.config.vocab_size, seed=2)
    am = torch.ones(2, L, dtype=torch.long)
    if padded:
        am[1, :3] = 0
    with torch.no_grad():
        full = nat(ids, am).logits
        for start, length in [(0, 4), (4, 4), (5, 2), (8, 6), (12, 2)]:
            win = nat.window_logits(ids, am, start, length)
            torch.testing.assert_close(win, full[:, start:start + length], **TIGHT)


@pytest.mark.parametrize("padded", [False, True], ids=["nopad", "leftpad"])
def test_sdar_cache_queries_reproduce_the_forward(sdar_folders, padded):
    """Over an unchanged sequence, a refresh and then a block query with the cached keys give
    the full forward's logits (the block-causal mask applies to the query rows)."""
    nat = native.from_folder(sdar_folders["sdar"])
    L = 16
    ids = _ids(2, L, nat.config.vocab_size, seed=4)
    am = torch.ones(2, L, dtype=torch.long)
    if padded:
        am[0, :2] = 0
    cache = KVCache()
    with torch.no_grad():
        full = nat(ids, am).logits
        ref = nat.cached_logits(ids, am, cache, query=(0, L), out=(0, L))
        q = nat.cached_logits(ids, am, cache, query=(8, 12), out=(8, 12))
    torch.testing.assert_close(ref, full, **TIGHT)
    torch.testing.assert_close(q, full[:, 8:12], **TIGHT)


def test_sdar_loads_from_shards_and_through_models_load(tmp_path):
    one = testing.save_sdar_checkpoint(tmp_path / "one")
    three = testing.save_sdar_checkpoint(tmp_path / "three", shards=3)
    assert os.path.isfile(os.path.join(three, "model.safetensors.index.json"))
    a, b = native.from_folder(one), native.from_folder(three)
    ids = _ids(1, 9, a.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)
    adapter = models.load(three, device="cpu")
    assert isinstance(adapter, models.NativeAdapter) and adapter.family == "sdar"
    cfg = _cfg(three)
    assert cfg["architectures"] == ["SDARForCausalLM"] and cfg["auto_map"] == testing.SDAR_AUTO_MAP
    assert adapter.mask_id == cfg["mask_token_id"] == adapter.tokenizer.convert_tokens_to_ids("<|MASK|>")
    assert adapter.eos_id == adapter.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    bf = models.load(one, device="cpu", dtype="bf16")
    assert bf.model.dtype == torch.bfloat16
    with torch.no_grad():
        lb = bf(ids).logits.float()
        lf = a(ids).logits
    torch.testing.assert_close(lb, lf, atol=0.25, rtol=0.02)


@pytest.mark.parametrize("field,value,message", [
    ("hidden_act", "gelu", "field 'hidden_act' is 'gelu'"),
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "field 'rope_scaling'"),
    ("use_sliding_window", True, "field 'use_sliding_window' is true"),
    ("num_key_value_heads", 3, "'num_attention_heads' \\(4\\) is not a multiple of 'num_key_value_heads' \\(3\\)"),
    ("head_dim", 7, "head dimension 7 is odd"),
    ("block_size", 0, "field 'block_size' must be a positive integer, got 0"),
])
def test_sdar_bad_config(tmp_path, field, value, message):
    folder = testing.save_sdar_checkpoint(tmp_path / "c")
    cfg = _cfg(folder)
    cfg[field] = value
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    with pytest.raises(ModelLoadError, match=message):
        native.from_folder(folder)


def simulate_block_decoding(nat, ids, am, block, prompt_end, steps=3, seed=0):
    """Drive `block_logits` as the block loop does (`fastremask.sampler.block`): per block, a
    first call from ``cache.length`` that commits up to the block's start, then calls on the
    block alone; between calls some tokens of the current block change (as unmasking does).
    Every call's logits are compared with the whole window recomputed (``cache=None``)."""
    from fastremask.sampler.block import BlockCache

    g = torch.Generator().manual_seed(seed)
    B, L = ids.shape
    x = ids.clone()
    cache = BlockCache(L)
    worst = 0.0
    first = prompt_end - prompt_end % block
    for s in range(first, L, block):
        e = min(s + block, L)
        for _ in range(steps):
            with torch.no_grad():
                got = nat.block_logits(x, am, block_length=block, cache=cache, start=cache.length, commit=s,
                                       logits_from=s)
                want = nat.block_logits(x, am, block_length=block)[:, s:]
            assert cache.length == s
            torch.testing.assert_close(got, want, **TIGHT)
            worst = max(worst, float((got - want).abs().max()))
            col = s + int(torch.randint(0, e - s, (1,), generator=g))
            x[:, col] = torch.randint(5, nat.config.vocab_size, (B,), generator=g)
    return worst


@pytest.mark.parametrize("padded", [False, True], ids=["nopad", "leftpad"])
def test_sdar_exact_block_cache_equals_the_window_recompute(sdar_folders, padded):
    """Left padding as `fastremask.sampler.block.BlockLayout` lays rows out: whole blocks of
    padding, so every row's blocks sit at the same columns, and filler (mask 0) after a row's
    last block."""
    nat = native.from_folder(sdar_folders["sdar"])
    L, block = 18, 4
    ids = _ids(2, L, nat.config.vocab_size, seed=5)
    am = None
    if padded:
        am = torch.ones(2, L, dtype=torch.long)
        am[1, :4] = 0
        am[0, 16:] = 0
    simulate_block_decoding(nat, ids, am, block, prompt_end=6)


# ----------------------------------------------------------------------------- SDAR-MoE


def qwen3_moe_reference(folder):
    """transformers' own Qwen3MoeForCausalLM (its eager expert loop) with an SDAR-MoE
    checkpoint's weights: the published per-expert ``gate_proj`` / ``up_proj`` are concatenated
    into transformers 5's ``experts.gate_up_proj`` ``[E, 2I, d]`` (gate first), ``down_proj``
    stacked; every other name is Qwen3-MoE's."""
    c = _cfg(folder)
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "attention_bias",
            "tie_word_embeddings", "max_position_embeddings", "num_experts", "num_experts_per_tok",
            "moe_intermediate_size", "norm_topk_prob", "decoder_sparse_step", "mlp_only_layers")
    conf = transformers.Qwen3MoeConfig(**{k: c[k] for k in keys})
    conf._attn_implementation = "sdpa"
    conf._experts_implementation = "eager"
    model = transformers.Qwen3MoeForCausalLM(conf).eval()
    st = _state(folder)
    out = {k: v for k, v in st.items() if ".mlp.experts." not in k}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}.mlp.experts."
        if p + "0.gate_proj.weight" in st:
            E = range(c["num_experts"])
            out[p + "gate_up_proj"] = torch.stack([torch.cat([st[p + f"{e}.gate_proj.weight"],
                                                              st[p + f"{e}.up_proj.weight"]]) for e in E])
            out[p + "down_proj"] = torch.stack([st[p + f"{e}.down_proj.weight"] for e in E])
    missing, unexpected = model.load_state_dict(out, strict=False)
    assert not unexpected and all("rotary" in k or (c["tie_word_embeddings"] and k == "lm_head.weight")
                                  for k in missing), (missing, unexpected)
    if c["tie_word_embeddings"]:
        model.tie_weights()
    return model


SDAR_MOE_VARIANTS = {
    "sdar-moe": {},                                                     # layer 1 dense (mlp_only_layers)
    "sdar-moe-unnormed-step2": {"norm_topk_prob": False, "decoder_sparse_step": 2, "mlp_only_layers": [],
                                "num_experts_per_tok": 3},              # layer 1 only sparse
    "sdar-moe-all-sparse-tied": {"mlp_only_layers": [], "tie_word_embeddings": True, "num_hidden_layers": 2},
}


@pytest.fixture(scope="module")
def sdar_moe_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdar_moe")
    return {k: testing.save_sdar_moe_checkpoint(root / k, **v) for k, v in SDAR_MOE_VARIANTS.items()}


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped_mm", "loop"])
@pytest.mark.parametrize("variant", list(SDAR_MOE_VARIANTS))
def test_sdar_moe_equals_qwen3_moe_with_the_block_causal_mask(sdar_moe_folders, variant, grouped):
    """The native SDAR-MoE (grouped dispatch or the loop over experts) against transformers'
    Qwen3-MoE on the same weights, given the block-causal mask and, under left padding, the
    positions ``cumsum(mask) - 1``; fp32, 1e-5."""
    folder = sdar_moe_folders[variant]
    c = _cfg(folder)
    nat, ref = native.from_folder(folder), qwen3_moe_reference(folder)
    assert nat.attention == "block_causal" and nat.block_length == 4
    sparse = [i for i in range(c["num_hidden_layers"]) if (i + 1) % c["decoder_sparse_step"] == 0
              and i not in c["mlp_only_layers"]]
    assert [i for i, layer in enumerate(nat.model.layers) if layer.mlp in nat.moe_layers()] == sparse
    for moe in nat.moe_layers():
        moe.use_grouped = grouped
    L, lengths = 14, [14, 9]
    ids = _ids(2, L, nat.config.vocab_size, seed=6)
    am = torch.zeros(2, L, dtype=torch.long)
    for b, n in enumerate(lengths):
        am[b, L - n:] = 1
    pos = (am.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        got = nat(ids).logits
        want = ref(input_ids=ids, attention_mask=reference_block_mask([L, L], L, 4)).logits
        got_pad = nat(ids, am).logits
        want_pad = ref(input_ids=ids, attention_mask=reference_block_mask(lengths, L, 4), position_ids=pos).logits
    torch.testing.assert_close(got, want, **TIGHT)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(got_pad[b, L - n:], want_pad[b, L - n:], **TIGHT)


def test_sdar_moe_router_and_sum_order_by_hand():
    """The router (softmax in fp32 over the logits in the activations' dtype, top-k, normalised
    when told, cast back) and the published sum order (ascending expert index, from zeros) in
    bf16, where the order shows: against a loop written here."""
    from fastremask.models.native.common import NativeConfig
    from fastremask.models.native.sdar import _SparseMoe, sdar_route

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 16, generator=g)
    w = torch.randn(8, 16, generator=g)
    experts, weights = sdar_route(x, w, top_k=3, norm=True)
    probs = torch.softmax(x @ w.T, -1)
    for t in range(6):
        top = sorted(range(8), key=lambda e: -float(probs[t, e]))[:3]
        assert experts[t].tolist() == top
        want = probs[t, top] / probs[t, top].sum()
        torch.testing.assert_close(weights[t], want, atol=1e-6, rtol=1e-6)
    _, unnormed = sdar_route(x, w, top_k=3, norm=False)
    torch.testing.assert_close(unnormed, probs.gather(1, experts), atol=1e-6, rtol=1e-6)

    c = NativeConfig({}, "config.json")
    c.d_model, c.moe_hidden, c.n_experts, c.top_k, c.norm_topk = 16, 32, 8, 3, True
    moe = _SparseMoe(c, device="cpu").to(torch.bfloat16)
    with torch.no_grad():
        for p in moe.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    xb = x.to(torch.bfloat16)
    with torch.no_grad():
        got = moe(xb)
        e, wb = sdar_route(xb, moe.gate.weight, top_k=3, norm=True)
        want = torch.zeros_like(xb)
        for ex in range(8):                               # the published loop: index_add_ per expert
            for t in range(6):
                for k in range(3):
                    if int(e[t, k]) == ex:
                        want[t] += moe.experts[ex](xb[t:t + 1])[0] * wb[t, k]
    assert torch.equal(got, want)


@pytest.mark.parametrize("padded", [False, True], ids=["nopad", "leftpad"])
def test_sdar_moe_exact_block_cache_equals_the_window_recompute(sdar_moe_folders, padded):
    nat = native.from_folder(sdar_moe_folders["sdar-moe"])
    L, block = 18, 4
    ids = _ids(2, L, nat.config.vocab_size, seed=7)
    am = None
    if padded:
        am = torch.ones(2, L, dtype=torch.long)
        am[1, :4] = 0
        am[0, 16:] = 0
    simulate_block_decoding(nat, ids, am, block, prompt_end=6)


def test_sdar_moe_shards_and_load(tmp_path):
    one = testing.save_sdar_moe_checkpoint(tmp_path / "one")
    three = testing.save_sdar_moe_checkpoint(tmp_path / "three", shards=3)
    a, b = native.from_folder(one), native.from_folder(three)
    ids = _ids(1, 9, a.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)
    moe = a.moe_layers()[0]
    assert moe.experts[5].down_proj.weight.data_ptr() == moe.stack()[2][5].data_ptr()
    adapter = models.load(three, device="cpu")
    assert isinstance(adapter, models.NativeAdapter) and adapter.family == "sdar"
    assert isinstance(adapter.model, native.SDARModel) and adapter.block_length == 4
    cfg = _cfg(three)
    assert cfg["model_type"] == "sdar_moe" and cfg["architectures"] == ["SDARMoeForCausalLM"]
    assert cfg["auto_map"] == testing.SDAR_MOE_AUTO_MAP
    assert adapter.mask_id == cfg["mask_token_id"] == adapter.tokenizer.convert_tokens_to_ids("<|MASK|>")
    bf = native.from_folder(one, dtype=torch.bfloat16)
    with torch.no_grad():
        torch.testing.assert_close(bf(ids).logits.float(), a(ids).logits, atol=0.25, rtol=0.02)


@pytest.mark.parametrize("fields,message", [
    ({"num_experts": 12}, "field 'num_experts' is 12, but layer 0 of the checkpoint has 8 experts"),
    ({"mlp_only_layers": [0, 1]}, r"layer 0 of the checkpoint has experts, but the config makes it dense "
                                  r"\(field 'decoder_sparse_step' is 1, 'mlp_only_layers' \[0, 1\]\)"),
    ({"mlp_only_layers": []}, "field 'num_experts' is 8, but layer 1 of the checkpoint has 0 experts"),
    ({"num_experts_per_tok": 9}, r"field 'num_experts_per_tok' \(9\) exceeds 'num_experts' \(8\)"),
    ({"mlp_only_layers": [5]}, "field 'mlp_only_layers' holds 5, but 'num_hidden_layers' is 3"),
    ({"mlp_only_layers": "1"}, "field 'mlp_only_layers' must be a list of layer indices, got '1'"),
    ({"decoder_sparse_step": 0}, "field 'decoder_sparse_step' must be a positive integer, got 0"),
    ({"moe_intermediate_size": None}, "field 'moe_intermediate_size' is missing"),
    ({"num_experts": None}, "field 'num_experts' is missing"),
])
def test_sdar_moe_bad_config(tmp_path, fields, message):
    folder = testing.save_sdar_moe_checkpoint(tmp_path / "c")
    _edit_config(folder, **fields)
    with pytest.raises(ModelLoadError, match=message):
        native.from_folder(folder)


def test_sdar_moe_expert_count_checked_before_reading_tensors(tmp_path):
    folder = testing.save_sdar_moe_checkpoint(tmp_path / "c", shards=2)
    for n in os.listdir(folder):
        if n.endswith(".safetensors"):
            os.remove(os.path.join(folder, n))
    _edit_config(folder, num_experts=4)
    with pytest.raises(ModelLoadError, match="field 'num_experts' is 4, but layer 0"):
        native.from_folder(folder)


# ----------------------------------------------------------------------------- LLaDA2 (MoE)


def _rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _swiglu(st, p, x):
    return (torch.nn.functional.silu(x @ st[p + "gate_proj.weight"].T) * (x @ st[p + "up_proj.weight"].T)) \
        @ st[p + "down_proj.weight"].T


def llada2_reference(folder, ids, mask, positions):
    """LLaDA2's forward restated from the published modeling_llada2_moe.py, plainly: fp32,
    eager attention with ``mask`` ``[B, 1, L, L]``, rotary at ``positions`` ``[B, L]`` on the
    first ``partial_rotary_factor`` of each head, and every expert run on every token, weighted
    by a dense ``[T, E]`` matrix of router weights (zero for experts not chosen)."""
    st, c = _state(folder), _cfg(folder)
    H, KV, d = c["num_attention_heads"], c["num_key_value_heads"], c["hidden_size"]
    hd, eps = c["head_dim"], c["rms_norm_eps"]
    rd = int(hd * c["partial_rotary_factor"])
    inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, rd, 2, dtype=torch.float32) / rd))
    ang = positions[..., None].float() * inv                                    # [B, L, rd/2]
    cos, sin = torch.cat([ang, ang], -1).cos()[:, None], torch.cat([ang, ang], -1).sin()[:, None]

    def rope(x):
        r, rest = x[..., :rd], x[..., rd:]
        half = torch.cat([-r[..., rd // 2:], r[..., :rd // 2]], -1)
        return torch.cat([r * cos + half * sin, rest], -1)

    B, L = ids.shape
    h = st["model.word_embeddings.weight"][ids]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        n = _rms(h, st[p + "input_layernorm.weight"], eps)
        qkv = (n @ st[p + "attention.query_key_value.weight"].T).view(B, L, H + 2 * KV, hd)
        q, k, v = qkv[:, :, :H], qkv[:, :, H:H + KV], qkv[:, :, H + KV:]
        q = _rms(q, st[p + "attention.query_layernorm.weight"], eps).transpose(1, 2)
        k = _rms(k, st[p + "attention.key_layernorm.weight"], eps).transpose(1, 2)
        v = v.transpose(1, 2)
        q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
        att = (q @ k.transpose(-1, -2)) / hd ** 0.5
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(B, L, H * hd)
        h = h + o @ st[p + "attention.dense.weight"].T
        m = _rms(h, st[p + "post_attention_layernorm.weight"], eps)
        if i < c["first_k_dense_replace"]:
            h = h + _swiglu(st, p + "mlp.", m)
            continue
        x = m.reshape(B * L, d)
        E, K, G, TG = c["num_experts"], c["num_experts_per_tok"], c["n_group"], c["topk_group"]
        scores = torch.sigmoid(x @ st[p + "mlp.gate.weight"].T)                     # [T, E]
        choice = scores + st[p + "mlp.gate.expert_bias"]
        dense_w = torch.zeros_like(scores)
        for t in range(x.shape[0]):
            per = E // G
            group_score = [sorted(choice[t, g * per:(g + 1) * per].tolist(), reverse=True)[:2] for g in range(G)]
            best_groups = sorted(range(G), key=lambda g: -sum(group_score[g]))[:TG]
            allowed = [e for e in range(E) if e // per in best_groups]
            chosen = sorted(allowed, key=lambda e: -float(choice[t, e]))[:K]
            w = scores[t, chosen]
            if K > 1:
                w = w / (w.sum() + 1e-20)
            dense_w[t, chosen] = w * c["routed_scaling_factor"]
        y = sum(dense_w[:, e:e + 1] * _swiglu(st, p + f"mlp.experts.{e}.", x) for e in range(E))
        if c.get("num_shared_experts"):
            y = y + _swiglu(st, p + "mlp.shared_experts.", x)
        h = h + y.view(B, L, d)
    h = _rms(h, st["model.norm.weight"], eps)
    return h @ st["lm_head.weight"].T


LLADA2_VARIANTS = {
    "llada2": {},
    "llada2-top1-mha": {"num_experts_per_tok": 1, "num_key_value_heads": 4, "first_k_dense_replace": 0},
    "llada2-rope1-nogroups": {"partial_rotary_factor": 1.0, "n_group": 1, "topk_group": 1, "num_experts_per_tok": 3,
                              "num_shared_experts": 2},
}


@pytest.fixture(scope="module")
def llada2_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("llada2")
    return {k: testing.save_llada2_checkpoint(root / k, **v) for k, v in LLADA2_VARIANTS.items()}


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped_mm", "expert_loop"])
@pytest.mark.parametrize("variant", list(LLADA2_VARIANTS))
def test_llada2_equals_the_dense_restatement(llada2_folders, variant, grouped):
    folder = llada2_folders[variant]
    nat = native.from_folder(folder)
    assert nat.attention == "block_causal" and nat.block_length == 32
    for moe in nat.moe_layers():
        moe.use_grouped = grouped
    L, block = 11, 4
    ids = _ids(2, L, nat.config.vocab_size, seed=7)
    with torch.no_grad():
        got = nat(ids, block_length=block).logits
    want = llada2_reference(folder, ids, reference_block_mask([L, L], L, block), torch.arange(L).expand(2, L))
    torch.testing.assert_close(got, want, **TIGHT)
    with torch.no_grad():
        whole = nat(ids, block_length=32).logits
    torch.testing.assert_close(whole, llada2_reference(folder, ids, reference_block_mask([L, L], L, 32),
                                                       torch.arange(L).expand(2, L)), **TIGHT)


def test_llada2_router_by_hand():
    """Four experts in two groups, top-2 of one group: the bias picks, the scores weigh."""
    from fastremask.models.native.llada2 import route

    x = torch.eye(4)                                     # token t's logits are weight[:, t]
    weight = torch.tensor([[0.0, 2.0, -1.0, 0.0],
                           [1.0, 2.0, -1.0, 0.0],
                           [3.0, -2.0, 1.0, 0.0],
                           [-3.0, -2.0, 2.0, 0.0]])
    bias = torch.tensor([0.0, 0.0, 0.0, 10.0])           # expert 3 always chosen, group 1 always kept
    experts, w = route(x, weight, bias, top_k=2, n_group=2, topk_group=1, scale=2.5)
    s = torch.sigmoid(weight.T)                          # [T, E]
    assert experts[:, 0].tolist() == [3, 3, 3, 3] and experts[:, 1].tolist() == [2, 2, 2, 2]
    want = torch.stack([s[:, 3], s[:, 2]], 1)
    want = want / (want.sum(1, keepdim=True) + 1e-20) * 2.5
    torch.testing.assert_close(w, want, rtol=0, atol=0)


def test_llada2_left_padding_and_window(llada2_folders):
    nat = native.from_folder(llada2_folders["llada2"])
    L, n = 12, 7
    ids = _ids(2, L, nat.config.vocab_size, seed=8)
    am = torch.ones(2, L, dtype=torch.long)
    am[1, :L - n] = 0
    with torch.no_grad():
        got = nat(ids, am, block_length=4).logits
        alone = nat(ids[1:, L - n:], block_length=4).logits
        win = nat.window_logits(ids, am, 4, 4, block_length=4)
    torch.testing.assert_close(got[1, L - n:], alone[0], **TIGHT)
    torch.testing.assert_close(win, got[:, 4:8], **TIGHT)
    assert torch.isfinite(got).all()


@pytest.mark.parametrize("padded", [False, True], ids=["nopad", "leftpad"])
def test_llada2_exact_block_cache_equals_the_window_recompute(llada2_folders, padded):
    nat = native.from_folder(llada2_folders["llada2"])
    L, block = 20, 4
    ids = _ids(2, L, nat.config.vocab_size, seed=9)
    am = None
    if padded:
        am = torch.ones(2, L, dtype=torch.long)
        am[0, :4] = 0
    simulate_block_decoding(nat, ids, am, block, prompt_end=7)


def test_llada2_shards_dtypes_and_load(tmp_path):
    one = testing.save_llada2_checkpoint(tmp_path / "one")
    four = testing.save_llada2_checkpoint(tmp_path / "four", shards=4)
    a, b = native.from_folder(one), native.from_folder(four)
    ids = _ids(1, 9, a.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)
    # the experts' parameters are views of the stacks (one copy of the weights)
    moe = a.moe_layers()[0]
    assert moe.experts[3].up_proj.weight.data_ptr() == moe.stack()[1][3].data_ptr()
    adapter = models.load(four, device="cpu")
    assert isinstance(adapter, models.NativeAdapter) and adapter.family == "llada2"
    cfg = _cfg(four)
    assert cfg["architectures"] == ["LLaDA2MoeModelLM"] and cfg["auto_map"] == testing.LLADA2_AUTO_MAP
    assert adapter.mask_id == adapter.tokenizer.convert_tokens_to_ids("<|mask|>")
    assert adapter.eos_id == adapter.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    for dtype in (torch.bfloat16, torch.float16):
        low = native.from_folder(one, dtype=dtype)
        assert low.dtype == dtype
        with torch.no_grad():
            torch.testing.assert_close(low(ids).logits.float(), a(ids).logits, atol=0.25, rtol=0.02)


def _edit_config(folder, **fields):
    cfg = _cfg(folder)
    cfg.update(fields)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)


@pytest.mark.parametrize("fields,message", [
    ({"num_experts": 12}, "field 'num_experts' is 12, but layer 1 of the checkpoint has 8 experts"),
    ({"num_experts": 16, "n_group": 4}, "field 'num_experts' is 16, but layer 1 of the checkpoint has 8 experts"),
    ({"first_k_dense_replace": 2}, "layer 1 of the checkpoint has experts, but the config makes it dense"),
    ({"n_group": 3}, "field 'num_experts' \\(8\\) is not a multiple of 'n_group' \\(3\\)"),
    ({"n_group": 8}, "num_experts / n_group = 1"),
    ({"topk_group": 5}, "field 'topk_group' \\(5\\) exceeds 'n_group' \\(4\\)"),
    ({"num_experts_per_tok": 5}, "field 'num_experts_per_tok' \\(5\\) exceeds"),
    ({"score_function": "softmax"}, "field 'score_function' is 'softmax'"),
    ({"partial_rotary_factor": 0.1}, "rotary entries"),
    ({"moe_intermediate_size": None}, "field 'moe_intermediate_size' is missing"),
])
def test_llada2_bad_config(tmp_path, fields, message):
    folder = testing.save_llada2_checkpoint(tmp_path / "c")
    _edit_config(folder, **fields)
    with pytest.raises(ModelLoadError, match=message):
        native.from_folder(folder)


def test_llada2_expert_count_checked_before_reading_tensors(tmp_path):
    """A sharded checkpoint whose shards are gone: the count comes from the index alone."""
    folder = testing.save_llada2_checkpoint(tmp_path / "c", shards=3)
    for n in os.listdir(folder):
        if n.endswith(".safetensors"):
            os.remove(os.path.join(folder, n))
    _edit_config(folder, num_experts=4, n_group=2)
    with pytest.raises(ModelLoadError, match="field 'num_experts' is 4, but layer 1"):
        native.from_folder(folder)


# ----------------------------------------------------------------------------- through generate


@pytest.mark.parametrize("family", ["sdar", "sdar_moe", "llada2"])
def test_generate_exact_cache_equals_recompute(tmp_path, family):
    """`fastremask.generate` on the loaded checkpoint (a left-padded batch of two prompts):
    the exact block cache gives the tokens of the full-window recompute, also with a threshold."""
    from fastremask import generate

    save = {"sdar": testing.save_sdar_checkpoint, "sdar_moe": testing.save_sdar_moe_checkpoint,
            "llada2": testing.save_llada2_checkpoint}[family]
    m = models.load(save(tmp_path / family), device="cpu")
    assert m.attention == "block_causal"
    ids, am = m.encode(["hi i am a cat", "the dog sat"], chat=True)
    block = 8 if family == "llada2" else 4
    kw = dict(gen_length=16, steps=8, block_length=block, mask_id=m.mask_id, seed=0)
    with pytest.warns(UserWarning, match="trained with \\(32\\)") if family == "llada2" else _no_warning():
        full = generate(m, ids, am, cache=None, **kw)
        cached = generate(m, ids, am, cache="block", **kw)
    assert torch.equal(full, cached)
    assert not (full[:, ids.shape[1]:] == m.mask_id).any()


def _no_warning():
    import contextlib

    return contextlib.nullcontext()
