"""fastremask.sampler.schedule: counts, validation, the post's formula, cost (reference tier, CPU)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from toy_models import RandomLM

from fastremask import generate
from fastremask.sampler import schedule as sch
from fastremask.sampler.schedule import (
    Cost,
    Explicit,
    Pyramid,
    Uniform,
    cost,
    counts,
    post_outcome,
    post_steps,
    pyramid,
    pyramid_steps,
    pyramid_total,
    resolve,
    uniform,
)

ns = st.integers(0, 1024)
factors = st.integers(1, 8)


def llada_num_transfer_tokens(n: int, steps: int) -> list[int]:
    """Our statement of LLaDA's get_num_transfer_tokens for one row: base = n // steps every
    step, and the remainder n % steps handed out one by one to the first steps."""
    base = n // steps
    out = [base] * steps
    for i in range(n % steps):
        out[i] += 1
    return out


def pyramid_by_hand(n: int, factor: int) -> list[int]:
    """Step i keeps i // factor + 1, capped at what is left; stop when nothing is left."""
    out, i = [], 0
    while n > 0:
        k = min(i // factor + 1, n)
        out.append(k)
        n -= k
        i += 1
    return out


# ---------------------------------------------------------------------------- uniform


@given(n=ns, steps=st.integers(1, 300))
def test_uniform_is_llada(n, steps):
    c = uniform()(n, steps)
    assert c == llada_num_transfer_tokens(n, steps)
    assert sum(c) == n and min(c) >= 0 and len(c) == steps


def test_uniform_small_table():
    assert uniform()(10, 4) == [3, 3, 2, 2]
    assert uniform()(3, 5) == [1, 1, 1, 0, 0]  # steps > n: zero-count steps, as LLaDA
    assert uniform()(0, 2) == [0, 0]


@settings(max_examples=50)
@given(rows=st.lists(ns, min_size=1, max_size=6), steps=st.integers(1, 200))
def test_uniform_batched(rows, steps):
    c = counts("uniform", torch.tensor(rows), steps)
    assert c.dtype == torch.int64 and c.shape == (len(rows), steps)
    for b, n in enumerate(rows):
        assert c[b].tolist() == llada_num_transfer_tokens(n, steps)


# ---------------------------------------------------------------------------- pyramid


@given(n=ns, factor=factors)
def test_pyramid_counts_and_minimal(n, factor):
    c = pyramid(factor)(n, 10_000)
    assert c == pyramid_by_hand(n, factor)
    assert sum(c) == n and all(k >= 1 for k in c)  # no step keeps nothing
    m = len(c)
    assert m == pyramid_steps(n, factor)
    # minimal: the uncapped pyramid of m - 1 steps does not reach n, that of m steps does
    assert sum(i // factor + 1 for i in range(m)) >= n
    assert m == 0 or sum(i // factor + 1 for i in range(m - 1)) < n


@given(m=st.integers(0, 5000), factor=factors)
def test_pyramid_total_closed_form(m, factor):
    assert pyramid_total(m, factor) == sum(i // factor + 1 for i in range(m))


@pytest.mark.parametrize("factor", range(1, 9))
def test_pyramid_steps_exhaustive(factor):
    for n in range(0, 1025):
        m = pyramid_steps(n, factor)
        assert pyramid_total(m, factor) >= n and (m == 0 or pyramid_total(m - 1, factor) < n)


def test_pyramid_small_table():
    assert pyramid(1)(16, 100) == [1, 2, 3, 4, 5, 1]
    assert pyramid(2)(16, 100) == [1, 1, 2, 2, 3, 3, 4]
    assert pyramid(1)(15, 5) == [1, 2, 3, 4, 5]  # exactly the budget
    assert pyramid(3)(0, 1) == []
    assert pyramid_steps(10**15, 3) > 0  # closed form start: no long loop


def test_pyramid_budget_error_names_both():
    with pytest.raises(ValueError, match=r"needs 6 steps.*n_masked=16.*steps=5"):
        pyramid(1)(16, 5)
    with pytest.raises(ValueError, match=r"needs 6 steps.*steps=5"):
        counts("pyramid", torch.tensor([3, 16]), 5)


@settings(max_examples=50)
@given(rows=st.lists(ns, min_size=1, max_size=6), factor=factors)
def test_pyramid_batched(rows, factor):
    c = counts("pyramid", torch.tensor(rows), 10_000, factor=factor)
    S = max(pyramid_steps(n, factor) for n in rows)
    assert c.dtype == torch.int64 and c.shape == (len(rows), S)
    for b, n in enumerate(rows):
        own = pyramid_by_hand(n, factor)
        assert c[b].tolist() == own + [0] * (S - len(own))
    # the generic (per-unique-row) path agrees with the vectorised one
    assert torch.equal(sch.Schedule.counts(Pyramid(factor), torch.tensor(rows), 10_000), c)


def test_batched_empty_and_dtypes():
    assert counts("pyramid", torch.zeros(0, dtype=torch.int64), 4).shape == (0, 0)
    assert counts("uniform", torch.zeros(0, dtype=torch.int32), 4).shape == (0, 4)
    assert counts("pyramid", torch.tensor([0, 0]), 4).shape == (2, 0)
    assert counts("uniform", torch.tensor([5], dtype=torch.int32), 2).dtype == torch.int64


# ---------------------------------------------------------------------------- explicit, callable


def test_explicit_list_and_callable():
    assert resolve([1, 2, 3])(6, 3) == [1, 2, 3]
    assert resolve((0, 6))(6, 8) == [0, 6]
    assert resolve(torch.tensor([2, 2]))(4, 2) == [2, 2]
    assert counts([1, 2, 3], torch.tensor([6, 6]), 3).tolist() == [[1, 2, 3]] * 2

    def front_loaded(n, steps):
        return [n] + [0] * (steps - 1)

    assert resolve(front_loaded)(7, 3) == [7, 0, 0]
    assert counts(front_loaded, torch.tensor([7, 2]), 3).tolist() == [[7, 0, 0], [2, 0, 0]]
    # varied row lengths from a callable: padded with zeros
    assert counts(lambda n, s: [1] * n, torch.tensor([1, 3]), 5).tolist() == [[1, 0, 0], [1, 1, 1]]


@given(n=ns, steps=st.integers(1, 64), data=st.data())
def test_explicit_round_trip(n, steps, data):
    c = data.draw(st.lists(st.integers(0, n), min_size=1, max_size=steps).filter(lambda c: sum(c) <= n))
    c[-1] += n - sum(c)
    assert resolve(c)(n, steps) == c


# ---------------------------------------------------------------------------- misuse


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: resolve("pyramid", factor=0), ValueError, r"factor.*0"),
        (lambda: resolve("pyramid", factor=1.5), TypeError, r"factor.*1\.5"),
        (lambda: resolve("pyramid", factor=True), TypeError, r"factor.*True"),
        (lambda: Pyramid(-2), ValueError, r"factor.*-2"),
        (lambda: resolve("uniform", factor=2), ValueError, r"factor=2.*'uniform'"),
        (lambda: resolve("cosine"), ValueError, r"unknown schedule 'cosine'"),
        (lambda: resolve(3), TypeError, r"schedule.*3"),
        (lambda: resolve([1, -1]), ValueError, r"schedule\[1\].*-1"),
        (lambda: resolve([1, 2.5]), TypeError, r"schedule\[1\].*2\.5"),
        (lambda: resolve([1, 2])(4, 5), ValueError, r"sums to 3.*n_masked=4"),
        (lambda: resolve([1, 1, 1])(3, 2), ValueError, r"3 steps.*steps=2"),
        (lambda: resolve(lambda n, s: [n + 1])(3, 2), ValueError, r"<lambda>\(3, 2\).*sums to 4"),
        (lambda: resolve(lambda n, s: [-1, n + 1])(3, 2), ValueError, r"<lambda>\(3, 2\)\[0\].*-1"),
        (lambda: resolve(lambda n, s: None)(3, 2), TypeError, r"<lambda>.*sequence of ints.*None"),
        (lambda: uniform()(4, 0), ValueError, r"steps.*0"),
        (lambda: uniform()(-1, 2), ValueError, r"n_masked.*-1"),
        (lambda: pyramid()(4, 2.0), TypeError, r"steps.*2\.0"),
        (lambda: counts("uniform", torch.tensor([1.0]), 2), TypeError, r"n_masked.*float"),
        (lambda: counts("uniform", [1, 2], 2), TypeError, r"n_masked.*list"),
        (lambda: counts("pyramid", torch.tensor([[1]]), 2), TypeError, r"n_masked.*1-D"),
        (lambda: counts("uniform", torch.tensor([3, -1]), 2), ValueError, r"n_masked.*-1"),
        (lambda: post_steps(4, 0), ValueError, r"factor.*0"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_misuse(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_resolve_forms():
    assert resolve() == Uniform() == resolve(uniform) == resolve("uniform")
    assert resolve("pyramid", 3) == Pyramid(3) == resolve(pyramid, factor=3)
    p = Pyramid(2)
    assert resolve(p) is p
    assert isinstance(resolve([1]), Explicit)


# ---------------------------------------------------------------------------- the post's formula


def test_post_formula_examples():
    # 16 tokens at factor 1: int((1 + 128) ** 0.5 / 2) = 5 steps unmask 1+2+3+4+5 = 15
    o = post_outcome(16, 1)
    assert (o.steps, o.kept, o.left_masked, o.idle_steps, o.needed) == (5, (1, 2, 3, 4, 5), 1, 0, 6)
    # 16 tokens at factor 2: 8 steps, the last keeps nothing
    o = post_outcome(16, 2)
    assert (o.steps, o.kept[-1], o.left_masked, o.idle_steps, o.needed) == (8, 0, 0, 1, 7)
    assert post_outcome(128, 1).minimal and post_outcome(128, 1).steps == 16
    # the post's `if i > gen_length: break` stops a 1-token block at factor 8 after 2 calls
    assert post_steps(1, 8) == 5 and post_outcome(1, 8).steps == 2


@pytest.mark.parametrize("factor", range(1, 9))
def test_post_formula_where_complete_and_minimal_we_agree(factor):
    for n in range(1, 1025):
        o = post_outcome(n, factor)
        assert sum(o.kept) + o.left_masked == n
        if o.complete:
            assert o.steps - o.idle_steps == o.needed  # idle steps are exactly the surplus
        if o.minimal:
            assert o.steps == o.needed == len(pyramid(factor)(n, o.steps))
        assert o.needed == len(pyramid(factor)(n, 10_000))


# (factor, lengths of 1..1024 left incomplete, most tokens left masked, lengths with idle steps,
#  most idle steps, lengths where the post is complete and minimal): the table in docs/schedules.md
POST_FINDINGS = [
    (1, 484, 22, 0, 0, 540),
    (2, 0, 0, 63, 1, 961),
    (3, 0, 0, 568, 1, 456),
    (4, 0, 0, 1024, 2, 0),
    (5, 0, 0, 1024, 2, 0),
    (6, 0, 0, 1024, 3, 0),
    (7, 0, 0, 1024, 3, 0),
    (8, 0, 0, 1024, 4, 0),
]


@pytest.mark.parametrize("row", POST_FINDINGS, ids=lambda r: f"factor{r[0]}")
def test_post_findings_table(row):
    factor = row[0]
    outs = [post_outcome(n, factor) for n in range(1, 1025)]
    got = (
        factor,
        sum(not o.complete for o in outs),
        max(o.left_masked for o in outs),
        sum(o.idle_steps > 0 for o in outs),
        max(o.idle_steps for o in outs),
        sum(o.minimal for o in outs),
    )
    assert got == row


def test_post_findings_lengths():
    incomplete = [n for n in range(1, 65) if not post_outcome(n, 1).complete]
    assert incomplete == [4, 7, 11, 12, 16, 17, 22, 23, 24, 29, 30, 31, 37, 38, 39, 40, 46, 47, 48, 49, 56, 57, 58, 59, 60]
    assert [n for n in range(1, 1025) if post_outcome(n, 1).left_masked == 22] == [1012]
    # factor 2: one idle step exactly when n is a complete pyramid total
    idle2 = [n for n in range(1, 1025) if post_outcome(n, 2).idle_steps]
    assert idle2 == [pyramid_total(m, 2) for m in range(1, 64)]
    # the post's undilated rule, steps = int((2 * n) ** 0.5) + 1, always finishes, one step late
    # for 540 of the 1024 lengths
    late = [int((2 * n) ** 0.5) + 1 - pyramid_steps(n, 1) for n in range(1, 1025)]
    assert min(late) == 0 and max(late) == 1 and sum(late) == 540


# ---------------------------------------------------------------------------- cost


def test_cost_uniform_llada_defaults():
    # LLaDA's defaults: steps=128, gen_length=128, block_length=128
    c = cost(128, 128, 128, prompt_length=20)
    assert c == Cost(model_calls=128, rows_through_model=128 * 148, sampled_rows=sum(range(1, 129)))
    c = cost(256, 32, 64, "uniform", batch=3, cfg=True, prompt_length=10)
    assert c.model_calls == 64 and c.rows_through_model == 64 * 3 * 2 * 266
    # 8 blocks x 8 steps of 4 tokens: still masked before each step 32, 28, ..., 4
    assert c.sampled_rows == 8 * sum(range(4, 33, 4)) * 6


def test_cost_pyramid():
    c = cost(128, 128, 128, "pyramid")
    assert c.model_calls == 16  # 1 + 2 + ... + 16 = 136 >= 128
    c = cost(128, 32, 64, "pyramid", factor=2, batch=2)
    assert c.model_calls == 4 * pyramid_steps(32, 2) == 44
    assert c.rows_through_model == 44 * 2 * 128
    with pytest.raises(ValueError, match=r"needs 16 steps.*steps=8"):
        cost(128, 128, 8, "pyramid")


@pytest.mark.parametrize(
    "kw,exc,match",
    [
        (dict(gen_length=100, block_length=32, steps=4), ValueError, r"gen_length=100.*block_length=32"),
        (dict(gen_length=128, block_length=32, steps=6), ValueError, r"steps=6.*4"),
        (dict(gen_length=128, block_length=32, steps=8, batch=0), ValueError, r"batch.*0"),
        (dict(gen_length=128, block_length=32, steps=8, cfg=1.0), TypeError, r"cfg.*1\.0"),
        (dict(gen_length=128, block_length=32, steps=8, prompt_length=-1), ValueError, r"prompt_length.*-1"),
        (dict(gen_length=0, block_length=32, steps=8), ValueError, r"gen_length.*0"),
    ],
    ids=str,
)
def test_cost_misuse(kw, exc, match):
    with pytest.raises(exc, match=match):
        cost(**kw)


# ---------------------------------------------------------------------------- cost == real calls


def front_loaded(n, steps):
    return [n] + [0] * (steps - 1)


def zeros_between(n, steps):
    """n ones, a zero after each but the last, trailing zeros up to the budget when it allows."""
    out = []
    for i in range(n):
        out += [1, 0] if i < n - 1 else [1]
    return out[:steps] if len(out) <= steps else [n]


def calls_made(backend, gen_length, block_length, steps, schedule, factor=1, batch=1, cfg=False):
    model = RandomLM(seed=gen_length * 31 + steps)
    prompt = torch.randint(0, 8, (batch, 3), generator=torch.Generator().manual_seed(steps))
    x, trace = generate(model, prompt, None, steps, gen_length, block_length, 0.5, 1.0 if cfg else 0.0,
                        mask_id=8, schedule=schedule, factor=factor, seed=0, backend=backend, return_trace=True)
    assert not (x == 8).any()
    assert set(model.rows) <= {batch * (2 if cfg else 1)}  # CFG: one call on 2B rows per step
    assert trace.model_calls == len(model.rows)            # the sampler's count is the calls made
    return trace.model_calls


def expected_calls(gen_length, block_length, steps, schedule, factor=1):
    """Counted independently of `cost`: per block, the steps whose count is not 0."""
    num_blocks = gen_length // block_length
    per_block = resolve(schedule, factor)(block_length, steps // num_blocks)
    return num_blocks * sum(1 for c in per_block if c != 0)


# (gen_length, block_length, steps, schedule, factor): every kind of schedule, blocks > 1
COST_CASES = [
    # uniform, steps per block < = > block_length
    (8, 4, 4, "uniform", 1),
    (8, 4, 8, "uniform", 1),
    (8, 4, 12, "uniform", 1),
    (12, 4, 30, "uniform", 1),
    (6, 2, 15, uniform(), 1),
    (9, 3, 6, "uniform", 1),
    # pyramid, several factors
    (16, 8, 16, "pyramid", 1),
    (16, 8, 16, "pyramid", 2),
    (12, 6, 12, "pyramid", 3),
    (20, 10, 40, pyramid, 4),
    # explicit lists, with and without zeros
    (8, 4, 6, [1, 3, 0], 1),
    (8, 4, 8, [0, 4], 1),
    (12, 4, 15, [0, 2, 0, 2, 0], 1),
    (6, 3, 6, (3,), 1),
    (6, 3, 8, torch.tensor([0, 0, 3]), 1),
    # callables, with zeros
    (12, 4, 12, front_loaded, 1),
    (9, 3, 15, zeros_between, 1),
    (8, 2, 8, lambda n, s: [0] * (s - 1) + [n], 1),
    # Schedule objects
    (8, 4, 8, Uniform(), 1),
    (16, 8, 10, Pyramid(2), 1),
    (8, 4, 10, Explicit((1, 0, 2, 0, 1)), 1),
    (8, 4, 8, sch.FromCallable(front_loaded), 1),
]


def _case_id(c):
    s = c[3]
    name = s if isinstance(s, str) else getattr(s, "__name__", None) or (
        str(s.tolist()) if isinstance(s, torch.Tensor) else str(list(s)) if isinstance(s, (list, tuple))
        else type(s).__name__)
    return f"{c[0]}/{c[1]}/{c[2]}-{name}-f{c[4]}"


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("case", COST_CASES, ids=_case_id)
def test_cost_is_the_model_calls_generate_makes(case, backend):
    gen_length, block_length, steps, schedule, factor = case
    c = cost(gen_length, block_length, steps, schedule, factor=factor, prompt_length=3)
    n = calls_made(backend, gen_length, block_length, steps, schedule, factor)
    assert c.model_calls == n == expected_calls(gen_length, block_length, steps, schedule, factor)
    assert c.rows_through_model == n * (3 + gen_length)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_cost_counts_cfg_as_one_call_of_2b_rows(backend):
    for schedule, steps in (("uniform", 12), ([0, 2, 0, 2], 8), ("pyramid", 8)):
        c = cost(8, 4, steps, schedule, batch=2, cfg=True, prompt_length=3)
        n = calls_made(backend, 8, 4, steps, schedule, batch=2, cfg=True)
        assert c.model_calls == n
        assert c.rows_through_model == n * 2 * 2 * (3 + 8)


def test_cost_skips_zero_count_steps():
    # uniform with 12 steps for 4-token blocks: 4 calls per block, not 12
    assert cost(8, 4, 24, "uniform").model_calls == 8
    # the first zero-count step of an explicit list samples nothing either
    c = cost(8, 4, 8, [0, 4])
    assert (c.model_calls, c.sampled_rows) == (2, 2 * 4)
    assert cost(8, 4, 8, [0, 4]) == cost(8, 4, 8, [4])


@settings(max_examples=25, deadline=None)
@given(
    num_blocks=st.integers(2, 3),
    block_length=st.integers(1, 5),
    per_block=st.integers(1, 8),
    kind=st.sampled_from(["uniform", "pyramid", "explicit", "callable"]),
    factor=st.integers(1, 3),
    data=st.data(),
)
def test_cost_matches_generate_random(num_blocks, block_length, per_block, kind, factor, data):
    gen_length, steps = num_blocks * block_length, num_blocks * per_block
    if kind == "pyramid":
        per_block = max(per_block, pyramid_steps(block_length, factor))
        steps = num_blocks * per_block
        schedule = Pyramid(factor)
    elif kind == "uniform":
        schedule = "uniform"
    else:
        # counts of any length <= per_block (zeros allowed) summing to block_length
        cuts = sorted(data.draw(st.lists(st.integers(0, block_length), min_size=per_block - 1, max_size=per_block - 1)))
        cs = [b - a for a, b in zip([0] + cuts, cuts + [block_length])]
        schedule = cs if kind == "explicit" else (lambda n, s, cs=cs: cs)
    c = cost(gen_length, block_length, steps, schedule)
    want = expected_calls(gen_length, block_length, steps, schedule)
    for backend in ("torch", "reference"):
        assert calls_made(backend, gen_length, block_length, steps, schedule) == c.model_calls == want


def test_cost_with_the_tiny_model():
    from fastremask.models.tiny import tiny_model

    model = tiny_model(vocab_size=16, d_model=16, n_layers=1, n_heads=2, max_len=32)
    calls = []
    orig = model.forward
    model.forward = lambda *a, **k: (calls.append(1), orig(*a, **k))[1]
    prompt = torch.tensor([[1, 2, 3]])
    for backend in ("torch", "reference"):
        for schedule, steps in (("uniform", 12), ([0, 1, 0, 3], 8), ("pyramid", 6)):
            calls.clear()
            generate(model, prompt, None, steps, 8, 4, mask_id=15, schedule=schedule, seed=0, backend=backend)
            assert len(calls) == cost(8, 4, steps, schedule).model_calls
