"""fastremask.models.tiny: shapes, determinism, padding, save/load (reference tier, CPU)."""
import time

import pytest
import torch

from fastremask.models.tiny import TinyConfig, TinyMaskedLM, TinyOutput, tiny_model


def _ids(shape, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, shape, generator=g)


@torch.no_grad()
@pytest.mark.parametrize("vocab,batch,length", [(7, 1, 1), (111, 5, 13), (128, 2, 64)], ids=str)
def test_shapes_and_dtype(vocab, batch, length):
    m = tiny_model(vocab_size=vocab)
    out = m(_ids((batch, length), vocab))
    assert isinstance(out, TinyOutput)
    assert out.logits.shape == (batch, length, vocab)
    assert out.logits.dtype == torch.float32
    assert torch.isfinite(out.logits).all()
    assert m.device == torch.device("cpu")


def test_defaults_documented():
    m = tiny_model()
    c = m.config
    assert (c.vocab_size, c.d_model, c.n_layers, c.n_heads, c.max_len, c.seed) == (128, 64, 2, 4, 256, 0)
    assert c.mask_id == 127 == m.mask_id
    assert tiny_model(vocab_size=7).config.mask_id == 6
    assert tiny_model(vocab_size=7, mask_id=0).config.mask_id == 0


def test_builds_fast():
    tiny_model()  # warm up torch's lazy imports
    t = time.perf_counter()
    tiny_model()
    assert time.perf_counter() - t < 0.5  # milliseconds in practice; generous for a loaded CI box


@torch.no_grad()
def test_deterministic_from_seed():
    a, b, c = tiny_model(seed=3), tiny_model(seed=3), tiny_model(seed=4)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.head.weight, c.head.weight)
    x = _ids((3, 20), 128)
    assert torch.equal(a(x).logits, b(x).logits)
    # independent of the global RNG state
    torch.manual_seed(12345)
    d = tiny_model(seed=3)
    assert torch.equal(a(x).logits, d(x).logits)


@torch.no_grad()
def test_bidirectional():
    m = tiny_model()
    x = _ids((1, 16), 128)
    y = x.clone()
    y[0, -1] = (y[0, -1] + 1) % 128
    # changing the last token changes the first position's logits: no causal mask
    assert not torch.equal(m(x).logits[0, 0], m(y).logits[0, 0])


@torch.no_grad()
def test_confidences_are_varied():
    p = tiny_model()(_ids((2, 64), 128)).logits.softmax(-1).amax(-1)
    assert p.min() < 0.3 and p.max() > 0.7  # a sampler test needs both kinds of position


@torch.no_grad()
@pytest.mark.parametrize("pad", [1, 5, 17])
def test_left_padding_matches_alone(pad):
    m = tiny_model(seed=1)
    prompt = _ids((1, 23), 127, seed=pad)
    alone = m(prompt, attention_mask=torch.ones_like(prompt)).logits
    assert torch.equal(alone, m(prompt).logits)  # all-ones mask == no mask, exactly

    # batch: row 0 left-padded by `pad`, row 1 a full-length other sequence
    other = _ids((1, 23 + pad), 127, seed=100 + pad)
    padded = torch.cat([torch.full((1, pad), 127), prompt], dim=1)
    ids = torch.cat([padded, other])
    am = torch.ones_like(ids)
    am[0, :pad] = 0
    both = m(ids, attention_mask=am).logits
    # fp32, different matmul shapes and extra -inf keys: equal up to rounding, not bit-equal
    torch.testing.assert_close(both[0, pad:], alone[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(both[1], m(other).logits[0], rtol=0, atol=1e-5)
    # the padding token's id does not matter
    ids2 = ids.clone()
    ids2[0, :pad] = 3
    torch.testing.assert_close(m(ids2, attention_mask=am).logits[0, pad:], both[0, pad:], rtol=0, atol=1e-5)


@torch.no_grad()
def test_all_padding_row_is_finite():
    m = tiny_model()
    ids = _ids((2, 8), 128)
    am = torch.ones_like(ids)
    am[1] = 0
    assert torch.isfinite(m(ids, attention_mask=am).logits).all()


def test_save_load_round_trip(tmp_path):
    m = tiny_model(vocab_size=111, d_model=32, n_heads=2, seed=9)
    with torch.no_grad():  # a "trained" copy: weights no longer what the seed gives
        m.head.bias.add_(0.125)
    m.save_pretrained(tmp_path / "tiny")
    n = TinyMaskedLM.from_pretrained(tmp_path / "tiny")
    assert n.config == m.config
    for (name, pa), pb in zip(m.state_dict().items(), n.state_dict().values()):
        assert torch.equal(pa, pb), name
    x = _ids((2, 30), 111)
    with torch.no_grad():
        assert torch.equal(m(x).logits, n(x).logits)
    half = TinyMaskedLM.from_pretrained(tmp_path / "tiny", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half(x).logits.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "kw",
    [dict(vocab_size=0), dict(d_model=30, n_heads=4), dict(mask_id=128), dict(seed=-1), dict(n_layers=1.5)],
    ids=str,
)
def test_bad_config(kw):
    with pytest.raises(ValueError, match=next(iter(kw)) if "n_heads" not in kw else "n_heads"):
        TinyConfig(**kw)


def test_too_long():
    m = tiny_model(max_len=8)
    with pytest.raises(ValueError, match="max_len"):
        m(torch.zeros(1, 9, dtype=torch.long))
