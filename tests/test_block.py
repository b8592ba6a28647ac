"""Block diffusion (issue 22): block-causal models in the one loop, the exact block cache, the
published generates restated (LLaDA2's ``generate``, SDAR's ``block_diffusion_generate``),
token editing (SGLang's ``JointThreshold``), batch invariance, every backend, bad input.

The oracles below restate the published semantics from their documented behaviour (written
here, not copied): the sequence ``[prompt | masks]`` padded with masks to whole blocks cut from
position 0, the whole window recomputed at every step with the block-causal mask, at T = 0 the
argmax and its softmax probability, and each generate's transfer rule.
"""
import pytest
import torch
from toy_models import Counting

from fastremask.models.tiny import tiny_model
from fastremask.sampler.block import BlockCache, BlockLayout
from fastremask.sampler.config import SamplingConfig
from fastremask.sampler.loop import run

V = 40
C = 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls: a thread pool only adds contention on a shared CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_model(seed=0, **kw):
    m = tiny_model(vocab_size=V, d_model=32, n_layers=2, n_heads=2, max_len=96, seed=seed,
                   attention="block_causal", block_length=C, **kw)
    with torch.no_grad():            # a trained model never predicts the mask: its logit is far below
        m.head.bias[m.mask_id] = -1e4
    return m


MODEL = make_model()
MASK = MODEL.mask_id


def full_window(model, x, end):
    """The published way: the whole window ``0:end`` with the block-causal mask; the last block's logits."""
    return model.block_logits(x[None, :end], None, block_length=C)[0, end - C:end].float()


def greedy(logits):
    p = torch.softmax(logits, -1)
    x0 = logits.argmax(-1)
    return x0, p.gather(-1, x0[:, None])[:, 0]


def counts(n, steps):
    base, rem = divmod(n, steps)
    return [base + (i < rem) for i in range(steps)]


def llada2_oracle(model, prompt, *, gen_length, steps, threshold, minimal_topk=1, eos_id=None,
                  eos_early_stop=False):
    """LLaDA2's ``generate`` at T = 0, one prompt: returns (answer truncated after its first EOS, calls)."""
    steps = min(steps, gen_length // minimal_topk)
    P = prompt.shape[0]
    nb = -(-(P + gen_length) // C)
    x = torch.full((nb * C,), MASK, dtype=torch.int64)
    x[:P] = prompt
    sched = counts(C, steps)
    calls = 0
    for blk in range(P // C, nb):
        end = (blk + 1) * C
        for s in range(steps):
            cur = x[end - C:end]
            active = cur == MASK
            if not active.any():
                break
            x0, p = greedy(full_window(model, x, end))
            calls += 1
            conf = torch.where(active, p, torch.tensor(-float("inf")))
            high = conf > threshold
            if int(high.sum()) >= sched[s]:
                transfer = high
            else:
                transfer = torch.zeros(C, dtype=torch.bool)
                transfer[conf.topk(min(sched[s], int(active.sum()))).indices] = True
            cur[transfer] = x0[transfer]
            if eos_early_stop and (x0[transfer] == eos_id).any():
                e = (x[P:] == eos_id).nonzero()
                if len(e) and not (x[P:P + int(e[0])] == MASK).any():
                    return x[P:P + int(e[0]) + 1], calls
        if eos_id is not None and (x[P:end] == eos_id).any():
            break
    ans = x[P:P + gen_length]
    if eos_id is None:
        return ans, calls
    e = (ans == eos_id).nonzero()
    return (ans[:int(e[0]) + 1] if len(e) else ans), calls


def sdar_oracle(model, prompt, *, gen_length, steps, strategy, threshold=None):
    """SDAR's ``block_diffusion_generate`` at T = 0, one prompt (no stop tokens): (answer, calls)."""
    P = prompt.shape[0]
    nb = -(-(P + gen_length) // C)
    x = torch.full((nb * C,), MASK, dtype=torch.int64)
    x[:P] = prompt
    sched = counts(C, steps) + [C // steps]
    calls = 0
    for blk in range(P // C, nb):
        end = (blk + 1) * C
        for s in range(steps + 1):
            cur = x[end - C:end]
            masked = cur == MASK
            if not masked.any():
                break                       # (SDAR stores the block's keys here: not a sampling call)
            x0, p = greedy(full_window(model, x, end))
            calls += 1
            conf = torch.where(masked, p, torch.tensor(-float("inf")))
            k = min(sched[s], int(masked.sum()))
            transfer = torch.zeros(C, dtype=torch.bool)
            if strategy == "low_confidence_dynamic" and int((conf > threshold).sum()) >= sched[s]:
                transfer = conf > threshold
            elif k > 0:
                transfer[conf.topk(k).indices] = True
            cur[transfer] = x0[transfer]
    return x[P:P + gen_length], calls


def joint_threshold_oracle(model, prompt, *, gen_length, threshold, edit_threshold, max_post, lam=0.0):
    """SGLang's ``JointThreshold`` (LLaDA2.1 token editing) at T = 0 per block, one prompt, blocks
    from position 0: returns (answer, edits [(position, old, new)], calls)."""
    P = prompt.shape[0]
    nb = -(-(P + gen_length) // C)
    x = torch.full((nb * C,), MASK, dtype=torch.int64)
    x[:P] = prompt
    edits, calls = [], 0
    for blk in range(P // C, nb):
        start, end = blk * C, (blk + 1) * C
        cur = x[start:end]
        prompt_part = cur != MASK                      # the prompt's tail in the first block
        post = 0
        for _ in range(C + max_post):
            masked = cur == MASK
            if not masked.any():
                post += 1
                if post > max_post:
                    break
            logits = full_window(model, x, end)
            calls += 1
            if lam > 0:
                logits[1:].scatter_add_(1, cur[:-1, None], torch.full((C - 1, 1), -lam))
            x0, p = greedy(logits)
            m2t = torch.zeros(C, dtype=torch.bool)
            if masked.any():
                conf = torch.where(masked, p, torch.tensor(-float("inf")))
                m2t = conf > threshold
                if not m2t.any():
                    m2t[conf.argmax()] = True
            t2t = (p > edit_threshold) & (cur != x0) & ~masked & ~prompt_part
            if not (m2t | t2t).any():
                break
            for j in t2t.nonzero().flatten().tolist():
                edits.append((start + j - P, int(cur[j]), int(x0[j])))
            cur[m2t | t2t] = x0[m2t | t2t]
    return x[P:P + gen_length], edits, calls


def prompt_of(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V - 1, (n,), generator=g)


# ------------------------------------------------------------------ the protocol and the cache

def test_cached_calls_equal_the_full_window():
    """Prefix commit then block: the same logits (1e-5) as the whole window with the block mask."""
    x = torch.randint(0, V - 1, (2, 16))
    am = torch.ones(2, 16, dtype=torch.int64)
    am[1, :4] = 0
    full = MODEL.block_logits(x, am, block_length=C)
    cache = BlockCache(16)
    a = MODEL.block_logits(x[:, :12], am[:, :12], block_length=C, cache=cache, start=0, commit=8, logits_from=8)
    assert cache.length == 8
    b = MODEL.block_logits(x, am, block_length=C, cache=cache, start=8, commit=12, logits_from=12)
    torch.testing.assert_close(a, full[:, 8:12], rtol=0, atol=1e-5)
    torch.testing.assert_close(b, full[:, 12:16], rtol=0, atol=1e-5)
    assert cache.nbytes() == 2 * 2 * 2 * 2 * 16 * 16 * 4     # K and V, 2 layers, B 2, H 2, 16 cols, Dh 16, fp32


def test_block_causal_mask_hides_later_blocks():
    """A later block's tokens never change an earlier block's logits."""
    x = torch.randint(0, V - 1, (1, 12))
    y = x.clone()
    y[0, 8:] = (y[0, 8:] + 1) % (V - 1)
    a = MODEL.block_logits(x, None, block_length=C)
    b = MODEL.block_logits(y, None, block_length=C)
    assert torch.equal(a[:, :8], b[:, :8]) and not torch.equal(a[:, 8:], b[:, 8:])


@pytest.mark.parametrize("mode", [dict(steps=16), dict(threshold=0.3, threshold_floor="schedule", steps=16),
                                  dict(threshold=0.5, steps=16)])
@pytest.mark.parametrize("P", [5, 8])
def test_exact_cache_equals_full_window_recompute(mode, P):
    """cache='block': the same tokens as recomputing the window at every step, and every call's
    logits within 1e-5 (fp32), with the same number of model calls."""
    prompt = torch.stack([prompt_of(P, 1), prompt_of(P, 2)])
    runs = {}
    for cache in (None, "block"):
        m = Counting(MODEL)
        out, trace = run(m, prompt, SamplingConfig(gen_length=16, block_length=C, mask_id=MASK, cache=cache,
                                                   temperature=0.0, **mode), seed=3, return_trace=True)
        runs[cache] = (out, m, trace)
    (a, ma, ta), (b, mb, tb) = runs[None], runs["block"]
    assert torch.equal(a, b)
    assert ma.calls == mb.calls == len(ma.logits) == ta.model_calls == tb.model_calls
    for la, lb in zip(ma.logits, mb.logits):
        torch.testing.assert_close(lb, la, rtol=0, atol=1e-5)


def test_exact_cache_writes_each_finished_block_once():
    """The cache grows block by block inside one preallocated buffer per layer."""
    cache_lengths = []

    class Spy(Counting):
        def block_logits(self, *a, **kw):
            out = super().block_logits(*a, **kw)
            cache_lengths.append((kw["start"], kw["commit"], kw["cache"].length, kw["cache"].keys[0].data_ptr()))
            return out

    m = Spy(MODEL)
    run(m, prompt_of(6, 0)[None], SamplingConfig(steps=16, gen_length=16, block_length=C, mask_id=MASK,
                                                 cache="block"), seed=0)
    starts = [s for s, _, _, _ in cache_lengths]
    commits = [c for _, c, _, _ in cache_lengths]
    assert starts[0] == 0 and commits[0] == 4                     # the prompt's full block, with block 1
    assert sorted(set(commits)) == [4, 8, 12, 16, 20]
    assert len({p for *_, p in cache_lengths}) == 1                # one buffer, never reallocated


# ------------------------------------------------------------------ the published generates

@pytest.mark.parametrize("P,steps,threshold,minimal_topk", [
    (5, 4, 0.95, 1), (8, 4, 0.5, 1), (6, 2, 0.3, 1), (7, 4, 0.9, 8), (3, 4, 1.0, 1)])
@pytest.mark.parametrize("cache", [None, "block"])
def test_llada2_generate_token_for_token(P, steps, threshold, minimal_topk, cache):
    """threshold_floor='schedule' + minimal_topk reproduce LLaDA2's generate at T = 0."""
    G = 16
    prompt = prompt_of(P, P)
    want, calls = llada2_oracle(MODEL, prompt, gen_length=G, steps=steps, threshold=threshold,
                                minimal_topk=minimal_topk)
    m = Counting(MODEL)
    out, trace = run(m, prompt[None], SamplingConfig(
        gen_length=G, block_length=C, steps=steps * G // C, threshold=threshold, threshold_floor="schedule",
        minimal_topk=minimal_topk, mask_id=MASK, cache=cache), seed=0, return_trace=True)
    assert torch.equal(out[0, P:], want)
    assert trace.model_calls == m.calls == calls


def _eos_model():
    """The tiny model with an EOS it actually produces (its most frequent greedy token)."""
    m = make_model()
    out = run(m, prompt_of(5, 0)[None], SamplingConfig(steps=32, gen_length=32, block_length=C, mask_id=MASK), seed=0)
    m.eos_id = int(out[0, 5:].mode().values)
    return m


@pytest.mark.parametrize("early", [False, True])
def test_llada2_eos_semantics(early):
    """Up to and including the first EOS the answer is the published one; with eos_early_stop
    the row is EOS after it (the published generate returns the answer cut there)."""
    m = _eos_model()
    for seed in range(3):
        prompt = prompt_of(6, 10 + seed)
        prompt[prompt == m.eos_id] = 0
        want, _ = llada2_oracle(m, prompt, gen_length=32, steps=4, threshold=0.6, eos_id=m.eos_id,
                                eos_early_stop=early)
        out = run(m, prompt[None], SamplingConfig(gen_length=32, block_length=C, steps=32, threshold=0.6,
                                                  threshold_floor="schedule", mask_id=MASK, cache="block",
                                                  eos_early_stop=early), seed=0)[0, 6:]
        assert want[-1] == m.eos_id                           # the case is exercised
        assert torch.equal(out[:len(want)], want)
        if early:
            assert (out[len(want):] == m.eos_id).all()


@pytest.mark.parametrize("strategy,threshold", [("low_confidence_static", None), ("low_confidence_dynamic", 0.5),
                                                ("low_confidence_dynamic", 0.95)])
@pytest.mark.parametrize("P,steps", [(5, 4), (8, 2), (6, 3)])
def test_sdar_generate_token_for_token(strategy, threshold, P, steps):
    """SDAR's strategies: static = schedule mode (uniform); dynamic = threshold_floor='schedule'."""
    G = 16
    prompt = prompt_of(P, 20 + P)
    want, calls = sdar_oracle(MODEL, prompt, gen_length=G, steps=steps, strategy=strategy, threshold=threshold)
    mode = dict(threshold=threshold, threshold_floor="schedule") if threshold is not None else {}
    m = Counting(MODEL)
    out, trace = run(m, prompt[None], SamplingConfig(gen_length=G, block_length=C, steps=steps * G // C,
                                                     mask_id=MASK, cache="block", **mode), seed=0, return_trace=True)
    assert torch.equal(out[0, P:], want)
    assert trace.model_calls == m.calls == calls


# ------------------------------------------------------------------ token editing

def _editing_model():
    m = make_model(seed=1)
    m.token_editing = True
    return m


@pytest.mark.parametrize("threshold,edit_threshold,max_post,lam", [
    (0.2, 0.3, 4, 0.0), (0.05, 0.1, 16, 0.0), (0.2, 0.3, 2, 1.5), (0.5, 0.0, 0, 0.0)])
@pytest.mark.parametrize("cache", [None, "block"])
def test_editing_equals_joint_threshold(threshold, edit_threshold, max_post, lam, cache):
    """Token editing at T = 0 against SGLang's JointThreshold restated: tokens, edits, calls."""
    m = _editing_model()
    P, G = 5, 16
    all_edits = 0
    for seed in range(3):
        prompt = prompt_of(P, 40 + seed)
        want, edits, calls = joint_threshold_oracle(m, prompt, gen_length=G, threshold=threshold,
                                                    edit_threshold=edit_threshold, max_post=max_post, lam=lam)
        cm = Counting(m)
        out, trace = run(cm, prompt[None], SamplingConfig(
            gen_length=G, block_length=C, steps=G, threshold=threshold, threshold_floor="schedule",
            edit_threshold=edit_threshold, max_post_edit_steps=max_post, penalty_lambda=lam, mask_id=MASK,
            cache=cache), seed=0, return_trace=True)
        assert torch.equal(out[0, P:], want)
        assert [e[1:] for e in trace.edits(0)] == edits
        assert trace.model_calls == cm.calls == calls
        all_edits += len(edits)
    assert all_edits > 0                                      # editing happened


def test_editing_is_traced_with_steps():
    m = _editing_model()
    out, trace = run(m, prompt_of(5, 41)[None], SamplingConfig(
        gen_length=16, block_length=C, steps=16, threshold=0.05, edit_threshold=0.1, mask_id=MASK), seed=0,
        return_trace=True)
    edits = trace.edits(0)
    assert edits
    steps = [s for s, *_ in edits]
    assert steps == sorted(steps)
    for step, pos, old, new in edits:
        assert old != new and 0 <= pos < 16 + C      # the last block may run past gen_length (published)


# ------------------------------------------------------------------ batches, seeds, backends

PROMPT_LENGTHS = (3, 8, 6)


def _batch():
    prompts = [prompt_of(n, 60 + n) for n in PROMPT_LENGTHS]
    P = max(PROMPT_LENGTHS)
    x = torch.zeros(len(prompts), P, dtype=torch.int64)
    am = torch.zeros(len(prompts), P, dtype=torch.int64)
    for b, p in enumerate(prompts):
        x[b, P - len(p):] = p
        am[b, P - len(p):] = 1
    return prompts, x, am


MODES = {
    "schedule T=0": dict(steps=16),
    "schedule T=0.8": dict(steps=16, temperature=0.8),
    "floor T=0.7": dict(steps=16, threshold=0.4, threshold_floor="schedule", temperature=0.7),
    "threshold pyramid-free T=1": dict(steps=16, threshold=0.6, temperature=1.0, remasking="margin"),
    "editing T=0.9": dict(steps=16, threshold=0.2, threshold_floor="schedule", edit_threshold=0.2,
                          max_post_edit_steps=3, temperature=0.9, force_editing=True),
    "eos_early_stop": dict(steps=16, threshold=0.5, threshold_floor="schedule", eos_early_stop=True),
    "editing eos_early_stop": dict(steps=16, threshold=0.2, edit_threshold=0.2, max_post_edit_steps=3,
                                   force_editing=True, eos_early_stop=True),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_row_alone_equals_row_in_batch(mode):
    """Left-padded rows of different lengths: each row's blocks start at its own position 0, its
    seed is its own, so it equals the prompt generated alone (cache='block')."""
    m = _eos_model() if "eos_early_stop" in mode else MODEL
    prompts, x, am = _batch()
    config = SamplingConfig(gen_length=16, block_length=C, mask_id=MASK, cache="block", **MODES[mode])
    batch = run(m, x, config, attention_mask=am, seed=7)
    P = x.shape[1]
    for b, p in enumerate(prompts):
        alone = run(m, p[None], config, seed=7 + b)
        assert torch.equal(batch[b, P:], alone[0, len(p):]), (mode, b)
        assert torch.equal(batch[b, :P], x[b])


def test_editing_touches_only_answer_positions_and_stops():
    """In a batch, a row's filler block (it needs one block fewer) is neither edited nor stepped."""
    prompts, x, am = _batch()
    config = SamplingConfig(gen_length=16, block_length=C, mask_id=MASK, cache="block", **MODES["editing T=0.9"])
    out, trace = run(MODEL, x, config, attention_mask=am, seed=7, return_trace=True)
    lay = BlockLayout(x, am, 16, C, MASK)
    for s in trace.steps:
        cols = s.start + torch.arange(C)
        inside = (cols[None] >= lay.gen_start[:, None]) & (cols[None] < lay.row_end[:, None])
        assert not (s.edit & ~inside).any()
        assert not (s.keep & ~inside).any()
    last = [s for s in trace.steps if s.block == lay.num_blocks - 1]
    assert last and all(int(s.row_step[1]) == int(last[0].row_step[1]) for s in last)   # row 1: filler only
    assert sum(bool(s.edit.any()) for s in trace.steps) > 0


def test_layout_puts_each_rows_blocks_at_its_position_zero():
    prompts, x, am = _batch()
    lay = BlockLayout(x, am, 16, C, MASK)
    assert lay.M == 8 and lay.num_blocks == 5           # rows with 3 and 6 tokens need 5 blocks, 8 needs 4
    assert lay.gen_start.tolist() == [8 + 3, 8 + 0, 8 + 2]
    for b, p in enumerate(prompts):
        cols = lay.attention_mask[b].nonzero().flatten()
        pos0 = int(cols[0])
        assert pos0 % C == 0                              # blocks start at the same columns for every row
        assert torch.equal(lay.x0[b, pos0:pos0 + len(p)], p)


@pytest.mark.parametrize("mode", ["schedule T=0.8", "editing T=0.9"])
def test_backends_bit_equal(mode):
    """reference, torch and triton (interpreted on a CPU) give the same tokens and trace."""
    prompts, x, am = _batch()
    config = SamplingConfig(gen_length=4, block_length=C, mask_id=MASK, cache="block", **dict(MODES[mode], steps=4))
    if config.editing:
        config = config.replace(max_post_edit_steps=1)
    outs = {}
    for backend in ("reference", "torch", "triton"):
        outs[backend] = run(MODEL, x, config.replace(backend=backend), attention_mask=am, seed=5, return_trace=True)
    ref, tr = outs["reference"]
    for backend in ("torch", "triton"):
        out, t = outs[backend]
        assert torch.equal(out, ref), backend
        assert len(t.steps) == len(tr.steps)
        for a, b in zip(t.steps, tr.steps):
            assert torch.equal(a.keep, b.keep) and torch.equal(a.x0, b.x0)
            assert (a.edit is None) == (b.edit is None) and (a.edit is None or torch.equal(a.edit, b.edit))
    if config.editing:
        assert any(s.edit.any() for s in tr.steps)            # decoded rows were sampled and edited


def test_seeds_per_row_and_reproducible():
    prompts, x, am = _batch()
    config = SamplingConfig(gen_length=16, block_length=C, mask_id=MASK, cache="block", steps=16, temperature=1.0)
    a = run(MODEL, x, config, attention_mask=am, seed=[1, 2, 3])
    b = run(MODEL, x, config, attention_mask=am, seed=[1, 2, 3])
    c = run(MODEL, x, config, attention_mask=am, seed=[1, 9, 3])
    assert torch.equal(a, b)
    assert torch.equal(a[[0, 2]], c[[0, 2]]) and not torch.equal(a[1], c[1])


# ------------------------------------------------------------------ bad input, before any call

def test_block_length_mismatch_warns_naming_both():
    m = Counting(MODEL)
    with pytest.warns(UserWarning, match=r"block_length=8 .*trained with \(4\)"):
        run(m, prompt_of(4, 0)[None], SamplingConfig(steps=8, gen_length=8, block_length=8, mask_id=MASK), seed=0)


def test_prompt_longer_than_positions():
    m = Counting(MODEL)
    with pytest.raises(ValueError, match=r"prompt of 90 tokens \+ gen_length=16.*needs 108 positions.*has 96"):
        run(m, prompt_of(90, 0)[None], SamplingConfig(steps=16, gen_length=16, block_length=C, mask_id=MASK))
    assert m.calls == 0


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_edit_threshold_out_of_range(bad):
    with pytest.raises(ValueError, match="edit_threshold"):
        SamplingConfig(steps=16, gen_length=16, block_length=C, threshold=0.5, edit_threshold=bad)


def test_editing_needs_a_family_trained_for_it():
    m = Counting(MODEL)
    config = SamplingConfig(steps=16, gen_length=16, block_length=C, threshold=0.5, edit_threshold=0.5, mask_id=MASK)
    with pytest.raises(ValueError, match=r"edit_threshold=0.5: .* not trained for token editing.*force_editing=True"):
        run(m, prompt_of(4, 0)[None], config)
    assert m.calls == 0
    run(m, prompt_of(4, 0)[None], config.replace(force_editing=True))     # forced: it runs
    assert m.calls > 0


def test_block_options_on_a_bidirectional_model():
    full = tiny_model(vocab_size=V)
    p = torch.randint(0, V - 1, (1, 4))
    for kw, msg in ((dict(cache="block"), "cache='block'"), (dict(eos_early_stop=True), "eos_early_stop"),
                    (dict(threshold=0.5, edit_threshold=0.5), "edit_threshold")):
        with pytest.raises(ValueError, match=msg):
            run(full, p, SamplingConfig(steps=16, gen_length=16, block_length=C, mask_id=full.mask_id, **kw))


def test_block_causal_rejects_approximate_caches():
    """(CFG was refused here too until block-causal CFG was supported: the tests under
    "classifier-free guidance" below.)"""
    p = prompt_of(4, 0)[None]
    for kw, msg in ((dict(cache="dual"), "cache='dual'"), (dict(stop_at_eos=True), "stop_at_eos")):
        m = Counting(MODEL)
        m.eos_id = 3
        with pytest.raises(ValueError, match=msg):
            run(m, p, SamplingConfig(steps=16, gen_length=16, block_length=C, mask_id=MASK, **kw))
        assert m.calls == 0


# ------------------------------------------------------------------ classifier-free guidance


class Guided(torch.nn.Module):
    """LLaDA's CFG restated over a block-causal model for the oracles (one prompt, unpadded):
    two separate calls per step, the conditional one on ``x`` and the unconditional one on ``x``
    with the prompt ``0:P`` masked, each the whole window with the block-causal mask; returns
    ``u + (s + 1) * (c - u)`` in fp32 (numerics.md's order)."""

    def __init__(self, model, P, scale):
        super().__init__()
        self.inner, self.P, self.scale = model, P, scale
        for name in ("attention", "block_length", "mask_id", "device", "config"):
            setattr(self, name, getattr(model, name))

    def block_logits(self, x, am, *, block_length, **kw):
        assert am is None and not kw
        un = x.clone()
        un[:, :self.P] = MASK
        c = self.inner.block_logits(x, None, block_length=block_length).float()
        u = self.inner.block_logits(un, None, block_length=block_length).float()
        return u + torch.tensor(self.scale + 1.0, dtype=torch.float32) * (c - u)


@pytest.mark.parametrize("P,steps,threshold,scale", [(5, 4, 0.95, 0.5), (8, 4, 0.5, 2.0), (6, 2, 0.3, 1.0)])
@pytest.mark.parametrize("cache", [None, "block"])
def test_cfg_equals_the_published_generate_with_llada_cfg(P, steps, threshold, scale, cache):
    """cfg_scale > 0 on a block-causal model: LLaDA2's generate at T = 0 over LLaDA's guided
    logits (`Guided`), token for token and call for call, with and without the exact cache."""
    G = 16
    prompt = prompt_of(P, 40 + P)
    want, calls = llada2_oracle(Guided(MODEL, P, scale), prompt, gen_length=G, steps=steps, threshold=threshold)
    m = Counting(MODEL)
    out = run(m, prompt[None], SamplingConfig(
        gen_length=G, block_length=C, steps=steps * G // C, threshold=threshold, threshold_floor="schedule",
        mask_id=MASK, cache=cache, cfg_scale=scale), seed=0)
    assert torch.equal(out[0, P:], want)
    assert m.calls == calls
    plain = run(MODEL, prompt[None], SamplingConfig(
        gen_length=G, block_length=C, steps=steps * G // C, threshold=threshold, threshold_floor="schedule",
        mask_id=MASK, cache=cache), seed=0)
    assert not torch.equal(plain, out)                      # the guidance changed the answer


CFG_MODES = {
    "schedule T=0": dict(steps=16),
    "floor T=0.7": dict(steps=16, threshold=0.4, threshold_floor="schedule", temperature=0.7),
    "editing penalty T=0.9": dict(steps=16, threshold=0.2, threshold_floor="schedule", edit_threshold=0.2,
                                  max_post_edit_steps=3, penalty_lambda=0.5, temperature=0.9, force_editing=True),
}


@pytest.mark.parametrize("mode", list(CFG_MODES))
def test_cfg_exact_cache_equals_recompute_and_rows_are_their_own(mode):
    """A left-padded batch under CFG: one call per step on 2B rows (the unconditional half is
    the batch with every column before each row's answer masked), the cache keeping all 2B rows'
    keys; the same tokens and calls as the recompute, each call's logits within 1e-5; and each
    row equals the row generated alone."""
    prompts, x, am = _batch()
    config = SamplingConfig(gen_length=16, block_length=C, mask_id=MASK, cfg_scale=1.5, **CFG_MODES[mode])
    runs = {}
    for cache in (None, "block"):
        m = Counting(MODEL)
        seen = []
        inner = m.block_logits

        def spy(ids, *a, _inner=inner, _seen=seen, **kw):
            _seen.append(ids.clone())
            return _inner(ids, *a, **kw)

        m.block_logits = spy
        runs[cache] = (run(m, x, config.replace(cache=cache), attention_mask=am, seed=11), m, seen)
    (a, ma, seen_a), (b, mb, seen_b) = runs[None], runs["block"]
    assert torch.equal(a, b)
    assert ma.calls == mb.calls == len(ma.logits)
    for la, lb in zip(ma.logits, mb.logits):
        assert la.shape[0] == 6
        torch.testing.assert_close(lb, la, rtol=0, atol=1e-5)
    lay = BlockLayout(x, am, 16, C, MASK)
    for ids in seen_b:
        B, L = 3, ids.shape[1]
        cond, un = ids[:B], ids[B:]
        before = torch.arange(L)[None] < lay.gen_start[:, None]
        assert torch.equal(un, cond.masked_fill(before, MASK))
    P = x.shape[1]
    for i, p in enumerate(prompts):
        alone = run(MODEL, p[None], config.replace(cache="block"), seed=11 + i)
        assert torch.equal(b[i, P:], alone[0, len(p):]), i
    no_cfg = run(MODEL, x, config.replace(cache="block", cfg_scale=0.0), attention_mask=am, seed=11)
    assert not torch.equal(no_cfg, b)


@pytest.mark.parametrize("mode", ["floor T=0.7", "editing penalty T=0.9"])
def test_cfg_backends_bit_equal(mode):
    """reference, torch and triton (interpreted) under CFG with the exact cache: the same tokens
    and trace."""
    prompts, x, am = _batch()
    config = SamplingConfig(gen_length=4, block_length=C, mask_id=MASK, cache="block", cfg_scale=0.7,
                            **dict(CFG_MODES[mode], steps=4))
    if config.editing:
        config = config.replace(max_post_edit_steps=1)
    outs = {b: run(MODEL, x, config.replace(backend=b), attention_mask=am, seed=5, return_trace=True)
            for b in ("reference", "torch", "triton")}
    ref, tr = outs["reference"]
    for backend in ("torch", "triton"):
        out, t = outs[backend]
        assert torch.equal(out, ref), backend
        assert len(t.steps) == len(tr.steps)
        for a, b in zip(t.steps, tr.steps):
            assert torch.equal(a.keep, b.keep) and torch.equal(a.x0, b.x0) and torch.equal(a.confidence, b.confidence)


def test_option_checks():
    with pytest.raises(ValueError, match="threshold_floor='schedule'.*needs a threshold"):
        SamplingConfig(threshold_floor="schedule")
    with pytest.raises(ValueError, match="unknown threshold_floor"):
        SamplingConfig(threshold_floor="two")
    with pytest.raises(ValueError, match="minimal_topk"):
        SamplingConfig(minimal_topk=0)
    with pytest.raises(ValueError, match="penalty_lambda.*edit_threshold"):
        SamplingConfig(penalty_lambda=1.0)
    with pytest.raises(ValueError, match="edit_threshold.*needs threshold decoding"):
        SamplingConfig(edit_threshold=0.5)


def test_benchmark_runs_quick(capsys):
    """benchmarks/block_cache.py (docs/cache.md's numbers) still runs, and its tokens agree."""
    import importlib.util
    import re
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "block_cache.py"
    spec = importlib.util.spec_from_file_location("block_cache_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    before = torch.get_num_threads()
    try:
        mod.main(["--quick", "--shape", "sdar"])
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    results, split = out.split("Where the time goes")
    rows = [line for line in results.splitlines() if line.startswith("| sdar")]
    assert len(rows) == 2 and all(r.endswith("| True |") for r in rows)
    parts = [line for line in split.splitlines() if line.startswith("| sdar")]
    three = r"[\d.]+ / [\d.]+ / [\d.]+"                                      # layers / head / rest
    assert len(parts) == 2 and all(re.search(rf"\| {three} \| {three} \|", r) for r in parts)
