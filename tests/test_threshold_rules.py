"""The threshold rules 'factor' (Fast-dLLM) and 'eb' (EB-sampler): docs/decoding.md.

* A brute-force restatement in plain Python (exact rationals, one row at a time, the paper's
  "largest n" read literally) against `reference.select`, the torch backend's `select` and the
  triton backend's `select` (`fastremask.kernels.select`, `rules.select_rule` for these rules), over hypothesis-drawn confidences
  with ties, -0.0/+0.0, subnormals, infinities, deferred candidates and rows without
  candidates; every backend gives the same positions, bit for bit.
* The grid (2**-30) is exact where docs/decoding.md says: the same as exact arithmetic.
* At least one kept per row with a candidate; deferred candidates only when nothing else is left.
* No host synchronisation in the rules' torch path (what the triton backend runs on the GPU).
* End to end through `generate(..., threshold=, threshold_rule=)` on the shipped demo model
  (these need the loop to pass ``rule=``): every step's keep replayed with `reference.select`,
  the same tokens on every backend, and the model calls against the fixed threshold.

The triton backend runs under the interpreter without CUDA (tests/conftest.py): its 'fixed'
cases go through the kernel and stay small.
"""
from __future__ import annotations

import math
import struct
from fractions import Fraction

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastremask
from fastremask.sampler import fast
from fastremask.sampler import reference as ref
from fastremask.sampler import rules
from fastremask.sampler.backends import triton_backend
from fastremask.sampler.rules import select_rule
from fastremask.sampler.config import SamplingConfig

pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")
DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
GRID = 2**30
INF = float("inf")


# ------------------------------------------------------------------ the brute-force restatement

def _f32(v: float) -> float:
    return struct.unpack("f", struct.pack("f", v))[0]


def _ceil_grid(v: Fraction) -> Fraction:
    return Fraction(math.ceil(v * GRID), GRID)


def _factor_error(c: float, grid: bool = True) -> Fraction:
    """1 - c with c clamped to [0, 1], rounded up to the grid."""
    c = Fraction(min(max(c, 0.0), 1.0))
    return _ceil_grid(1 - c) if grid else 1 - c


def _entropy(c: float, grid: bool = True) -> Fraction:
    """H = -c clamped to [0, 32] (remasking='entropy' gives c = -H), rounded up to the grid."""
    h = Fraction(min(max(-c, 0.0), 32.0))
    return _ceil_grid(h) if grid else h


def brute_row(conf, cand, dfr, threshold, rule, grid=True) -> set:
    """The positions one row keeps, from the statement in docs/decoding.md, position by position."""
    C = len(conf)
    order = sorted((i for i in range(C) if cand[i]), key=lambda i: (dfr[i], -conf[i], i))
    if not order:
        return set()
    plain = [i for i in order if not dfr[i]]          # ranks 0 .. m-1: c_1 >= c_2 >= ...
    c = [conf[i] for i in plain]
    if rule == "fixed":
        n_star = sum(1 for v in c if v >= _f32(threshold))
    elif rule == "factor":
        f = Fraction(threshold)
        holds = [n for n in range(1, len(c) + 1) if (n + 1) * _factor_error(c[n - 1], grid) < f]
        n_star = max(holds, default=0)
    else:
        g = Fraction(threshold)
        hs = [_entropy(v, grid) for v in c]
        holds = [n for n in range(1, len(c) + 1) if sum(hs[:n]) - max(hs[:n]) <= g]
        n_star = max(holds, default=0)
    return set(order[:max(n_star, 1)])


def brute(conf, cand, dfr, threshold, rule, grid=True) -> torch.Tensor:
    B, C = conf.shape
    out = torch.zeros(B, C, dtype=torch.bool)
    for b in range(B):
        for i in brute_row(conf[b].tolist(), cand[b].tolist(), dfr[b].tolist(), threshold, rule, grid):
            out[b, i] = True
    return out


# ------------------------------------------------------------------------------- the backends

_TRITON = triton_backend()


def _all_backends(conf, cand, dfr, threshold, rule, *, with_triton=True):
    """{name: keep} on CPU; the triton one with its fused write checked against ``keep``."""
    out = {"reference": ref.select(conf, cand, dfr, None, threshold, rule=rule),
           "torch": fast.select(conf, cand, dfr, None, threshold, rule=rule)}
    B, C = conf.shape
    d = lambda t: t.to(DEV)                                              # noqa: E731
    if DEV.type != "cpu":
        out["torch-" + DEV.type] = fast.select(d(conf), d(cand), d(dfr), None, threshold, rule=rule).cpu()
    if with_triton and _TRITON is not None:
        x = torch.randint(0, 50, (B, C + 5), device=DEV)
        x0 = torch.randint(100, 200, (B, C), device=DEV)
        x_before = x.clone()
        poisoned = torch.ones(B, C, dtype=torch.bool, device=DEV)
        keep = _TRITON.select(d(conf), d(cand), d(dfr), None, threshold, rule=rule,
                              x=x, x0=x0, start=2, out=poisoned).cpu()
        want_x = x_before.clone()
        want_x[:, 2:2 + C] = torch.where(keep.to(DEV), x0, want_x[:, 2:2 + C])
        assert torch.equal(x, want_x), "the fused write differs from keep"
        out["triton"] = keep
    return out


def _check_invariants(keep, conf, cand, dfr):
    assert not (keep & ~cand).any()
    n_cand = cand.sum(1)
    assert torch.equal(keep.any(1), n_cand > 0), "at least one per unfinished row, none elsewhere"
    plain = cand & ~dfr
    has_plain = plain.any(1)
    kept_def = (keep & dfr & cand).sum(1)
    assert (kept_def[has_plain] == 0).all(), "a deferred candidate kept while others remain"
    assert (kept_def[~has_plain] <= 1).all(), "deferred candidates: one per step"


# --------------------------------------------------------------------------- hypothesis inputs

_SPECIAL = [0.0, -0.0, 1.0, 0.5, 0.75, 0.875, 0.25, 0.9, 0.99, 2.0**-7, 2.0**-8, 2.0**-31, 1e-45,
            -1e-45, -0.25, -0.5, -0.125, -1.0, -0.6931471805599453, -2.0**-9, -31.5, -32.0, -40.0,
            1.5, -INF, INF]
_RULE_THRESHOLDS = {
    "factor": st.one_of(st.sampled_from([1e-12, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 10.0, 1e6, 2.0**33]),
                        st.floats(1e-6, 20.0)),
    "eb": st.one_of(st.sampled_from([0.0, 2.0**-31, 0.125, 0.25, 0.5, 0.75, 1.0, 31.99]),
                    st.floats(0.0, 31.9)),
    "fixed": st.sampled_from([0.0, 0.5, 1.0, -0.5, 0.9]),
}


@st.composite
def selections(draw, rules_=("factor", "eb")):
    rule = draw(st.sampled_from(rules_))
    B = draw(st.integers(1, 4))
    C = draw(st.integers(1, 12))
    value = st.one_of(st.sampled_from(_SPECIAL), st.floats(0.0, 1.0, width=32),
                      st.floats(-12.0, 0.0, width=32))
    # a few distinct values per row make ties likely
    pool = draw(st.lists(value, min_size=1, max_size=5))
    vals = draw(st.lists(st.sampled_from(pool), min_size=B * C, max_size=B * C))
    conf = torch.tensor(vals, dtype=torch.float32).view(B, C)
    cand = torch.tensor(draw(st.lists(st.booleans(), min_size=B * C, max_size=B * C))).view(B, C)
    if draw(st.booleans()):
        cand[draw(st.integers(0, B - 1))] = False                      # a finished (or inactive) row
    dfr = torch.tensor(draw(st.lists(st.booleans(), min_size=B * C, max_size=B * C))).view(B, C)
    dfr &= torch.rand(B, C, generator=torch.Generator().manual_seed(draw(st.integers(0, 99)))) < 0.4
    return conf, cand, dfr, draw(_RULE_THRESHOLDS[rule]), rule


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(selections())
def test_rules_equal_brute_force_on_every_backend(args):
    conf, cand, dfr, threshold, rule = args
    want = brute(conf, cand, dfr, threshold, rule)
    for name, keep in _all_backends(conf, cand, dfr, threshold, rule).items():
        assert torch.equal(keep, want), (name, rule, threshold, conf, cand, dfr, keep, want)
    _check_invariants(want, conf, cand, dfr)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(selections(rules_=("fixed",)))
def test_fixed_rule_through_the_triton_select(args):
    """'fixed' (and the rule keyword's default) still runs the kernel, with its fused write."""
    conf, cand, dfr, threshold, rule = args
    want = brute(conf, cand, dfr, threshold, rule)
    for name, keep in _all_backends(conf, cand, dfr, threshold, rule).items():
        assert torch.equal(keep, want), (name, threshold, conf, cand, dfr)


def test_larger_blocks_equal_the_reference():
    """Blocks of 32..200 with ties (a few levels), on every backend."""
    g = torch.Generator().manual_seed(7)
    for B, C, levels in ((3, 32, 4), (2, 77, 1000), (1, 200, 16)):
        p = torch.randint(0, levels + 1, (B, C), generator=g).float() / levels
        cand = torch.rand(B, C, generator=g) < 0.8
        dfr = torch.rand(B, C, generator=g) < 0.1
        for rule, conf, thr in (("factor", p, 1.0), ("factor", p, 0.3), ("eb", -3 * p, 1.0), ("eb", -p, 0.05)):
            want = ref.select(conf, cand, dfr, None, thr, rule=rule)
            assert torch.equal(want, brute(conf, cand, dfr, thr, rule))
            for name, keep in _all_backends(conf, cand, dfr, thr, rule).items():
                assert torch.equal(keep, want), (name, rule, thr)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_grid_is_exact_where_documented(data):
    """For confidences in {0} | [2**-7, 1] ('factor') and entropies in {0} | [2**-7, 32]
    ('eb') the grid changes nothing: exact rational arithmetic gives the same positions."""
    C = data.draw(st.integers(1, 10))
    mags = data.draw(st.lists(st.one_of(st.just(0.0), st.floats(2.0**-7, 1.0, width=32)),
                              min_size=C, max_size=C))
    cand = torch.ones(1, C, dtype=torch.bool)
    none = torch.zeros_like(cand)
    f = data.draw(_RULE_THRESHOLDS["factor"])
    conf = torch.tensor([mags])
    assert torch.equal(ref.select(conf, cand, none, None, f, rule="factor"),
                       brute(conf, cand, none, f, "factor", grid=False))
    ent = torch.tensor([[-32 * m for m in mags]])                      # entropies 0 .. 32
    gamma = data.draw(_RULE_THRESHOLDS["eb"])
    assert torch.equal(ref.select(ent, cand, none, None, gamma, rule="eb"),
                       brute(ent, cand, none, gamma, "eb", grid=False))


# ----------------------------------------------------------------------------- worked examples

def test_worked_examples():
    """The examples of docs/decoding.md."""
    cand = torch.ones(1, 4, dtype=torch.bool)
    none = torch.zeros_like(cand)
    p = torch.tensor([[0.9, 0.8, 0.99, 0.5]])
    for sel in (ref.select, fast.select):
        # factor f = 1: n=1: 2*0.01, n=2: 3*0.1, n=3: 4*0.2 < 1; n=4: 5*0.5 >= 1
        assert sel(p, cand, none, None, 1.0, rule="factor").tolist() == [[True, True, True, False]]
        # strict: n=3 gives exactly 4 * 0.25 = 1.0, not < 1
        q = torch.tensor([[1.0, 0.75, 0.875, 0.0]])
        assert sel(q, cand, none, None, 1.0, rule="factor").tolist() == [[True, False, True, False]]
        # no n holds (2 * (1 - 0.5) = 1 is not < 0.5): still the first
        assert sel(torch.full((1, 4), 0.5), cand, none, None, 0.5, rule="factor").tolist() == [[True, False, False, False]]
        # eb gamma = 1 on entropies 0.9 0.8 0.99 0.5: ranked 0.5, 0.8, 0.9, 0.99; n=2: 0.5 <= 1, n=3: 1.3 > 1
        assert sel(-p, cand, none, None, 1.0, rule="eb").tolist() == [[False, True, False, True]]
        # eb's bound is inclusive: 0.25 + 0.25 = 0.5 <= 0.5 keeps three
        e = torch.tensor([[-0.25, -0.25, -0.25, -0.25]])
        assert sel(e, cand, none, None, 0.5, rule="eb").tolist() == [[True, True, True, False]]
        # gamma = 0 keeps the first and every zero-entropy token ranked after it
        z = torch.tensor([[-0.0, -0.3, 0.0, -0.0]])
        assert sel(z, cand, none, None, 0.0, rule="eb").tolist() == [[True, True, True, True]]
        # a deferred candidate waits for the others, then goes one per step
        dfr = torch.tensor([[False, False, True, False]])
        assert sel(p, cand, dfr, None, 100.0, rule="factor").tolist() == [[True, True, False, True]]
        only_def = torch.tensor([[False, True, True, False]])
        assert sel(p, only_def, only_def, None, 100.0, rule="factor").tolist() == [[False, False, True, False]]


def test_select_arguments():
    c = torch.zeros(1, 3)
    b = torch.ones(1, 3, dtype=torch.bool)
    k = torch.ones(1, dtype=torch.int64)
    sels = [ref.select, fast.select]
    if _TRITON is not None:
        from fastremask.kernels import select as triton_select     # the public function: rule= too
        sels.append(triton_select)
    for sel in sels:
        with pytest.raises(ValueError, match="unknown threshold rule"):
            sel(c, b, ~b, k, 0.5, rule="topk")
        with pytest.raises(ValueError, match="needs a threshold"):
            sel(c, b, ~b, k, None, rule="eb")
        with pytest.raises(ValueError, match=r"gamma in \[0, 32\)"):
            sel(c, b, ~b, k, 32.0, rule="eb")
        with pytest.raises(ValueError, match="f > 0"):
            sel(c, b, ~b, k, 0.0, rule="factor")
    assert ref.select(torch.zeros(2, 0), torch.zeros(2, 0, dtype=torch.bool), torch.zeros(2, 0, dtype=torch.bool),
                      None, 1.0, rule="factor").shape == (2, 0)


def test_config_ranges():
    SamplingConfig(threshold=1.0, threshold_rule="factor")
    SamplingConfig(threshold=0.5, threshold_rule="factor", remasking="margin")
    SamplingConfig(threshold=0.0, threshold_rule="eb", remasking="entropy")
    with pytest.raises(ValueError, match="use threshold_rule='eb'"):
        SamplingConfig(threshold=1.0, threshold_rule="factor", remasking="entropy")
    with pytest.raises(ValueError, match="only remasking='entropy'"):
        SamplingConfig(threshold=0.1, threshold_rule="eb")
    with pytest.raises(ValueError, match=r"must be in \[0, 32\)"):
        SamplingConfig(threshold=-0.1, threshold_rule="eb", remasking="entropy")
    with pytest.raises(ValueError, match="must be > 0"):
        SamplingConfig(threshold=0.0, threshold_rule="factor")
    with pytest.raises(ValueError, match="needs a threshold"):
        SamplingConfig(threshold_rule="factor")


# ------------------------------------------------------------------- on the device: no host sync

class _Ops(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


SYNCING = {"aten._local_scalar_dense", "aten.item", "aten.nonzero", "aten.is_nonzero", "aten.masked_select",
           "aten.equal", "aten.lift_fresh", "aten.lift_fresh_copy", "aten.unique", "aten._unique2"}


def test_rules_path_has_no_host_sync():
    """What the triton backend runs for 'factor'/'eb': no op that reads a value back to the host
    or builds a tensor from host data (so it stays on the stream and a CUDA graph can hold it)."""
    conf = torch.rand(3, 16)
    cand = torch.rand(3, 16) < 0.7
    dfr = torch.rand(3, 16) < 0.2
    x = torch.zeros(3, 20, dtype=torch.int64)
    x0 = torch.ones(3, 16, dtype=torch.int64)
    for rule, c in (("factor", conf), ("eb", -conf)):
        with _Ops() as m:
            select_rule(c, cand, dfr, 0.5, rule, x=x, x0=x0, start=2)
        assert not (m.ops & SYNCING), m.ops & SYNCING
        assert "aten.sort" in m.ops


@pytest.mark.gpu
def test_rules_capture_in_a_cuda_graph():
    """The rules' select with the fused write, captured and replayed, equals the eager call."""
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(3)
    conf = (torch.randint(0, 5, (4, 32), generator=g).float() / 4).to(dev)
    cand = (torch.rand(4, 32, generator=g) < 0.8).to(dev)
    dfr = (torch.rand(4, 32, generator=g) < 0.1).to(dev)
    x0 = torch.randint(0, 9, (4, 32), device=dev)
    for rule, c, thr in (("factor", conf, 1.0), ("eb", -conf, 0.7)):
        want_x = torch.full((4, 40), -1, dtype=torch.int64, device=dev)
        want = _TRITON.select(c, cand, dfr, None, thr, rule=rule, x=want_x, x0=x0, start=3)
        x = torch.full((4, 40), -1, dtype=torch.int64, device=dev)
        out = torch.zeros(4, 32, dtype=torch.bool, device=dev)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            _TRITON.select(c, cand, dfr, None, thr, rule=rule, x=x, x0=x0, start=3, out=out)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            _TRITON.select(c, cand, dfr, None, thr, rule=rule, x=x, x0=x0, start=3, out=out)
        x.fill_(-1)
        out.zero_()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, want) and torch.equal(x, want_x)


# --------------------------------------- end to end through generate (needs the loop to pass rule)

@pytest.fixture(scope="module")
def demo():
    from fastremask.evaluation.evaluate import load_model
    model, task = load_model()
    prompts, _ = task.test_set(24)
    return model, task, prompts


RULE_CASES = [("factor", "low_confidence", 1.5), ("factor", "margin", 0.8), ("eb", "entropy", 0.9),
              ("eb", "entropy", 2.0)]


def _generate(model, prompts, A, rule, remasking, thr, backend, **kw):
    return fastremask.generate(model, prompts, steps=A, gen_length=A, block_length=A, temperature=1.0,
                               remasking=remasking, mask_id=None, threshold=thr, threshold_rule=rule,
                               seed=11, backend=backend, return_trace=True, **kw)


@pytest.mark.parametrize("rule,remasking,thr", RULE_CASES)
def test_generate_rule_replays_select(demo, rule, remasking, thr):
    """Every step of generate(threshold_rule=...) keeps what `reference.select` with the rule
    keeps from that step's confidences (so the loop passes the rule), with deferred tokens;
    reference and torch backends give the same tokens."""
    model, task, prompts = demo
    A = task.answer_length
    defer = [3]                                 # the digit 3 (tasks.py: digits are ids 0-9)
    out = {}
    for backend in ("reference", "torch"):
        x, trace = _generate(model, prompts, A, rule, remasking, thr, backend, defer_tokens=defer)
        out[backend] = x
        d = torch.tensor(defer)
        for s in trace.steps:
            deferred = s.candidate & torch.isin(s.x0, d)
            want = ref.select(s.confidence, s.candidate, deferred, None, thr, rule=rule)
            assert torch.equal(s.keep, want), (backend, s.step)
            assert torch.equal(s.keep.any(1), s.candidate.any(1))
    assert torch.equal(out["reference"], out["torch"])


@pytest.mark.interpreter
def test_generate_rule_triton_same_tokens(demo):
    """The triton backend (the interpreter here: two answers of 4 tokens) gives the torch
    backend's tokens with each rule."""
    if _TRITON is None:
        pytest.skip("triton does not import")
    model, task, prompts = demo
    m = model.to(DEV) if DEV.type != "cpu" else model
    for rule, remasking, thr in (RULE_CASES[0], RULE_CASES[3]):
        want, _ = _generate(model, prompts[:2], 4, rule, remasking, thr, "torch")
        got, _ = _generate(m, prompts[:2].to(DEV), 4, rule, remasking, thr, "triton")
        assert torch.equal(want, got.cpu()), rule


def _calls_and_accuracy(model, task, prompts, **kw):
    A = task.answer_length
    x, trace = fastremask.generate(model, prompts, steps=A, gen_length=A, block_length=A, temperature=1.0,
                                   mask_id=None, seed=0, backend="torch", return_trace=True, **kw)
    calls = sum(s.candidate.any(1).double() for s in trace.steps)          # per answer
    ok = task.check(prompts, x[:, task.prompt_length:])
    return float(calls.mean()), float(ok.double().mean())


def test_generate_rule_model_calls_on_the_demo_model(demo):
    """docs/decoding.md's table on 24 answers: each rule's model calls per answer against the
    fixed threshold; the large parameters keep more per step than one call per token."""
    model, task, prompts = demo
    A = task.answer_length
    fixed, _ = _calls_and_accuracy(model, task, prompts, threshold=0.9)
    assert fixed == A                           # the task never gets a second token over 0.9
    loose_factor, _ = _calls_and_accuracy(model, task, prompts, threshold=4.0, threshold_rule="factor")
    loose_eb, _ = _calls_and_accuracy(model, task, prompts, threshold=4.0, threshold_rule="eb", remasking="entropy")
    assert loose_factor < A / 2 and loose_eb < A / 2
    tight_factor, acc = _calls_and_accuracy(model, task, prompts, threshold=0.5, threshold_rule="factor")
    assert tight_factor == A and acc == 1.0
