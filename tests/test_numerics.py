"""The PyTorch side of the numerics contract (docs/numerics.md): known answers, ranges, bounds.

The Triton twins are compared with these functions in test_numerics_triton.py.
"""
import math

import numpy as np
import pytest
import torch

from fastremask.sampler import numerics as nm

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INF = float("inf")

# Random123 known-answer vectors for philox4x32 (tests/kat_vectors in the Random123 distribution,
# github.com/DEShawResearch/random123): counter[4], key[2] -> output[4], all hex uint32.
KAT = [
    (10, (0x00000000,) * 4, (0x00000000,) * 2, (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (10, (0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (10, (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    (7, (0x00000000,) * 4, (0x00000000,) * 2, (0x5F6FB709, 0x0D893F64, 0x4F121F81, 0x4F730A48)),
    (7, (0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x5207DDC2, 0x45165E59, 0x4D8EE751, 0x8C52F662)),
    (7, (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0x4DFCCABA, 0x190A87F0, 0xC47362BA, 0xB6B5242A)),
]


def key_to_seed(k0, k1):
    """The int64 whose bits are (k1 << 32) | k0 (negative when k1 has its top bit set)."""
    s = (k1 << 32) | k0
    return s - (1 << 64) if s >= 1 << 63 else s


def ulp32(y: np.ndarray) -> np.ndarray:
    """Spacing of fp32 at |y| (y in float64), the unit of the stated error bounds."""
    return np.spacing(np.abs(y).astype(np.float32)).astype(np.float64)


@pytest.mark.parametrize("rounds,ctr,key,expected", KAT, ids=[f"kat{i}" for i in range(len(KAT))])
def test_philox_known_answers(rounds, ctr, key, expected):
    seed = torch.tensor(key_to_seed(*key), device=DEVICE)
    out = nm.philox(seed, *ctr, rounds=rounds)
    assert [int(o) for o in out] == list(expected)


def test_philox_broadcasts_and_equals_elementwise():
    seeds = torch.tensor([0, 1, 2**63 - 1, 123456789012345], device=DEVICE).view(-1, 1)
    v = torch.tensor([0, 1, 7, 2**32 - 1, 126463], device=DEVICE).view(1, -1)
    full = nm.philox(seeds, v, 5, 9, nm.STREAM_SAMPLE)
    for i in range(seeds.shape[0]):
        for j in range(v.shape[1]):
            one = nm.philox(seeds[i, 0], v[0, j], 5, 9, 0)
            assert [int(o[i, j]) for o in full] == [int(o) for o in one]
    for o in full:
        assert o.dtype == torch.int64 and o.shape == (4, 5)
        assert int(o.min()) >= 0 and int(o.max()) < 2**32


def test_philox_streams_differ():
    s = torch.tensor([42], device=DEVICE)
    a = nm.philox(s, 3, 4, 5, nm.STREAM_SAMPLE)
    b = nm.philox(s, 3, 4, 5, nm.STREAM_REMASK)
    assert all(int(x) != int(y) for x, y in zip(a, b))


def test_uniform24_extremes_and_range():
    r = torch.tensor([0, 511, 512, 2**32 - 1])
    u = nm.uniform24(r)
    assert u.tolist() == [2.0**-24, 2.0**-24, 3 * 2.0**-24, 1.0 - 2.0**-24]


def test_exp_special_values():
    x = torch.tensor([0.0, -0.0, -INF, INF, -104.0, -1e30, 89.0, 1e30, 88.72283172607422])
    y = nm.exp(x)
    assert y[:8].tolist() == [1.0, 1.0, 0.0, INF, 0.0, 0.0, INF, INF]
    assert math.isfinite(float(y[8]))         # largest x whose exp is below FLT_MAX
    assert float(nm.exp(torch.tensor(-103.9))) == 2.0**-149   # gradual underflow, rounded once


def test_log_special_values():
    x = torch.tensor([0.0, 1.0, INF, 2.0**-149, 2.0**-126, 2.0**127])
    y = nm.log(x)
    assert y[:3].tolist() == [-INF, 0.0, INF]
    ref = [-149 * math.log(2), -126 * math.log(2), 127 * math.log(2)]
    assert np.allclose(y[3:].double().numpy(), ref, rtol=2**-23, atol=0)
    assert math.isnan(float(nm.log(torch.tensor(-1.0))))


def _sample(lo, hi, n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g, dtype=torch.float64).mul_(hi - lo).add_(lo).float()


def test_exp_error_bound():
    x = torch.cat([_sample(-87.3, 88.72, 400_000, 1), _sample(-1, 1, 100_000, 2),
                   _sample(-1e-4, 1e-4, 50_000, 3), torch.tensor([0.5, -0.5, 1.0, 88.0])])
    y, ref = nm.exp(x).double().numpy(), np.exp(x.double().numpy())
    assert (np.abs(y - ref) / ulp32(ref)).max() <= 1.05                 # normal results
    x = _sample(-103.97, -87.4, 100_000, 4)                          # subnormal results
    y, ref = nm.exp(x).double().numpy(), np.exp(x.double().numpy())
    assert (np.abs(y - ref) / 2.0**-149).max() <= 1.0


def test_log_error_bound():
    g = torch.Generator().manual_seed(5)
    bits = torch.randint(1, 0x7F800000, (400_000,), generator=g, dtype=torch.int32)
    x = torch.cat([bits.view(torch.float32), _sample(0.5, 2.0, 200_000, 6),
                   _sample(1 - 2**-10, 1 + 2**-10, 100_000, 7)])
    x = x[x != 1.0]
    y, ref = nm.log(x).double().numpy(), np.log(x.double().numpy())
    assert (np.abs(y - ref) / ulp32(ref)).max() <= 2.0


def test_remask_uniform_counters():
    seeds = torch.tensor([7, 2**63 - 1, 0], device=DEVICE)
    pos = torch.tensor([0, 5, 127], device=DEVICE)
    u = nm.remask_uniform(seeds, pos, 4)
    assert u.shape == (3,) and float(u.min()) > 0 and float(u.max()) < 1
    r0 = nm.philox(seeds[2], 0, pos[2], 4, nm.STREAM_REMASK)[0]
    assert torch.equal(u[2], nm.uniform24(r0))
    assert torch.equal(nm.remask_uniform(seeds[2:], pos[2:], 4), u[2:])   # no neighbour matters

def _logits(shape, seed, scale=8.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(DEVICE)


@pytest.mark.parametrize("v", [1, 7, 2047, 2048, 2049, 4099, 3 * 2048])
def test_chunk_sums_split_invariant(v):
    l = _logits((3, v), v)
    if v > 1:
        l[0, v // 2] = -INF
    m_c, s_c, a_c = nm.chunk_sums(l)
    n_c = -(-v // nm.CHUNK)
    assert m_c.shape == s_c.shape == a_c.shape == (3, n_c)
    # each chunk alone gives the same numbers as the whole row
    for c in range(n_c):
        one = nm.chunk_sums(l[:, c * nm.CHUNK:(c + 1) * nm.CHUNK])
        assert torch.equal(one[0][:, 0], m_c[:, c])
        assert torch.equal(one[1][:, 0], s_c[:, c]) and torch.equal(one[2][:, 0], a_c[:, c])
    # combining in any order of chunks gives the same integers
    m, z, b = nm.combine_chunks(m_c, s_c, a_c)
    perm = torch.randperm(n_c, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    m2, z2, b2 = nm.combine_chunks(m_c[:, perm], s_c[:, perm], a_c[:, perm])
    assert torch.equal(m, m2) and torch.equal(z, z2) and torch.equal(b, b2)
    assert torch.equal(m, l.amax(-1))
    assert bool((z >= nm.FIXED).all())


def test_chunk_sums_padding_is_minus_inf():
    l = _logits((2, 100), 1)
    padded = torch.full((2, 2048), -INF, device=DEVICE)
    padded[:, :100] = l
    assert all(torch.equal(a, b) for a, b in zip(nm.chunk_sums(l), nm.chunk_sums(padded)))


def test_chunk_sums_values():
    l = torch.tensor([[0.0, 0.0, -INF, math.log(0.5)]], device=DEVICE)
    m_c, s_c, a_c = nm.chunk_sums(l)
    assert float(m_c) == 0.0
    assert int(s_c) == 2 * nm.FIXED + nm.FIXED // 2 or abs(int(s_c) - 2.5 * nm.FIXED) < 2**18
    m, z, b = nm.combine_chunks(m_c, s_c, a_c)
    assert int(z) == int(s_c)
    # entropy of softmax [0.4, 0.4, 0.2] via the contract's formula
    ent = math.log(float(z) / nm.FIXED) + float(b) / float(z)
    p = np.array([0.4, 0.4, 0.2])
    assert abs(ent - float(-(p * np.log(p)).sum())) < 1e-6


def test_chunk_sums_all_minus_inf_chunk():
    l = torch.full((2, 3 * 2048), -INF, device=DEVICE)
    l[0, 2048 + 5] = 3.0
    m_c, s_c, a_c = nm.chunk_sums(l)
    assert m_c[0].tolist() == [-INF, 3.0, -INF] and s_c[0].tolist() == [0, nm.FIXED, 0]
    assert a_c.abs().sum() == 0
    m, z, b = nm.combine_chunks(m_c, s_c, a_c)
    assert m.tolist() == [3.0, -INF] and z.tolist() == [nm.FIXED, 0] and b.tolist() == [0, 0]


def test_softmax_and_entropy_accuracy():
    l = _logits((4, 5000), 3, scale=4.0)
    m_c, s_c, a_c = nm.chunk_sums(l)
    m, z, b = nm.combine_chunks(m_c, s_c, a_c)
    ld = l.double()
    p = torch.softmax(ld, -1)
    t = nm.fixed_term(l, m.unsqueeze(-1))
    q = nm.fixed_ratio(t, z.unsqueeze(-1))
    assert torch.allclose(q.double(), p, rtol=1e-5, atol=2e-12)
    ent = nm.log(nm.to_f32(z) * 2.0**-40) + nm.fixed_ratio(b, z)
    assert torch.allclose(ent.double(), -(p * torch.log(p)).sum(-1), rtol=1e-5, atol=0)


def test_fixed_term_and_ratio():
    m = torch.tensor([2.5])
    assert int(nm.fixed_term(torch.tensor([2.5]), m)) == nm.FIXED      # exp(0) == 1 exactly
    assert int(nm.fixed_term(torch.tensor([-INF]), m)) == 0
    n = torch.tensor([nm.FIXED, 2**57 - 1, 3])
    z = torch.tensor([nm.FIXED, 2**57 - 1, 2**57 - 1])
    q = nm.fixed_ratio(n, z)
    assert q[:2].tolist() == [1.0, 1.0] and q.dtype == torch.float32
    assert float(q[2]) == float(torch.tensor(3.0) / torch.tensor(2.0**57))


# --------------------------------------------------------------------------- §4 the draw at T > 0

def test_mul63_is_the_exact_product():
    g = torch.Generator().manual_seed(20)
    a = torch.randint(0, 2**63 - 1, (2000,), generator=g)
    b = torch.randint(1, 2**63 - 1, (2000,), generator=g)
    edge = torch.tensor([0, 1, 2**63 - 1, 2**62, 2**21 - 1, 2**42])
    a, b = torch.cat([a, edge, edge.flip(0)]), torch.cat([b, edge.flip(0), edge])
    hi, lo = nm._mul63(a, b)
    for x, y, h, l in zip(a.tolist(), b.tolist(), hi.tolist(), lo.tolist()):
        assert (h, l) == ((x * y) >> 63, (x * y) % 2**63)


def _draw_below_python(seed, pos, step, n, stage):
    """Lemire's multiply-and-reject in Python integers, from the same Philox words."""
    j = 0
    while True:
        r = [int(w) for w in nm.philox(torch.tensor(seed), j, pos, step, nm.STREAM_SAMPLE)]
        big = (r[2 * stage] << 31) | (r[2 * stage + 1] >> 1)
        if (big * n) % 2**63 >= 2**63 % n:
            return (big * n) >> 63, j
        j += 1


@pytest.mark.parametrize("stage", [0, 1])
def test_draw_below_equals_its_statement_and_rejects(stage):
    g = torch.Generator().manual_seed(21 + stage)
    R = 300
    seeds = torch.randint(0, 2**63 - 1, (R,), generator=g)
    pos = torch.randint(0, 1000, (R,), generator=g)
    # small n, LLaDA-sized Z, and n just above 2**62, where about half the attempts are rejected
    n = torch.cat([torch.randint(1, 50, (100,), generator=g), torch.randint(2**40, 2**57, (100,), generator=g),
                   torch.randint(2**62 + 1, 2**62 + 2**40, (100,), generator=g)])
    u = nm.draw_below(seeds, pos, 9, n, stage)
    attempts = []
    for i in range(R):
        want, j = _draw_below_python(int(seeds[i]), int(pos[i]), 9, int(n[i]), stage)
        assert int(u[i]) == want
        attempts.append(j)
    assert bool((u >= 0).all()) and bool((u < n).all())
    assert max(attempts[200:]) >= 1 and max(attempts[:200]) == 0   # the rejection path is taken


def test_draw_below_is_uniform():
    n_pos, n = 21000, 7
    u = nm.draw_below(torch.full((n_pos,), 77), torch.arange(n_pos), 0, torch.full((n_pos,), n), 0)
    counts = torch.bincount(u, minlength=n).double()
    chi2 = float(((counts - n_pos / n) ** 2 / (n_pos / n)).sum())
    assert chi2 < 22.46, chi2          # 6 degrees of freedom, p = 0.001


def test_draw_is_continuous_in_n():
    """u / n follows R / 2**63: weights an ulp apart give (almost) the same fraction."""
    seeds = torch.arange(500)
    n = torch.full((500,), 3 * 2**40 + 12345)
    a = nm.draw_below(seeds, seeds, 0, n, 0)
    b = nm.draw_below(seeds, seeds, 0, n + 1, 0)
    assert int((b - a).abs().max()) <= 1


def test_pick_is_the_inverse_cdf():
    w = torch.tensor([[0, 3, 0, 2, 5]] * 10)
    u = torch.arange(10)
    assert nm.pick(w, u).tolist() == [1, 1, 1, 3, 3, 4, 4, 4, 4, 4]   # a zero weight is never picked


def test_tempered_scales():
    assert nm.tempered_scales(1.0) == (1.0, nm.LOG2E)
    assert nm.tempered_scales(0.5) == (2.0, 2 * nm.LOG2E)
    tau, c = nm.tempered_scales(0.7)
    assert tau == nm.round_f32(1 / 0.7) and c == nm.round_f32(nm.LOG2E * tau)
    with pytest.raises(ValueError, match="too small"):
        nm.tempered_scales(1e-40)

def test_weights_at_t1_are_the_softmax_sums():
    """At T = 1 the draw's weights are exactly §5's terms: S'_c = S_c and sum_c W_c = Z."""
    g = torch.Generator().manual_seed(22)
    l = torch.randn(5, 3 * nm.CHUNK + 17, generator=g) * 6
    l[1, : nm.CHUNK] = float("-inf")                                  # a dead chunk
    w, m_c = nm.token_weights(l, nm.LOG2E)
    mc, s_c, a_c = nm.chunk_sums(l)
    assert torch.equal(w.sum(-1), s_c) and torch.equal(m_c, mc)
    m, Z, _ = nm.combine_chunks(mc, s_c, a_c)
    W = nm.chunk_weights(m_c, s_c, m, 1.0)
    assert torch.equal(W.sum(-1), Z) and int(W[1, 0]) == 0


def _contract_probs(l, T):
    """P(x0 = v) = (W_c / sum W) * (w_v / S'_c), exactly, in float64 (numerics.md §4)."""
    tau, c = nm.tempered_scales(T)
    w, m_c = nm.token_weights(l, c)
    s = w.sum(-1)
    W = nm.chunk_weights(m_c, s, m_c.amax(-1), tau)
    p = (W.double() / W.sum(-1, keepdim=True).double())[..., None] * (w.double() / s.clamp_min(1).double()[..., None])
    return p.reshape(l.shape[0], -1)[:, : l.shape[1]]


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0])
def test_draw_distribution_is_the_softmax_within_the_stated_bound(T):
    """Total variation distance to the float64 softmax of the same fp32 logits (numerics.md §4:
    measured 3.8e-8 at most; asserted 1e-7)."""
    g = torch.Generator().manual_seed(23)
    worst = 0.0
    for spread in (1.0, 4.0, 10.0, 30.0):
        l = torch.randn(16, 5000, generator=g) * spread
        q = torch.softmax(l.double() / T, -1)
        worst = max(worst, 0.5 * float((_contract_probs(l, T) - q).abs().sum(-1).max()))
    assert worst < 1e-7, worst
