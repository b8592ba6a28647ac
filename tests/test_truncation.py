"""Top-k, top-p and min-p (docs/numerics.md §4a): the kept set against a brute-force restatement
in Python integers, the draw's distribution against the float64 softmax restricted to the kept
set, the backends bit-equal to the reference, and the option checks.
"""
import math
from fractions import Fraction

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from fastremask.sampler import fast
from fastremask.sampler import numerics as nx
from fastremask.sampler import reference as ref
from fastremask.sampler.contract import (NO_TRUNCATION, Truncation, assert_bits_equal, check_truncation)

NEG_INF = float("-inf")


# --------------------------------------------------------------------------- the brute force


def _brute_kept(row: list, scale: float, top_k, top_p: float, min_p: float, top_p_first: bool) -> set:
    """§4a restated on Python values: sort with Python's sort (key: -logit, then index), cut with
    Python integers and `Fraction`s. Only the weights g come from the contract's `fixed_term`."""
    V = len(row)
    l = torch.tensor(row, dtype=torch.float32)
    m = l.max()
    g = [int(x) for x in nx.fixed_term(l, m, scale)]
    order = sorted((v for v in range(V) if row[v] != NEG_INF), key=lambda v: (-row[v], v))
    p_exact = Fraction(math.ceil(Fraction(top_p) * 2**62), 2**62)    # P / 2**62, rounded up

    def cut_k(s):
        return s if top_k is None else s[:top_k]

    def cut_p(s):
        if top_p >= 1:
            return s
        total, before, out = sum(g[v] for v in s), 0, []
        for v in s:
            if before > p_exact * total:          # the mass before v already exceeds p
                break
            out.append(v)
            before += g[v]
        return out

    s = cut_k(cut_p(order)) if top_p_first else cut_p(cut_k(order))
    if min_p > 0:
        bound, run = Fraction(min_p) * 2**40, 0
        while run < len(s) and g[s[run]] >= bound:
            run += 1
        s = s[:run]
    return set(s)


@st.composite
def _rows(draw):
    V = draw(st.integers(1, 40))
    pool = draw(st.lists(st.floats(-30, 30, width=32), min_size=1, max_size=6))   # few values: ties
    row = [draw(st.sampled_from(pool + [NEG_INF, 0.0, -0.0])) for _ in range(V)]
    if all(x == NEG_INF for x in row):
        row[draw(st.integers(0, V - 1))] = 0.5
    suppress = draw(st.lists(st.integers(0, V - 1), max_size=3, unique=True))
    if all(row[v] == NEG_INF or v in suppress for v in range(V)):
        suppress = []
    top_k = draw(st.one_of(st.none(), st.integers(1, V + 3)))
    top_p = draw(st.one_of(st.sampled_from([1.0, 0.5, 0.9, 0.95, 1e-12, 2.0**-10, 1 - 2.0**-53, 5e-324]),
                           st.floats(1e-9, 1.0, exclude_min=False)))
    min_p = draw(st.one_of(st.just(0.0), st.sampled_from([1e-12, 0.05, 0.5, 1 - 2.0**-53]),
                           st.floats(0.0, 0.999)))
    T = draw(st.sampled_from([0.0, 1.0, 0.7, 2.5]))
    first = draw(st.booleans())
    return row, suppress, top_k, top_p, min_p, T, first


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_rows())
def test_kept_set_equals_brute_force(case):
    """`reference.kept_tokens` and the cut of `nx.truncate_sorted` (the torch backend's form) are
    exactly the brute force's set, over rows with ties, +-0.0, -inf, suppressed ids, tiny and
    huge p (P/2**62 compared in Fractions), min-p, both orders, T = 0 (untempered weights) and
    T > 0; the set is never empty and never holds a -inf or suppressed token."""
    row, suppress, top_k, top_p, min_p, T, first = case
    tr = check_truncation(top_k, top_p, min_p, "top_p_first" if first else "top_k_first")
    l = ref.prepare_logits(torch.tensor([row], dtype=torch.float32),
                           suppress_tokens=torch.tensor(suppress, dtype=torch.int64))
    scale = nx.tempered_scales(T)[1] if T > 0 else nx.LOG2E
    want = _brute_kept(l[0].tolist(), scale, top_k, top_p, min_p, first)
    kept = ref.kept_tokens(l, scale, tr)[0]
    assert set(kept.nonzero().flatten().tolist()) == want
    l_cut, i_cut = nx.truncate_sorted(l, scale, top_k, top_p, min_p, first)
    cut = (l[0] > l_cut) | ((l[0] == l_cut) & (torch.arange(l.shape[1]) <= i_cut))
    assert torch.equal(cut, kept)
    assert want and all(l[0, v] != NEG_INF for v in want)
    assert not (set(suppress) & want)
    assert int(torch.argmax(l[0])) in want                       # the argmax (lowest index) is always kept


def test_top_p_bound_is_exact_above_2_pow_minus_10():
    for p in (1.0, 0.95, 0.9, 0.5, 1 / 3, 2.0**-10, 0.123456789):
        assert Fraction(nx.top_p_bound(p), 2**62) == Fraction(p)
    assert nx.top_p_bound(5e-324) == 1                              # the smallest double: rounded up
    for q in (0.05, 0.1, 1 / 3):
        assert nx.min_p_bound(q) == math.ceil(Fraction(q) * 2**40)


def test_mass_bound_is_exact():
    """`floor(P * G / 2**62)` from 126-bit limbs equals Python's, at the extremes and near
    multiples of 2**62."""
    for P in (1, 2, 2**62, 2**61 + 1, 3 * 2**59 - 7, 2**62 - 1):
        Gs = [0, 1, 2**40, 2**62, 2**62 - 1, 2**63 - 1, 123456789 * 2**20 + 5]
        got = nx.mass_bound(P, torch.tensor(Gs)).tolist()
        assert got == [(P * G) >> 62 for G in Gs], P


# --------------------------------------------------------------------------- backends bit-equal


def _logits(n, V, seed):
    g = torch.Generator().manual_seed(seed)
    l = torch.randn(n, V, generator=g) * 3
    l = torch.where(torch.rand(n, V, generator=g) < 0.3, l.round(), l)   # ties
    l[torch.rand(n, V, generator=g) < 0.05] = NEG_INF
    l[:, 0] = torch.where(torch.isinf(l).all(1), 0.0, l[:, 0])
    return l


TRUNCATIONS = [
    (check_truncation(top_k=1), 1.0), (check_truncation(top_k=5), 0.7), (check_truncation(top_p=0.9), 1.0),
    (check_truncation(top_k=50, top_p=0.95), 0.7), (check_truncation(top_k=50, top_p=0.95, order="top_p_first"), 1.0),
    (check_truncation(min_p=0.1), 0.7), (check_truncation(top_k=20, top_p=0.8, min_p=0.02), 2.0),
    (check_truncation(top_p=1e-12), 1.0),
]


@pytest.mark.parametrize("tr,T", TRUNCATIONS, ids=str)
def test_torch_backend_equals_reference_with_truncation(tr, T):
    """The torch backend (kept set as a cut from one sort, kept tempered sums per chunk, the
    drawn chunk re-read with the cut) bit-equal to the reference (a kept mask from a sort and a
    scatter) at every rule, with CFG, suppression, inactive rows and pieces of one chunk."""
    V = nx.CHUNK + 77
    N = 10
    cond, uncond = _logits(N, V, 1), _logits(N, V, 2)
    rows = torch.arange(N)
    seeds = torch.arange(N) * 1009 + 3
    pos = torch.arange(N) + 5
    active = torch.arange(N) % 5 != 3
    for rm in ("low_confidence", "margin", "entropy", "random"):
        for kw in (dict(), dict(cfg_scale=0.5, uncond_logits=uncond, suppress_tokens=torch.tensor([0, 9, 2048, V - 1]))):
            a = ref.sample_rows(cond, rows, seeds, pos, 2, temperature=T, remasking=rm, truncation=tr,
                                active=active, **kw)
            for pw in (None, nx.CHUNK):
                b = fast.sample_rows(cond, rows, seeds, pos, 2, temperature=T, remasking=rm, truncation=tr,
                                     active=active, piece_width=pw, **kw)
                assert torch.equal(a.x0, b.x0), (rm, kw.keys(), pw)
                assert torch.equal(a.invalid, b.invalid)
                assert_bits_equal(a.confidence, b.confidence)


def test_truncation_at_temperature_zero_changes_nothing():
    """At T = 0 the argmax is always kept, so the token and today's confidence are unchanged."""
    l = _logits(6, 300, 4)
    args = (l, torch.arange(6), torch.arange(6), torch.arange(6), 0)
    for rm in ("low_confidence", "margin", "entropy"):
        a = ref.sample_rows(*args, temperature=0.0, remasking=rm)
        b = ref.sample_rows(*args, temperature=0.0, remasking=rm, truncation=check_truncation(3, 0.5, 0.2))
        assert torch.equal(a.x0, b.x0)
        assert_bits_equal(a.confidence, b.confidence)


def test_tiny_top_p_and_top_k_one_draw_the_argmax():
    l = _logits(64, 500, 5)
    args = (l, torch.arange(64), torch.arange(64) * 3, torch.arange(64), 1)
    greedy = ref.sample_rows(*args, temperature=0.0, remasking="low_confidence").x0
    for tr in (check_truncation(top_k=1), check_truncation(top_p=1e-12), check_truncation(min_p=1 - 2.0**-53)):
        for T in (0.5, 1.0, 3.0):
            assert torch.equal(fast.sample_rows(*args, temperature=T, remasking="random", truncation=tr).x0, greedy)


# --------------------------------------------------------------------------- the distribution


@pytest.mark.parametrize("tr,T", [(check_truncation(top_k=6, min_p=0.01), 1.0), (check_truncation(top_p=0.8), 0.7),
                                  (check_truncation(top_k=9, top_p=0.9, order="top_p_first"), 1.5)], ids=str)
def test_chi_square_draws_follow_the_softmax_of_the_kept_set(tr, T):
    """8,000 draws (distinct seeds, positions, steps; fixed, so deterministic) of one row of
    two chunks with two suppressed ids, counted against the float64 softmax of l / T
    restricted to the kept set (`kept_tokens`); nothing outside it is ever drawn. Bound: the
    chi-square quantile for p = 0.001 at the cells' degrees of freedom."""
    V = nx.CHUNK + 300
    live = torch.tensor([3, 70, 600, 1200, 2000, 2047, 2048, 2049, 2100, 2200, 2300, 2310, 2320, 2347])
    g = torch.Generator().manual_seed(31)
    cond = torch.full((1, V), NEG_INF)
    cond[0, live] = torch.randn(len(live), generator=g) * 0.9
    sup = live[[2, 9]]
    l = ref.prepare_logits(cond, suppress_tokens=sup)
    kept = ref.kept_tokens(l, nx.tempered_scales(T)[1], tr)[0]
    n_pos, n_step = 2000, 4
    counts = torch.zeros(V)
    for s in range(n_step):
        out = fast.sample_rows(cond, torch.zeros(n_pos, dtype=torch.long), torch.arange(n_pos) * 7919 + s,
                               torch.arange(n_pos), s, temperature=T, remasking="low_confidence",
                               suppress_tokens=sup, truncation=tr)
        counts += torch.bincount(out.x0, minlength=V).float()
    cells = kept.nonzero().flatten()
    assert 3 <= len(cells) < 12                                       # the truncation cuts something
    assert float(counts[cells].sum()) == n_pos * n_step              # nothing outside the kept set
    p = torch.softmax(l[0, cells].double() / T, -1)
    e = p * (n_pos * n_step)
    assert float(e.min()) >= 5
    chi2 = float(((counts[cells].double() - e) ** 2 / e).sum())
    bound = {2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32, 8: 26.12, 9: 27.88, 10: 29.59}
    assert chi2 < bound[len(cells) - 1], chi2


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kw,msg", [
    (dict(top_k=0), "top_k must be None"), (dict(top_k=-3), "top_k must be None"),
    (dict(top_k=2.0), "top_k must be None or an int"), (dict(top_k=True), "top_k"),
    (dict(top_p=0.0), r"top_p must lie in \(0, 1\]"), (dict(top_p=1.5), r"top_p must lie in \(0, 1\]"),
    (dict(top_p=float("nan")), "top_p"), (dict(top_p="0.9"), "top_p must be a real"),
    (dict(min_p=1.0), r"min_p must lie in \[0, 1\)"), (dict(min_p=-0.1), r"min_p must lie in \[0, 1\)"),
    (dict(order="dream"), "truncation_order"),
])
def test_bad_truncation_options_name_the_option_and_range(kw, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        check_truncation(**kw)


def test_sample_rows_refuses_an_unchecked_truncation():
    l = torch.zeros(1, 4)
    one = torch.zeros(1, dtype=torch.long)
    for backend in (ref, fast):
        with pytest.raises(TypeError, match="truncation must be"):
            backend.sample_rows(l, one, one, one, 0, temperature=1.0, remasking="random", truncation=(5, 0.9))
        with pytest.raises(ValueError, match="top_k"):
            backend.sample_rows(l, one, one, one, 0, temperature=1.0, remasking="random",
                                truncation=Truncation(top_k=0))
    assert not NO_TRUNCATION.active and check_truncation(min_p=-0.0) == NO_TRUNCATION


# --------------------------------------------------------------------------- the triton kernels


@pytest.mark.interpreter
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("tr,T,rm", [
    (check_truncation(top_k=5), 1.0, "low_confidence"),
    (check_truncation(top_k=50, top_p=0.95, order="top_p_first"), 0.7, "entropy"),
    (check_truncation(top_p=0.9, min_p=0.05), 1.0, "random"),
], ids=str)
def test_triton_kernel_equals_reference_with_truncation(tr, T, rm):
    """The row kernel (interpreter on a CPU) bit-equal to the reference with truncation: the cut
    before the launch, kept tempered sums per chunk, suppressed ids subtracted only where the
    chunk loop counted them, a suppressed row max (its chunk recomputed), CFG, one chunk per
    program."""
    ks = pytest.importorskip("fastremask.kernels.sample")
    V, N = 2 * nx.CHUNK + 77, 4
    cond, uncond = _logits(N, V, 7), _logits(N, V, 8)
    rows, seeds, pos = torch.arange(N), torch.arange(N) * 7 + 1, torch.arange(N)
    sup = torch.tensor([1, 2, int(cond[0].argmax()), nx.CHUNK])
    for kw in ({}, dict(cfg_scale=0.5, uncond_logits=uncond, suppress_tokens=sup)):
        a = ref.sample_rows(cond, rows, seeds, pos, 3, temperature=T, remasking=rm, truncation=tr, **kw)
        b = ks.sample_rows(cond, rows, seeds, pos, 3, temperature=T, remasking=rm, truncation=tr,
                           chunks_per_prog=1, **kw)
        assert torch.equal(a.x0, b.x0), kw.keys()
        assert torch.equal(a.invalid, b.invalid)
        assert_bits_equal(a.confidence, b.confidence)


# --------------------------------------------------------------------------- generate, the loop, the options


def test_generate_with_truncation_is_the_same_on_every_backend_and_batch_invariant():
    """`generate(top_k=, top_p=, min_p=, truncation_order=)`: the reference, torch and (under the
    interpreter) triton backends give the same tokens, and a row of a batch equals its prompt
    alone (each row's cut is its own), with CFG, in schedule and threshold mode."""
    from fastremask import generate
    from test_batch_invariance import MASK, _check_rows_alone, MODEL, _batch
    kws = [dict(steps=6, gen_length=6, block_length=3, temperature=0.9, top_k=4, top_p=0.9),
           dict(steps=2, gen_length=6, block_length=3, temperature=1.0, top_p=0.8, min_p=0.05,
                truncation_order="top_p_first", threshold=0.4, cfg_scale=1.0)]
    for kw in kws:
        for backend in ("torch", "reference"):
            _check_rows_alone([2, 4, 3], 5, kw, backend)
        rows, ids, am = _batch([2, 4], 9)
        plain = generate(MODEL, ids, am, mask_id=MASK, seed=3, backend="reference",
                         **{**kw, "top_k": None, "top_p": 1.0, "min_p": 0.0})
        want = generate(MODEL, ids, am, mask_id=MASK, seed=3, backend="reference", **kw)
        assert not torch.equal(plain, want)                      # the truncation changes the draws here
        assert torch.equal(generate(MODEL, ids, am, mask_id=MASK, seed=3, backend="torch", **kw), want)
        try:
            from fastremask.kernels.numerics import interpreting
        except ImportError:
            continue
        if interpreting():
            assert torch.equal(generate(MODEL, ids, am, mask_id=MASK, seed=3, backend="triton", **kw), want)


def test_truncation_options_are_declared_once_and_in_the_graph_key():
    """The four options are `SamplingConfig` fields with `Option` metadata (so `generate`'s
    keywords, the CLI flags and the lm-eval keywords are derived), and each is in `step_key`:
    a CUDA graph captured with one cut is never replayed for another."""
    from fastremask.sampler.config import SamplingConfig, options
    opts = options()
    for name in ("top_k", "top_p", "min_p", "truncation_order"):
        assert opts[name][1].step
    base = SamplingConfig(steps=4, gen_length=4, block_length=4, temperature=1.0)
    keys = {base.step_key()}
    for change in (dict(top_k=5), dict(top_p=0.9), dict(min_p=0.1), dict(truncation_order="top_p_first")):
        keys.add(base.replace(**change).step_key())
    assert len(keys) == 5
    c = SamplingConfig.from_strings(top_k="50", top_p="0.95", truncation_order="top_p_first", temperature="0.5")
    assert c.truncation == Truncation(50, 0.95, 0.0, "top_p_first") and c.truncation.active
    assert SamplingConfig.from_strings(top_k="none").top_k is None


@pytest.mark.parametrize("kw,msg", [
    (dict(top_k=0), r"top_k must be None \(off\) or an int >= 1, got 0"),
    (dict(top_p=1.5), r"top_p must lie in \(0, 1\] \(1 is off\), got 1.5"),
    (dict(min_p=1.0), r"min_p must lie in \[0, 1\) \(0 is off\), got 1.0"),
    (dict(truncation_order="p"), r"unknown truncation_order 'p'"),
    (dict(top_p=0.9, temperature=0.0), r"top_p=0.9 needs temperature > 0"),
    (dict(top_k=3, min_p=0.1, temperature=0.0), r"top_k=3, min_p=0.1 needs temperature > 0"),
])
def test_generate_refuses_bad_truncation_naming_the_option(kw, msg):
    from fastremask import generate
    from test_batch_invariance import MASK, MODEL
    with pytest.raises(ValueError, match=msg):
        generate(MODEL, torch.tensor([[1, 2]]), steps=2, gen_length=2, block_length=2,
                 **{"temperature": 1.0, "mask_id": MASK, **kw})
