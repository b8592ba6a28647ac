"""The Triton twins in kernels/numerics.py equal the PyTorch functions bit for bit.

Without CUDA these run under TRITON_INTERPRET=1 (set by conftest.py); with CUDA they compile
with `enable_fp_fusion=False`, as every kernel of the project does. Sizes stay small: the
interpreter runs each program in Python.
"""
import math

import pytest
import torch
import triton
import triton.language as tl

from fastremask.sampler import numerics as nm
from fastremask.kernels import numerics as kn

pytestmark = [pytest.mark.interpreter,
              # numpy under the interpreter warns on inf * 0 and the like; the results are checked
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INF = float("inf")
BLOCK = 1024


# ---------------------------------------------------------------------------------------------
# test kernels
# ---------------------------------------------------------------------------------------------

@triton.jit
def _philox_kernel(p_seed, p_c, p_out, n, ROUNDS: tl.constexpr, MODE: tl.constexpr,
                   BLOCK: tl.constexpr):
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = o < n
    seed = tl.load(p_seed + o, mask=m, other=0)                        # int64
    c0 = tl.load(p_c + o, mask=m, other=0)                             # int64 words
    c1 = tl.load(p_c + n + o, mask=m, other=0)
    c2 = tl.load(p_c + 2 * n + o, mask=m, other=0)
    c3 = tl.load(p_c + 3 * n + o, mask=m, other=0)
    if MODE == 0:      # ours
        r0, r1, r2, r3 = kn.philox(seed, c0, c1, c2, c3, ROUNDS)
    elif MODE == 1:    # Triton's
        r0, r1, r2, r3 = tl.philox(seed, c0.to(tl.uint32), c1.to(tl.uint32), c2.to(tl.uint32),
                                   c3.to(tl.uint32), ROUNDS)
    else:              # Triton's randint4x: counter (offset low, offset high, 0, 0)
        r0, r1, r2, r3 = tl.randint4x(seed, c0 + (c1 << 32), ROUNDS)
    tl.store(p_out + o, r0.to(tl.uint32).to(tl.int64), mask=m)
    tl.store(p_out + n + o, r1.to(tl.uint32).to(tl.int64), mask=m)
    tl.store(p_out + 2 * n + o, r2.to(tl.uint32).to(tl.int64), mask=m)
    tl.store(p_out + 3 * n + o, r3.to(tl.uint32).to(tl.int64), mask=m)


def tri_philox(seed, c, rounds=10, mode=0):
    n = seed.numel()
    out = torch.full((4, n), -1, dtype=torch.int64, device=DEVICE)     # poisoned
    _philox_kernel[(triton.cdiv(n, BLOCK),)](seed, c.contiguous(), out, n, rounds, mode,
                                             BLOCK=BLOCK, **kn.LAUNCH_OPTIONS)
    return out


@triton.jit
def _fp_kernel(p_x, p_y, n, FN: tl.constexpr, BLOCK: tl.constexpr):
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = o < n
    x = tl.load(p_x + o, mask=m, other=1.0)
    if FN == 0:
        y = kn.exp(x)
    else:
        y = kn.log(x)
    tl.store(p_y + o, y, mask=m)


FP_FNS = {"exp": 0, "log": 1}


def tri_fp(name, x):
    y = torch.full_like(x, float("nan"))
    _fp_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, y, x.numel(), FP_FNS[name], BLOCK=BLOCK,
                                                 **kn.LAUNCH_OPTIONS)
    return y


@triton.jit
def _uniform_kernel(p_r, p_w24, n, BLOCK: tl.constexpr):
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = o < n
    r0 = tl.load(p_r + o, mask=m, other=0).to(tl.uint32)
    tl.store(p_w24 + o, kn.uniform24(r0), mask=m)


@triton.jit
def _fixed_kernel(p_l, p_m, p_n, p_z, p_t, p_q, p_f, n, BLOCK: tl.constexpr):
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    msk = o < n
    l = tl.load(p_l + o, mask=msk, other=0.0)
    m = tl.load(p_m + o, mask=msk, other=0.0)
    nn = tl.load(p_n + o, mask=msk, other=0)
    z = tl.load(p_z + o, mask=msk, other=1)
    tl.store(p_t + o, kn.fixed_term(l, m), mask=msk)
    tl.store(p_q + o, kn.fixed_ratio(nn, z), mask=msk)
    tl.store(p_f + o, kn.to_f32(z), mask=msk)


@triton.jit
def _fixed_pow2_kernel(p_d, p_s, p_a, n, c, BLOCK: tl.constexpr):
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    msk = o < n
    d = tl.load(p_d + o, mask=msk, other=0.0)
    y = kn.fixed_pow2(d * c)
    tl.store(p_s + o, y.to(tl.int64), mask=msk)
    tl.store(p_a + o, kn.fixed_a_term(y, d), mask=msk)


@triton.jit
def _chunk_kernel(p_l, p_mc, p_sc, p_ac, V, n_chunks, CHUNK: tl.constexpr):
    """One program per (row, chunk): a 1-D [CHUNK] tile."""
    i_r, i_c = tl.program_id(0), tl.program_id(1)
    o_v = i_c * CHUNK + tl.arange(0, CHUNK)
    b_l = tl.load(p_l + i_r.to(tl.int64) * V + o_v, mask=o_v < V, other=float("-inf"))
    m_c, s_c, a_c = kn.chunk_partials(b_l)
    o_p = i_r * n_chunks + i_c
    tl.store(p_mc + o_p, m_c)
    tl.store(p_sc + o_p, s_c)
    tl.store(p_ac + o_p, a_c)


@triton.jit
def _chunk2d_kernel(p_l, p_mc, p_sc, p_ac, V, n_chunks, CHUNK: tl.constexpr, NC: tl.constexpr):
    """One program per row: all its chunks as one [NC, CHUNK] tile."""
    i_r = tl.program_id(0)
    o_c = tl.arange(0, NC)
    o_v = o_c[:, None] * CHUNK + tl.arange(0, CHUNK)[None, :]
    b_l = tl.load(p_l + i_r.to(tl.int64) * V + o_v, mask=o_v < V, other=float("-inf"))
    m_c, s_c, a_c = kn.chunk_partials(b_l)                                 # [NC] each
    m_o = o_c < n_chunks
    tl.store(p_mc + i_r * n_chunks + o_c, m_c, mask=m_o)
    tl.store(p_sc + i_r * n_chunks + o_c, s_c, mask=m_o)
    tl.store(p_ac + i_r * n_chunks + o_c, a_c, mask=m_o)


@triton.jit
def _combine_kernel(p_mc, p_sc, p_ac, p_m, p_z, p_b, n_chunks, BLOCK_C: tl.constexpr):
    i_r = tl.program_id(0)
    o_c = tl.arange(0, BLOCK_C)
    m_o = o_c < n_chunks
    o_p = i_r * n_chunks + o_c
    m_c = tl.load(p_mc + o_p, mask=m_o, other=float("-inf"))
    s_c = tl.load(p_sc + o_p, mask=m_o, other=0)
    a_c = tl.load(p_ac + o_p, mask=m_o, other=0)
    m, z, b = kn.combine_chunks(m_c, s_c, a_c)
    tl.store(p_m + i_r, m)
    tl.store(p_z + i_r, z)
    tl.store(p_b + i_r, b)


@triton.jit
def _draws_kernel(p_seeds, p_pos, p_n, p_d0, p_d1, p_u, step):
    i_r = tl.program_id(0)
    seed = tl.load(p_seeds + i_r)
    pos = tl.load(p_pos + i_r)
    n = tl.load(p_n + i_r)
    tl.store(p_d0 + i_r, kn.draw_below(seed, pos, step, n, 0))
    tl.store(p_d1 + i_r, kn.draw_below(seed, pos, step, n, 1))
    tl.store(p_u + i_r, kn.remask_uniform(seed, pos, step))


@triton.jit
def _weights_kernel(p_mc, p_sc, p_m, p_w, tau, n_chunks, BLOCK_C: tl.constexpr):
    i_r = tl.program_id(0)
    o_c = tl.arange(0, BLOCK_C)
    m_o = o_c < n_chunks
    m_c = tl.load(p_mc + i_r * n_chunks + o_c, mask=m_o, other=float("-inf"))
    s_c = tl.load(p_sc + i_r * n_chunks + o_c, mask=m_o, other=0)
    w = kn.chunk_weights(m_c, s_c, tl.load(p_m + i_r), tau)
    tl.store(p_w + i_r * n_chunks + o_c, w, mask=m_o)


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------

def rand_words(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2**32, shape, generator=g, dtype=torch.int64)


def rand_seeds(n, seed):
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 2**63 - 1, (n,), generator=g, dtype=torch.int64)
    s[:4] = torch.tensor([0, 1, 2**32 - 1, 2**63 - 1])
    return s


def f32_bits(n, seed, lo=0, hi=2**32):
    """fp32 values from random bit patterns (every class: normal, subnormal, inf, NaN, zero)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(lo, hi, (n,), generator=g, dtype=torch.int64).to(torch.int32).view(
        torch.float32)


TINY = 2.0**-149
EXTREMES = [0.0, -0.0, INF, -INF, TINY, -TINY, 2.0**-126, 2.0**-127, 1e-38, 1e-30, 1e-10,
            2.0**-73, 2.0**-72, 2.0**-25, 2.0**-24, 2.0**-23, 1e-7, 0.5, 1.0, -1.0,
            1 - 2.0**-24, 1 + 2.0**-23, -(1 - 2.0**-24), math.sqrt(0.5), math.sqrt(2.0),
            88.0, 88.72, 88.72283172607422, 88.7229, 89.0, 100.0, -87.3, -103.9, -103.97,
            -104.0, -1e4, 1e4, 3.4028234663852886e38, -3.4028234663852886e38, 0.34657359,
            -0.34657359, 0.3465736, 0.6931471805599453, -50.0, 50.0, 36.7, float("nan")]


def assert_same_bits(a, b):
    """Bit equality of fp32 tensors (NaN == NaN of any payload, -0.0 != 0.0)."""
    assert a.shape == b.shape and a.dtype == b.dtype
    a, b = a.cpu(), b.cpu()
    nan = torch.isnan(a)
    assert torch.equal(nan, torch.isnan(b))
    assert torch.equal(a[~nan].view(torch.int32), b[~nan].view(torch.int32))


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------

def test_philox_known_answers_triton():
    from test_numerics import KAT, key_to_seed
    for rounds, ctr, key, expected in KAT:
        seed = torch.tensor([key_to_seed(*key)], device=DEVICE)
        c = torch.tensor(ctr, device=DEVICE).view(4, 1)
        out = tri_philox(seed, c, rounds)
        assert out[:, 0].tolist() == list(expected)


@pytest.mark.parametrize("mode", [0, 1], ids=["ours", "tl.philox"])
def test_philox_equals_torch(mode):
    n = 3000
    seed = rand_seeds(n, 1).to(DEVICE)
    c = rand_words((4, n), 2)
    c[:, 0], c[:, 1] = 0, 2**32 - 1          # all-zero and all-ones counters
    c[0, 2:6] = torch.tensor([0, 1, 126463, 2**31])
    c = c.to(DEVICE)
    out = tri_philox(seed, c, 10, mode)
    ref = torch.stack(nm.philox(seed, c[0], c[1], c[2], c[3]))
    assert torch.equal(out, ref)


def test_philox_equals_randint4x():
    n = 2000
    seed = rand_seeds(n, 3).to(DEVICE)
    c = rand_words((4, n), 4)
    c[2:] = 0                                 # randint4x's counter is (lo, hi, 0, 0)
    c = c.to(DEVICE)
    out = tri_philox(seed, c, 10, 2)
    ref = torch.stack(nm.philox(seed, c[0], c[1], 0, 0))
    assert torch.equal(out, ref)


def test_uniforms_equal_torch():
    n = 4000
    r = rand_words((1, n), 5)
    r[0, 0], r[0, 1] = 0, 2**32 - 1
    r = r.to(DEVICE)
    w24 = torch.full((n,), float("nan"), device=DEVICE)
    _uniform_kernel[(triton.cdiv(n, BLOCK),)](r, w24, n, BLOCK=BLOCK, **kn.LAUNCH_OPTIONS)
    assert_same_bits(w24, nm.uniform24(r[0]))
    assert float(w24.min()) == 2.0**-24 and float(w24.max()) == 1 - 2.0**-24


def _fp_inputs(name):
    ext = torch.tensor(EXTREMES + [-x for x in EXTREMES])
    if name == "exp":
        xs = [f32_bits(3000, 10), torch.empty(3000).uniform_(-110, 95,
              generator=torch.Generator().manual_seed(11)), ext]
    elif name == "log":
        xs = [f32_bits(3000, 12, 0, 0x7F800001), f32_bits(500, 13, 1, 0x00800000),   # >= 0
              1 + torch.empty(1000).uniform_(-1e-3, 1e-3,
                                             generator=torch.Generator().manual_seed(14)), ext]
    return torch.cat(xs).to(DEVICE)


@pytest.mark.parametrize("name", list(FP_FNS))
def test_transcendentals_equal_torch(name):
    x = _fp_inputs(name)
    assert_same_bits(tri_fp(name, x), getattr(nm, name)(x))


def test_fixed_term_ratio_to_f32_equal_torch():
    g = torch.Generator().manual_seed(20)
    n = 3000
    m = torch.randn(n, generator=g) * 10
    l = m - torch.rand(n, generator=g) * 40
    l[:4] = torch.tensor([-INF, -1e30, 0.0, 5.0])
    m[:4] = torch.tensor([0.0, 0.0, 0.0, 5.0])
    z = torch.randint(2**40, 2**57, (n,), generator=g)
    z[:3] = torch.tensor([2**40, 2**57 - 1, 2**53 + 1])
    nn_ = (torch.rand(n, generator=g, dtype=torch.float64) * z.double()).to(torch.int64)
    nn_[:3] = torch.tensor([0, 2**57 - 1, 2**53 + 1])
    l, m, nn_, z = (t.to(DEVICE) for t in (l, m, nn_, z))
    t = torch.full((n,), -1, dtype=torch.int64, device=DEVICE)
    q = torch.full((n,), float("nan"), device=DEVICE)
    f = torch.full((n,), float("nan"), device=DEVICE)
    _fixed_kernel[(triton.cdiv(n, BLOCK),)](l, m, nn_, z, t, q, f, n, BLOCK=BLOCK,
                                            **kn.LAUNCH_OPTIONS)
    assert torch.equal(t, nm.fixed_term(l, m))
    assert_same_bits(q, nm.fixed_ratio(nn_, z))
    assert_same_bits(f, nm.to_f32(z))


@pytest.mark.parametrize("T", [1.0, 0.7, 3.0])
def test_fixed_pow2_equals_torch(T):
    """The per-logit fixed-point terms (§5; tempered, §4): trunc(fixed_pow2(d * c)) and the A_c
    term, over random fp32 d <= 0 of every class and the edges of the clamps and of the terms."""
    _, c = nm.tempered_scales(T)
    g = torch.Generator().manual_seed(23)
    bits = torch.randint(0x80000000, 0xC2D00001, (20000,), generator=g, dtype=torch.int64)
    d = bits.to(torch.int32).view(torch.float32)
    edges = [0.0, -0.0, -INF, -TINY, -2.0**-126, -1e-7, -0.34657359, -0.3465736, -0.6931471805599453,
             -1.0, -20.0, -27.7, -27.73, -27.8, -30.0, -32.6, -50.0, -87.3, -87.34, -103.9, -103.97,
             -103.98, -104.0, -104.00001, -1e4, -3.4028234663852886e38]
    d = torch.cat([torch.tensor(edges, dtype=torch.float32), d, -torch.rand(5000, generator=g) * 30])
    n = d.numel()
    s = torch.full((n,), -1, dtype=torch.int64, device=DEVICE)
    a = torch.full((n,), -1, dtype=torch.int64, device=DEVICE)
    _fixed_pow2_kernel[(triton.cdiv(n, BLOCK),)](d.to(DEVICE), s, a, n, c, BLOCK=BLOCK, **kn.LAUNCH_OPTIONS)
    e = nm.fixed_pow2(d * c)
    assert torch.equal(s.cpu(), e.to(torch.int64))
    assert torch.equal(a.cpu(), (e * d.clamp_min(nm.EXP_LO).neg()).to(torch.int64))
    assert int(s[0]) == nm.FIXED and int(s[2]) == 0 and int(a[2]) == 0     # d = 0: 2**40; -inf: 0


def _chunk_logits(rows, v, seed):
    g = torch.Generator().manual_seed(seed)
    l = torch.randn(rows, v, generator=g) * 6
    l[0, ::3] = -INF                                  # sparse row
    if rows > 2:
        l[2, : min(v, 2 * nm.CHUNK)] = -INF           # whole chunks of -inf
        l[2, -1] = 1e-30
    if rows > 3:
        l[3] = torch.where(torch.rand(v, generator=g) < 0.5, 80.0, -80.0)   # ties, big spread
    return l.to(DEVICE)


@pytest.mark.parametrize("v", [1, 7, 2049, 3 * 2048 + 5])
def test_chunk_partials_and_combine_equal_torch(v):
    rows = 4
    l = _chunk_logits(rows, v, v)
    n_c = triton.cdiv(v, nm.CHUNK)
    ref = nm.chunk_sums(l)
    outs = []
    for kernel, grid, extra in ((_chunk_kernel, (rows, n_c), {}),
                                (_chunk2d_kernel, (rows,), {"NC": triton.next_power_of_2(n_c)})):
        m_c = torch.full((rows, n_c), float("nan"), device=DEVICE)
        s_c = torch.full((rows, n_c), -1, dtype=torch.int64, device=DEVICE)
        a_c = torch.full((rows, n_c), -1, dtype=torch.int64, device=DEVICE)
        kernel[grid](l, m_c, s_c, a_c, v, n_c, CHUNK=nm.CHUNK, **extra, **kn.LAUNCH_OPTIONS)
        assert_same_bits(m_c, ref[0])
        assert torch.equal(s_c, ref[1]) and torch.equal(a_c, ref[2])
        outs.append((m_c, s_c, a_c))
    m = torch.full((rows,), float("nan"), device=DEVICE)
    z = torch.full((rows,), -1, dtype=torch.int64, device=DEVICE)
    b = torch.full((rows,), -1, dtype=torch.int64, device=DEVICE)
    _combine_kernel[(rows,)](*ref, m, z, b, n_c, BLOCK_C=max(2, triton.next_power_of_2(n_c)),
                             **kn.LAUNCH_OPTIONS)
    m_r, z_r, b_r = nm.combine_chunks(*ref)
    assert_same_bits(m, m_r)
    assert torch.equal(z, z_r) and torch.equal(b, b_r)


def test_draws_equal_torch():
    """draw_below (both stages, with the rejection path: n just above 2**62 rejects about half the
    attempts) and the random-remasking uniform."""
    R = 64
    seeds = rand_seeds(R, 21).to(DEVICE)
    pos = torch.arange(R, device=DEVICE) * 37
    g = torch.Generator().manual_seed(22)
    n = torch.cat([torch.tensor([1, 2, 3, 2**63 - 1]), torch.randint(1, 2**20, (20,), generator=g),
                   torch.randint(2**40, 2**57, (20,), generator=g),
                   torch.randint(2**62 + 1, 2**62 + 2**40, (20,), generator=g)]).to(DEVICE)
    d0 = torch.full((R,), -7, dtype=torch.int64, device=DEVICE)
    d1 = torch.full((R,), -7, dtype=torch.int64, device=DEVICE)
    u = torch.full((R,), float("nan"), device=DEVICE)
    _draws_kernel[(R,)](seeds, pos, n, d0, d1, u, 12, **kn.LAUNCH_OPTIONS)
    assert torch.equal(d0, nm.draw_below(seeds, pos, 12, n, 0))
    assert torch.equal(d1, nm.draw_below(seeds, pos, 12, n, 1))
    assert_same_bits(u, nm.remask_uniform(seeds, pos, 12))


@pytest.mark.parametrize("tau", [1.0, 2.0, nm.round_f32(1 / 0.7)])
def test_chunk_weights_equal_torch(tau):
    g = torch.Generator().manual_seed(23)
    rows, n_c = 6, 5
    m_c = torch.randn(rows, n_c, generator=g) * 8
    m_c[1, 2] = float("-inf")                                        # a dead chunk
    s_c = torch.randint(2**40, 2**51, (rows, n_c), generator=g)
    s_c[1, 2] = 0
    m = m_c.amax(-1)
    w = torch.full((rows, n_c), -1, dtype=torch.int64, device=DEVICE)
    _weights_kernel[(rows,)](m_c.to(DEVICE), s_c.to(DEVICE), m.to(DEVICE), w, tau, n_c, BLOCK_C=8,
                             **kn.LAUNCH_OPTIONS)
    assert torch.equal(w.cpu(), nm.chunk_weights(m_c, s_c, m, tau))


# ---------------------------------------------------------------------------------------------
# The compiled code: no contracted or approximate fp instruction (runs without a GPU)
# ---------------------------------------------------------------------------------------------

_PTX_SCRIPT = r"""
import json, re, sys
import triton
from triton.backends.compiler import GPUTarget
sys.path.insert(0, sys.argv[1])
import test_numerics_triton as t

BAD = [r"\bfma\.[\w.]*f(32|64)\b", r"\bmad\.[\w.]*f(32|64)\b", r"ex2\.approx", r"lg2\.approx",
       r"div\.full", r"div\.approx", r"rcp\.approx", r"\.ftz\."]
cases = {
    "fp": (t._fp_kernel, {"p_x": "*fp32", "p_y": "*fp32", "n": "i32"}, {"BLOCK": 256}),
    "chunk": (t._chunk2d_kernel, {"p_l": "*fp32", "p_mc": "*fp32", "p_sc": "*i64", "p_ac": "*i64",
                                  "V": "i32", "n_chunks": "i32"}, {"CHUNK": 2048, "NC": 2}),
    "combine": (t._combine_kernel, {"p_mc": "*fp32", "p_sc": "*i64", "p_ac": "*i64", "p_m": "*fp32",
                                    "p_z": "*i64", "p_b": "*i64", "n_chunks": "i32"}, {"BLOCK_C": 64}),
    "pow2": (t._fixed_pow2_kernel, {"p_d": "*fp32", "p_s": "*i64", "p_a": "*i64", "n": "i32", "c": "fp32"},
             {"BLOCK": 256}),
    "fixed": (t._fixed_kernel, {"p_l": "*fp32", "p_m": "*fp32", "p_n": "*i64", "p_z": "*i64",
                                "p_t": "*i64", "p_q": "*fp32", "p_f": "*fp32", "n": "i32"},
              {"BLOCK": 256}),
    "draws": (t._draws_kernel, {"p_seeds": "*i64", "p_pos": "*i64", "p_n": "*i64", "p_d0": "*i64",
                                "p_d1": "*i64", "p_u": "*fp32", "step": "i32"}, {}),
    "weights": (t._weights_kernel, {"p_mc": "*fp32", "p_sc": "*i64", "p_m": "*fp32", "p_w": "*i64",
                                    "tau": "fp32", "n_chunks": "i32"}, {"BLOCK_C": 8}),
}
out = {}
for arch in (80, 90):
    for name, (fn, sig, const) in cases.items():
        for fn_id in ((0, 1) if name == "fp" else (None,)):
            c = dict(const, **({"FN": fn_id} if fn_id is not None else {}))
            src = triton.compiler.ASTSource(fn=fn, signature={**sig, **{k: "constexpr" for k in c}},
                                            constexprs=c)
            ptx = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                 options={"enable_fp_fusion": False}).asm["ptx"]
            out[f"sm{arch}-{name}-{fn_id}"] = [p for p in BAD if re.search(p, ptx)]
print(json.dumps(out))
"""


def test_ptx_has_no_contracted_or_approximate_instructions():
    """Compile the twins (inside the test kernels) for sm_80 and sm_90 and read the PTX."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", _PTX_SCRIPT, os.path.dirname(__file__)],
                          env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"ahead-of-time compilation unavailable here: {proc.stderr[-500:]}")
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found and all(v == [] for v in found.values()), found
