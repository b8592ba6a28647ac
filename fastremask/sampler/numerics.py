"""The numerics contract (docs/numerics.md) in PyTorch integer and fp32 ops.

Every function here has a Triton twin of the same name in `kernels/numerics.py` that performs
the same operations in the same order, so both sides return the same bits. The rules that make
that possible: integers are exact; fp32 `+ - * /` are IEEE with one rounding each (PyTorch's
fp32 `/` is correctly rounded, the twin uses `tl.div_rn`); `floor` and bit casts are exact; no
library transcendental (`torch.exp`, `torch.log`) is ever used.

Integers live in int64 tensors. A 32-bit word is an int64 in `[0, 2**32)`, so it is never
negative and `>>` is a logical shift; products of two words are split so no int64 overflows.
"""
from __future__ import annotations

import math
import struct

import torch

__all__ = [
    "CHUNK", "FIXED_BITS", "FIXED", "STREAM_SAMPLE", "STREAM_REMASK",
    "philox", "uniform24", "exp", "log",
    "chunk_sums", "combine_chunks", "fixed_term", "fixed_ratio", "to_f32", "round_f32",
    "tempered_scales", "fixed_pow2", "token_weights", "chunk_weights", "draw_below", "pick", "draw_index",
    "remask_uniform", "TOP_P_BITS", "top_p_bound", "min_p_bound", "mass_bound", "kept_counts",
    "truncate_sorted", "STREAM_POSITION", "gumbel_key", "kept_sums", "combine_kept",
    "STREAM_TRANSFER", "transfer_uniform",
]

CHUNK = 2048          # vocab entries per fixed-point chunk (numerics.md §5), part of the contract
FIXED_BITS = 40       # fixed-point scale of the softmax sums
FIXED = 1 << FIXED_BITS
STREAM_SAMPLE = 0     # counter word c3: which stream a number belongs to
STREAM_REMASK = 1
STREAM_POSITION = 2   # Dream's alg_temp position choice (gumbel_key)
STREAM_TRANSFER = 3   # Dream's alg="origin" transfer draw (transfer_uniform)
MAX63 = (1 << 63) - 1   # draws are 63-bit integers in [0, MAX63]

MASK32 = 0xFFFFFFFF
PHILOX_ROUND_A = 0xD2511F53   # Random123 / tl.philox multipliers
PHILOX_ROUND_B = 0xCD9E8D57
PHILOX_KEY_A = 0x9E3779B9     # Weyl key increments
PHILOX_KEY_B = 0xBB67AE85


def round_f32(x: float) -> float:
    """`x` rounded to the nearest fp32, as a Python float (so both sides use the same constant)."""
    return struct.unpack("f", struct.pack("f", x))[0]


# Constants of exp/log; every one is an exact fp32 value.
LOG2E = round_f32(1.4426950408889634)
LN2_HI = 0.693145751953125            # 0x3F317200: 15 significant bits, so k * LN2_HI is exact
LN2_LO = round_f32(0.6931471805599453 - 0.693145751953125)
ROUNDER = 12582912.0                  # 1.5 * 2**23: t + ROUNDER - ROUNDER = rint(t), |t| < 2**22
EXP_LO, EXP_HI = -104.0, 89.0         # exp clamps here: below rounds to 0, above to inf
EXP_C = tuple(round_f32(1.0 / f) for f in (2, 6, 24, 120, 720, 5040))   # Taylor 1/n!, n = 2..7
LOG_C = tuple(round_f32(2.0 / n) for n in (3, 5, 7, 9))                 # atanh series 2/(2j+1)
# 2**f on [-1/2, 1/2] for the per-logit fixed-point terms (§5): 1 + f*(c1 + f*(c2 + ...)),
# coefficients of a near-minimax fit of the relative error (Lawson's iteration on 4001 Chebyshev
# points, fitted for this project), rounded to fp32; evaluated in fp32, at most 1.9e-7 relative.
POW2_C = (0.6931470036506653, 0.24022242426872253, 0.05550733581185341,
          0.009671512991189957, 0.0013264723820611835)
POW2_LO = -150.0                      # fixed_pow2 clamps y here: 2**(k + 40) stays a normal fp32
FIXED_BIAS = 127 + 40 - 0x4B400000    # bits(ROUNDER + k) + this = exponent field of 2**(k + 40)
SQRT_HALF_BITS = 0x3F3504F3           # fp32 bits of sqrt(1/2)
TWO_P23 = 8388608.0
TWO_M24 = 2.0 ** -24


# ---------------------------------------------------------------------------------------------
# 1. Philox4x32-10
# ---------------------------------------------------------------------------------------------

def _mulhilo(m: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit words of the 64-bit product of the constant word `m` and words `x`."""
    # Split m into 16-bit halves: each partial product is < 2**48, so int64 never overflows.
    p_lo = x * (m & 0xFFFF)                         # x * m_lo                < 2**48
    p_hi = x * (m >> 16)                            # x * m_hi                < 2**48
    lo = (p_hi & 0xFFFF).bitwise_left_shift_(16).add_(p_lo).bitwise_and_(MASK32)
    hi = p_hi.add_(p_lo.bitwise_right_shift_(16)).bitwise_right_shift_(16)   # (x*m >> 16) >> 16
    return hi, lo


def _as_i64(x, device) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.int64, device=device)


def _xor3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """a ^ b ^ c, in place on a temporary where the shapes allow it."""
    out = a ^ b
    if out.shape == torch.broadcast_shapes(out.shape, c.shape):
        return out.bitwise_xor_(c)
    return out ^ c


def philox(seed, c0, c1, c2, c3, rounds: int = 10):
    """Philox4x32 (Random123; `tl.philox`'s constants) on 32-bit counter words.

    Parameters
    ----------
    seed : int64 tensor (or int), values in [0, 2**63); key = (low word, high word)
        (a negative value keys as its two's-complement bits, as in `tl.philox`)
    c0, c1, c2, c3 : int64 tensors (or ints) in [0, 2**32), broadcastable with `seed`
    rounds : 10 for the contract (other values only for known-answer tests)

    Returns
    -------
    r0, r1, r2, r3 : int64 tensors in [0, 2**32), of the broadcast shape
    """
    device = seed.device if torch.is_tensor(seed) else None
    seed = _as_i64(seed, device)
    k0, k1 = seed & MASK32, (seed >> 32) & MASK32   # a negative int64 keys as its uint64 bits
    c0, c1, c2, c3 = (_as_i64(c, device) for c in (c0, c1, c2, c3))
    for i in range(rounds):
        if i:  # the key is bumped before every round but the first (Random123's schedule)
            k0 = (k0 + PHILOX_KEY_A) & MASK32
            k1 = (k1 + PHILOX_KEY_B) & MASK32
        hi_b, lo_b = _mulhilo(PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mulhilo(PHILOX_ROUND_A, c0)
        c0 = _xor3(hi_b, c1, k0)
        c2 = _xor3(hi_a, c3, k1)
        c1, c3 = lo_b, lo_a
    return c0, c1, c2, c3


# ---------------------------------------------------------------------------------------------
# 2. Uniforms from integer bits
# ---------------------------------------------------------------------------------------------

def uniform24(r0: torch.Tensor) -> torch.Tensor:
    """fp32 uniform (2k + 1) * 2**-24 in (0, 1), exact, from the top 23 bits of a word."""
    return ((r0 >> 9) * 2 + 1).to(torch.float32).mul_(TWO_M24)   # 2k + 1 < 2**24: exact


# ---------------------------------------------------------------------------------------------
# 3. Own transcendentals
# ---------------------------------------------------------------------------------------------

def _pow2(k: torch.Tensor) -> torch.Tensor:
    """2**k as fp32 from exponent bits, for int32 `k` in [-126, 127]."""
    return ((k + 127) << 23).view(torch.float32)


def exp(x: torch.Tensor) -> torch.Tensor:
    """exp of fp32 `x`: Cody-Waite reduction, degree-7 Taylor polynomial, scaling by bits."""
    x = x.clamp(EXP_LO, EXP_HI)                  # keeps k in range: -inf -> 0, inf -> inf; NaN stays
    k = (x * LOG2E).add_(ROUNDER).sub_(ROUNDER)  # nearest integer (ties to even): exact adds
    r = (x - k * LN2_HI).sub_(k * LN2_LO)        # k * LN2_HI is exact, so is the first subtraction
    c2, c3, c4, c5, c6, c7 = EXP_C
    q = (r * c7).add_(c6).mul_(r).add_(c5).mul_(r).add_(c4).mul_(r).add_(c3).mul_(r).add_(c2)
    p = q.mul_(r).mul_(r).add_(r).add_(1.0)      # 1 + (r + r*r*q): the big term added last
    ki = k.to(torch.int32)
    k1 = ki >> 1
    # Two factors, each a normal fp32: the first product is exact, the second rounds once
    # (gradual underflow to subnormals and overflow to inf happen there, as IEEE does).
    return p.mul_(_pow2(k1)).mul_(_pow2(ki - k1))


def log(x: torch.Tensor) -> torch.Tensor:
    """Natural log of fp32 `x >= 0`: log(0) = -inf, log(inf) = inf, NaN below 0 and for NaN."""
    sub = x < 1.1754943508222875e-38             # subnormal: scale by 2**23 to normalise it
    xs = torch.where(sub, x * TWO_P23, x)
    bits = xs.view(torch.int32) - SQRT_HALF_BITS  # exponent of x / sqrt(1/2) ...
    e = bits >> 23                                # ... so the mantissa lands in [sqrt(1/2), sqrt(2))
    m = ((bits & 0x7FFFFF) + SQRT_HALF_BITS).view(torch.float32)
    e = e.sub_(sub.to(torch.int32) * 23).to(torch.float32)
    f = m - 1.0                                   # exact (Sterbenz)
    s = f / (f + 2.0)                             # IEEE division (div_rn on the twin)
    z = s * s
    c3, c5, c7, c9 = LOG_C
    rz = (z * c9).add_(c7).mul_(z).add_(c5).mul_(z).add_(c3).mul_(z)
    logm = (s + s).add_(rz.mul_(s))               # log(m) = 2s + s*R(s*s), R(z) = 2z/3 + 2z^2/5 + ...
    y = (e * LN2_HI).add_(logm.add_(e * LN2_LO))  # e * LN2_HI is exact; small terms first
    y = torch.where(x == 0, float("-inf"), y)
    y = torch.where(x == float("inf"), float("inf"), y)
    return torch.where(x >= 0, y, float("nan"))  # x < 0 and NaN give NaN


# ---------------------------------------------------------------------------------------------
# 5. Exact softmax sums over fixed chunks
# ---------------------------------------------------------------------------------------------

def to_f32(n: torch.Tensor) -> torch.Tensor:
    """int64 -> fp32 via fp64 (two roundings), spelled out because direct paths differ by library."""
    return n.to(torch.float64).to(torch.float32)


def _chunked(l: torch.Tensor):
    """fp32 `l` [..., V] as chunks [..., n_c, CHUNK] (-inf past the vocab), their max `m_c`
    [..., n_c] and `d = l - m_c` (an all -inf chunk subtracts 0: no -inf - -inf)."""
    v = l.shape[-1]
    n_c = max(1, -(-v // CHUNK))
    if n_c * CHUNK != v:
        l = torch.nn.functional.pad(l, (0, n_c * CHUNK - v), value=float("-inf"))
    l = l.reshape(*l.shape[:-1], n_c, CHUNK)
    m_c = l.amax(dim=-1)
    m_safe = torch.where(m_c == float("-inf"), 0.0, m_c).unsqueeze(-1)
    return m_c, l - m_safe                                               # d <= 0, -inf beyond


def fixed_pow2(y: torch.Tensor) -> torch.Tensor:
    """`2**y * 2**40` as fp32 for fp32 `y <= 0` (NaN stays NaN): the per-logit fixed-point value
    of §5, truncated by the callers. `y` clamped to `[-150, 0]`; `k` the nearest integer by two
    rounded adds; `f = y - k` (exact, `|f| <= 1/2`); `p = 1 + f*(c1 + f*(c2 + f*(c3 + f*(c4 +
    f*c5))))` (`POW2_C`, Horner in fp32); `p * 2**(k + 40)` with the power of two built from the
    bits of `ROUNDER + k` (normal for every `k` in `[-150, 0]`; the product rounds once)."""
    y = y.clamp_min(POW2_LO)
    t = y + ROUNDER                               # ROUNDER + k exactly (spacing 1 in [2**23, 2**24))
    k = t - ROUNDER
    f = y - k
    c1, c2, c3, c4, c5 = POW2_C
    p = (f * c5).add_(c4).mul_(f).add_(c3).mul_(f).add_(c2).mul_(f).add_(c1).mul_(f).add_(1.0)
    scale = t.view(torch.int32).add(FIXED_BIAS).bitwise_left_shift_(23).view(torch.float32)
    return p.mul_(scale)


def chunk_sums(l: torch.Tensor):
    """Per-chunk max and fixed-point sums of fp32 logits `l` [..., V] (numerics.md §5).

    Returns `m_c` fp32, `S_c` int64, `A_c` int64, each [..., ceil(V / CHUNK)]:
    `S_c = sum trunc(e_v)`, `A_c = sum trunc(e_v * -max(d_v, -104))` with
    `e_v = fixed_pow2((l_v - m_c) * LOG2E)`. Positions past the vocab count as -inf; an all -inf
    chunk has m_c = -inf and S_c = A_c = 0.
    """
    m_c, d = _chunked(l)
    e = fixed_pow2(d * LOG2E)
    t = e * d.clamp_min(EXP_LO).neg_()            # e' * (m_c - l) in fixed point; -inf: e tiny, no inf
    s_c = e.to(torch.int64).sum(dim=-1)           # trunc; int64 sum
    a_c = t.to(torch.int64).sum(dim=-1)
    return m_c, s_c, a_c


def combine_chunks(m_c: torch.Tensor, s_c: torch.Tensor, a_c: torch.Tensor):
    """Row max `m` fp32, softmax denominator `Z` and `B` (int64, scaled by 2**40) from chunks [..., C].

    Z = sum_c trunc(S_c * f_c), B = sum_c trunc((A_c + (m - m_c) * S_c) * f_c), f_c = exp(m_c - m),
    products and the sum in fp64. A row of only -inf gets m = -inf, Z = B = 0.
    """
    m = m_c.amax(dim=-1, keepdim=True)
    live = m_c != float("-inf")                  # dead chunks (S_c = A_c = 0) add exactly 0:
    f = exp(torch.where(live, m_c - m, float("-inf"))).to(torch.float64)   # f_c = 0, no inf - inf
    d = torch.where(live, m.to(torch.float64) - m_c.to(torch.float64), 0.0)  # m - m_c in fp64
    s64 = s_c.to(torch.float64)                  # < 2**51: exact
    z = (s64 * f).to(torch.int64).sum(dim=-1)
    b = (a_c.to(torch.float64) + d * s64).mul_(f).to(torch.int64).sum(dim=-1)
    return m.squeeze(-1), z, b


def fixed_term(l: torch.Tensor, m: torch.Tensor, scale: float = LOG2E) -> torch.Tensor:
    """t(l) = trunc(fixed_pow2((l - m) * scale)) as int64 (fp32 `l`, `m` broadcastable): the
    term of `S_c` for `l` against `m` (`scale = LOG2E`; the tempered `s_T` of `tempered_scales`
    for the truncation weights, §4a); exactly 2**40 at `l == m`, 0 at `l == -inf`."""
    return fixed_pow2((l - m) * torch.tensor(scale, dtype=torch.float32, device=l.device)).to(torch.int64)


def fixed_ratio(n: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """q(n) = fp32(n) / fp32(Z), correctly rounded, for int64 `n`, `Z`."""
    return to_f32(n) / to_f32(z)


# ---------------------------------------------------------------------------------------------
# Draws used by the samplers
# ---------------------------------------------------------------------------------------------

def tempered_scales(temperature: float) -> tuple[float, float]:
    """`(tau, c)` of temperature `T > 0` (§4): `tau = fp32(1 / T)` (fp64 division, one rounding)
    and `c = fp32(LOG2E * tau)` (the exact product of two fp32 values, one rounding). At `T = 1`
    they are exactly 1 and `LOG2E`, the untempered ones. A `T` whose reciprocal is not a
    finite fp32 (below about 2.9e-39) is refused."""
    tau = round_f32(1.0 / float(temperature))
    if not 0.0 < tau < float("inf"):
        raise ValueError(f"temperature {temperature!r} is too small: 1/T overflows fp32 "
                         "(use 0 for greedy decoding)")
    return tau, round_f32(LOG2E * tau)


def token_weights(l: torch.Tensor, c: float):
    """The tempered fixed-point weights of fp32 logits `l` [..., V] (numerics.md §4).

    Returns `w` int64 [..., n_c, CHUNK], `w_v = trunc(fixed_pow2((l_v - m_c) * c))` (0 past the
    vocab), and `m_c` [..., n_c]; `c` from `tempered_scales`. At `T = 1` (`c = LOG2E`) these are
    exactly the terms of `S_c`.
    """
    m_c, d = _chunked(l)
    return fixed_pow2(d * torch.tensor(c, dtype=torch.float32, device=l.device)).to(torch.int64), m_c


def chunk_weights(m_c: torch.Tensor, s_c: torch.Tensor, m: torch.Tensor, tau: float) -> torch.Tensor:
    """int64 [..., n_c]: `W_c = trunc(fp64(S_c) * fp64(exp((m_c - m) * tau)))`, the weight of
    chunk `c` in its row, from the chunk's weight sum `s_c` and the row max `m` [...]. An all
    -inf chunk weighs 0. At `tau == 1` these are exactly the terms of `Z` (`combine_chunks`)."""
    t = torch.tensor(tau, dtype=torch.float32, device=m_c.device)
    live = m_c != float("-inf")
    f = exp(torch.where(live, m_c - m.unsqueeze(-1), float("-inf")) * t).to(torch.float64)
    return (s_c.to(torch.float64) * f).to(torch.int64)


def kept_sums(l: torch.Tensor, kept, scale: float, tau: float):
    """Per-chunk sums of the tempered, truncated distribution (numerics.md §6a) of fp32 logits
    `l` [..., V]: `m_c` [..., n_c] the max of *every* logit of the chunk (as §4's draw),
    `S'_c = sum_{v kept} trunc(e_v)` and `A'_c = sum_{v kept} trunc(e_v * -max(d_v * tau, -104))`,
    int64, with `d_v = l_v - m_c`, `e_v = fixed_pow2(d_v * scale)`. `kept` [..., V] bool (§4a) or
    None for every token; `(tau, scale)` from `tempered_scales` at `T > 0`, `(1, LOG2E)` at `T = 0`.
    `S'_c` is exactly the draw's kept weight sum (`token_weights` times the kept mask, summed); at
    `tau == 1` with every token kept, `S'_c`, `A'_c` are exactly `chunk_sums`' `S_c`, `A_c`."""
    m_c, d = _chunked(l)
    if kept is not None:                          # a dropped token: d = -inf, weight 0
        pad = d.shape[-2] * CHUNK - l.shape[-1]
        d = d.masked_fill(~torch.nn.functional.pad(kept, (0, pad)).view_as(d), float("-inf"))
    e = fixed_pow2(d * torch.tensor(scale, dtype=torch.float32, device=l.device))
    dt = d * torch.tensor(tau, dtype=torch.float32, device=l.device)    # d in tempered nats (d at tau = 1)
    t = e * dt.clamp_min(EXP_LO).neg_()           # -inf: e tiny, no inf * 0
    return m_c, e.to(torch.int64).sum(dim=-1), t.to(torch.int64).sum(dim=-1)


def combine_kept(m_c: torch.Tensor, s_c: torch.Tensor, a_c: torch.Tensor, tau: float):
    """Row max `m` fp32, `Z_T` and `B_T` (int64, scaled by 2**40) of the tempered, truncated
    distribution (numerics.md §6a) from `kept_sums`' chunks [..., n_c]:
    `Z_T = sum_c W_c` (`chunk_weights`: exactly the total of §4's draw), and
    `B_T = sum_c trunc((A'_c + ((m - m_c) * tau) * S'_c) * f_c)`, fp64 in that order, with
    `f_c = exp((m_c - m) * tau)` (fp32, `chunk_weights`' factor). At `tau == 1` these are
    `combine_chunks`' `Z`, `B` of the same sums, bit for bit."""
    m = m_c.amax(dim=-1)
    z = chunk_weights(m_c, s_c, m, tau).sum(dim=-1)
    t = torch.tensor(tau, dtype=torch.float32, device=m_c.device)
    live = m_c != float("-inf")                   # dead chunks (S'_c = A'_c = 0) add exactly 0
    f = exp(torch.where(live, m_c - m.unsqueeze(-1), float("-inf")) * t).to(torch.float64)
    d = torch.where(live, m.unsqueeze(-1).to(torch.float64) - m_c.to(torch.float64), 0.0) * float(tau)
    b = (a_c.to(torch.float64) + d * s_c.to(torch.float64)).mul_(f).to(torch.int64).sum(dim=-1)
    return m, z, b


_LIMB = 21                 # draw_below's products in 21-bit limbs: no int64 overflow
_LIMB_MASK = (1 << _LIMB) - 1


def _mul63(a: torch.Tensor, b: torch.Tensor):
    """(a * b) >> 63 and (a * b) mod 2**63 for int64 `a`, `b` in [0, 2**63): three 21-bit limbs
    each, partial products below 2**44, carried; every step an exact int64 operation."""
    a0, a1, a2 = a & _LIMB_MASK, (a >> _LIMB) & _LIMB_MASK, a >> (2 * _LIMB)
    b0, b1, b2 = b & _LIMB_MASK, (b >> _LIMB) & _LIMB_MASK, b >> (2 * _LIMB)
    limbs = []
    carry = torch.zeros_like(a)
    for c in (a0 * b0, a0 * b1 + a1 * b0, a0 * b2 + a1 * b1 + a2 * b0, a1 * b2 + a2 * b1, a2 * b2):
        t = c + carry
        limbs.append(t & _LIMB_MASK)
        carry = t >> _LIMB
    d0, d1, d2, d3, d4 = limbs
    return d3 | (d4 << _LIMB) | (carry << (2 * _LIMB)), d0 | (d1 << _LIMB) | (d2 << (2 * _LIMB))


def draw_below(seeds: torch.Tensor, positions: torch.Tensor, steps, n: torch.Tensor,
               stage: int) -> torch.Tensor:
    """An exactly uniform int64 in `[0, n)` per row (`n` int64 [R], `1 <= n < 2**63`).

    Attempt `j = 0, 1, ...` draws `philox(seed, j, position, step, STREAM_SAMPLE)`; `stage` 0
    reads its words `(r0, r1)`, stage 1 `(r2, r3)`, as the 63-bit `R = (hi << 31) | (lo >> 1)`.
    Lemire's multiply-and-reject: with `P = R * n`, the attempt is accepted when
    `P mod 2**63 >= 2**63 mod n` and gives `P >> 63` (each value of `[0, n)` then has exactly
    `floor(2**63 / n)` accepted `R`). An attempt is rejected with probability below
    `n / 2**63`. `u / n` is then close to `R / 2**63` whatever `n`, so weights that differ by an
    ulp (a row alone or in a batch) almost always draw the same token; `R mod n` would not.
    """
    steps = _as_i64(steps, seeds.device)
    n = n.to(torch.int64)
    low_min = (MAX63 % n + 1) % n                  # 2**63 mod n
    u = torch.full_like(n, -1)
    j = 0
    while bool((u < 0).any()):                     # a host sync per attempt: almost always one
        r = philox(seeds, j, positions, steps, STREAM_SAMPLE)
        big = (r[2 * stage] << 31) | (r[2 * stage + 1] >> 1)
        hi, lo = _mul63(big, n)
        u = torch.where((u < 0) & (lo >= low_min), hi, u)
        j += 1
    return u


def pick(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """int64 [...]: the first index `i` along the last axis with `sum(weights[..., :i+1]) > u`
    (inverse CDF over nonnegative int64 weights; a zero weight is never picked)."""
    return (weights.cumsum(-1) <= u.unsqueeze(-1)).sum(-1)


def draw_index(weights: torch.Tensor, ok: torch.Tensor, seeds: torch.Tensor, positions: torch.Tensor,
               steps, stage: int) -> torch.Tensor:
    """One stage of §4's draw: `pick(weights, draw_below(..., sum(weights), stage))` per row of
    int64 `weights` [R, n], clamped to `n - 1`. Rows where `ok` is False (invalid rows, whose
    weights mean nothing) draw below 1 instead; their index is never used."""
    n = torch.where(ok, weights.sum(-1), 1)
    return pick(weights, draw_below(seeds, positions, steps, n, stage)).clamp_max(weights.shape[-1] - 1)


def remask_uniform(seeds: torch.Tensor, positions: torch.Tensor, steps) -> torch.Tensor:
    """The `random` remasking confidence [R] fp32: counter (0, position, step, STREAM_REMASK)."""
    r0, _, _, _ = philox(seeds, 0, positions, steps, STREAM_REMASK)
    return uniform24(r0)


# ---------------------------------------------------------------------------------------------
# 4a. Truncation: top-k, top-p, min-p on the exact integer weights
# ---------------------------------------------------------------------------------------------

TOP_P_BITS = 62            # top_p as the integer P = ceil(top_p * 2**62) (exactly p for p >= 2**-10)


def top_p_bound(top_p: float) -> int:
    """`P = ceil(top_p * 2**62)` for `top_p` in (0, 1] (a power-of-two scaling: exact in fp64;
    `P * 2**-62 == top_p` for every `top_p >= 2**-10`, above it by less than `2**-62` below)."""
    return math.ceil(float(top_p) * 2.0**TOP_P_BITS)


def min_p_bound(min_p: float) -> int:
    """`M = ceil(min_p * 2**40)` for `min_p` in [0, 1): for an integer weight `g`,
    `g >= min_p * 2**40` exactly when `g >= M`."""
    return math.ceil(float(min_p) * 2.0**FIXED_BITS)


def mass_bound(p_bound: int, total: torch.Tensor) -> torch.Tensor:
    """int64: `floor(P * total / 2**62)` for int64 `total` in [0, 2**63) and `P = p_bound <= 2**62`
    (the 126-bit product in `_mul63`'s limbs). For an integer `E`, `E <= (P / 2**62) * total`
    exactly when `E <= mass_bound(P, total)`."""
    hi, lo = _mul63(torch.full_like(total, p_bound), total)     # P * total = hi * 2**63 + lo
    return hi * 2 + (lo >> TOP_P_BITS)


def kept_counts(l_sorted: torch.Tensor, m: torch.Tensor, scale: float, top_k, top_p: float, min_p: float,
                top_p_first: bool) -> torch.Tensor:
    """int64 [R]: how many leading tokens of each row the truncation keeps (numerics.md §4a).

    `l_sorted` [R, V] fp32: each row's logits in the order of §4a (descending, ties by lower
    index; `-inf` last); `m` [R] the row max; `scale` the weights' `s` (`s_T` at `T > 0`,
    `LOG2E` at `T = 0`). With `g_i = trunc(fixed_pow2((l_i - m) * s))` (int64, 0 at `-inf`) and
    `n` the number of finite logits:

    * top-k: `n <- min(n, top_k)`;
    * top-p: with `G = sum_{i < n} g_i` (the mass of what is kept so far) and `E_i = sum_{j < i}
      g_j`, `n <- #{i < n : E_i <= floor(P * G / 2**62)}` (`P = top_p_bound(top_p)`; `E` grows
      with `i`, so that is a prefix);
    * `top_p_first` (Dream) applies top-p before top-k, else top-k first (LLaDA2, HF);
    * min-p last: `n <- min(n, the length of the leading run with g_i >= min_p_bound(min_p))`.

    Each rule keeps rank 0 (its `E = 0`, its `g = 2**40`), so `n >= 1` for a row with a finite
    logit. A rule that is off (`top_k` None, `top_p == 1`, `min_p == 0`) leaves `n` alone.
    """
    R, V = l_sorted.shape
    n = (l_sorted > float("-inf")).sum(-1)
    g = fixed_term(l_sorted, m[:, None], scale)                   # [R, V] int64
    rank = torch.arange(V, device=l_sorted.device)

    def cut_k(n):
        return n if top_k is None else n.clamp_max(int(top_k))

    def cut_p(n):
        if float(top_p) >= 1.0:
            return n
        base = rank < n[:, None]
        gb = torch.where(base, g, 0)
        excl = gb.cumsum(-1) - gb
        return (base & (excl <= mass_bound(top_p_bound(top_p), gb.sum(-1, keepdim=True)))).sum(-1)

    n = cut_k(cut_p(n)) if top_p_first else cut_p(cut_k(n))
    if float(min_p) > 0.0:
        run = (g >= min_p_bound(min_p)).to(torch.int64).cummin(-1).values.sum(-1)
        n = torch.minimum(n, run)
    return n


def truncate_sorted(l: torch.Tensor, scale: float, top_k, top_p: float, min_p: float, top_p_first: bool):
    """The kept set of fp32 rows `l` [R, V] (§4a) as its last kept token per row:
    `(l_cut fp32 [R], i_cut int64 [R])`. Token `v` is kept exactly when `l_v > l_cut` or
    (`l_v == l_cut` and `v <= i_cut`). One stable sort per row (descending: equal logits keep
    index order, `-0.0 == +0.0`). A row without a finite logit (invalid) gets its rank-0 token."""
    l_s, idx = torch.sort(l, dim=-1, descending=True, stable=True)
    n = kept_counts(l_s, l_s[:, 0], scale, top_k, top_p, min_p, top_p_first)
    last = (n - 1).clamp_min(0)[:, None]
    return l_s.gather(-1, last).squeeze(-1), idx.gather(-1, last).squeeze(-1)


def gumbel_key(confidence: torch.Tensor, alg_temp: float, seeds: torch.Tensor, positions: torch.Tensor,
               steps) -> torch.Tensor:
    """fp32 [R]: `confidence / alg_temp + g`, `g = -log(-log(u))` a Gumbel draw from
    `u = uniform24(philox(seed, 0, position, step, STREAM_POSITION)[0])` (§1-§3: own `log`, one
    rounding per operation; `alg_temp` rounded to fp32). Keeping the `k` largest keys draws `k`
    positions without replacement from `softmax(confidence / alg_temp)` (the Gumbel-top-k trick,
    up to `u`'s 23 bits): Dream's `alg_temp > 0` position choice. `-inf` stays `-inf`."""
    r0, _, _, _ = philox(seeds, 0, positions, _as_i64(steps, seeds.device), STREAM_POSITION)
    g = log(log(uniform24(r0)).neg_()).neg_()
    a = torch.tensor(round_f32(float(alg_temp)), dtype=torch.float32, device=confidence.device)
    return (confidence / a).add_(g)


def transfer_uniform(seeds: torch.Tensor, positions: torch.Tensor, steps) -> torch.Tensor:
    """fp32 [R] in ``[0, 1)``: ``(r0 >> 8) * 2**-24`` with ``r0 = philox(seed, 0, position, step,
    STREAM_TRANSFER)[0]``, the grid of ``torch.rand``'s fp32 uniforms (24 bits, ``k * 2**-24``;
    exact). Dream's ``alg="origin"`` transfers a masked position when it is ``< p_transfer``
    (`fastremask.sampler.schedule.Origin`; numerics.md §8), which then happens with probability
    ``ceil(p * 2**24) / 2**24``, as with ``torch.rand(...) < p``. Computed by the loop in torch
    ops on the logits' device for every backend (like `gumbel_key`), so it has no Triton twin."""
    r0, _, _, _ = philox(seeds, 0, positions, _as_i64(steps, seeds.device), STREAM_TRANSFER)
    return (r0 >> 8).to(torch.float32).mul_(TWO_M24)
