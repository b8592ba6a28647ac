"""Whose confidence the rules take (docs/numerics.md §6a): ``confidence='llada'`` (the untempered
full softmax), ``'dream'`` (Dream's ``sample_tokens``: the tempered softmax after top-p / top-k,
truncated at T = 0 too) and ``'llada2'`` (LLaDA2's ``_sample_with_temperature_topk_topp``).

* the kinds against a brute-force restatement of §6a in Python integers and floats (fp64 is
  Python's float; each fp32 operation rounded once), bit for bit, on fixed rows and on
  hypothesis-drawn ones (ties, +-0.0, -inf, suppressed ids, tiny and huge p);
* step-level oracles of Dream's ``sample_tokens`` and LLaDA2's sampler written from their
  published semantics in float64: the confidences within a tight stated bound, the tokens equal
  at T = 0, and at T > 0 the drawn distribution by chi-square;
* every backend bit-equal (the torch backend, the triton kernel under the interpreter), batch
  invariance through ``generate``, the option's declaration and its bad input.
"""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from fastremask.sampler import fast
from fastremask.sampler import numerics as nx
from fastremask.sampler import reference as ref
from fastremask.sampler.contract import (NO_TRUNCATION, assert_bits_equal, check_confidence, check_truncation,
                                         sampling_confidence)
from test_truncation import _brute_kept, _rows as _truncation_cases

NEG_INF = float("-inf")
RULES = ("low_confidence", "margin", "entropy")


def _f32(x: float) -> float:
    return nx.round_f32(float(x))


def _pow2_fixed(y: float) -> float:
    """The contract's own `fixed_pow2` (§3) of one fp32 value, as a Python float."""
    return float(nx.fixed_pow2(torch.tensor([y], dtype=torch.float32))[0])


def _exp(x: float) -> float:
    return float(nx.exp(torch.tensor([x], dtype=torch.float32))[0])


def _log(x: float) -> float:
    return float(nx.log(torch.tensor([x], dtype=torch.float32))[0])


def _q(n: int, z: int) -> float:
    """q(n) = div_rn(fp32(n), fp32(Z)): int -> fp64 -> fp32, each rounding to nearest (Python's
    int -> float is correctly rounded); a quotient of two fp32 values rounded to fp64 and then to
    fp32 is the correctly rounded fp32 quotient (53 >= 2 * 24 + 2)."""
    return _f32(_f32(float(n)) / _f32(float(z)))


# --------------------------------------------------------------------------- the brute force


def _brute_confidence(row: list, x0: int, rule: str, T: float, tr, kind: str) -> float:
    """§6a (and §6 where the kind is LLaDA's) restated on one fp32 row (after §7): the kept set by
    `test_truncation._brute_kept`, chunk sums as Python integers, the chunk factors and the
    combine in Python floats (fp64), one fp32 rounding per fp32 operation; only `fixed_pow2`,
    `exp` and `log` (§3) are the contract's own functions."""
    V = len(row)
    sampled = kind == "dream" or (kind == "llada2" and T > 0)
    if sampled:
        tau, s = nx.tempered_scales(T) if T > 0 else (1.0, nx.LOG2E)
        kept = _brute_kept(row, s, tr.top_k, tr.top_p, tr.min_p, tr.top_p_first) if tr.active else \
            {v for v in range(V) if row[v] != NEG_INF}
    else:
        tau, s, kept = 1.0, nx.LOG2E, {v for v in range(V) if row[v] != NEG_INF}
    m = max(row)
    Z = B = 0
    for c0 in range(0, V, nx.CHUNK):
        chunk = range(c0, min(V, c0 + nx.CHUNK))
        m_c = max(row[v] for v in chunk)
        if m_c == NEG_INF:
            continue                                               # a dead chunk adds 0
        S = A = 0
        for v in chunk:
            if v not in kept:
                continue
            d = _f32(row[v] - m_c)
            e = _pow2_fixed(_f32(d * s))
            S += int(e)
            A += int(_f32(e * -max(_f32(d * tau), -104.0)))
        f = _exp(_f32(_f32(m_c - m) * tau))
        Z += int(float(S) * f)
        B += int((float(A) + ((m - m_c) * tau) * float(S)) * f)
    order = sorted(kept, key=lambda v: (-row[v], v))
    if rule == "low_confidence":
        return _q(int(_pow2_fixed(_f32(_f32(row[x0] - m) * s))), Z)
    if rule == "margin":
        l2 = row[order[1]] if len(order) > 1 else NEG_INF
        return _q(2**40 - int(_pow2_fixed(_f32(_f32(l2 - m) * s))), Z)
    return -_f32(_log(_f32(float(Z)) * 2.0**-40) + _q(B, Z))


def _rows(n, V, seed, ties=True, inf=True):
    g = torch.Generator().manual_seed(seed)
    l = torch.randn(n, V, generator=g) * 3
    if ties:
        l = torch.where(torch.rand(n, V, generator=g) < 0.2, l.round(), l)
    if inf:                               # an unconditional row has none (CFG would make NaN)
        l[torch.rand(n, V, generator=g) < 0.1] = NEG_INF
    l[:, 0] = torch.where(torch.isinf(l).all(1), 0.0, l[:, 0])
    return l


TRUNCS = [NO_TRUNCATION, check_truncation(top_k=3), check_truncation(top_p=0.8, order="top_p_first"),
          check_truncation(top_k=50, top_p=0.95, order="top_p_first"), check_truncation(top_k=1),
          check_truncation(top_p=0.9, min_p=0.05)]


@pytest.mark.parametrize("V", [1, 7, nx.CHUNK + 13])
@pytest.mark.parametrize("kind", ["llada", "dream", "llada2"])
def test_kinds_equal_the_brute_force(kind, V):
    """Every rule a kind serves, T in {0, 1, 0.7, 2.5}, each truncation: the reference's
    confidence is the brute force's bit for bit (a vocabulary of two chunks included)."""
    n = 3 if V > 100 else 6
    l = _rows(n, V, 10 + V)
    if V > 100:           # two chunks, 48 finite logits spread over both (the brute force is slow)
        live = torch.randperm(V, generator=torch.Generator().manual_seed(V))[:48]
        l = torch.full_like(l, NEG_INF).index_copy_(1, live, l[:, live].clamp_min(-9.0))
    rows = torch.arange(n)
    rules = ("low_confidence",) if kind == "llada2" else RULES
    trs = TRUNCS[:2] if kind == "llada" else TRUNCS            # 'llada' never cuts: one to show it
    if V > 100:                                                # two chunks: fewer settings (slow)
        trs = trs[:1] + trs[2:4]
    for T in ((0.0, 1.0, 0.7, 2.5) if V < 100 else (0.0, 0.7)):
        for tr in trs:
            for rule in rules:
                got = ref.sample_rows(l, rows, rows * 5 + 1, rows, 2, temperature=T, remasking=rule,
                                      truncation=tr, confidence=kind)
                for r in range(n):
                    want = _brute_confidence(l[r].tolist(), int(got.x0[r]), rule, T, tr, kind)
                    assert_bits_equal(got.confidence[r:r + 1], torch.tensor([want]), f"{kind} {rule} T={T} {tr} row {r}")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_truncation_cases())
def test_kinds_equal_the_brute_force_on_drawn_rows(case):
    """Hypothesis-drawn rows (test_truncation's: ties, +-0.0, -inf, suppressed ids, tiny and huge
    top_p, min_p, both orders, T in {0, 0.7, 1, 2.5}): every kind and rule it serves, the
    reference's confidence is the brute force's bit for bit, and the torch backend's too."""
    row, suppress, top_k, top_p, min_p, T, first = case
    tr = check_truncation(top_k, top_p, min_p, "top_p_first" if first else "top_k_first")
    sup = torch.tensor(suppress, dtype=torch.int64)
    logits = torch.tensor([row], dtype=torch.float32)
    l = ref.prepare_logits(logits, suppress_tokens=sup)[0].tolist()
    one = torch.zeros(1, dtype=torch.long)
    for kind, rules in (("dream", RULES), ("llada2", ("low_confidence",))):
        for rule in rules:
            kw = dict(temperature=T, remasking=rule, truncation=tr, confidence=kind, suppress_tokens=sup)
            got = ref.sample_rows(logits, one, one + 5, one, 1, **kw)
            want = _brute_confidence(l, int(got.x0), rule, T, tr, kind)
            assert_bits_equal(got.confidence, torch.tensor([want]), f"{kind} {rule}")
            assert_bits_equal(fast.sample_rows(logits, one, one + 5, one, 1, **kw).confidence, got.confidence)


def test_dream_without_truncation_at_t_0_and_1_is_lladas():
    """At T = 0 and T = 1 with nothing cut the tempered, truncated distribution is the full
    softmax: 'dream' and 'llada2' give LLaDA's confidence bit for bit (the sums are the same
    integers, §6a). At T = 0 'llada2' is LLaDA's even with a truncation (LLaDA2 does not cut at
    T = 0); 'dream' then differs."""
    l = _rows(8, 300, 3)
    rows = torch.arange(8)
    for T in (0.0, 1.0):
        for rule in RULES:
            a = ref.sample_rows(l, rows, rows, rows, 0, temperature=T, remasking=rule)
            b = ref.sample_rows(l, rows, rows, rows, 0, temperature=T, remasking=rule, confidence="dream")
            assert torch.equal(a.x0, b.x0)
            assert_bits_equal(a.confidence, b.confidence)
    tr = check_truncation(top_k=3)
    a = ref.sample_rows(l, rows, rows, rows, 0, temperature=0.0, remasking="low_confidence")
    b = ref.sample_rows(l, rows, rows, rows, 0, temperature=0.0, remasking="low_confidence", truncation=tr,
                        confidence="llada2")
    d = ref.sample_rows(l, rows, rows, rows, 0, temperature=0.0, remasking="low_confidence", truncation=tr,
                        confidence="dream")
    assert_bits_equal(a.confidence, b.confidence)
    assert bool((d.confidence > a.confidence).all())              # less mass left: a larger share


def test_one_kept_token_has_probability_margin_and_entropy_exactly_1_1_0():
    """A row whose truncation keeps one token: its probability is exactly 1, the margin 1 (no
    second kept token: p_2 = 0, as in Dream), minus the entropy 0."""
    l = _rows(5, 40, 9)
    rows = torch.arange(5)
    want = {"low_confidence": 1.0, "margin": 1.0, "entropy": -0.0}
    for T in (0.0, 0.7):
        for rule in RULES:
            got = ref.sample_rows(l, rows, rows, rows, 1, temperature=T, remasking=rule, confidence="dream",
                                  truncation=check_truncation(top_k=1))
            assert_bits_equal(got.confidence, torch.full((5,), want[rule]))


# --------------------------------------------------------------------------- the published samplers, float64


def _softmax_rows(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, -1)


def _top_p_f64(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dream's `top_p_logits` and LLaDA2's `_top_p_logits`: sort, cumulative softmax, remove where
    it exceeds p shifted right by one (the first token always stays)."""
    srt, idx = torch.sort(x, descending=True, stable=True)
    remove = torch.cumsum(_softmax_rows(srt), -1) > p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    return x.masked_fill(torch.zeros_like(remove).scatter(-1, idx, remove), NEG_INF)


def _top_k_f64(x: torch.Tensor, k: int) -> torch.Tensor:
    """Dream's `top_k_logits` / LLaDA2's `_top_k_logits`: remove what lies below the k-th logit."""
    k = min(k, x.shape[-1])
    return x.masked_fill(x < torch.topk(x, k)[0][..., -1, None], NEG_INF)


def dream_sample_tokens(l: torch.Tensor, T: float, top_p, top_k, alg: str, x0=None):
    """Dream's `sample_tokens` (generation_utils.py) in float64 on rows `l` [R, V]: logits / T
    at T > 0, `top_p_logits` then `top_k_logits`, softmax; the token drawn (`x0` given here: the
    draw is compared by chi-square) or the argmax at T = 0; `maskgit_plus` its probability,
    `topk_margin` top-1 minus top-2 probability, `entropy` sum p log(p + 1e-10). Returns
    (confidence, x0, probs)."""
    x = l.double()
    if T > 0:
        x = x / T
    if top_p is not None and top_p < 1:
        x = _top_p_f64(x, top_p)
    if top_k is not None:
        x = _top_k_f64(x, top_k)
    probs = _softmax_rows(x)
    if T == 0 or x0 is None:
        conf, x0 = probs.max(-1)
    else:
        conf = probs.gather(-1, x0[:, None]).squeeze(-1)
    if alg == "topk_margin":
        sp = torch.sort(probs, -1, descending=True).values
        conf = sp[:, 0] - (sp[:, 1] if sp.shape[1] > 1 else 0.0)
    elif alg == "entropy":
        conf = (probs * torch.log(probs + 1e-10)).sum(-1)
    return conf, x0, probs


def llada2_sample(l: torch.Tensor, T: float, top_k, top_p, x0=None):
    """LLaDA2's `_sample_with_temperature_topk_topp` (modeling_llada2_moe.py) in float64: at T = 0
    the argmax and its probability under the full softmax of the logits; at T > 0 logits / T,
    `_top_k_logits` then `_top_p_logits`, softmax, a multinomial draw (`x0` given here) and its
    probability. Returns (token_prob, x0, probs)."""
    x = l.double()
    if T == 0:
        probs = _softmax_rows(x)
        x0 = x.argmax(-1)
    else:
        x = x / T
        if top_k:
            x = _top_k_f64(x, top_k)
        if top_p is not None and top_p < 1:
            x = _top_p_f64(x, top_p)
        probs = _softmax_rows(x)
    return probs.gather(-1, x0[:, None]).squeeze(-1), x0, probs


# Against the float64 oracle: the probabilities (and the margin) within 5e-7 absolute of the
# exact ones (fixed_pow2's relative error, the 2**-40 truncations and one fp32 rounding;
# measured at most 7.9e-8 over these tests' rows), minus the entropy within 2e-6 (own log, fp32
# sums; Dream's 1e-10 inside the log adds at most V * 1e-10; measured at most 3.6e-7).
PROB_TOL, ENTROPY_TOL = 5e-7, 2e-6
ALG = {"low_confidence": "maskgit_plus", "margin": "topk_margin", "entropy": "entropy"}


@pytest.mark.parametrize("T", [0.0, 1.0, 0.5, 1.7])
@pytest.mark.parametrize("top_k,top_p", [(None, 1.0), (5, 1.0), (None, 0.9), (20, 0.95), (1, 1.0)])
def test_dream_sample_tokens_oracle(T, top_k, top_p):
    """`confidence='dream'`, `truncation_order='top_p_first'` against Dream's `sample_tokens` in
    float64 on the same fp32 logits (after CFG and suppression): the same kept set (asserted:
    these rows have no top-p mass within rounding of p), the same token at T = 0, the
    confidences within the bounds above; at T > 0 the confidence of the drawn token."""
    V, n = 300, 12
    l = _rows(n, V, 77, ties=False)          # Dream keeps every tie at the k-th logit, §4a one
    sup = torch.tensor([4, 11])
    lp = ref.prepare_logits(l, suppress_tokens=sup)
    rows = torch.arange(n)
    tr = check_truncation(top_k, top_p, 0.0, "top_p_first")
    for rule in RULES:
        got = fast.sample_rows(l, rows, rows * 3 + 1, rows, 4, temperature=T, remasking=rule, truncation=tr,
                               confidence="dream", suppress_tokens=sup)
        want, x0, probs = dream_sample_tokens(lp, T, top_p, top_k, ALG[rule], x0=got.x0)
        if tr.active:
            scale = nx.tempered_scales(T)[1] if T > 0 else nx.LOG2E
            assert torch.equal(ref.kept_tokens(lp, scale, tr), probs > 0), (rule, T)
        if T == 0:
            assert torch.equal(got.x0, x0)
        tol = ENTROPY_TOL if rule == "entropy" else PROB_TOL
        err = (got.confidence.double() - want).abs().max().item()
        assert err <= tol, (rule, err)


@pytest.mark.parametrize("T", [0.0, 1.0, 0.5, 1.7])
@pytest.mark.parametrize("top_k,top_p", [(None, 1.0), (5, 1.0), (None, 0.9), (20, 0.95)])
def test_llada2_sampler_oracle(T, top_k, top_p):
    """`confidence='llada2'` (top-k first, the default order) against LLaDA2's
    `_sample_with_temperature_topk_topp` in float64: the argmax and its full-softmax probability
    at T = 0 (the truncation applies to nothing there), the tempered, truncated probability of the
    drawn token at T > 0; with CFG."""
    V, n = 300, 12
    l, u = _rows(n, V, 78, ties=False), _rows(n, V, 79, ties=False, inf=False)
    lp = ref.prepare_logits(l, cfg_scale=0.5, uncond_logits=u)
    rows = torch.arange(n)
    tr = check_truncation(top_k, top_p)
    got = fast.sample_rows(l, rows, rows * 3 + 1, rows, 4, temperature=T, remasking="low_confidence",
                           truncation=tr, confidence="llada2", cfg_scale=0.5, uncond_logits=u)
    want, x0, probs = llada2_sample(lp, T, top_k, top_p, x0=got.x0)
    if T > 0 and tr.active:
        assert torch.equal(ref.kept_tokens(lp, nx.tempered_scales(T)[1], tr), probs > 0)
    assert torch.equal(got.x0, x0)
    assert (got.confidence.double() - want).abs().max().item() <= PROB_TOL


@pytest.mark.parametrize("kind,tr,T", [("dream", check_truncation(top_k=8, top_p=0.9, order="top_p_first"), 0.8),
                                       ("llada2", check_truncation(top_k=9, top_p=0.85), 1.3)], ids=str)
def test_chi_square_draws_follow_the_published_sampler(kind, tr, T):
    """4,000 draws (distinct seeds and positions; fixed, so deterministic) of one row of two
    chunks, counted against the probabilities of the float64 oracle of the published sampler;
    the confidence of each draw is the oracle's probability of that token (within PROB_TOL).
    Bound: the chi-square quantile for p = 0.001 at the cells' degrees of freedom."""
    V = nx.CHUNK + 300
    live = torch.tensor([3, 70, 600, 1200, 2000, 2047, 2048, 2049, 2100, 2200, 2300, 2310, 2320, 2347])
    g = torch.Generator().manual_seed(32)
    cond = torch.full((1, V), NEG_INF)
    cond[0, live] = torch.randn(len(live), generator=g) * 0.9
    n_pos, n_step = 1000, 4
    counts = torch.zeros(V, dtype=torch.float64)
    if kind == "dream":
        _, _, probs = dream_sample_tokens(cond, T, tr.top_p, tr.top_k, "maskgit_plus")
    else:
        _, _, probs = llada2_sample(cond, T, tr.top_k, tr.top_p, x0=torch.zeros(1, dtype=torch.long))
    probs = probs[0]
    for s in range(n_step):
        out = fast.sample_rows(cond, torch.zeros(n_pos, dtype=torch.long), torch.arange(n_pos) * 7919 + s,
                               torch.arange(n_pos), s, temperature=T, remasking="low_confidence",
                               truncation=tr, confidence=kind)
        counts += torch.bincount(out.x0, minlength=V).double()
        assert (out.confidence.double() - probs[out.x0]).abs().max().item() <= PROB_TOL
    cells = (probs > 0).nonzero().flatten()
    assert 3 <= len(cells) < 12                                       # the truncation cuts something
    assert float(counts[cells].sum()) == n_pos * n_step              # nothing outside the kept set
    e = probs[cells] * (n_pos * n_step)
    assert float(e.min()) >= 5
    chi2 = float(((counts[cells] - e) ** 2 / e).sum())
    bound = {2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32, 8: 26.12, 9: 27.88, 10: 29.59}
    assert chi2 < bound[len(cells) - 1], chi2


# --------------------------------------------------------------------------- backends bit-equal


CASES = [("dream", r, T, tr) for r in RULES for T, tr in
         ((0.0, check_truncation(top_k=4, top_p=0.9, order="top_p_first")), (1.0, NO_TRUNCATION),
          (0.7, check_truncation(top_k=50, top_p=0.95, order="top_p_first")), (2.0, check_truncation(top_k=1)))]
CASES += [("dream", "entropy", 1.0, check_truncation(top_p=0.8)), ("dream", "margin", 0.0, NO_TRUNCATION)]
CASES += [("llada2", "low_confidence", T, tr) for T, tr in
          ((0.0, NO_TRUNCATION), (0.6, check_truncation(top_k=20, top_p=0.9)), (1.0, check_truncation(min_p=0.1)))]


DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@pytest.mark.parametrize("i,kind,rule,T,tr", [(i, *c) for i, c in enumerate(CASES)], ids=str)
def test_torch_backend_equals_reference(i, kind, rule, T, tr):
    """The torch backend bit-equal to the reference: vocab 1, 7 and several chunks (pieces of
    one chunk too), fp32 / bf16 / fp16 logits (in turn over the cases), CFG, suppressed ids (one
    of them a row max), rows with -inf, inactive rows."""
    for j, V in enumerate((1, 7, 2 * nx.CHUNK + 77)):
        N = 6
        for dtype in (DTYPES[(i + j) % 3],):
            cond, uncond = _rows(N, V, V + 1).to(dtype), _rows(N, V, V + 2, inf=False).to(dtype)
            rows, seeds, pos = torch.arange(N), torch.arange(N) * 1009 + 3, torch.arange(N) + 5
            active = torch.arange(N) % 4 != 3
            kws = [dict()]
            if V > 1:
                sup = torch.tensor(sorted({0, V - 1, int(cond[1].float().argmax())}))
                kws.append(dict(cfg_scale=0.5, uncond_logits=uncond, suppress_tokens=sup))
            for kw in kws:
                a = ref.sample_rows(cond, rows, seeds, pos, 2, temperature=T, remasking=rule, truncation=tr,
                                    active=active, confidence=kind, **kw)
                for pw in ((None, nx.CHUNK) if V > nx.CHUNK else (None,)):
                    b = fast.sample_rows(cond, rows, seeds, pos, 2, temperature=T, remasking=rule, truncation=tr,
                                         active=active, confidence=kind, piece_width=pw, **kw)
                    assert torch.equal(a.x0, b.x0), (V, dtype, kw.keys(), pw)
                    assert torch.equal(a.invalid, b.invalid)
                    assert_bits_equal(b.confidence, a.confidence, f"V={V} {dtype} {sorted(kw)} pw={pw}")


def test_batch_invariance_of_a_row():
    """A row's token and confidence do not depend on the other rows of the call (each row's cut
    and sums are its own)."""
    l = _rows(7, 500, 5)
    tr = check_truncation(top_k=6, top_p=0.9, order="top_p_first")
    for T in (0.0, 0.8):
        for rule in RULES:
            for mod in (ref, fast):
                allr = mod.sample_rows(l, torch.arange(7), torch.arange(7), torch.arange(7), 1, temperature=T,
                                       remasking=rule, truncation=tr, confidence="dream")
                for r in (0, 3, 6):
                    one = mod.sample_rows(l[r:r + 1], torch.zeros(1, dtype=torch.long), torch.tensor([r]),
                                          torch.tensor([r]), 1, temperature=T, remasking=rule, truncation=tr,
                                          confidence="dream")
                    assert int(one.x0) == int(allr.x0[r])
                    assert_bits_equal(one.confidence, allr.confidence[r:r + 1])


# --------------------------------------------------------------------------- generate, options, bad input


def test_generate_with_each_kind_is_the_same_on_every_backend_and_batch_invariant():
    """`generate(confidence=...)`: the reference and torch backends (and triton under the
    interpreter, for Dream's call) give the same tokens and the same kept confidences (the trace), a row of a
    batch equals its prompt alone, and the kind reaches the step: the kept confidences differ
    from confidence='llada''s (Dream's README call: T = 0.2, top_p = 0.95, entropy; Dream at
    T = 0 with top-k; LLaDA2's, threshold mode)."""
    from fastremask import generate
    from test_batch_invariance import MASK, MODEL, _batch, _check_rows_alone
    kws = [dict(steps=4, gen_length=8, block_length=8, temperature=0.2, top_p=0.95, remasking="entropy",
                truncation_order="top_p_first", confidence="dream"),
           dict(steps=6, gen_length=6, block_length=3, temperature=0.0, top_k=3, remasking="margin",
                truncation_order="top_p_first", confidence="dream"),
           dict(steps=2, gen_length=6, block_length=3, temperature=0.9, top_k=4, top_p=0.9, threshold=0.5,
                confidence="llada2", cfg_scale=1.0)]
    try:
        from fastremask.kernels.numerics import interpreting
        backends = ("torch", "triton") if interpreting() else ("torch",)
    except ImportError:
        backends = ("torch",)
    for kw in kws:
        _check_rows_alone([2, 4, 3], 5, kw, "torch")
        rows, ids, am = _batch([2, 4], 9)
        want, trace = generate(MODEL, ids, am, mask_id=MASK, seed=3, backend="reference", return_trace=True, **kw)
        for backend in backends if kw is kws[0] else ("torch",):    # triton (interpreter) once: slow
            x, tr = generate(MODEL, ids, am, mask_id=MASK, seed=3, backend=backend, return_trace=True, **kw)
            assert torch.equal(x, want), backend
            assert [tr.kept(b) for b in range(2)] == [trace.kept(b) for b in range(2)], backend
        plain = {k: v for k, v in kw.items() if not (kw["temperature"] == 0 and k in ("top_k", "top_p"))}
        x, tr = generate(MODEL, ids, am, mask_id=MASK, seed=3, backend="reference", return_trace=True,
                         **{**plain, "confidence": "llada"})
        assert [c for *_, c in tr.kept(0)] != [c for *_, c in trace.kept(0)]


def test_confidence_option_is_declared_once_and_in_the_graph_key():
    from fastremask.sampler.config import SamplingConfig, options
    f, opt = options()["confidence"]
    assert f.default == "llada" and opt.step and opt.choices == ("llada", "dream", "llada2")
    base = SamplingConfig(temperature=1.0)
    assert len({base.replace(confidence=k).step_key() for k in opt.choices}) == 3
    assert SamplingConfig.from_strings(confidence="dream", temperature="0", top_p="0.9").confidence == "dream"


@pytest.mark.parametrize("kw,msg", [
    (dict(confidence="dream", remasking="random"), r"confidence='dream' scores .* remasking='random'"),
    (dict(confidence="llada2", remasking="margin"), r"confidence='llada2' .* needs remasking='low_confidence', "
                                                    r"got remasking='margin'"),
    (dict(confidence="llada2", remasking="entropy"), r"confidence='llada2'"),
    (dict(confidence="tempered"), r"unknown confidence 'tempered'; expected one of \['llada', 'dream', 'llada2'\]"),
    (dict(confidence=None), r"unknown confidence None"),
    (dict(confidence="llada2", top_k=3, temperature=0.0), r"top_k=3 needs temperature > 0"),
])
def test_bad_confidence_is_one_clear_error(kw, msg):
    from fastremask import generate
    from test_batch_invariance import MASK, MODEL
    with pytest.raises(ValueError, match=msg):
        generate(MODEL, torch.tensor([[1, 2]]), steps=2, gen_length=2, block_length=2,
                 **{"temperature": 1.0, "mask_id": MASK, **kw})
    if "top_k" not in kw:
        with pytest.raises(ValueError, match=msg):
            check_confidence(kw["confidence"], kw.get("remasking", "low_confidence"))
        one = torch.zeros(1, dtype=torch.long)
        for mod in (ref, fast):
            with pytest.raises(ValueError, match=msg):
                mod.sample_rows(torch.zeros(1, 4), one, one, one, 0, temperature=1.0,
                                remasking=kw.get("remasking", "low_confidence"), confidence=kw["confidence"])


def test_sampling_confidence_says_which_distribution():
    assert not sampling_confidence("llada", 0.7, "low_confidence")
    assert sampling_confidence("dream", 0.0, "entropy") and not sampling_confidence("dream", 1.0, "random")
    assert sampling_confidence("llada2", 0.5, "low_confidence") and not sampling_confidence("llada2", 0.0,
                                                                                           "low_confidence")


# --------------------------------------------------------------------------- the triton kernel


@pytest.mark.interpreter
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kind,rule,T,tr", [
    ("dream", "low_confidence", 0.0, check_truncation(top_k=4, top_p=0.9, order="top_p_first")),
    ("dream", "margin", 0.7, check_truncation(top_k=50, top_p=0.95, order="top_p_first")),
    ("dream", "entropy", 0.7, check_truncation(top_k=50, top_p=0.95, order="top_p_first")),
    ("dream", "entropy", 0.0, check_truncation(top_p=0.5, order="top_p_first")),
    ("dream", "margin", 1.0, check_truncation(top_k=1)),
    ("dream", "entropy", 1.0, NO_TRUNCATION),
    ("dream", "entropy", 2.0, NO_TRUNCATION),
    ("llada2", "low_confidence", 1.3, check_truncation(top_k=20, top_p=0.9)),
], ids=str)
def test_triton_kernel_equals_reference(kind, rule, T, tr):
    """The row kernel (interpreter on a CPU) bit-equal to the reference: two chunks, one chunk
    per program, CFG, suppressed ids (a row max among them: its chunk recomputed), rows with
    -inf, fp32 and bf16 logits."""
    ks = pytest.importorskip("fastremask.kernels.sample")
    V, N = nx.CHUNK + 77, 3
    dtype = torch.bfloat16 if rule == "entropy" else torch.float32
    cond, uncond = _rows(N, V, 7).to(dtype), _rows(N, V, 8, inf=False).to(dtype)
    rows, seeds, pos = torch.arange(N), torch.arange(N) * 7 + 1, torch.arange(N)
    # a row max (its chunk recomputed) and a kept token below its chunk max (its terms subtracted)
    sup = torch.tensor([1, 2, int(cond[0].float().argmax()), int(cond[1].float().topk(2).indices[1]), nx.CHUNK])
    # the plain call (no CFG, no suppression) at T = 1 is covered by the other cases' first call
    for kw in ({}, dict(cfg_scale=0.5, uncond_logits=uncond, suppress_tokens=sup))[T == 1.0:]:
        a = ref.sample_rows(cond, rows, seeds, pos, 3, temperature=T, remasking=rule, truncation=tr,
                            confidence=kind, **kw)
        b = ks.sample_rows(cond, rows, seeds, pos, 3, temperature=T, remasking=rule, truncation=tr,
                           confidence=kind, chunks_per_prog=1, **kw)
        assert torch.equal(a.x0, b.x0), kw.keys()
        assert torch.equal(a.invalid, b.invalid)
        assert_bits_equal(b.confidence, a.confidence, f"{dtype} {sorted(kw)}")


@pytest.mark.interpreter
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_triton_kernel_small_vocabularies():
    ks = pytest.importorskip("fastremask.kernels.sample")
    for V in (1, 7):
        l = _rows(3, V, V).to(torch.float16)
        rows = torch.arange(3)
        for kind, rule, T, tr in CASES[::4]:
            a = ref.sample_rows(l, rows, rows, rows, 3, temperature=T, remasking=rule, truncation=tr, confidence=kind)
            b = ks.sample_rows(l, rows, rows, rows, 3, temperature=T, remasking=rule, truncation=tr, confidence=kind)
            assert torch.equal(a.x0, b.x0)
            assert_bits_equal(b.confidence, a.confidence, f"V={V} {kind} {rule} T={T} {tr}")
