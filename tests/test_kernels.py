"""The `triton` backend bit-equal to the reference (`fastremask.sampler.reference`), kernel by kernel.

Runs under the Triton interpreter where there is no CUDA device (tests/conftest.py), so shapes
stay small: vocabularies 1, 7, 111, 4099 and a few thousand (several 2048-entry chunks).
Every kernel output is poisoned before the launch, so an element the kernel forgets fails.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastremask.sampler.contract import REMASKING
from fastremask.sampler import reference as ref
from fastremask.sampler.numerics import CHUNK

kernels = pytest.importorskip("fastremask.kernels")
from fastremask.kernels import sample_rows, select  # noqa: E402
from fastremask.kernels.sample import MAX_VOCAB, RowSample  # noqa: E402
from fastremask.sampler.contract import assert_bits_equal

# The interpreter computes in numpy, which warns on IEEE inf/NaN arithmetic (invalid rows,
# masked lanes); the kernels mean that arithmetic, so those warnings are noise here.
pytestmark = [pytest.mark.interpreter,
              pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")]
DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _poisoned(r: int) -> RowSample:
    return RowSample(torch.full((r,), -7, dtype=torch.int64, device=DEV),
                     torch.full((r,), float("nan"), device=DEV),
                     torch.ones(r, dtype=torch.bool, device=DEV))


def _same(a: RowSample, b: RowSample, ctx=""):
    assert torch.equal(a.x0.cpu(), b.x0.cpu()), (ctx, a.x0, b.x0)
    assert_bits_equal(a.confidence, b.confidence, f"{ctx}")     # -0.0 != 0.0, NaN == NaN
    assert torch.equal(a.invalid.cpu(), b.invalid.cpu()), (ctx, a.invalid, b.invalid)


def _case(V, dtype, *, n=6, r=5, cfg=False, seed=0, scale=3.0, ties=False):
    g = torch.Generator().manual_seed(seed)
    lg = torch.randn(n, V, generator=g) * scale
    if ties:   # few distinct values: ties in max, top-2 and scores
        lg = lg.round()
    un = (torch.randn(n, V, generator=g) * scale) if cfg else None
    rows = torch.randint(0, n, (r,), generator=g)
    seeds = torch.randint(0, 2**63 - 1, (r,), generator=g)
    pos = torch.randint(0, 1000, (r,), generator=g)
    to = lambda t: None if t is None else t.to(DEV)  # noqa: E731
    return (to(lg.to(dtype)), to(rows), to(seeds), to(pos), to(None if un is None else un.to(dtype)))


def _both(lg, rows, seeds, pos, step, **kw):
    """(reference, kernel with poisoned outputs) for the same call."""
    want = ref.sample_rows(lg, rows, seeds, pos, step, **{k: v for k, v in kw.items()
                                                          if k not in ("chunks_per_prog", "num_warps")})
    got = sample_rows(lg, rows, seeds, pos, step, out=_poisoned(rows.shape[0]), **kw)
    return want, got


# ------------------------------------------------------------------------------- sample_rows

CASES = [  # (V, dtype, temperature, cfg): each vocab size meets each rule once
    (V, DTYPES[i % 3], (0.0, 1.0, 0.7)[i % 3], bool(i % 2))
    for i, V in enumerate([1, 7, 111, 4099, 1, 7, 111, 4099])
]


@pytest.mark.parametrize("remasking", REMASKING)
@pytest.mark.parametrize("V,dtype,temperature,cfg", CASES,
                         ids=[f"V{c[0]}-{str(c[1])[6:]}-T{c[2]}-cfg{int(c[3])}" for c in CASES])
def test_sample_rows_equals_reference(V, dtype, temperature, cfg, remasking):
    lg, rows, seeds, pos, un = _case(V, dtype, cfg=cfg, seed=V)
    active = torch.tensor([True, False, True, True, True], device=DEV)
    sup = torch.tensor([0, V // 2], device=DEV) if V > 2 else None
    want, got = _both(lg, rows, seeds, pos, 11, temperature=temperature, remasking=remasking,
                      cfg_scale=1.5 if cfg else 0.0, uncond_logits=un, suppress_tokens=sup,
                      active=active)
    _same(want, got)
    assert got.x0[1] == -1 and got.confidence[1] == float("-inf") and not got.invalid[1]


@pytest.mark.parametrize("temperature", [1e-4, 0.3, 5.0, 1e30])
def test_extreme_temperatures_equal_reference(temperature):
    """The tempered weights at the ends of the range (most entries clamped to weight 0 at a tiny
    T; every finite entry at 2**40 at a huge one), with suppression and three chunks."""
    V = 2 * CHUNK + 9
    lg, rows, seeds, pos, un = _case(V, torch.float32, r=4, cfg=False, seed=13, ties=True)
    sup = torch.tensor([1, CHUNK + 3, V - 1], device=DEV)
    want, got = _both(lg, rows, seeds, pos, 4, temperature=temperature, remasking="margin",
                      suppress_tokens=sup)
    _same(want, got)
    assert not bool(torch.isin(got.x0, sup).any())


@pytest.mark.parametrize("remasking", REMASKING)
def test_vocab_splits_give_identical_bits(remasking):
    """5 chunks + 3 entries; every split of the chunks across programs: the same bits."""
    V = 5 * CHUNK + 3
    lg, rows, seeds, pos, un = _case(V, torch.bfloat16, r=2, cfg=True, seed=5, ties=True)
    kw = dict(temperature=1.0, remasking=remasking, cfg_scale=0.5, uncond_logits=un)
    want = ref.sample_rows(lg, rows, seeds, pos, 3, **kw)
    for cpp in (1, 2, 4, 6):
        got = sample_rows(lg, rows, seeds, pos, 3, out=_poisoned(2), chunks_per_prog=cpp, **kw)
        _same(want, got, f"chunks_per_prog={cpp}")


def test_max_in_a_later_chunk_and_ties_across_chunks():
    """Row max and the argmax ties sit in different chunks: lowest index wins, top-2 repeats."""
    V = 3 * CHUNK
    lg = torch.full((3, V), -5.0)
    lg[0, [10, CHUNK + 7, 2 * CHUNK + 1]] = 4.0        # a three-way tie across chunks
    lg[1, 2 * CHUNK + 5] = 9.0                          # the max only in the last chunk
    lg[1, 3] = 8.5
    lg[2, :] = float("-inf")
    lg[2, CHUNK + 100] = 0.0                            # one finite logit
    rows, seeds, pos = (torch.arange(3, device=DEV),) * 3
    for remasking in REMASKING:
        for T in (0.0, 1.0):
            want, got = _both(lg.to(DEV), rows, seeds, pos, 0, temperature=T, remasking=remasking,
                              chunks_per_prog=1)
            _same(want, got, (remasking, T))
    assert got.x0.tolist()[2] == CHUNK + 100


@pytest.mark.parametrize("remasking", REMASKING)
def test_suppressed_tokens_in_every_role(remasking):
    """Suppressed ids that hold a chunk's max, the row's max, the last entry, a NaN or +inf, a tie
    of the max across chunks, the only finite entries of a chunk, and ids listed twice: at T = 0
    the combine takes them out of the chunk sums or recomputes their chunk; at T > 0 the tile
    excludes them."""
    V = 2 * CHUNK + 5
    g = torch.Generator().manual_seed(7)
    lg = torch.randn(4, V, generator=g) * 3
    lg[0, 5] = 30.0                                     # row max, suppressed
    lg[0, CHUNK + 9] = 12.0                             # a chunk max, suppressed
    lg[0, 2 * CHUNK + 4] = 40.0                         # the last entry (in the partial chunk), suppressed
    lg[1, 100] = float("nan")                           # NaN and +inf on suppressed ids: a valid row
    lg[1, 2 * CHUNK + 1] = float("inf")
    lg[1, [7, CHUNK + 3]] = 25.0                        # a tie of the max across chunks, both suppressed
    lg[2, :CHUNK] = float("-inf")                       # a chunk whose only finite entries are suppressed
    lg[2, [5, 100]] = 1.0
    lg[3, 50] = float("nan")                            # an unsuppressed NaN: invalid
    sup = torch.tensor([5, CHUNK + 9, 100, 2 * CHUNK + 1, 7, CHUNK + 3, 2 * CHUNK + 4, 5, 333, 100,
                        CHUNK + 9], device=DEV)
    rows = torch.arange(4, device=DEV)
    seeds = torch.arange(4, device=DEV) * 1000 + 1
    for dtype, T, cfg in ((torch.float32, 0.0, False), (torch.bfloat16, 0.0, True), (torch.float16, 1.0, False)):
        un = torch.where(torch.isfinite(lg), lg * 0.5, 0.0).to(dtype).to(DEV) if cfg else None
        want, got = _both(lg.to(dtype).to(DEV), rows, seeds, rows, 4, temperature=T, remasking=remasking,
                          suppress_tokens=sup, uncond_logits=un, cfg_scale=1.0 if cfg else 0.0,
                          chunks_per_prog=2)
        _same(want, got, (dtype, T, cfg))
        assert got.invalid.tolist() == [False, False, False, True]


def test_invalid_rows():
    """NaN, +inf and all -inf rows are flagged (x0 -1, confidence NaN); NaN on a suppressed
    token and -inf entries elsewhere are fine; inactive rows are never invalid."""
    V = 300
    lg = torch.randn(6, V)
    lg[0, 17] = float("nan")
    lg[1, 250] = float("inf")
    lg[2, :] = float("-inf")
    lg[3, 5] = float("nan")                             # suppressed below: the row is valid
    lg[4, :100] = float("-inf")
    lg[5, 0] = float("nan")                             # inactive
    sup = torch.tensor([5], device=DEV)
    rows = torch.arange(6, device=DEV)
    active = torch.tensor([True] * 5 + [False], device=DEV)
    for remasking in REMASKING:
        want, got = _both(lg.to(DEV), rows, rows, rows, 1, temperature=1.0, remasking=remasking,
                          suppress_tokens=sup, active=active)
        _same(want, got, remasking)
    assert got.invalid.tolist() == [True, True, True, False, False, False]


def test_cfg_inf_minus_inf_is_invalid():
    lg = torch.zeros(1, 9)
    un = torch.zeros(1, 9)
    lg[0, 2] = float("inf")
    un[0, 2] = float("inf")                             # c - u = NaN
    rows = torch.zeros(1, dtype=torch.int64, device=DEV)
    want, got = _both(lg.to(DEV), rows, rows, rows, 0, temperature=0.0, remasking="margin",
                      cfg_scale=2.0, uncond_logits=un.to(DEV))
    _same(want, got)
    assert got.invalid.item()


def test_strided_and_noncontiguous_logits():
    base = torch.randn(7, 260)
    rows = torch.tensor([0, 2, 4], device=DEV)
    kw = dict(temperature=0.7, remasking="entropy")
    sliced = base.to(DEV)[:, 3:250]                     # row stride 260, vocab 247
    transposed = base.t().contiguous().t().to(DEV)      # vocab stride 7: copied
    for lg in (sliced, transposed):
        want, got = _both(lg, rows, rows, rows, 2, **kw)
        _same(want, got)


def test_large_row_index_uses_int64_offsets():
    """rows * row stride beyond 2**31 elements, without the memory: a zero row stride."""
    lg = torch.randn(1, 37).to(DEV).expand(2**26, 37)   # stride (0, 1): any row index is row 0
    if lg.stride(0) != 0:
        pytest.skip("expand did not give a zero stride")
    rows = torch.tensor([2**26 - 1], device=DEV)
    want, got = _both(lg, rows, rows, rows, 0, temperature=1.0, remasking="low_confidence")
    _same(want, got)


def test_empty_and_all_inactive():
    lg = torch.randn(3, 50).to(DEV)
    e = torch.empty(0, dtype=torch.int64, device=DEV)
    got = sample_rows(lg, e, e, e, 0, temperature=1.0, remasking="random")
    assert got.x0.shape == (0,)
    rows = torch.arange(3, device=DEV)
    want, got = _both(lg, rows, rows, rows, 0, temperature=1.0, remasking="random",
                      active=torch.zeros(3, dtype=torch.bool, device=DEV))
    _same(want, got)


def test_validation_errors():
    lg = torch.randn(3, 20).to(DEV)
    r = torch.arange(2, device=DEV)
    kw = dict(temperature=0.0, remasking="low_confidence")
    with pytest.raises(TypeError, match="fp32, bf16 or fp16"):
        sample_rows(lg.to(torch.float64), r, r, r, 0, **kw)
    with pytest.raises(ValueError, match=r"\[N, V\]"):
        sample_rows(lg[0], r, r, r, 0, **kw)
    with pytest.raises(ValueError, match="remasking"):
        sample_rows(lg, r, r, r, 0, temperature=0.0, remasking="confident")
    with pytest.raises(ValueError, match="temperature"):
        sample_rows(lg, r, r, r, 0, temperature=-1.0, remasking="random")
    with pytest.raises(ValueError, match="shape"):
        sample_rows(lg, r, r[:1], r, 0, **kw)
    with pytest.raises(TypeError, match="int64"):
        sample_rows(lg, r, r.to(torch.int32), r, 0, **kw)
    with pytest.raises(ValueError, match="uncond_logits"):
        sample_rows(lg, r, r, r, 0, uncond_logits=lg[:2], cfg_scale=1.0, **kw)
    with pytest.raises(ValueError, match="vocab size"):
        sample_rows(torch.zeros(1, 1, device=DEV).expand(1, MAX_VOCAB + 1), r[:1], r[:1], r[:1], 0, **kw)
    with pytest.raises(ValueError, match="one device"):
        sample_rows(lg, r.to("meta"), r, r, 0, **kw)
    with pytest.raises(ValueError, match="suppress_tokens"):
        sample_rows(lg, r, r, r, 0, suppress_tokens=[20], **kw)


def test_cpu_tensors_without_interpreter_are_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    r = torch.arange(2)
    with pytest.raises(ValueError, match="CUDA"):
        sample_rows(torch.randn(2, 5), r, r, r, 0, temperature=0.0, remasking="random")
    with pytest.raises(ValueError, match="CUDA"):
        select(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool),
               torch.zeros(1, 2, dtype=torch.bool), torch.ones(1, dtype=torch.int64))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    V=st.sampled_from([1, 2, 7, 111, 2048, 2049, 4099]),
    dtype=st.sampled_from(DTYPES),
    remasking=st.sampled_from(REMASKING),
    temperature=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    cfg=st.sampled_from([None, 0.0, 1.5]),
    r=st.integers(1, 4),
    cpp=st.sampled_from([None, 1, 2]),
    ties=st.booleans(),
    suppress=st.lists(st.integers(0, 4098), max_size=3),
    step=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_sample_rows_property(V, dtype, remasking, temperature, cfg, r, cpp, ties, suppress, step, data):
    lg, rows, seeds, pos, un = _case(V, dtype, r=r, cfg=cfg is not None, seed=step % 1000, ties=ties)
    active = torch.tensor(data.draw(st.lists(st.booleans(), min_size=r, max_size=r)), device=DEV)
    sup = torch.tensor([s % V for s in suppress], dtype=torch.int64, device=DEV)
    want, got = _both(lg, rows, seeds, pos, step, temperature=temperature, remasking=remasking,
                      cfg_scale=cfg or 0.0, uncond_logits=un, suppress_tokens=sup, active=active,
                      chunks_per_prog=cpp)
    _same(want, got)


# ------------------------------------------------------------------------------------ select

def _select_case(B, C, seed, levels=4, p_cand=0.6, p_def=0.2):
    g = torch.Generator().manual_seed(seed)
    conf = torch.randint(0, levels, (B, C), generator=g).float() / levels   # ties on purpose
    conf[torch.rand(B, C, generator=g) < 0.1] = -0.0
    cand = torch.rand(B, C, generator=g) < p_cand
    dfr = torch.rand(B, C, generator=g) < p_def
    k = torch.randint(0, C + 2, (B,), generator=g)
    return conf.to(DEV), cand.to(DEV), dfr.to(DEV), k.to(DEV)


def _select_both(conf, cand, dfr, k, thr, start=3):
    B, C = conf.shape
    k = torch.stack([k, k + 1], dim=1)[:, 0]                         # strided, as a schedule column
    want = ref.select(conf, cand, dfr, k, thr)
    x = torch.randint(0, 50, (B, C + 7), device=DEV)
    x0 = torch.randint(100, 200, (B, C), device=DEV)
    x_want = x.clone()
    x_want[:, start:start + C] = torch.where(want, x0, x_want[:, start:start + C])
    out = torch.ones(B, C, dtype=torch.bool, device=DEV)            # poisoned: all kept
    got = select(conf, cand, dfr, None if thr is not None else k, thr, x=x, x0=x0, start=start, out=out)
    assert torch.equal(want, got), (want, got)
    assert torch.equal(x, x_want)
    plain = select(conf, cand, dfr, k, thr)                          # no fused write
    assert torch.equal(want, plain)


@pytest.mark.parametrize("B,C", [(1, 1), (5, 7), (2, 32), (3, 100), (1, 513)])
@pytest.mark.parametrize("threshold", [None, 0.5, 2.0])
def test_select_equals_reference(B, C, threshold):
    _select_both(*_select_case(B, C, seed=B * C), threshold)


def test_select_edge_rows():
    """A row without candidates, a row all candidates, an all-deferred row, k = 0 and k > C."""
    C = 9
    conf = torch.linspace(0, 1, C).repeat(4, 1)
    cand = torch.ones(4, C, dtype=torch.bool)
    cand[0] = False
    dfr = torch.zeros(4, C, dtype=torch.bool)
    dfr[2] = True
    k = torch.tensor([3, 0, 4, 20])
    for thr in (None, 0.5, 1.5):
        _select_both(conf.to(DEV), cand.to(DEV), dfr.to(DEV), k.to(DEV), thr)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(B=st.integers(1, 5), C=st.integers(1, 70), seed=st.integers(0, 10**6),
       levels=st.sampled_from([1, 3, 1000]), threshold=st.sampled_from([None, None, 0.0, 0.4, 1.0]),
       p_cand=st.sampled_from([0.0, 0.5, 1.0]), p_def=st.sampled_from([0.0, 0.3, 1.0]))
def test_select_property(B, C, seed, levels, threshold, p_cand, p_def):
    _select_both(*_select_case(B, C, seed, levels, p_cand, p_def), threshold)


def test_select_validation():
    conf = torch.zeros(2, 3, device=DEV)
    b = torch.zeros(2, 3, dtype=torch.bool, device=DEV)
    k = torch.ones(2, dtype=torch.int64, device=DEV)
    with pytest.raises(ValueError, match="fp32"):
        select(conf.double(), b, b, k)
    with pytest.raises(ValueError, match="candidate"):
        select(conf, b[:, :2], b, k)
    with pytest.raises(ValueError, match="k must"):
        select(conf, b, b, None)
    with pytest.raises(ValueError, match="does not fit"):
        select(conf, b, b, k, x=torch.zeros(2, 4, dtype=torch.int64, device=DEV),
               x0=torch.zeros(2, 3, dtype=torch.int64, device=DEV), start=2)


# ------------------------------------------------------------------------------- generate

@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    B=st.integers(1, 3), P=st.integers(0, 4), block=st.sampled_from([1, 3, 4]), n_blocks=st.integers(1, 2),
    dtype=st.sampled_from(DTYPES), vocab=st.sampled_from([7, 50]),
    remasking=st.sampled_from(REMASKING), temperature=st.sampled_from([0.0, 0.7]),
    cfg_scale=st.sampled_from([0.0, 1.5]), mode=st.sampled_from(["uniform", "pyramid", "threshold"]),
    seed=st.integers(0, 2**63 - 1),
)
def test_generate_triton_equals_reference(B, P, block, n_blocks, dtype, vocab, remasking,
                                          temperature, cfg_scale, mode, seed):
    from fastremask import generate
    from fastremask.models.tiny import tiny_model
    model = tiny_model(vocab_size=vocab, d_model=16, n_heads=2, n_layers=1, seed=seed % 1000).to(dtype).to(DEV)
    mask_id = model.mask_id
    g = torch.Generator().manual_seed(seed % 997)
    prompt = torch.randint(0, mask_id, (B, P), generator=g).to(DEV)
    kw = dict(gen_length=block * n_blocks, block_length=block, remasking=remasking,
              temperature=temperature, cfg_scale=cfg_scale, mask_id=mask_id, seed=seed,
              steps=n_blocks * block, suppress_tokens=[1], return_trace=True)
    if mode == "pyramid":
        kw.update(schedule="pyramid", factor=1)
    elif mode == "threshold":
        kw.update(threshold={"low_confidence": 0.3, "margin": 0.2, "entropy": -1.0, "random": 0.5}[remasking],
                  steps=1)
    x_ref, t_ref = generate(model, prompt, None, backend="reference", **kw)
    x_tri, t_tri = generate(model, prompt, None, backend="triton", **kw)
    assert torch.equal(x_ref, x_tri)
    assert len(t_ref.steps) == len(t_tri.steps)
    for a, b in zip(t_ref.steps, t_tri.steps):
        assert torch.equal(a.keep, b.keep)
        assert torch.equal(a.x0, b.x0)
        assert_bits_equal(a.confidence, b.confidence)
