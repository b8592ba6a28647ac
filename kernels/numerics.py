"""The numerics contract (docs/numerics.md) as Triton device functions.

Each function is the twin of the one of the same name in `fastremask/sampler/numerics.py`: the same
operations in the same order, so the two return the same bits (tests/test_numerics_triton.py).
What makes that hold on a GPU:

* kernels that call these are launched with `LAUNCH_OPTIONS` (`enable_fp_fusion=False`): a
  contracted `a * b + c` (fma.rn.f32) rounds once where PyTorch rounds twice;
* division is `tl.div_rn`: fp32 `/` may lower to `div.full.f32`, which is not IEEE;
* no `tl.exp`, `tl.log` or libdevice: they lower to `ex2.approx` / `lg2.approx`;
* plain fp32 ops keep subnormals; `tl.floor` would not (it lowers to `cvt.rmi.ftz`), so
  `exp` rounds with an add/sub pair instead.

32-bit words are `tl.uint32` here (int64 in `[0, 2**32)` on the PyTorch side).
"""
import os

import triton
import triton.language as tl

from fastremask.sampler import numerics as _nm

LAUNCH_OPTIONS = {"enable_fp_fusion": False}   # pass as `kernel[grid](..., **LAUNCH_OPTIONS)`


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (TRITON_INTERPRET, read by the launchers)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

# The constants are the PyTorch side's, as constexprs (every float is an exact fp32 value).
_ROUND_A = tl.constexpr(_nm.PHILOX_ROUND_A)
_ROUND_B = tl.constexpr(_nm.PHILOX_ROUND_B)
_KEY_A = tl.constexpr(_nm.PHILOX_KEY_A)
_KEY_B = tl.constexpr(_nm.PHILOX_KEY_B)
_LOG2E = tl.constexpr(_nm.LOG2E)
_ROUNDER = tl.constexpr(_nm.ROUNDER)
_ROUNDER_BITS = tl.constexpr(0x4B400000)             # bits of ROUNDER = 1.5 * 2**23
_FIXED_BIAS = tl.constexpr(_nm.FIXED_BIAS)            # bits(t) + this = exponent field of 2**(k + 40)
_POW2_LO = tl.constexpr(_nm.POW2_LO)
_P1, _P2, _P3, _P4, _P5 = (tl.constexpr(c) for c in _nm.POW2_C)
_LN2_HI = tl.constexpr(_nm.LN2_HI)
_LN2_LO = tl.constexpr(_nm.LN2_LO)
_EXP_LO = tl.constexpr(_nm.EXP_LO)
_EXP_HI = tl.constexpr(_nm.EXP_HI)
_E2, _E3, _E4, _E5, _E6, _E7 = (tl.constexpr(c) for c in _nm.EXP_C)
_L3, _L5, _L7, _L9 = (tl.constexpr(c) for c in _nm.LOG_C)
_SQRT_HALF_BITS = tl.constexpr(_nm.SQRT_HALF_BITS)
_MIN_NORMAL = tl.constexpr(1.1754943508222875e-38)   # 2**-126
_TWO_P23 = tl.constexpr(_nm.TWO_P23)
_TWO_M24 = tl.constexpr(_nm.TWO_M24)
_STREAM_SAMPLE = tl.constexpr(_nm.STREAM_SAMPLE)
_MAX63 = tl.constexpr(_nm.MAX63)
_LIMB = tl.constexpr(_nm._LIMB)
_LIMB_MASK = tl.constexpr(_nm._LIMB_MASK)
_STREAM_REMASK = tl.constexpr(_nm.STREAM_REMASK)


# ---------------------------------------------------------------------------------------------
# 1. Philox4x32-10
# ---------------------------------------------------------------------------------------------

@triton.jit
def philox(seed, c0, c1, c2, c3, ROUNDS: tl.constexpr = 10):
    """Philox4x32 on counter words (uint32 / int32 / int64 tensors or ints in [0, 2**32)) and a
    64-bit `seed`; returns four uint32 words of the broadcast shape."""
    # `x + zeros` makes a tensor of an int or a tensor alike: tl.to_tensor is missing in triton
    # 3.6, and tl.core.to_tensor is refused by 3.9's interpreter outside the patched module.
    seed = (tl.zeros((), tl.int64) + seed).to(tl.uint64)   # an int64 keys as its bits, as tl.philox
    k0 = (seed & 0xFFFFFFFF).to(tl.uint32)
    k1 = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
    c0 = (tl.zeros((), tl.uint32) + c0).to(tl.uint32)
    c1 = (tl.zeros((), tl.uint32) + c1).to(tl.uint32)
    c2 = (tl.zeros((), tl.uint32) + c2).to(tl.uint32)
    c3 = (tl.zeros((), tl.uint32) + c3).to(tl.uint32)
    for _ in tl.static_range(ROUNDS):
        _c0, _c2 = c0, c2
        c0 = tl.umulhi(_c2, _ROUND_B) ^ c1 ^ k0
        c2 = tl.umulhi(_c0, _ROUND_A) ^ c3 ^ k1
        c1 = tl.mul(_c2, _ROUND_B, sanitize_overflow=False)     # low word: wraps mod 2**32
        c3 = tl.mul(_c0, _ROUND_A, sanitize_overflow=False)
        k0 = tl.add(k0, _KEY_A, sanitize_overflow=False)        # a bump after the last round
        k1 = tl.add(k1, _KEY_B, sanitize_overflow=False)        # is unused: Random123's schedule
    return c0, c1, c2, c3


# ---------------------------------------------------------------------------------------------
# 2. Uniforms from integer bits
# ---------------------------------------------------------------------------------------------

@triton.jit
def uniform24(r0):
    """fp32 uniform (2k + 1) * 2**-24 in (0, 1), exact, from the top 23 bits of a word."""
    return ((r0 >> 9) * 2 + 1).to(tl.float32) * _TWO_M24


# ---------------------------------------------------------------------------------------------
# 3. Own transcendentals
# ---------------------------------------------------------------------------------------------

@triton.jit
def neg(x):
    """IEEE negation of fp32 `x` (a sign flip: -(+0.0) == -0.0), as torch's unary minus.
    Not `-x`: triton 3.6 lowers unary minus on floats to `0 - x`, which gives +0.0 for +0.0."""
    return (x.to(tl.int32, bitcast=True) ^ -2147483648).to(tl.float32, bitcast=True)


@triton.jit
def _pow2(k):
    """2**k as fp32 from exponent bits, for int32 `k` in [-126, 127]."""
    return ((k + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def exp(x):
    """exp of fp32 `x`: Cody-Waite reduction, degree-7 Taylor polynomial, scaling by bits."""
    # Keeps k in range (-inf -> 0, inf -> inf); NaN stays NaN, as torch.clamp.
    x = tl.minimum(tl.maximum(x, _EXP_LO, propagate_nan=tl.PropagateNan.ALL), _EXP_HI,
                   propagate_nan=tl.PropagateNan.ALL)
    t = x * _LOG2E + _ROUNDER                        # in [2**23, 2**24): an integer (ulp 1)
    k = t - _ROUNDER                                 # round to nearest integer by adds (no floor)
    r = (x - k * _LN2_HI) - k * _LN2_LO              # k * LN2_HI exact, so is the subtraction
    q = ((((r * _E7 + _E6) * r + _E5) * r + _E4) * r + _E3) * r + _E2
    p = ((q * r) * r + r) + 1.0                      # 1 + (r + r*r*q): the big term added last
    # int(k) from the bits of t (one integer subtract) instead of a float -> int conversion
    # (cvt is a quarter-rate instruction); same integer, so the same bits (NaN: p is NaN anyway).
    ki = t.to(tl.int32, bitcast=True) - _ROUNDER_BITS
    k1 = ki >> 1
    return (p * _pow2(k1)) * _pow2(ki - k1)          # exact, then one rounding (gradual underflow)


@triton.jit
def log(x):
    """Natural log of fp32 `x >= 0`: log(0) = -inf, log(inf) = inf, NaN below 0 and for NaN."""
    sub = x < _MIN_NORMAL                            # subnormal: scale by 2**23 to normalise it
    xs = tl.where(sub, x * _TWO_P23, x)
    bits = xs.to(tl.int32, bitcast=True) - _SQRT_HALF_BITS
    e = bits >> 23                                   # mantissa lands in [sqrt(1/2), sqrt(2))
    m = ((bits & 0x7FFFFF) + _SQRT_HALF_BITS).to(tl.float32, bitcast=True)
    e = (e - sub.to(tl.int32) * 23).to(tl.float32)
    f = m - 1.0                                      # exact (Sterbenz)
    s = tl.div_rn(f, f + 2.0)                        # div_rn: fp32 '/' may be div.full, not IEEE
    z = s * s
    rz = (((z * _L9 + _L7) * z + _L5) * z + _L3) * z
    logm = (s + s) + rz * s                          # 2s + s*R(s*s)
    y = e * _LN2_HI + (logm + e * _LN2_LO)           # e * LN2_HI exact; small terms first
    y = tl.where(x == 0, float("-inf"), y)
    y = tl.where(x == float("inf"), float("inf"), y)
    return tl.where(x >= 0, y, float("nan"))          # x < 0 and NaN give NaN


# ---------------------------------------------------------------------------------------------
# 5-6. Fixed-point sums and confidences
# ---------------------------------------------------------------------------------------------

@triton.jit
def to_f32(n):
    """int64 -> fp64 -> fp32, each rounding to nearest (as the PyTorch side)."""
    return n.to(tl.float64).to(tl.float32)


@triton.jit
def fixed_pow2(y):
    """`2**y * 2**40` (fp32) for fp32 `y <= 0`: the per-logit fixed-point value of §5, truncated
    by the callers; the PyTorch twin's operations in its order. A NaN `y` (an invalid chunk)
    gives an unspecified value."""
    y = tl.maximum(y, _POW2_LO)
    t = y + _ROUNDER                                 # ROUNDER + k, exactly
    k = t - _ROUNDER
    f = y - k                                        # exact, |f| <= 1/2
    p = ((((f * _P5 + _P4) * f + _P3) * f + _P2) * f + _P1) * f + 1.0
    scale = ((t.to(tl.int32, bitcast=True) + _FIXED_BIAS) << 23).to(tl.float32, bitcast=True)
    return p * scale                                 # 2**(k + 40) normal: one rounding


@triton.jit
def fixed_term(l, m):
    """t(l) = trunc(fixed_pow2((l - m) * LOG2E)) as int64."""
    return fixed_pow2((l - m) * _LOG2E).to(tl.int64)


@triton.jit
def fixed_a_term(e, d):
    """The term of `A_c` (int64) of an entry with fixed-point value `e` and `d = l - m_c`."""
    return (e * neg(tl.maximum(d, _EXP_LO))).to(tl.int64)


@triton.jit
def fixed_ratio(n, z):
    """q(n) = fp32(n) / fp32(Z), correctly rounded."""
    return tl.div_rn(to_f32(n), to_f32(z))


@triton.jit
def chunk_partials(l):
    """m_c fp32, S_c int64, A_c int64 of one chunk: `l` is fp32 [..., CHUNK] (-inf past the
    vocab); reduces the last axis. An all -inf chunk gives (-inf, 0, 0)."""
    m_c = tl.max(l, axis=-1, keep_dims=True)
    d = l - tl.where(m_c == float("-inf"), 0.0, m_c)  # <= 0; no -inf - -inf
    e = fixed_pow2(d * _LOG2E)
    s_c = tl.sum(e.to(tl.int64), axis=-1)
    a_c = tl.sum(fixed_a_term(e, d), axis=-1)
    return tl.max(l, axis=-1), s_c, a_c


@triton.jit
def combine_terms(m_c, s_c, a_c, m):
    """Per-chunk terms of Z and B (int64) given the row max `m`; sum them in any order."""
    live = m_c != float("-inf")                      # dead chunks add exactly 0
    f = exp(tl.where(live, m_c - m, float("-inf"))).to(tl.float64)
    d = tl.where(live, m.to(tl.float64) - m_c.to(tl.float64), 0.0)
    s64 = s_c.to(tl.float64)                         # < 2**51: exact
    z_c = (s64 * f).to(tl.int64)
    b_c = ((a_c.to(tl.float64) + d * s64) * f).to(tl.int64)
    return z_c, b_c


@triton.jit
def chunk_weights(m_c, s_c, m, tau):
    """W_c (int64) of each chunk in its row from its tempered weight sum `s_c` (numerics.md §4)."""
    live = m_c != float("-inf")
    f = exp(tl.where(live, m_c - m, float("-inf")) * tau).to(tl.float64)
    return (s_c.to(tl.float64) * f).to(tl.int64)


@triton.jit
def combine_kept_terms(m_c, s_c, a_c, m, tau):
    """Per-chunk terms of `Z_T` and `B_T` (int64) of the tempered, truncated distribution
    (numerics.md §6a) from the kept sums `S'_c`, `A'_c` given the row max `m`: `W_c` exactly as
    `chunk_weights`, `trunc((A'_c + ((m - m_c) * tau) * S'_c) * f_c)` in fp64."""
    live = m_c != float("-inf")                      # dead chunks add exactly 0
    f = exp(tl.where(live, m_c - m, float("-inf")) * tau).to(tl.float64)
    d = tl.where(live, m.to(tl.float64) - m_c.to(tl.float64), 0.0) * tau   # tau exact in fp64
    s64 = s_c.to(tl.float64)                         # < 2**51: exact
    return (s64 * f).to(tl.int64), ((a_c.to(tl.float64) + d * s64) * f).to(tl.int64)


@triton.jit
def combine_chunks(m_c, s_c, a_c):
    """(m, Z, B) of a row from its chunk partials along the last axis (pad with -inf, 0, 0)."""
    m = tl.max(m_c, axis=-1, keep_dims=True)
    z_c, b_c = combine_terms(m_c, s_c, a_c, m)
    return tl.max(m_c, axis=-1), tl.sum(z_c, axis=-1), tl.sum(b_c, axis=-1)


# ---------------------------------------------------------------------------------------------
# Draws used by the samplers
# ---------------------------------------------------------------------------------------------

@triton.jit
def _mul63(a, b):
    """(a * b) >> 63 and (a * b) mod 2**63 of int64 a, b in [0, 2**63), in 21-bit limbs."""
    a0 = a & _LIMB_MASK
    a1 = (a >> _LIMB) & _LIMB_MASK
    a2 = a >> (2 * _LIMB)
    b0 = b & _LIMB_MASK
    b1 = (b >> _LIMB) & _LIMB_MASK
    b2 = b >> (2 * _LIMB)
    t = a0 * b0
    d0 = t & _LIMB_MASK
    t = a0 * b1 + a1 * b0 + (t >> _LIMB)
    d1 = t & _LIMB_MASK
    t = a0 * b2 + a1 * b1 + a2 * b0 + (t >> _LIMB)
    d2 = t & _LIMB_MASK
    t = a1 * b2 + a2 * b1 + (t >> _LIMB)
    d3 = t & _LIMB_MASK
    t = a2 * b2 + (t >> _LIMB)
    d4 = t & _LIMB_MASK
    return d3 | (d4 << _LIMB) | ((t >> _LIMB) << (2 * _LIMB)), d0 | (d1 << _LIMB) | (d2 << (2 * _LIMB))


@triton.jit
def draw_below(seed, pos, step, n, STAGE: tl.constexpr):
    """An exactly uniform int64 in [0, n) for int64 `n` in [1, 2**63) (the PyTorch twin's
    multiply-and-reject): attempt j draws philox(seed, j, pos, step, STREAM_SAMPLE); STAGE 0
    reads words (r0, r1), STAGE 1 (r2, r3), as R = (hi << 31) | (lo >> 1)."""
    low_min = (_MAX63 % n + 1) % n                  # 2**63 mod n
    u = tl.zeros((), tl.int64) - 1
    j = 0
    while u < 0:
        r0, r1, r2, r3 = philox(seed, j, pos, step, _STREAM_SAMPLE)
        if STAGE == 0:
            big = (r0.to(tl.int64) << 31) | (r1.to(tl.int64) >> 1)
        else:
            big = (r2.to(tl.int64) << 31) | (r3.to(tl.int64) >> 1)
        hi, lo = _mul63(big, n)
        if lo >= low_min:
            u = hi
        j += 1
    return u


@triton.jit
def remask_uniform(seed, pos, step):
    """The `random` remasking confidence of a position."""
    r0, r1, r2, r3 = philox(seed, 0, pos, step, _STREAM_REMASK)
    return uniform24(r0)
