"""Dream's ``diffusion_generate`` reproduced by ``generate`` (issue 19, items 3 and 5).

`dream_generate` restates the published semantics of Dream's sampling loop (``_sample`` in its
``generation_utils.py``; docs/models/dream.md, "Dream's sampler") in plain torch, from their
description: ``timesteps = linspace(1, eps, steps + 1)``; at step ``i`` every masked position is
predicted; ``alg="origin"`` unmasks each one with probability ``p_transfer = 1 - s / t`` (all
at the last step) and samples the token of those only; the other algorithms take
``int(n * (1 - s / t))`` positions (all at the last step) by confidence (``maskgit_plus``: the
probability of the token, ``topk_margin``: top-1 minus top-2, ``entropy``: ``sum p log(p +
1e-10)``), on the distribution ``sample_tokens`` builds (logits / T, top-p, then top-k).

Its randomness is injected: ``rand`` gives the uniforms ``torch.rand`` would (Dream's own, or
fastremask's `transfer_uniform` so that the tokens can be compared one for one) and ``draw``
the categorical draw. `dream_law` enumerates the same semantics exactly (float64) for tiny
answers, the law the chi-square tests compare ``generate``'s samples with.

`DREAM_ALGS` is Dream's ``alg`` -> ``generate`` keywords: a new confidence kind (Dream's
confidence on the tempered, truncated distribution) is one more entry there.
"""
import itertools
import math

import pytest
import torch

from fastremask import SamplingConfig, generate
from fastremask.sampler.config import options
from fastremask.sampler import numerics as nx
from fastremask.sampler import schedule as S

from test_batch_invariance import MASK, MODEL


class NoMaskLM(torch.nn.Module):
    """`MODEL` with the mask token's logit at -inf: a model that never predicts the mask, as a
    trained one (fastremask never samples the mask id; Dream's sampler does not exclude it), so
    that Dream's confidences over the whole vocabulary are the ones fastremask computes."""

    device = torch.device("cpu")

    def forward(self, x, attention_mask=None):
        logits = MODEL(x, attention_mask)
        logits[..., MASK] = float("-inf")
        return logits


LM = NoMaskLM()

# Dream's `alg` -> fastremask's keywords (docs/models/dream.md). Today's confidences are LLaDA's
# (the untempered full softmax): Dream's at T = 0 without truncation, and at T = 1 without
# truncation (where tempering and truncation change nothing).
DREAM_ALGS = {
    "origin": dict(schedule="origin"),
    "maskgit_plus": dict(schedule="dream", remasking="low_confidence"),
    "topk_margin": dict(schedule="dream", remasking="margin"),
    "entropy": dict(schedule="dream", remasking="entropy"),
}
# With the confidence option (numerics.md §6a), Dream's own confidences: the rule's value on
# sample_tokens' tempered, truncated distribution, so every T and truncation is Dream's.
DREAM_CONFIDENCE = "confidence" in options()
if DREAM_CONFIDENCE:
    for _alg in ("maskgit_plus", "topk_margin", "entropy"):
        DREAM_ALGS[_alg] = dict(DREAM_ALGS[_alg], confidence="dream")
needs_dream_confidence = pytest.mark.skipif(not DREAM_CONFIDENCE, reason="no confidence='dream' option on this branch")


def dream_keywords(alg, *, steps, max_new_tokens, eps=1e-3, alg_temp=None, temperature=0.0, top_p=None,
                   top_k=None):
    """Dream's ``diffusion_generate`` keywords -> ``generate``'s (the mapping of docs/models/dream.md)."""
    if alg == "origin" and temperature == 0:
        top_p = top_k = None        # Dream truncates before its argmax: nothing changes (no confidence)
    kw = dict(DREAM_ALGS[alg], steps=steps, gen_length=max_new_tokens, block_length=max_new_tokens,
              temperature=temperature, alg_temp=alg_temp or 0.0, top_k=top_k,
              top_p=1.0 if top_p is None else top_p, truncation_order="top_p_first")
    if eps != 1e-3:
        kw["schedule"] = S.origin(eps) if alg == "origin" else S.dream(eps)
    return kw


# ------------------------------------------------------------------------------ the oracle


def _dream_probs(logits, temperature, top_p, top_k):
    """``sample_tokens``' distribution: logits / T (T > 0), top-p over the whole distribution
    (the smallest prefix of the sorted tokens whose softmax mass reaches past top_p, the first
    always kept), then top-k (every token below the k-th largest logit dropped), softmax."""
    if temperature > 0:
        logits = logits / temperature
    low = torch.finfo(logits.dtype).min
    if top_p is not None and top_p < 1:
        srt, idx = torch.sort(logits, -1, descending=True)
        mass = torch.softmax(srt, -1).cumsum(-1)
        drop = torch.zeros_like(mass, dtype=torch.bool)
        drop[..., 1:] = mass[..., :-1] > top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, idx, drop), low)
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1:]
        logits = logits.masked_fill(logits < kth, low)
    return torch.softmax(logits, -1)


def _confidence(alg, probs, x0):
    if alg == "topk_margin":
        top = torch.sort(probs, -1, descending=True).values
        return top[..., 0] - top[..., 1]
    if alg == "entropy":
        return (probs * torch.log(probs + 1e-10)).sum(-1)
    return probs.gather(-1, x0[..., None]).squeeze(-1)


def dream_sample_tokens(logits, alg, temperature, top_p, top_k, draw):
    probs = _dream_probs(logits, temperature, top_p, top_k)
    x0 = draw(probs) if temperature > 0 else probs.argmax(-1)
    return _confidence(alg, probs, x0), x0


def dream_generate(model, prompt, *, alg, steps, max_new_tokens, mask_id, rand, draw=None, eps=1e-3,
                   temperature=0.0, top_p=None, top_k=None, dtype=torch.float32):
    """Dream's loop (one block, ``alg_temp`` None). ``rand(i, mask_index)``: the uniforms in
    ``[0, 1)`` of step ``i`` for the masked positions, in ``x[mask_index]`` order;
    ``draw(probs)``: a token per row of ``probs``."""
    B = prompt.shape[0]
    x = torch.cat([prompt, torch.full((B, max_new_tokens), mask_id)], 1)
    ts = torch.linspace(1, eps, steps + 1)
    for i in range(steps):
        mask_index = x == mask_id
        logits = model(x).to(dtype)[mask_index]
        t, s = ts[i], ts[i + 1]
        if alg == "origin":
            p_transfer = 1 - s / t if i < steps - 1 else 1
            x0 = torch.full((int(mask_index.sum()),), mask_id)
            moved = rand(i, mask_index) < p_transfer
            if moved.any():
                x0[moved] = dream_sample_tokens(logits[moved], alg, temperature, top_p, top_k, draw)[1]
            x[mask_index] = x0
            continue
        confidence, x0 = dream_sample_tokens(logits, alg, temperature, top_p, top_k, draw)
        n = mask_index.sum() / B
        k = int(n * (1 - s / t)) if i < steps - 1 else int(n)
        if k > 0:
            full = torch.full(x.shape, float("-inf"), dtype=confidence.dtype)
            full[mask_index] = confidence
            chosen = torch.topk(full, k).indices
            cand = torch.full_like(x, mask_id)
            cand[mask_index] = x0
            rows = torch.arange(B)[:, None].expand_as(chosen)
            x[rows, chosen] = cand[rows, chosen]
    return x


def fastremask_rand(seeds, prompt_length):
    """``rand`` for `dream_generate` from fastremask's transfer uniforms: masked position ``(b, j)``
    at step ``i`` reads counter ``(seed_b, 0, j - prompt_length, i, STREAM_TRANSFER)``."""
    seeds = torch.as_tensor(seeds)

    def rand(i, mask_index):
        b, j = mask_index.nonzero(as_tuple=True)
        return nx.transfer_uniform(seeds[b], j - prompt_length, i)
    return rand


def _choices(conf, k, alg_temp):
    """``[(positions, probability)]``: the ``k`` positions Dream keeps given their confidences:
    the top ``k`` (ties by the lower position), or with ``alg_temp`` drawn without replacement
    from ``softmax(conf / alg_temp)`` (``torch.multinomial``: each ordered draw's chance is the
    product of each pick's share of what is left)."""
    m = len(conf)
    if not alg_temp:
        return [(tuple(sorted(range(m), key=lambda a: (-conf[a], a))[:k]), 1.0)]
    w = torch.softmax(torch.tensor(conf, dtype=torch.float64) / alg_temp, 0).tolist()
    out = {}
    for order in itertools.permutations(range(m), k):
        pr, left = 1.0, 1.0
        for a in order:
            pr, left = pr * w[a] / left, left - w[a]
        key = tuple(sorted(order))
        out[key] = out.get(key, 0.0) + pr
    return list(out.items())


def dream_law(model, prompt, *, alg, steps, max_new_tokens, eps=1e-3, alg_temp=None, temperature=1.0, top_p=None,
              top_k=None):
    """The exact law of `dream_generate`'s answer for one prompt (float64 enumeration): ``{answer
    tuple: probability}``. ``origin``'s transfer chance is ``torch.rand``'s exactly: ``ceil(p *
    2**24) / 2**24``; the other algorithms keep `_choices` (ties by the lower position)."""
    P = prompt.shape[1]
    ts = torch.linspace(1, eps, steps + 1)
    law = {tuple(prompt[0].tolist()) + (MASK,) * max_new_tokens: 1.0}
    for i in range(steps):
        t, s = ts[i], ts[i + 1]
        nxt = {}

        def put(y, v):
            nxt[y] = nxt.get(y, 0.0) + v
        for x, w in law.items():
            masked = [j for j in range(P, len(x)) if x[j] == MASK]
            if not masked:
                put(x, w)
                continue
            logits = model(torch.tensor([x]))[0].double()
            probs = _dream_probs(logits[masked], temperature, top_p, top_k)
            if temperature > 0:     # each position's (token, chance): a draw, or the argmax at T = 0
                draws = [[(tok, float(p[tok])) for tok in torch.nonzero(p > 0).flatten().tolist()] for p in probs]
            else:
                draws = [[(int(p.argmax()), 1.0)] for p in probs]
            if alg == "origin":
                p = float(1 - s / t) if i < steps - 1 else 1.0
                q = math.ceil(p * 2**24) / 2**24
                for moved in itertools.product((False, True), repeat=len(masked)):
                    wm = w * math.prod(q if m else 1 - q for m in moved)
                    if wm == 0:
                        continue
                    opts = [draws[a] if m else [(MASK, 1.0)] for a, m in enumerate(moved)]
                    for toks in itertools.product(*opts):
                        y = list(x)
                        for a, j in enumerate(masked):
                            y[j] = toks[a][0]
                        put(tuple(y), wm * math.prod(c for _, c in toks))
                continue
            n = torch.tensor(len(masked)) / 1
            k = int(n * (1 - s / t)) if i < steps - 1 else int(n)
            if alg != "maskgit_plus":          # the confidence does not depend on the tokens drawn:
                conf = _confidence(alg, probs, None).tolist()      # the tokens of the chosen only
                for chosen, pc in _choices(conf, k, alg_temp):
                    for toks in itertools.product(*(draws[a] for a in chosen)):
                        y = list(x)
                        for a, (tok, _) in zip(chosen, toks):
                            y[masked[a]] = tok
                        put(tuple(y), w * pc * math.prod(c for _, c in toks))
                continue
            for toks in itertools.product(*draws):
                x0 = torch.tensor([tok for tok, _ in toks])
                v = w * math.prod(c for _, c in toks)
                for chosen, pc in _choices(_confidence(alg, probs, x0).tolist(), k, alg_temp):
                    y = list(x)
                    for a in chosen:
                        y[masked[a]] = toks[a][0]
                    put(tuple(y), v * pc)
        law = nxt
    return {x[P:]: w for x, w in law.items()}


def _chi2_pvalue(counts: dict, law: dict, n: int) -> float:
    """Goodness of fit of ``counts`` (``n`` samples) to ``law``; cells with an expected count
    below 5 pooled into one. Every sampled answer must be in the law's support."""
    outside = set(counts) - {a for a, w in law.items() if w > 0}
    assert not outside, f"answers Dream's sampler cannot give: {sorted(outside)[:5]}"
    big = [a for a, w in law.items() if w * n >= 5]
    rest_e = n - sum(law[a] * n for a in big)
    rest_o = n - sum(counts.get(a, 0) for a in big)
    cells = [(counts.get(a, 0), law[a] * n) for a in big] + ([(rest_o, rest_e)] if rest_e >= 5 else [])
    assert len(cells) >= 3, cells
    chi2 = sum((o - e) ** 2 / e for o, e in cells)
    df = len(cells) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                         torch.tensor(chi2 / 2, dtype=torch.float64)))


# ------------------------------------------------------------------------------ T = 0: token for token


CASES = [(8, 4), (12, 12), (16, 5), (10, 3), (9, 9)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("alg", list(DREAM_ALGS))
@pytest.mark.parametrize("max_new_tokens,steps", CASES)
def test_generate_equals_dreams_sampler_at_t0(alg, max_new_tokens, steps, dtype):
    """At T = 0 the tokens are Dream's one for one: ``maskgit_plus``/``topk_margin``/``entropy``
    (Dream's counts, positions by confidence; the oracle's confidences in fp64, the exact
    ranking, and in fp32 as Dream computes them: no near tie splits them here) and ``origin``
    with the transfer uniforms of fastremask (its only randomness), for a batch of two prompts
    with per-row seeds, on the reference and torch backends."""
    g = torch.Generator().manual_seed(max_new_tokens * 100 + steps)
    prompt = torch.randint(0, MASK, (2, 4), generator=g)
    seeds = [11, 5000 + steps]
    want = dream_generate(LM, prompt, alg=alg, steps=steps, max_new_tokens=max_new_tokens, mask_id=MASK,
                          rand=fastremask_rand(seeds, 4), dtype=dtype)
    kw = dream_keywords(alg, steps=steps, max_new_tokens=max_new_tokens)
    for backend in ("reference", "torch"):
        got = generate(LM, prompt, mask_id=MASK, seed=seeds, backend=backend, **kw)
        assert torch.equal(got, want), (alg, backend)


@needs_dream_confidence
@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy", "origin"])
@pytest.mark.parametrize("max_new_tokens,steps,top_p,top_k", [(8, 4, 0.9, None), (12, 5, None, 3), (10, 10, 0.8, 4)])
def test_generate_equals_dreams_sampler_at_t0_with_truncation(alg, max_new_tokens, steps, top_p, top_k):
    """Dream truncates at T = 0 too (top-p, top-k before its softmax): the confidences, so the
    positions chosen, are those of the truncated distribution (``confidence='dream'``); the tokens
    equal Dream's one for one (the oracle's confidences in fp64)."""
    g = torch.Generator().manual_seed(max_new_tokens * 10 + steps)
    prompt = torch.randint(0, MASK, (2, 4), generator=g)
    seeds = [4, 77]
    want = dream_generate(LM, prompt, alg=alg, steps=steps, max_new_tokens=max_new_tokens, mask_id=MASK,
                          rand=fastremask_rand(seeds, 4), top_p=top_p, top_k=top_k, dtype=torch.float64)
    kw = dream_keywords(alg, steps=steps, max_new_tokens=max_new_tokens, top_p=top_p, top_k=top_k)
    for backend in ("reference", "torch"):
        assert torch.equal(generate(LM, prompt, mask_id=MASK, seed=seeds, backend=backend, **kw), want), backend


@needs_dream_confidence
@pytest.mark.parametrize("alg,dream_kw", [
    ("maskgit_plus", dict(temperature=0.7, top_p=0.9)),
    ("topk_margin", dict(temperature=1.3, top_k=4)),
    ("entropy", dict(temperature=2.0, top_p=0.8, top_k=4)),
    ("maskgit_plus", dict(temperature=2.0, top_p=0.8, top_k=4)),
])
def test_generate_follows_dreams_law_with_dreams_confidence(alg, dream_kw):
    """At any T and truncation, with ``confidence='dream'``: the law of Dream's loop."""
    _check_law(alg, dream_kw)


def test_origin_on_triton_equals_dreams_sampler_and_torch():
    """The triton backend (the interpreter on a CPU: slow, so one small case): origin's tokens at
    T = 0 equal the oracle's, and at T > 0 with truncation the torch backend's, a batch of two
    rows with per-row seeds."""
    if "triton" not in _backends():
        pytest.skip("triton runs here only under TRITON_INTERPRET=1 (tests/conftest.py) or on a GPU")
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    seeds = [3, 40]
    want = dream_generate(LM, prompt, alg="origin", steps=3, max_new_tokens=5, mask_id=MASK,
                          rand=fastremask_rand(seeds, 3), dtype=torch.float64)
    kw = dream_keywords("origin", steps=3, max_new_tokens=5)
    assert torch.equal(generate(LM, prompt, mask_id=MASK, seed=seeds, backend="triton", **kw), want)
    kw = dream_keywords("origin", steps=3, max_new_tokens=5, temperature=0.8, top_p=0.9, top_k=4)
    assert torch.equal(generate(LM, prompt, mask_id=MASK, seed=seeds, backend="triton", **kw),
                       generate(LM, prompt, mask_id=MASK, seed=seeds, backend="torch", **kw))


def _backends():
    out = ["reference", "torch"]
    try:
        from fastremask.kernels.numerics import interpreting
    except ImportError:
        return out
    return out + ["triton"] if interpreting() else out


def test_origin_with_torch_rand_is_dreams_loop_and_differs_from_the_counted_schedule():
    """The oracle with Dream's own ``torch.rand`` runs (every position unmasked by the end), and
    origin is not the counted schedule: over seeds its per-step counts vary."""
    prompt = torch.tensor([[1, 2, 3]])
    torch.manual_seed(0)
    x = dream_generate(LM, prompt, alg="origin", steps=4, max_new_tokens=8, mask_id=MASK,
                       rand=lambda i, m: torch.rand(int(m.sum())))
    assert not (x == MASK).any()
    kw = dream_keywords("origin", steps=4, max_new_tokens=8)
    counts = set()
    for seed in range(6):
        _, trace = generate(MODEL, prompt, mask_id=MASK, seed=seed, return_trace=True, backend="torch", **kw)
        counts.add(tuple(int(s.keep.sum()) for s in trace.steps))
        assert trace.model_calls == 4                               # every step calls the model
    assert len(counts) > 1


# ------------------------------------------------------------------------------ T > 0: in distribution


N = 4000


def _samples(alg, prompt, steps, max_new_tokens, **dream_kw):
    kw = dream_keywords(alg, steps=steps, max_new_tokens=max_new_tokens, **dream_kw)
    x = generate(LM, prompt.expand(N, -1), mask_id=MASK, seed=list(range(N)), backend="torch", **kw)
    out = {}
    for row in x[:, prompt.shape[1]:].tolist():
        out[tuple(row)] = out.get(tuple(row), 0) + 1
    return out


@pytest.mark.parametrize("alg,dream_kw", [
    ("origin", dict(temperature=0.7, top_p=0.9)),                 # truncation: Dream's order, top-p first
    ("origin", dict(temperature=1.3, top_k=3)),
    ("origin", dict(temperature=2.0, top_p=0.8, top_k=4)),
    ("maskgit_plus", dict(temperature=1.0)),                      # today's confidence is Dream's at T = 1
    ("topk_margin", dict(temperature=1.0)),
    ("entropy", dict(temperature=1.0)),
])
def test_generate_follows_dreams_law_at_t_above_0(alg, dream_kw):
    """``generate`` with Dream's keywords mapped draws answers with the exact law of Dream's loop
    (enumerated): 4000 per-row seeds in one batch, chi-square at p > 0.001 (deterministic)."""
    _check_law(alg, dream_kw)


def _check_law(alg, dream_kw, steps=3, A=3):
    prompt = torch.tensor([[3, 7]])
    law = dream_law(LM, prompt, alg=alg, steps=steps, max_new_tokens=A, **dream_kw)
    assert abs(sum(law.values()) - 1) < 1e-9
    p = _chi2_pvalue(_samples(alg, prompt, steps, A, **dream_kw), law, N)
    assert p > 1e-3, (alg, dream_kw, p)


@pytest.mark.parametrize("alg,dream_kw,A", [
    ("maskgit_plus", dict(temperature=1.0, alg_temp=0.5), 3),
    ("topk_margin", dict(temperature=0.0, alg_temp=0.3), 5),      # T = 0: the positions are the draw
    ("entropy", dict(temperature=0.0, alg_temp=1.0), 5),
])
def test_alg_temp_follows_dreams_law(alg, dream_kw, A):
    """Dream's ``alg_temp``: the positions drawn without replacement from ``softmax(confidence /
    alg_temp)`` (``torch.multinomial``); fastremask's Gumbel-top-k gives the same law."""
    _check_law(alg, dream_kw, A=A)


def test_chi2_check_can_fail():
    """The check rejects a wrong law: samples of the counted schedule (positions by confidence)
    against origin's law, the same tokens kept at each position (top-k 3)."""
    prompt = torch.tensor([[3, 7]])
    law = dream_law(LM, prompt, alg="origin", steps=3, max_new_tokens=3, temperature=1.3, top_k=3)
    counts = _samples("maskgit_plus", prompt, 3, 3, temperature=1.3, top_k=3)
    counts = {a: c for a, c in counts.items() if a in law}          # drop what the law cannot give
    assert _chi2_pvalue(counts, law, sum(counts.values())) < 1e-3


# ------------------------------------------------------------------------------ the transfer draw


def test_transfer_uniform_is_torch_rands_grid_and_uniform():
    """[0, 1) on the grid k * 2**-24 (torch.rand's fp32 uniforms), its own stream: not the token's,
    remask's or alg_temp's words for the same counter; P(u < p) over 50,000 counters is p."""
    seeds = torch.arange(50_000) * 7919 + 3
    pos = torch.arange(50_000) % 97
    u = nx.transfer_uniform(seeds, pos, 5)
    assert u.dtype == torch.float32 and float(u.min()) >= 0 and float(u.max()) < 1
    k = u.double() * 2**24
    assert torch.equal(k, k.floor())
    r0 = nx.philox(seeds, 0, pos, 5, nx.STREAM_TRANSFER)[0]
    assert torch.equal((u.double() * 2**24).long(), r0 >> 8)
    for stream in (nx.STREAM_SAMPLE, nx.STREAM_REMASK, nx.STREAM_POSITION):
        assert not torch.equal(nx.philox(seeds, 0, pos, 5, stream)[0] >> 8, r0 >> 8)
    for p in (0.25, 1 / 3, 0.5, 0.999):
        f = float((u < p).double().mean())
        assert abs(f - p) < 4 * math.sqrt(p * (1 - p) / len(u)), (p, f)
    assert bool((u < 1.0).all())           # Dream's last step, p_transfer = 1: every position


def test_origin_transfer_counts_are_binomial_per_step():
    """The count a step of origin keeps is Binomial(still masked, q_i), q_i = ceil(p_i * 2**24)
    / 2**24 with Dream's fp32 p_i: 3000 rows of one batch (per-row seeds), steps 0 and 1."""
    B, A, steps = 3000, 4, 4
    _, trace = generate(MODEL, torch.tensor([[1, 2]]).expand(B, -1), mask_id=MASK, seed=list(range(B)),
                        return_trace=True, backend="torch", **dream_keywords("origin", steps=steps, max_new_tokens=A))
    ps = S.origin().probabilities(steps)
    for i in (0, 1):
        q = math.ceil(ps[i] * 2**24) / 2**24
        left = trace.steps[i].candidate.sum(1)
        kept = trace.steps[i].keep.sum(1)
        for m in range(1, A + 1):
            rows = left == m
            if int(rows.sum()) < 200:
                continue
            obs = torch.bincount(kept[rows], minlength=m + 1).double()
            e = torch.tensor([math.comb(m, c) * q**c * (1 - q) ** (m - c) for c in range(m + 1)]) * rows.sum()
            ok = e >= 5
            chi2 = float((((obs - e) ** 2 / e)[ok]).sum())
            pval = float(torch.special.gammaincc(torch.tensor((int(ok.sum()) - 1) / 2, dtype=torch.float64),
                                                 torch.tensor(chi2 / 2, dtype=torch.float64)))
            assert pval > 1e-3, (i, m, chi2)
    assert bool(trace.steps[-1].keep.sum(1).eq(trace.steps[-1].candidate.sum(1)).all())   # the last: all


# ------------------------------------------------------------------------------ the option


def test_origin_is_batch_invariant():
    from test_batch_invariance import _check_rows_alone
    kw = dict(steps=6, gen_length=6, block_length=3, temperature=0.8, schedule="origin")
    for backend in ("reference", "torch"):
        _check_rows_alone([2, 4, 3], 5, kw, backend)


def test_origin_calls_the_model_every_step_and_cost_says_so():
    """Every step calls the model, also one where no position transfers and one where the block
    has nothing left masked (as Dream's loop): ``model_calls`` is ``steps``, and
    `cost`/`SamplingConfig.model_calls` say the same; the trace has one record per call (the
    progress bar's count), keep only where the draw transferred, each with its step counter."""
    kw = dict(steps=12, gen_length=8, block_length=4, schedule="origin")
    idle = done_early = False
    for seed in range(6):
        x, trace = generate(MODEL, torch.tensor([[1, 2, 3]]), mask_id=MASK, seed=seed, return_trace=True,
                            backend="torch", **kw)
        assert trace.model_calls == 12 == SamplingConfig(**kw).model_calls() == S.cost(8, 4, 12, "origin").model_calls
        assert not (x == MASK).any()
        assert len(trace.steps) == 12
        assert sum(int(s.keep.sum()) for s in trace.steps) == 8
        assert [int(s.row_step) for s in trace.steps] == [s.step for s in trace.steps] == list(range(12))
        for s in trace.steps:
            assert not (s.keep & ~s.candidate).any()
            assert torch.equal(s.x0 == -1, ~s.candidate) and torch.equal(s.confidence == float("-inf"), ~s.candidate)
        idle |= any(int(s.keep.sum()) == 0 and bool(s.candidate.any()) for s in trace.steps)  # none transferred
        done_early |= any(not s.candidate.any() for s in trace.steps)                  # nothing left masked
    assert idle and done_early


def test_origin_probabilities_and_cost():
    t = torch.linspace(1, 0.01, 6)
    assert S.origin(0.01).probabilities(5) == [float(1 - t[i + 1] / t[i]) for i in range(4)] + [1.0]
    assert S.resolve("origin") == S.resolve(S.origin) == S.Origin(1e-3)
    c = S.cost(128, 128, 128, "origin", batch=2)
    assert (c.model_calls, c.rows_through_model) == (128, 128 * 2 * 128)
    # a position is masked at step i with chance prod (1 - q_j); the expected rows, rounded
    left, e = 1.0, 0.0
    for p in S.origin().probabilities(128):
        e, left = e + left, left * (1 - math.ceil(p * 2**24) / 2**24)
    assert c.sampled_rows == round(128 * e * 2)
    assert SamplingConfig(schedule="origin").to_dict()["schedule"] == "origin"
    assert SamplingConfig.from_dict(SamplingConfig(schedule="origin").to_dict()).origin


@pytest.mark.parametrize("kw,msg", [
    (dict(threshold=0.5), r"schedule='origin' .* no threshold mode: use threshold=None, got threshold=0.5"),
    (dict(alg_temp=0.5), r"alg_temp=0.5 draws positions by confidence; schedule='origin'"),
    (dict(remasking="margin"), r"remasking='margin' ranks the positions; schedule='origin'"),
    (dict(defer_tokens=[3]), r"defer_tokens / confidence_eos_eot_inf .* schedule='origin'"),
    (dict(confidence_eos_eot_inf=True), r"defer_tokens / confidence_eos_eot_inf .* schedule='origin'"),
    (dict(schedule=S.Origin(0.5), factor=2), r"factor=2 applies to schedule='pyramid' only"),
])
def test_bad_origin_options_name_the_option(kw, msg):
    kw = {"schedule": "origin", **kw}
    with pytest.raises(ValueError, match=msg):
        generate(MODEL, torch.tensor([[1, 2]]), steps=2, gen_length=2, block_length=2, mask_id=MASK, **kw)


def test_bad_origin_eps_and_unrecordable_eps():
    with pytest.raises(ValueError, match=r"origin's eps must be a number in \(0, 1\), got 0.0"):
        S.origin(0.0)
    with pytest.raises(ValueError, match=r"only origin's default eps=1e-3 has a name"):
        SamplingConfig(schedule=S.origin(0.01)).to_dict()
    with pytest.raises(ValueError, match=r"schedule='origin' .* has no fixed per-step counts"):
        S.resolve("origin")(8, 4)


def test_origin_with_cfg_cache_window_stop_and_blocks_same_on_backends():
    """Origin composes with the loop's other options (CFG, the prefix cache, the logits window,
    stop_at_eos, several blocks, T > 0 with truncation): the reference and torch backends agree,
    the answer is complete, and each block's draws restart its p_i (steps per block)."""
    from fastremask.models.tiny import tiny_model
    m = tiny_model(vocab_size=24, d_model=16, n_layers=1, n_heads=2, max_len=32)
    m.eos_id = 3                                                    # for stop_at_eos
    prompt = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    base = dict(steps=6, gen_length=6, block_length=3, schedule="origin", mask_id=m.mask_id, seed=[2, 9])
    for kw in (dict(cfg_scale=1.5), dict(cache="prefix"), dict(logits_window=True), dict(stop_at_eos=True),
               dict(temperature=0.9, top_k=5, top_p=0.9, truncation_order="top_p_first")):
        want, trace = generate(m, prompt, backend="reference", return_trace=True, **base, **kw)
        assert torch.equal(generate(m, prompt, backend="torch", **base, **kw), want), kw
        assert not (want == m.mask_id).any(), kw
        if not kw.get("stop_at_eos"):
            assert trace.model_calls == 6 == len(trace.steps), kw


def test_origin_refuses_a_block_causal_model():
    from fastremask.models.tiny import tiny_model
    m = tiny_model(vocab_size=20, d_model=16, n_layers=1, n_heads=2, max_len=32, attention="block_causal",
                   block_length=4)
    with pytest.raises(ValueError, match=r"schedule='origin' is Dream's sampler for bidirectional models; "
                                         r"\w+ is block-causal"):
        generate(m, torch.tensor([[1, 2]]), steps=4, gen_length=4, block_length=4, schedule="origin",
                 mask_id=m.mask_id)


def test_origin_from_strings_and_to_dict():
    """The option's string forms (the command line's, lm-eval's ``--model_args``) read 'origin'."""
    c = SamplingConfig.from_strings(schedule="origin", steps="8", gen_length="8", block_length="8")
    assert c.origin and c.to_dict()["schedule"] == "origin" and c.model_calls() == 8
    assert not SamplingConfig(schedule="dream").origin


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(A=st.integers(1, 9), blocks=st.sampled_from([1, 2, 3]), spb=st.integers(1, 7),
       eps=st.sampled_from([1e-3, 0.05, 0.5]), batch=st.integers(1, 3), seed=st.integers(0, 2**62),
       temperature=st.sampled_from([0.0, 1.0, 0.6]))
def test_origin_keeps_exactly_the_transferred_positions(A, blocks, spb, eps, batch, seed, temperature):
    """The rule, stated per step from the trace: a row keeps exactly its masked positions whose
    uniform ``transfer_uniform(seed, position, step)`` is below the step's ``p_i`` of its block
    (every one at a block's last step); every position ends unmasked; reference = torch."""
    C = A
    kw = dict(steps=blocks * spb, gen_length=blocks * C, block_length=C, temperature=temperature,
              schedule=S.origin(eps), mask_id=MASK, seed=seed)
    prompt = torch.arange(batch * 3).view(batch, 3) % MASK
    x, trace = generate(MODEL, prompt, backend="torch", return_trace=True, **kw)
    assert torch.equal(generate(MODEL, prompt, backend="reference", **kw), x)
    assert not (x == MASK).any() and trace.model_calls == blocks * spb == len(trace.steps)
    ps = S.origin(eps).probabilities(spb)
    seeds = torch.tensor([seed + b for b in range(batch)])
    for s in trace.steps:
        pos = torch.arange(C) + (s.start - 3)
        u = nx.transfer_uniform(seeds[:, None].expand(batch, C), pos.expand(batch, C), s.step)
        assert torch.equal(s.keep, s.candidate & (u < torch.tensor(ps[s.step % spb]))), (s.step, ps)
