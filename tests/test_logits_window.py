"""``generate(..., logits_window=True)``: the output head runs on the current block only.

The mode is not part of the bit-equality promise (a GPU's GEMM may round a slice differently
from the whole), but on CPU the tiny models' slices give the same tokens, which is tested here
against the full-logits mode and the reference.
"""
import pytest
import torch

from fastremask import generate, models

from fastremask.models import testing
from fastremask.models import ModelLoadError
from fastremask.models.tiny import tiny_model
from fastremask.sampler.contract import assert_bits_equal

MODEL = tiny_model(vocab_size=53, d_model=32, n_heads=4, n_layers=2, seed=3)
MASK = MODEL.mask_id
PROMPTS = torch.tensor([[5, 6, 7, 8, 9], [1, 1, 3, 4, 2]])
ATT = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])


class _HeadShapes:
    """Records the output shape of every call of ``model``'s output head."""

    def __init__(self, head):
        self.shapes = []
        self.handle = head.register_forward_hook(lambda m, a, out: self.shapes.append(tuple(out.shape)))

    def close(self):
        self.handle.remove()


CASES = [
    dict(steps=8, gen_length=16, block_length=8),
    dict(steps=8, gen_length=16, block_length=4, temperature=1.0, remasking="margin"),
    dict(steps=12, gen_length=24, block_length=8, schedule="pyramid", temperature=0.5, cfg_scale=1.5),
    dict(gen_length=12, block_length=6, threshold=-1.0, remasking="entropy", temperature=0.8),
    dict(steps=8, gen_length=8, block_length=8, remasking="random", defer_tokens=[4, 5]),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items())[:60])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "leftpad"])
def test_tokens_equal_full_logits_on_cpu(case, masked):
    am = ATT if masked else None
    kw = dict(mask_id=MASK, seed=11, return_trace=True, **case)
    ref, _ = generate(MODEL, PROMPTS, am, backend="reference", **kw)
    full, tf = generate(MODEL, PROMPTS, am, backend="torch", **kw)
    rec = _HeadShapes(MODEL.head)
    try:
        win, tw = generate(MODEL, PROMPTS, am, backend="torch", logits_window=True, **kw)
    finally:
        rec.close()
    assert torch.equal(full, ref) and torch.equal(win, full)
    assert len(tw.steps) == len(tf.steps)
    for a, b in zip(tf.steps, tw.steps):
        assert torch.equal(a.x0, b.x0) and torch.equal(a.keep, b.keep)
        assert_bits_equal(a.confidence, b.confidence)
    # the head never saw more than the block: [B (x2 with CFG), block_length, V]
    rows = PROMPTS.shape[0] * (2 if case.get("cfg_scale") else 1)
    assert rec.shapes and set(rec.shapes) == {(rows, case["block_length"], 53)}


def test_adapter_and_raw_module_agree():
    adapter = models.wrap(MODEL)
    kw = dict(steps=8, gen_length=16, block_length=8, mask_id=MASK, seed=2, temperature=1.0)
    a = generate(adapter, PROMPTS, ATT, logits_window=True, **kw)
    b = generate(MODEL, PROMPTS, ATT, logits_window=True, **kw)
    assert torch.equal(a, b) and torch.equal(a, generate(MODEL, PROMPTS, ATT, **kw))


def test_triton_backend_with_window():
    pytest.importorskip("triton")
    from fastremask.sampler.backends import get_backend

    if get_backend("auto", torch.device("cpu")) is None or get_backend("triton", torch.device("cpu")).name != "triton":
        pytest.skip("triton kernels not available")
    kw = dict(steps=4, gen_length=8, block_length=4, mask_id=MASK, seed=5, temperature=1.0)
    full = generate(MODEL, PROMPTS[:1], backend="torch", **kw)
    assert torch.equal(generate(MODEL, PROMPTS[:1], backend="triton", logits_window=True, **kw), full)


# ----------------------------------------------------------------------------- HF tiny models


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("ckpt")
    return {
        "llada": models.load(testing.save_tiny_llada(root / "llada"), trust_remote_code=True, device="cpu"),
        "dream": models.load(testing.save_tiny_dream(root / "dream"), trust_remote_code=True, device="cpu"),
    }


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("start", [0, 1, 5])
def test_adapter_window_logits_are_the_full_logits_slice(hf, family, start):
    adapter = hf[family]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 20, (3, 12), generator=g)
    am = torch.ones(3, 12, dtype=torch.long)
    am[1, :3] = 0
    full = adapter(x, am).logits
    win = adapter.window_logits(x, am, start, 6)
    assert win.shape == (3, 6, full.shape[-1])
    # not promised bit-equal (docs/api.md); a different GEMM shape may round differently
    torch.testing.assert_close(win, full[:, start:start + 6], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_hf_models_generate_the_same_tokens(hf, family):
    adapter = hf[family]
    ids, am = adapter.pad([[10, 11, 12, 13], [14, 15]])
    kw = dict(steps=8, gen_length=16, block_length=8, mask_id=adapter.mask_id, seed=1, temperature=0.7)
    full = generate(adapter, ids, am, **kw)
    assert torch.equal(generate(adapter, ids, am, logits_window=True, **kw), full)
    # Dream with an empty prompt: the first block starts at position 0 (its own output)
    empty = torch.empty(1, 0, dtype=torch.long)
    assert torch.equal(generate(adapter, empty, logits_window=True, **kw), generate(adapter, empty, **kw))


def test_reference_backend_takes_the_window_too():
    """One loop serves every backend, so the specification runs the window mode as well."""
    kw = dict(steps=4, gen_length=8, block_length=4, mask_id=MASK, seed=1, temperature=1.0)
    full = generate(MODEL, PROMPTS, ATT, backend="reference", **kw)
    assert torch.equal(generate(MODEL, PROMPTS, ATT, backend="reference", logits_window=True, **kw), full)


# ----------------------------------------------------------------------------- errors


def test_logits_window_must_be_a_bool():
    with pytest.raises(TypeError, match="logits_window"):
        generate(MODEL, PROMPTS, steps=4, gen_length=8, block_length=8, mask_id=MASK, logits_window=1)


class _Plain:
    """A callable model with no output head to restrict."""

    device = torch.device("cpu")

    def __call__(self, x, attention_mask=None):
        return MODEL(x, attention_mask=attention_mask)


class _Tied(torch.nn.Module):
    """A weight-tied model: get_output_embeddings() is the input embedding, applied with F.linear."""

    def __init__(self):
        super().__init__()
        self.inner = MODEL

    def get_output_embeddings(self):
        return self.inner.embed

    def forward(self, x, attention_mask=None):
        return MODEL(x, attention_mask=attention_mask)


@pytest.mark.parametrize("model", [_Plain(), _Tied(), models.wrap(_Plain(), family="callable", mask_id=MASK)],
                         ids=["callable", "tied", "callable-adapter"])
def test_models_without_a_head_are_a_clear_error(model):
    calls = []
    with pytest.raises(ModelLoadError, match="logits_window=False") as e:
        generate(model, PROMPTS, steps=4, gen_length=8, block_length=8, mask_id=MASK,
                 logits_window=True, callback=calls.append)
    assert "get_output_embeddings" in str(e.value) and not calls     # before any model call
    assert isinstance(e.value, ValueError)


class _Protocol:
    """A model implementing ``window_logits`` itself; ``bad`` returns the wrong shape or NaN."""

    device = torch.device("cpu")

    def __init__(self, bad=None):
        self.bad, self.calls = bad, 0

    def __call__(self, x, attention_mask=None):
        return MODEL(x, attention_mask=attention_mask)

    def window_logits(self, x, attention_mask, start, length):
        logits = MODEL(x, attention_mask=attention_mask).logits[:, start:start + length].clone()
        self.calls += 1
        if self.bad == "shape":
            return logits[:, 1:]
        if self.bad == "nan" and self.calls == 3:          # step 2: first step of block 1
            logits[1, 2, 7] = float("nan")
        return logits


def test_window_protocol_is_used_and_checked():
    kw = dict(steps=4, gen_length=8, block_length=4, mask_id=MASK, seed=0)
    good = _Protocol()
    assert torch.equal(generate(good, PROMPTS, logits_window=True, **kw), generate(MODEL, PROMPTS, **kw))
    assert good.calls == 4
    with pytest.raises(ValueError, match=r"window logits have shape \(2, 3, 53\).*\[2, 4, V\]"):
        generate(_Protocol("shape"), PROMPTS, logits_window=True, **kw)
    # an invalid logit in the window is reported at its position in x (5 + 4 + 2 = 11)
    with pytest.raises(ValueError, match=r"NaN logits \(1 of 53\) at step 2, batch row 1, position 11 "
                                         r"\(position 6 of the generated answer\)"):
        generate(_Protocol("nan"), PROMPTS, logits_window=True, **kw)
