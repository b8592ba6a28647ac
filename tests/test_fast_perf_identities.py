"""Exact identities the `torch` backend (`fastremask.sampler.fast`) relies on for speed.

Each one is checked bit for bit against the contract's own definition in `fastremask.sampler.numerics`.
"""
import pytest
import torch

from fastremask.sampler.contract import REMASKING
from fastremask.sampler import fast
from fastremask.sampler import numerics as nx
from fastremask.sampler import reference as ref
from fastremask.sampler.contract import assert_bits_equal


def _fast_s(l: torch.Tensor) -> torch.Tensor:
    """`S_c` of fp32 logits [n, c * CHUNK] by `fast._fixed_sums` (as `fast.sample_rows` calls it)."""
    x3 = l.reshape(l.shape[0], -1, nx.CHUNK).clone()
    m = x3.amax(-1)
    x3.sub_(m.clamp_min(-fast.F32_MAX)[..., None])
    log2e = torch.tensor(nx.LOG2E)
    return fast._fixed_sums(x3, log2e, *(torch.empty_like(x3) for _ in range(2))).to(torch.int64)


def _extreme_rows(C: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    n = nx.CHUNK * C
    rows = [
        torch.randn(n, generator=g) * 4,
        torch.randn(n, generator=g) * 60,                  # wide: e' underflows, subnormals
        torch.zeros(n),                                     # every term exactly 2**40
        torch.full((n,), -3.0),
        (torch.rand(n, generator=g) * -110.0),              # around exp's clamp at -104
        torch.rand(n, generator=g) * -(nx.FIXED_BITS * 0.6932) - 1.0,   # terms near 1 in 2**40
        torch.full((n,), float("-inf")),                    # all -inf chunks: S_c = 0
        torch.randn(n, generator=g).round(),                # ties at the max
        torch.randn(n, generator=g) * 1e-30,                # tiny differences (+-0 and near)
        torch.randn(n, generator=g) * 1e30,                 # huge spread
        torch.cat([torch.full((n // 2,), -0.0), torch.zeros(n - n // 2)]),
    ]
    mix = torch.randn(n, generator=g) * 8
    mix[torch.rand(n, generator=g) < 0.3] = float("-inf")
    rows.append(mix)
    big = torch.randn(n, generator=g) * 3 + 80.0          # near exp's upper clamp in l, not in d
    rows.append(big)
    return torch.stack(rows)


@pytest.mark.parametrize("C", [1, 3])
def test_fixed_sums_equal_chunk_sums(C):
    l = _extreme_rows(C)
    _, s_ref, _ = nx.chunk_sums(l)
    assert torch.equal(_fast_s(l), s_ref)


def test_fixed_sums_equal_chunk_sums_random():
    g = torch.Generator().manual_seed(11)
    for scale in (0.5, 2.0, 10.0, 40.0):
        l = torch.randn(8, 2 * nx.CHUNK, generator=g) * scale
        l[torch.rand(l.shape, generator=g) < 0.1] = float("-inf")
        _, s_ref, _ = nx.chunk_sums(l)
        assert torch.equal(_fast_s(l), s_ref)


@pytest.mark.parametrize("T", [1.0, 0.5, 0.7, 3.0])
def test_fixed_sums_every_exponent(T):
    """d = l - m_c over a fine grid of [-110, 0]: every k of fixed_pow2's reduction, its clamp;
    term by term against nx.fixed_pow2 (and token_weights at T), in place as fast does it."""
    d = -torch.linspace(0.0, 110.0, 64 * nx.CHUNK)
    d = d[torch.randperm(d.numel(), generator=torch.Generator().manual_seed(2))]
    d = torch.cat([d, torch.tensor([float("-inf"), -0.0, 0.0, -1e-30])])
    _, c = nx.tempered_scales(T)
    d3 = d.reshape(-1, 1, 1).clone()
    terms = fast._fixed_sums(d3, torch.tensor(c), *(torch.empty_like(d3) for _ in range(2))).to(torch.int64)
    assert torch.equal(terms.reshape(-1), nx.fixed_pow2(d * c).to(torch.int64))
    if T == 1.0:
        l = d[: 64 * nx.CHUNK].reshape(64, nx.CHUNK).clone()
        l[:, 0] = 0.0                             # m_c = 0, so d = l exactly
        _, s_ref, _ = nx.chunk_sums(l)
        assert torch.equal(_fast_s(l), s_ref)


def test_max_dim_first_index_and_propagation():
    """`Tensor.max(dim)` returns the first index of the max (ties, +-0) and propagates NaN, +inf."""
    g = torch.Generator().manual_seed(3)
    for n in (7, 2048, 4099, 32768):
        x = torch.randn(4, n, generator=g).round()     # many ties
        x[2] = 0.0
        x[2, : n // 2] = -0.0
        v, i = x.max(-1)
        first = torch.where(x == x.amax(-1, keepdim=True), torch.arange(n), n).amin(-1)
        assert torch.equal(i, first)
        assert torch.equal(x.argmax(-1), first)
        y = x.clone()
        y[0, n // 3] = float("nan")
        y[1, n - 1] = float("inf")
        v = y.max(-1).values
        assert torch.isnan(v[0]) and v[1] == float("inf")


@pytest.mark.parametrize("V", [2047, 2048, 2049, 40000, 126464 // 8])
@pytest.mark.parametrize("T", [0.0, 1.0, 0.7])
@pytest.mark.parametrize("remasking", list(REMASKING))
def test_blocks_equal_reference(V, T, remasking):
    """Row groups and vocab blocks of the default (CPU) block shape, padded last chunk, ties."""
    g = torch.Generator().manual_seed(V + int(T))
    N, R = 5, 7
    l = (torch.randn(N, V, generator=g) * 3).round().to(torch.bfloat16)
    l[0, V // 2] = 50.0
    l[1, V - 1] = 50.0                         # the max in the padded last chunk
    l[3, :] = float("-inf")
    l[3, 1] = -2.0
    rows = torch.tensor([0, 1, 2, 3, 4, 1, 0])[:R]
    seeds = torch.randint(0, 2**62, (R,), generator=g)
    positions = torch.randint(0, 99, (R,), generator=g)
    kw = dict(temperature=T, remasking=remasking)
    a = ref.sample_rows(l, rows, seeds, positions, 3, **kw)
    b = fast.sample_rows(l, rows, seeds, positions, 3, **kw)
    assert torch.equal(a.x0, b.x0) and torch.equal(a.invalid, b.invalid)
    assert_bits_equal(a.confidence, b.confidence)
