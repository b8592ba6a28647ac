"""The step functions: `fast` (torch backend) bit-equal to `reference`, and the reference's rules.

Exact assertions: `torch.equal` on tokens and selections, `assert_bits_equal` on confidences.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from fastremask.sampler.contract import REMASKING
from fastremask.sampler import fast
from fastremask.sampler import numerics as nx
from fastremask.sampler import reference as ref
from fastremask.sampler.contract import assert_bits_equal

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
RULES = list(REMASKING)


def _logits(n, V, dtype, seed, ties=True):
    """Random logits with repeated values (ties), large spreads and a few -inf."""
    g = torch.Generator().manual_seed(seed)
    l = torch.randn(n, V, generator=g) * 4
    if ties:
        l = torch.where(torch.rand(n, V, generator=g) < 0.3, l.round(), l)
    l[torch.rand(n, V, generator=g) < 0.05] = float("-inf")
    l[:, 0] = torch.where(torch.isinf(l).all(1), 0.0, l[:, 0])   # keep every row valid
    return l.to(dtype)


def _both(*args, piece_width=None, **kw):
    a = ref.sample_rows(*args, **kw)
    b = fast.sample_rows(*args, piece_width=piece_width, **kw)
    return a, b


def _assert_same(a, b):
    assert torch.equal(a.x0, b.x0)
    assert torch.equal(a.invalid, b.invalid)
    assert_bits_equal(a.confidence, b.confidence)
    assert a.confidence.dtype == b.confidence.dtype == torch.float32


# --------------------------------------------------------------------------- sample_rows


@pytest.mark.parametrize("V", [1, 7, 111, 4099], ids=lambda v: f"V{v}")
@pytest.mark.parametrize("remasking", RULES)
def test_sample_rows_fast_equals_reference(V, remasking):
    N, R = 9, 6
    for case, (dtype, T) in enumerate([(d, t) for d in DTYPES for t in (0.0, 0.7, 1.0)]):
        seed = 1000 * V + 10 * case + RULES.index(remasking)
        logits = _logits(N, V, dtype, seed)
        g = torch.Generator().manual_seed(seed)
        rows = torch.randint(0, N, (R,), generator=g)
        seeds = torch.randint(0, 2**63 - 1, (R,), generator=g)
        positions = torch.randint(0, 300, (R,), generator=g)
        kw = dict(temperature=T, remasking=remasking)
        if case % 2:
            # finite unconditional logits: -inf in both halves makes CFG's (c - u) NaN
            uncond = _logits(N, V, dtype, seed + 7).nan_to_num(neginf=-5.0)
            kw.update(cfg_scale=[0.5, 1.5, 3.0][case % 3], uncond_logits=uncond)
        if case % 3 == 1 and V > 1:
            kw.update(suppress_tokens=torch.tensor(sorted({0, V // 2, V - 1})))
        if case % 4 == 3:
            kw.update(active=torch.rand(R, generator=g) < 0.7)
        a, b = _both(logits, rows, seeds, positions, 17 + case, **kw)
        _assert_same(a, b)
        if V > nx.CHUNK:    # several pieces of one chunk each: the split never changes a bit
            _assert_same(a, fast.sample_rows(logits, rows, seeds, positions, 17 + case,
                                             piece_width=nx.CHUNK, **kw))


def test_sample_rows_invalid_and_inactive_rows():
    V = 9
    l = _logits(6, V, torch.float32, 3)
    l[1, 4] = float("nan")
    l[2, 2] = float("inf")
    l[3] = float("-inf")
    l[4, :] = float("-inf")
    l[4, 5] = 1.0                     # only finite logit is suppressed -> no finite logit
    rows = torch.arange(6)
    seeds, pos = torch.arange(6) * 11, torch.arange(6)
    active = torch.tensor([True, True, True, True, True, False])
    for rule in RULES:
        a, b = _both(l, rows, seeds, pos, 2, temperature=1.0, remasking=rule,
                     suppress_tokens=torch.tensor([5]), active=active)
        _assert_same(a, b)
        assert a.invalid.tolist() == [False, True, True, True, True, False]
        assert a.x0.tolist()[1:] == [-1] * 5 and a.x0[0] >= 0
        assert torch.isnan(a.confidence[1:5]).all() and a.confidence[5] == float("-inf")


def test_poisoned_rows_are_not_read():
    """Rows not named in `rows` may hold anything (NaN): they are never read."""
    l = _logits(5, 33, torch.float32, 4)
    l[[0, 2]] = float("nan")
    rows = torch.tensor([1, 3, 4, 3])
    a, b = _both(l, rows, rows * 5, torch.tensor([0, 1, 2, 3]), 0, temperature=0.7, remasking="entropy")
    _assert_same(a, b)
    assert not a.invalid.any()


def test_confidences_match_float64_math():
    """The fixed-point confidences are the softmax quantities, to a few fp32 ulp."""
    V = 300
    l = _logits(8, V, torch.float32, 5, ties=False)
    rows, seeds, pos = torch.arange(8), torch.arange(8), torch.arange(8)
    p = torch.softmax(l.double(), -1)
    lc = ref.sample_rows(l, rows, seeds, pos, 0, temperature=0.0, remasking="low_confidence")
    assert torch.equal(lc.x0, l.argmax(-1))
    torch.testing.assert_close(lc.confidence.double(), p.max(-1).values, rtol=2e-6, atol=1e-11)
    mg = ref.sample_rows(l, rows, seeds, pos, 0, temperature=0.0, remasking="margin")
    top = p.topk(2, -1).values
    torch.testing.assert_close(mg.confidence.double(), top[:, 0] - top[:, 1], rtol=2e-6, atol=1e-11)
    en = ref.sample_rows(l, rows, seeds, pos, 0, temperature=0.0, remasking="entropy")
    neg_h = (p * torch.log_softmax(l.double(), -1)).nan_to_num().sum(-1)
    torch.testing.assert_close(en.confidence.double(), neg_h, rtol=1e-5, atol=1e-6)
    rnd = ref.sample_rows(l, rows, seeds, pos, 0, temperature=0.0, remasking="random")
    assert ((rnd.confidence > 0) & (rnd.confidence < 1)).all()


def test_temperature_zero_is_argmax_lowest_index_on_ties():
    l = torch.tensor([[1.0, 3.0, 3.0, -1.0], [2.0, 2.0, 2.0, 2.0]])
    a, b = _both(l, torch.arange(2), torch.zeros(2, dtype=torch.long), torch.arange(2), 0,
                 temperature=0.0, remasking="margin")
    _assert_same(a, b)
    assert a.x0.tolist() == [1, 0]
    assert a.confidence.tolist() == [0.0, 0.0]          # max repeats: margin 0


def test_cfg_rounding_rule():
    """CFG is u + fp32(s + 1) * (c - u), three fp32 operations."""
    c = _logits(3, 20, torch.bfloat16, 6)
    u = _logits(3, 20, torch.bfloat16, 7)
    got = ref.prepare_logits(c, cfg_scale=0.3, uncond_logits=u)
    s1 = torch.tensor(1.3, dtype=torch.float32)
    want = u.float() + s1 * (c.float() - u.float())
    assert_bits_equal(got, want)


def _chi_square_case(cfg: bool):
    """A vocab of three chunks: 14 live tokens spread over all of them (the rest -inf, so every
    cell of the test has a real expected count), two of them suppressed."""
    V = 2 * nx.CHUNK + 300
    live = torch.tensor([3, 70, 2047, 2048, 2100, 3000, 4095, 4096, 4097, 4200, 4300, 4310, 4320, 4395])
    g = torch.Generator().manual_seed(31)
    cond = torch.full((1, V), float("-inf"))
    cond[0, live] = torch.randn(len(live), generator=g) * 0.6
    kw = dict(suppress_tokens=live[[2, 9]])
    if cfg:
        uncond = torch.full((1, V), -3.0)
        uncond[0, live] = torch.randn(len(live), generator=g) * 0.6
        kw.update(cfg_scale=0.5, uncond_logits=uncond)
    return cond, live, kw


@pytest.mark.parametrize("cfg", [False, True], ids=["plain", "cfg"])
@pytest.mark.parametrize("T", [0.5, 1.0, 2.0])
def test_chi_square_sampled_frequencies_match_softmax(T, cfg):
    """At temperature T the draws follow softmax(l / T) of the logits after CFG and suppression
    (numerics.md §4): 24,000 draws from distinct seeds, positions and steps of one logit row,
    counted against the float64 softmax; suppressed tokens are never drawn. Fixed seeds, so the
    test is deterministic; the bound is the chi-square quantile for p = 0.001."""
    cond, live, kw = _chi_square_case(cfg)
    n_pos, n_step = 4000, 6
    counts = torch.zeros(cond.shape[1])
    for s in range(n_step):
        pos = torch.arange(n_pos)
        seeds = torch.arange(n_pos) * 7919 + s
        out = fast.sample_rows(cond, torch.zeros(n_pos, dtype=torch.long), seeds, pos, s,
                               temperature=T, remasking="low_confidence", **kw)
        counts += torch.bincount(out.x0, minlength=cond.shape[1]).float()
    l = ref.prepare_logits(cond, **kw)[0].double()                  # fp32 after CFG, suppression
    expected = torch.softmax(l / T, -1) * (n_pos * n_step)
    kept = live[torch.isfinite(l[live])]
    assert float(counts.sum()) == n_pos * n_step
    assert float(counts[kw["suppress_tokens"]].sum()) == 0          # suppressed: never drawn
    assert float(counts.sum()) == float(counts[kept].sum())          # nothing off the live tokens
    e = expected[kept]
    assert float(e.min()) >= 5                                       # the chi-square approximation holds
    chi2 = float(((counts[kept].double() - e) ** 2 / e).sum())
    assert chi2 < 32.91, chi2          # chi-square, 11 degrees of freedom (12 cells), p = 0.001


# --------------------------------------------------------------------------- select


@st.composite
def _selection(draw):
    B = draw(st.integers(1, 5))
    C = draw(st.integers(1, 12))
    vals = st.sampled_from([-1.0, -0.0, 0.0, 0.25, 0.5, 0.5, 1.0, float("-inf")])
    conf = torch.tensor(draw(st.lists(vals, min_size=B * C, max_size=B * C))).view(B, C)
    cand = torch.tensor(draw(st.lists(st.booleans(), min_size=B * C, max_size=B * C))).view(B, C)
    dfr = torch.tensor(draw(st.lists(st.booleans(), min_size=B * C, max_size=B * C))).view(B, C)
    k = torch.tensor(draw(st.lists(st.integers(0, C + 1), min_size=B, max_size=B)))
    thr = draw(st.one_of(st.none(), st.sampled_from([0.0, 0.3, 0.5, 1.0, -0.5])))
    return conf, cand, dfr, k, thr


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_selection())
def test_select_fast_equals_reference(args):
    conf, cand, dfr, k, thr = args
    keep = ref.select(conf, cand, dfr, k, thr)
    assert torch.equal(keep, fast.select(conf, cand, dfr, k, thr))
    assert not (keep & ~cand).any()
    n_cand = cand.sum(1)
    if thr is None:
        assert torch.equal(keep.sum(1), torch.minimum(k, n_cand))
    else:
        assert ((keep.sum(1) >= 1) | (n_cand == 0)).all()


def test_select_ranking_rules():
    conf = torch.tensor([[0.5, 0.9, 0.5, 0.9, 0.1]])
    cand = torch.tensor([[True, True, True, True, True]])
    none = torch.zeros_like(cand)
    k = torch.tensor([3])
    for sel in (ref.select, fast.select):
        # higher confidence first, ties to the lower position
        assert sel(conf, cand, none, k).tolist() == [[True, True, False, True, False]]
        # deferred positions come after every other candidate
        dfr = torch.tensor([[False, True, False, False, False]])
        assert sel(conf, cand, dfr, k).tolist() == [[True, False, True, True, False]]
        # threshold: all non-deferred >= it; none reaches it -> the single best
        assert sel(conf, cand, dfr, k, 0.5).tolist() == [[True, False, True, True, False]]
        assert sel(conf, cand, none, k, 0.95).tolist() == [[False, True, False, False, False]]
        all_def = torch.ones_like(cand)
        assert sel(conf, cand, all_def, k, 0.0).tolist() == [[False, True, False, False, False]]
        # k larger than the candidates: all candidates
        few = torch.tensor([[True, False, False, True, False]])
        assert sel(conf, few, none, torch.tensor([9])).tolist() == [[True, False, False, True, False]]


def test_select_threshold_is_rounded_to_fp32():
    c = torch.tensor([[0.9]], dtype=torch.float32)          # fp32(0.9) < 0.9 in fp64
    cand = torch.tensor([[True, True]])
    conf = torch.cat([c, torch.tensor([[0.1]])], 1)
    for sel in (ref.select, fast.select):
        assert sel(conf, cand, torch.zeros_like(cand), None, 0.9).tolist() == [[True, False]]


@pytest.mark.parametrize("T", [1e-4, 0.3, 1.0, 5.0, 1e30])
def test_suppressed_and_minus_inf_never_drawn_at_any_temperature(T):
    """No temperature draws a suppressed or -inf token; a tiny T draws the argmax (the logits
    have no near ties), a huge T draws every finite token (weights all 2**40); reference and
    torch backend agree bit for bit."""
    g = torch.Generator().manual_seed(41)
    V, R = 3 * nx.CHUNK + 5, 400
    l = torch.randn(1, V, generator=g).mul_(4).round_(decimals=1)
    l[0, torch.randperm(V, generator=g)[:V // 3]] = float("-inf")
    top = l[0].argmax()
    l[0, top] = l[0, torch.isfinite(l[0])].max() + 0.5        # a clear maximum, suppressed below,
    runner_up = (int(top) + 2 * nx.CHUNK + 7) % V              # and a clear runner-up
    l[0, runner_up] = l[0, top] - 0.25
    sup = torch.tensor([int(top), 5, nx.CHUNK, V - 1])
    assert runner_up not in sup.tolist()
    rows = torch.zeros(R, dtype=torch.long)
    seeds = torch.arange(R) * 104729 + 3
    a, b = _both(l, rows, seeds, torch.arange(R), 2, temperature=T, remasking="low_confidence",
                 suppress_tokens=sup)
    _assert_same(a, b)
    allowed = torch.isfinite(ref.prepare_logits(l, suppress_tokens=sup)[0])
    assert bool(allowed[a.x0].all()) and not bool(a.invalid.any())
    if T == 1e-4:                       # the max is suppressed: the runner-up, every time
        assert bool((a.x0 == runner_up).all())
    if T == 1e30:
        assert len(set(a.x0.tolist())) > 0.8 * min(R, int(allowed.sum()))   # spread, not peaked
