"""The whole loop: `torch` backend bit-equal to the reference, and what `generate` promises."""
import pytest
import torch
from toy_models import ToyLM
from hypothesis import HealthCheck, given, settings, strategies as st

import fastremask
from fastremask.sampler import backends
from fastremask.sampler.loop import generate
from fastremask.sampler.schedule import pyramid_steps
from fastremask.models.tiny import tiny_model
from fastremask.sampler.contract import assert_bits_equal

THRESHOLDS = {"low_confidence": 0.3, "margin": 0.2, "random": 0.6, "entropy": -1.5}


def _prompt(B, P, vocab, mask_id, seed):
    g = torch.Generator().manual_seed(seed)
    p = torch.randint(0, vocab, (B, P), generator=g)
    p[p == mask_id] = (mask_id + 1) % vocab
    am = torch.ones(B, P, dtype=torch.long)
    for b in range(1, B):                                  # left padding, different per row
        am[b, : max(0, min(P - 1, b))] = 0          # at least one token (all-padding is refused)
    return p, am


def _same_trace(t1, t2):
    assert len(t1.steps) == len(t2.steps)
    for a, b in zip(t1.steps, t2.steps):
        assert (a.step, a.block, a.start) == (b.step, b.block, b.start)
        for name in ("candidate", "x0", "keep"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert_bits_equal(a.confidence, b.confidence)


@st.composite
def _config(draw):
    block = draw(st.sampled_from([1, 3, 4, 8]))
    n_blocks = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["uniform", "pyramid", "list", "callable", "threshold"]))
    remasking = draw(st.sampled_from(list(THRESHOLDS)))
    kw = dict(
        gen_length=block * n_blocks, block_length=block, remasking=remasking,
        temperature=draw(st.sampled_from([0.0, 0.7, 1.0])),
        cfg_scale=draw(st.sampled_from([0.0, 0.0, 1.5])),
    )
    if kind == "uniform":
        kw["steps"] = n_blocks * draw(st.integers(1, block + 1))
    elif kind == "pyramid":
        factor = draw(st.integers(1, 3))
        kw.update(schedule="pyramid", factor=factor,
                  steps=n_blocks * (pyramid_steps(block, factor) + draw(st.integers(0, 2))))
    elif kind == "list":
        cuts = sorted(draw(st.lists(st.integers(0, block), min_size=0, max_size=3)))
        parts = [b - a for a, b in zip([0] + cuts, cuts + [block])]
        kw.update(schedule=parts, steps=n_blocks * len(parts))
    elif kind == "callable":
        kw.update(schedule=lambda n, s: [n - n // 2, n // 2], steps=n_blocks * 2)
    else:
        kw.update(threshold=THRESHOLDS[remasking], steps=1)
    return kw


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cfg=_config(),
    B=st.integers(1, 5),
    P=st.integers(0, 5),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
    vocab=st.sampled_from([7, 50]),
    tokens=st.sampled_from(["none", "suppress", "defer", "both"]),
    seed=st.integers(0, 2**63 - 1),
)
def test_torch_backend_equals_reference(cfg, B, P, dtype, vocab, tokens, seed):
    model = tiny_model(vocab_size=vocab, d_model=16, n_heads=2, n_layers=1, seed=seed % 1000).to(dtype)
    mask_id = model.mask_id
    prompt, am = _prompt(B, P, vocab, mask_id, seed % 997)
    kw = dict(cfg, mask_id=mask_id, seed=seed, return_trace=True)
    if tokens in ("suppress", "both"):
        kw["suppress_tokens"] = [1, 2]
    if tokens in ("defer", "both"):
        kw["defer_tokens"] = [3, 4, 5]
    x_ref, t_ref = generate(model, prompt, am, backend="reference", **kw)
    x_fast, t_fast = generate(model, prompt, am, backend="torch", **kw)
    assert torch.equal(x_ref, x_fast)
    _same_trace(t_ref, t_fast)
    # what every run promises
    assert not (x_ref == mask_id).any()
    assert torch.equal(x_ref[:, :P], prompt)
    if "suppress_tokens" in kw:
        assert not torch.isin(x_ref[:, P:], torch.tensor(kw["suppress_tokens"])).any()
    kept = torch.zeros(B, cfg["gen_length"], dtype=torch.long)
    for s in t_ref.steps:
        off = s.start - P
        kept[:, off:off + cfg["block_length"]] += s.keep.long()
        if "threshold" in cfg:
            assert ((s.keep.sum(1) >= 1) | ~s.candidate.any(1)).all()
    assert (kept == 1).all()                      # every answer position kept exactly once


def test_row_alone_equals_row_in_batch():
    model = ToyLM(vocab=13)
    prompt, am = _prompt(4, 5, 13, 12, 0)
    kw = dict(steps=6, gen_length=12, block_length=4, temperature=1.0, mask_id=12,
              seed=[5, 2**63 - 1, 0, 77], remasking="low_confidence")
    for backend in ("reference", "torch"):
        both = generate(model, prompt, am, backend=backend, **kw)
        for b in range(4):
            alone = generate(model, prompt[b:b + 1], am[b:b + 1], backend=backend,
                             **{**kw, "seed": [kw["seed"][b]]})
            assert torch.equal(alone[0], both[b]), (backend, b)


def test_int_seed_gives_rows_consecutive_seeds():
    model = ToyLM(vocab=13)
    prompt = torch.tensor([[1, 2, 3]] * 3)
    kw = dict(steps=4, gen_length=8, block_length=8, temperature=1.0, mask_id=12)
    x = generate(model, prompt, seed=40, **kw)
    for b in range(3):
        assert torch.equal(generate(model, prompt[:1], seed=40 + b, **kw)[0], x[b])
    assert fastremask.row_seeds(2**63 - 1, 2) == [2**63 - 1, 0]


def test_same_seed_same_tokens_and_manual_seed_controls_none():
    model = tiny_model(vocab_size=30, d_model=16, n_heads=2, n_layers=1)
    prompt = torch.tensor([[3, 4, 5], [6, 7, 8]])
    kw = dict(steps=8, gen_length=8, block_length=4, temperature=1.0, mask_id=model.mask_id)
    a = generate(model, prompt, seed=9, **kw)
    assert torch.equal(a, generate(model, prompt, seed=9, **kw))
    assert not torch.equal(a, generate(model, prompt, seed=10, **kw))
    torch.manual_seed(0)
    b = generate(model, prompt, **kw)
    torch.manual_seed(0)
    assert torch.equal(b, generate(model, prompt, **kw))


def test_prompt_untouched_and_output_shape():
    model = tiny_model(vocab_size=30, d_model=16, n_heads=2, n_layers=1)
    prompt = torch.tensor([[3, 4, 5]], dtype=torch.int32)
    keep = prompt.clone()
    am = torch.ones(1, 3, dtype=torch.bool)
    x = generate(model, prompt, am, steps=4, gen_length=8, block_length=8, mask_id=model.mask_id, seed=0)
    assert torch.equal(prompt, keep) and prompt.dtype == torch.int32
    assert x.shape == (1, 11) and x.dtype == torch.int64
    assert torch.equal(x[:, :3], keep.long())


def test_empty_prompt_and_block_of_one():
    model = ToyLM(vocab=7)
    prompt = torch.empty(2, 0, dtype=torch.long)
    for backend in ("reference", "torch"):
        x = generate(model, prompt, None, 5, 5, 1, 0.7, mask_id=6, seed=1, backend=backend)
        assert x.shape == (2, 5) and not (x == 6).any()


def test_global_step_counts_over_blocks_and_skips_empty_steps():
    model = ToyLM(vocab=11)
    prompt = torch.tensor([[1, 2]])
    calls = model.calls
    x, tr = generate(model, prompt, None, 8, 4, 2, mask_id=10, seed=0, return_trace=True)
    # uniform: 4 steps per block of 2 -> counts [1, 1, 0, 0]; the empty steps call no model
    assert [s.step for s in tr.steps] == [0, 1, 4, 5]
    assert [s.block for s in tr.steps] == [0, 0, 1, 1]
    assert model.calls - calls == 4
    kept = tr.kept(0)
    assert sorted(p for _, p, _, _ in kept) == [0, 1, 2, 3]
    for step, p, tok, conf in kept:
        assert x[0, 2 + p] == tok and 0.0 < conf <= 1.0


def test_pyramid_counts_and_callback():
    model = ToyLM(vocab=11)
    seen = []
    x, tr = generate(model, torch.tensor([[1]]), None, 4, 10, 10, mask_id=10, seed=0,
                     schedule="pyramid", return_trace=True, callback=seen.append)
    assert [int(s.keep.sum()) for s in tr.steps] == [1, 2, 3, 4]
    assert len(seen) == 4 and seen[0] is tr.steps[0]


def test_defer_tokens_are_kept_last():
    model = ToyLM(vocab=11, seed=3)
    prompt = torch.tensor([[1, 2, 3]])
    defer = [0, 1, 2, 3, 4]
    for backend in ("reference", "torch"):
        _, tr = generate(model, prompt, None, 8, 8, 8, 1.0, mask_id=10, seed=4, defer_tokens=defer,
                         backend=backend, return_trace=True)
        for s in tr.steps:
            deferred = s.candidate & torch.isin(s.x0, torch.tensor(defer))
            if (s.keep & deferred).any():           # a deferred one kept: no other was left behind
                assert not (s.candidate & ~deferred & ~s.keep).any()


def test_llada_flags_on_a_llada_sized_vocab():
    """logits_eos_inf suppresses 126081; confidence_eos_eot_inf defers 126081 and 126348."""
    V = 126464

    class Big(torch.nn.Module):
        device = torch.device("cpu")

        def forward(self, x, attention_mask=None):
            l = torch.zeros(*x.shape, V)
            l[..., 126081] = 20.0           # EOS: near-certain everywhere ...
            l[..., 126348] = 4.0
            l[:, -1, 126081] = 0.0
            l[:, -1, 7] = 10.0              # ... but the last position predicts token 7 (p ~ 0.15)
            return l

    p = torch.tensor([[1, 2]])
    for backend in ("reference", "torch"):
        x = generate(Big(), p, None, 2, 2, 2, logits_eos_inf=True, seed=0, backend=backend)
        assert not (x == 126081).any()
        # one token per step: plain confidence keeps EOS first, deferral keeps token 7 first
        _, tr = generate(Big(), p, None, 2, 2, 2, seed=0, backend=backend, return_trace=True)
        assert tr.kept(0)[0][1:3] == (0, 126081)
        _, tr = generate(Big(), p, None, 2, 2, 2, seed=0, confidence_eos_eot_inf=True,
                         backend=backend, return_trace=True)
        assert tr.kept(0)[0][1:3] == (1, 7)


def test_triton_backend_is_exact_or_clearly_unavailable():
    model = ToyLM(vocab=7)
    prompt = torch.tensor([[1, 2]])
    kw = dict(steps=2, gen_length=4, block_length=2, temperature=0.7, mask_id=6, seed=3)
    want = generate(model, prompt, backend="reference", **kw)
    try:
        got = generate(model, prompt, backend="triton", **kw)
    except RuntimeError as e:
        assert "triton" in str(e)
        pytest.skip(f"triton backend not available: {e}")
    assert torch.equal(got, want)


def test_auto_backend_on_cpu_is_torch():
    assert backends.get_backend("auto", torch.device("cpu")).name == "torch"


def test_package_import_does_not_import_triton():
    import subprocess
    import sys

    code = "import sys, fastremask; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cpu_step_runs_on_the_calling_thread_and_the_model_keeps_its_threads(monkeypatch):
    """The step (many small ops) runs at one intra-op thread; the model call keeps the user's
    thread count (benchmarks/results/threads-probe-2vcpu.md)."""
    import dataclasses

    from fastremask.sampler import backends

    seen = {"model": [], "sample": []}

    def spy_on(backend):          # what the loop is handed, watched (the registry's hook)
        inner = backend.sample_rows

        def spy(*a, **kw):
            seen["sample"].append(torch.get_num_threads())
            return inner(*a, **kw)
        return dataclasses.replace(backend, sample_rows=spy)

    class Model(ToyLM):
        def forward(self, x, attention_mask=None):
            seen["model"].append(torch.get_num_threads())
            return super().forward(x, attention_mask)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with backends.hooked(spy_on):
            generate(Model(vocab=11), torch.tensor([[1, 2]]), None, 4, 4, 2, mask_id=10, seed=0, backend="torch")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen["sample"] and set(seen["sample"]) == {1}
    assert seen["model"] and set(seen["model"]) == {2}
