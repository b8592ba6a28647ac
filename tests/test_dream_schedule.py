"""Dream's timestep schedule (`schedule="dream"`, fastremask.sampler.schedule.Dream) against
Dream's published ``diffusion_generate`` semantics, restated here from its description:
``timesteps = linspace(1, eps, steps + 1)``; at step ``i`` the ``n`` still-masked positions give
``int(n * (1 - s / t))`` tokens (all at the last step), the most confident first.
"""
import pytest
import torch

from fastremask import generate
from fastremask.sampler import schedule as S

from test_batch_invariance import MASK, MODEL


def _dream_counts(n: int, steps: int, eps: float = 1e-3) -> list:
    """The counts as Dream's loop produces them for one row (fp32 tensors, int() truncation)."""
    ts = torch.linspace(1, eps, steps + 1)
    out, left = [], n
    for i in range(steps):
        num_mask_token = torch.tensor(left) / 1
        k = int(num_mask_token * (1 - ts[i + 1] / ts[i])) if i < steps - 1 else int(num_mask_token)
        out.append(k)
        left -= k
    return out


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 8, 16, 31, 64, 128, 200])
def test_counts_equal_dreams(steps):
    for n in (0, 1, 5, 16, 32, 64, 127, 128, 256):
        got = S.resolve("dream")(n, steps)
        assert got == _dream_counts(n, steps), (n, steps)
        assert sum(got) == n and len(got) == steps and min(got) >= 0
    assert S.resolve(S.dream)(32, 8) == [3, 4, 4, 4, 4, 4, 4, 5]


def _dream_oracle(model, prompt, gen_length, steps, mask_id):
    """Dream's sampler at T = 0 (maskgit_plus confidence: the max softmax probability, here in
    float64; top-k positions by confidence), one block, as its generation_utils describes it."""
    x = torch.cat([prompt, torch.full((prompt.shape[0], gen_length), mask_id)], 1)
    ts = torch.linspace(1, 1e-3, steps + 1)
    for i in range(steps):
        mask_index = x == mask_id
        logits = model(x).double()
        confidence, x0 = torch.softmax(logits[mask_index], -1).max(-1)
        num_mask_token = mask_index.sum() / mask_index.shape[0]
        k = int(num_mask_token * (1 - ts[i + 1] / ts[i])) if i < steps - 1 else int(num_mask_token)
        if k > 0:
            full = torch.full(x.shape, float("-inf"), dtype=torch.float64)
            full[mask_index] = confidence
            idx = torch.topk(full, k).indices
            cand = torch.full_like(x, mask_id)
            cand[mask_index] = x0
            rows = torch.arange(x.shape[0])[:, None].expand_as(idx)
            x[rows, idx] = cand[rows, idx]
    return x


@pytest.mark.parametrize("gen_length,steps", [(8, 4), (12, 12), (16, 5), (10, 3)])
def test_generate_with_dreams_schedule_equals_dreams_sampler_at_t0(gen_length, steps):
    g = torch.Generator().manual_seed(gen_length * 100 + steps)
    prompt = torch.randint(0, MASK, (1, 4), generator=g)
    want = _dream_oracle(MODEL, prompt, gen_length, steps, MASK)
    for backend in ("reference", "torch"):
        got = generate(MODEL, prompt, steps=steps, gen_length=gen_length, block_length=gen_length,
                       temperature=0.0, remasking="low_confidence", mask_id=MASK, schedule="dream",
                       backend=backend)
        assert torch.equal(got, want), backend


# --------------------------------------------------------------------------- alg_temp


from fastremask.sampler import numerics as nx  # noqa: E402


def test_gumbel_key_top1_follows_softmax_of_confidence_over_alg_temp():
    """Dream's alg_temp position choice as Gumbel-top-k: the position with the largest key is
    distributed as softmax(confidence / alg_temp). 30,000 fixed seeds (deterministic), chi-square
    at p = 0.001 (4 degrees of freedom); -inf (not a candidate) is never chosen."""
    c = torch.tensor([0.9, 0.5, 0.45, 0.1, -0.3, float("-inf")])
    a, n = 0.4, 30_000
    C = len(c)
    seeds = torch.arange(n).repeat_interleave(C) * 31 + 7
    pos = torch.arange(C).repeat(n)
    keys = nx.gumbel_key(c.repeat(n), a, seeds, pos, 3).view(n, C)
    counts = torch.bincount(keys.argmax(1), minlength=C).double()
    assert counts[-1] == 0
    e = torch.softmax(c[:-1].double() / a, 0) * n
    chi2 = float(((counts[:-1] - e) ** 2 / e).sum())
    assert chi2 < 18.47, chi2


def test_alg_temp_same_tokens_on_every_backend_and_batch_invariant():
    from test_batch_invariance import _check_rows_alone, _batch
    kw = dict(steps=6, gen_length=6, block_length=3, temperature=0.0, alg_temp=0.3)
    for backend in ("torch", "reference"):
        _check_rows_alone([2, 4, 3], 5, kw, backend)
    rows, ids, am = _batch([2, 4], 9)
    want = generate(MODEL, ids, am, mask_id=MASK, seed=3, backend="reference", **kw)
    plain = generate(MODEL, ids, am, mask_id=MASK, seed=3, backend="reference", **{**kw, "alg_temp": 0.0})
    assert not torch.equal(want, plain)                   # the draw of positions changes the order here
    assert torch.equal(generate(MODEL, ids, am, mask_id=MASK, seed=3, backend="torch", **kw), want)
    try:
        from fastremask.kernels.numerics import interpreting
    except ImportError:
        return
    if interpreting():
        assert torch.equal(generate(MODEL, ids, am, mask_id=MASK, seed=3, backend="triton", **kw), want)


@pytest.mark.parametrize("kw,msg", [
    (dict(alg_temp=-1.0), r"alg_temp must be a finite number >= 0.0"),
    (dict(alg_temp=0.5, threshold=0.5), r"alg_temp=0.5 .* no threshold mode"),
    (dict(alg_temp=0.5, remasking="random"), r"remasking='random' has no confidence"),
    (dict(alg_temp=1e-40), r"alg_temp=1e-40 is too small"),
])
def test_bad_alg_temp_names_the_option(kw, msg):
    with pytest.raises(ValueError, match=msg):
        generate(MODEL, torch.tensor([[1, 2]]), steps=2, gen_length=2, block_length=2, mask_id=MASK, **kw)
