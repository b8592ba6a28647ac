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
    full = nm.philox(seeds, v, 5, 9, nm.STREAM_GUMBEL)
    for i in range(seeds.shape[0]):
        for j in range(v.shape[1]):
            one = nm.philox(seeds[i, 0], v[0, j], 5, 9, 0)
            assert [int(o[i, j]) for o in full] == [int(o) for o in one]
    for o in full:
        assert o.dtype == torch.int64 and o.shape == (4, 5)
        assert int(o.min()) >= 0 and int(o.max()) < 2**32


def test_philox_streams_differ():
    s = torch.tensor([42], device=DEVICE)
    a = nm.philox(s, 3, 4, 5, nm.STREAM_GUMBEL)
    b = nm.philox(s, 3, 4, 5, nm.STREAM_REMASK)
    assert all(int(x) != int(y) for x, y in zip(a, b))


def test_uniform72_extremes_and_range():
    lo, hi = torch.zeros(1, dtype=torch.int64), torch.full((1,), 2**32 - 1)
    assert float(nm.uniform72(lo, lo, lo)) == 2.0**-73
    assert float(nm.uniform72(hi, hi, hi)) == 1.0 - 2.0**-24   # would round to 1.0 unclamped
    assert float(nm.uniform72(hi, lo, lo)) == 1.0 - 2.0**-24
    g = torch.Generator().manual_seed(0)
    r = [torch.randint(0, 2**32, (200_000,), generator=g) for _ in range(3)]
    w = nm.uniform72(*r)
    assert w.dtype == torch.float32
    assert float(w.min()) > 0.0 and float(w.max()) < 1.0
    assert abs(float(w.double().mean()) - 0.5) < 0.005


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


def test_log1p_special_values():
    x = torch.tensor([0.0, -1.0, 2.0**-30, -(2.0**-73), 1e-8])
    y = nm.log1p(x)
    assert y.tolist()[:3] == [0.0, -INF, 2.0**-30]
    assert float(y[3]) == -(2.0**-73) and float(y[4]) == float(torch.tensor(1e-8))


# Error bounds stated in docs/numerics.md §3, measured over these fixed samples (and larger
# ones when the bounds were set); the asserted numbers are the documented ones.
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


def test_log1p_error_bound():
    x = torch.cat([_sample(-1 + 2**-24, 0, 300_000, 8), _sample(-1e-4, 1e-4, 100_000, 9),
                   _sample(0, 1e4, 100_000, 10), -torch.pow(2.0, -_sample(0.01, 80, 100_000, 11))])
    x = x[x != 0]
    y, ref = nm.log1p(x).double().numpy(), np.log1p(x.double().numpy())
    assert (np.abs(y - ref) / ulp32(ref)).max() <= 3.0


def test_gumbel_error_bound_and_tail():
    g = torch.Generator().manual_seed(12)
    r = [torch.randint(0, 2**32, (300_000,), generator=g) for _ in range(3)]
    w = torch.cat([nm.uniform72(*r), torch.pow(2.0, -_sample(24, 73, 100_000, 13)),
                   1 - torch.pow(2.0, -_sample(1, 24, 100_000, 14)),
                   torch.tensor([2.0**-73, 1 - 2.0**-24])])
    y = nm.gumbel(w).double().numpy()
    ref = -np.log(-np.log1p(-w.double().numpy()))
    assert (np.abs(y - ref) / np.maximum(1.0, np.abs(ref))).max() <= 4 * 2.0**-24
    # The tail: LLaDA's float64 noise stops at -log(-log(1 - 2**-53)) ~ 36.7; ours goes further.
    llada_max = -math.log(-math.log1p(-(2.0**-53)))
    assert 36.7 < llada_max < 36.8
    assert float(nm.gumbel(torch.tensor([2.0**-73]))) > 50.5 > llada_max


def test_gumbel_noise_and_remask_uniform_counters():
    seeds = torch.tensor([7, 2**63 - 1, 0], device=DEVICE)
    pos = torch.tensor([0, 5, 127], device=DEVICE)
    v = torch.arange(11, device=DEVICE)
    g = nm.gumbel_noise(seeds, pos, 4, v)
    assert g.shape == (3, 11) and g.dtype == torch.float32
    r0, r1, r2, _ = nm.philox(seeds[1], v[3], pos[1], 4, nm.STREAM_GUMBEL)
    assert torch.equal(g[1, 3], nm.gumbel(nm.uniform72(r0, r1, r2)))
    # a row's noise does not depend on its neighbours
    assert torch.equal(nm.gumbel_noise(seeds[1:2], pos[1:2], 4, v), g[1:2])
    u = nm.remask_uniform(seeds, pos, 4)
    assert u.shape == (3,) and float(u.min()) > 0 and float(u.max()) < 1
    r0 = nm.philox(seeds[2], 0, pos[2], 4, nm.STREAM_REMASK)[0]
    assert torch.equal(u[2], nm.uniform24(r0))


# Fixed-point sums (numerics.md §5)

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
