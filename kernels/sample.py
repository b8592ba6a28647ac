"""`sample_rows` as one Triton kernel: the sampled token and confidence of selected logits rows.

The function is `fastremask.sampler.reference.sample_rows` (the specification); this module computes the
same bits (docs/numerics.md) while reading every needed logit once (and one more chunk per row:
at `T = 0` or for `margin` the one holding the row's max, at `T > 0` the one the draw picks):

* `_sample_rows_kernel`, grid `(R, n_splits)`: program `(r, s)` reads a run of whole
  `CHUNK = 2048`-entry chunks of logits row `rows[r]` (and of the unconditional row with CFG),
  and writes one set of *partials* per chunk: max `m_c`, fixed-point sums `S_c` / `A_c`
  (numerics.md §5) and, at `T != 1`, the tempered weight sum (§4). At every temperature that is
  the same loop: no per-entry randomness. The split is a performance choice only: every
  chunk's partials are a fixed function of that chunk, so any split gives the same bits.
* The last program of each row to finish (a per-row atomic counter) combines the row's partials
  exactly (`_finish`, numerics.md §4-6) into `x0` (at `T > 0` drawn by `_draw_token`),
  `confidence` and `invalid`: one launch per call.

Rows whose `active` flag is False cost one load.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from fastremask.sampler.numerics import CHUNK, FIXED, LOG2E, round_f32, tempered_scales, truncate_sorted
from fastremask.sampler.contract import (NO_TRUNCATION, REMASKING, RowSample, Truncation,   # shared by
                                         check_sample_args, sampling_confidence)             # every backend
from fastremask.sampler.reference import prepare_logits

from .numerics import (LAUNCH_OPTIONS, chunk_weights, combine_kept_terms, combine_terms, draw_below, fixed_a_term,
                       fixed_pow2, fixed_ratio, fixed_term, interpreting, log, neg, remask_uniform, to_f32)

__all__ = ["RowSample", "sample_rows", "REMASKING", "MAX_VOCAB"]

_LOW_CONFIDENCE, _MARGIN, _ENTROPY, _RANDOM = range(4)           # the RULE constexpr
_RULE = {"low_confidence": _LOW_CONFIDENCE, "margin": _MARGIN, "entropy": _ENTROPY, "random": _RANDOM}
MAX_VOCAB = 1 << 22        # 2048 chunks: the finish holds a row's partials in one block
_TARGET_PROGRAMS = 2048    # row-kernel programs to aim for (a few waves on 100+ SMs)
_N_F, _N_I = 1, 3          # partial planes: fp32 (m), int64 (S, A, the tempered sum)
# Constants as constexpr (jit functions may only read constexpr globals).
_FIXED_I = tl.constexpr(FIXED)
_INV_FIXED = tl.constexpr(2.0 ** -40)   # exact in fp32
_LOG2E = tl.constexpr(LOG2E)
_SUB = tl.constexpr(256)                # entries per piece of the finish's passes over a chunk


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------

@triton.jit
def _max_nan(a, b):
    """max that propagates NaN (FMNMX.NAN): a chunk with a NaN has a NaN max. In the inputs'
    type (triton 3.6 widens bf16 to fp32 here; the max of two bf16 values is one of them)."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL).to(a.dtype)


@triton.jit
def _chunk_logits(p_l, p_u, c, V, cfg_s1, CHUNK: tl.constexpr, HAS_CFG: tl.constexpr,
                  MASKED: tl.constexpr, MAX_MODE: tl.constexpr):
    """(fp32 logits [CHUNK], their max) of chunk `c` of one row after CFG (§7), before
    suppression (the finish takes it out); entries past the vocab are -inf (`MASKED`: only the
    last chunk can have them). The max propagates NaN: a chunk holds a NaN or +inf (the row is then invalid)
    exactly when it is NaN or +inf. `MAX_MODE` (`max_mode()`): 1, without CFG it is taken on the
    logits at their own width (bf16 / fp16: packed max instructions; the conversion to fp32 is
    exact and monotonic, so the value is the same); 0, on the fp32 logits; 2 (the interpreter,
    whose NaN-propagating maximum compares bf16 as raw bits), a max and a NaN test in numpy."""
    o = tl.arange(0, CHUNK)
    o_v = c * CHUNK + o
    if HAS_CFG:
        if MASKED:
            m_v = o_v < V
            b_c = tl.load(p_l + o_v, mask=m_v, other=0.0).to(tl.float32)
            b_u = tl.load(p_u + o_v, mask=m_v, other=0.0).to(tl.float32)
            b_x = tl.where(m_v, b_u + cfg_s1 * (b_c - b_u), float("-inf"))   # §7: one rounding per op
        else:
            b_c = tl.load(p_l + o_v).to(tl.float32)
            b_u = tl.load(p_u + o_v).to(tl.float32)
            b_x = b_u + cfg_s1 * (b_c - b_u)
    else:
        if MASKED:
            b_x = tl.load(p_l + o_v, mask=o_v < V, other=float("-inf"))
        else:
            b_x = tl.load(p_l + o_v)
    if MAX_MODE == 1:
        m_c = tl.reduce(b_x, 0, _max_nan).to(tl.float32)
        b_l = b_x.to(tl.float32)
    else:
        b_l = b_x.to(tl.float32)
        if MAX_MODE == 2:    # the interpreter: its reduce with a combine function runs per entry in Python
            m_c = tl.where(tl.max((b_l != b_l).to(tl.int32), 0) > 0, float("nan"), tl.max(b_l, 0))
        else:
            m_c = tl.reduce(b_l, 0, _max_nan)
    return b_l, m_c


@triton.jit
def _sub_logits(p_l, p_u, p_suppress, base, V, n_suppress, cfg_s1, SUB: tl.constexpr, HAS_CFG: tl.constexpr):
    """(fp32 logits [SUB] of vocab entries base .. base + SUB - 1 after CFG and suppression, -inf
    past the vocab; those indices). The finish reads a chunk this way, SUB entries at a time, so
    its rare passes (a recomputed chunk, the second pass) stay light in registers."""
    o_v = base + tl.arange(0, SUB)
    m_v = o_v < V
    b_l = tl.load(p_l + o_v, mask=m_v, other=0.0).to(tl.float32)
    if HAS_CFG:
        b_u = tl.load(p_u + o_v, mask=m_v, other=0.0).to(tl.float32)
        b_l = b_u + cfg_s1 * (b_l - b_u)                             # §7: one rounding per op
    b_l = tl.where(m_v, b_l, float("-inf"))
    j = 0
    while j < n_suppress:
        b_l = tl.where(o_v == tl.load(p_suppress + j), float("-inf"), b_l)
        j += 1
    return b_l, o_v


@triton.jit
def _chunk_again(p_l, p_u, p_suppress, c, V, n_suppress, cfg_s1, c_t, l_cut, i_cut, tau, CHUNK: tl.constexpr,
                 SUB: tl.constexpr, HAS_CFG: tl.constexpr, NEED_S: tl.constexpr, NEED_A: tl.constexpr,
                 NEED_T: tl.constexpr, TRUNC: tl.constexpr, A_T: tl.constexpr = False):
    """m_c (NaN as NaN), S_c, A_c and the tempered sum of chunk `c` with suppression, from
    memory in SUB-entry pieces: the same max and the same integer sums (any order) as the chunk
    loop's (`A_T`: A_c is the kept tempered A'_c of §6a)."""
    n_v = V - c * CHUNK                                              # entries past V are -inf: no piece
    m_c = float("-inf")
    k = 0
    while (k < CHUNK) & (k < n_v):
        b_l, _ = _sub_logits(p_l, p_u, p_suppress, c * CHUNK + k, V, n_suppress, cfg_s1, SUB, HAS_CFG)
        m_c = _max_nan(m_c, tl.reduce(b_l, 0, _max_nan))
        k += SUB
    m_s = tl.where(m_c == float("-inf"), 0.0, m_c)
    s_c = tl.zeros((), tl.int64)
    a_c = tl.zeros((), tl.int64)
    t_c = tl.zeros((), tl.int64)
    if NEED_S or NEED_T:
        k = 0
        while (k < CHUNK) & (k < n_v):
            b_l, o_v = _sub_logits(p_l, p_u, p_suppress, c * CHUNK + k, V, n_suppress, cfg_s1, SUB, HAS_CFG)
            if NEED_S:
                y = fixed_pow2((b_l - m_s) * _LOG2E)
                s_c += tl.sum(y.to(tl.int64), 0)
                if NEED_A:
                    a_c += tl.sum(fixed_a_term(y, b_l - m_s), 0)
            if NEED_T:
                w = fixed_pow2((b_l - m_s) * c_t).to(tl.int64)
                if TRUNC:
                    w = tl.where(_kept(b_l, o_v, l_cut, i_cut), w, 0)
                t_c += tl.sum(w, 0)
                if A_T:      # §6a: A'_c of the kept tokens, d in tempered nats
                    y_t = fixed_pow2((b_l - m_s) * c_t)
                    if TRUNC:
                        y_t = tl.where(_kept(b_l, o_v, l_cut, i_cut), y_t, 0.0)
                    a_c += tl.sum(fixed_a_term(y_t, (b_l - m_s) * tau), 0)
            k += SUB
    return m_c, s_c, a_c, t_c


@triton.jit
def _kept(b_l, o_v, l_cut, i_cut):
    """numerics.md §4a: the entries the truncation keeps, from the row's last kept token
    `(l_cut, i_cut)`: a higher logit, or the same logit at an index not above `i_cut`."""
    return (b_l > l_cut) | ((b_l == l_cut) & (o_v <= i_cut))


@triton.jit
def _one_logit(p_l, p_u, v, cfg_s1, HAS_CFG: tl.constexpr):
    """The fp32 logit of vocab entry `v` after CFG, computed as `_chunk_logits` does."""
    l = tl.load(p_l + v).to(tl.float32)
    if HAS_CFG:
        u = tl.load(p_u + v).to(tl.float32)
        l = u + cfg_s1 * (l - u)
    return l


@triton.jit
def _sums(b_l, m_s, NEED_S: tl.constexpr, NEED_A: tl.constexpr, MAX_MODE: tl.constexpr):
    """S_c, A_c (int64; 0 where not needed) of one chunk's logits given its max `m_s` (§5)."""
    s_c = tl.zeros((), tl.int64)
    a_c = tl.zeros((), tl.int64)
    if NEED_S:
        d = b_l - m_s
        y = fixed_pow2(d * _LOG2E)
        if NEED_A and MAX_MODE == 2:    # the interpreter: two numpy sums, not a combine per entry
            s_c = tl.sum(y.to(tl.int64), 0)
            a_c = tl.sum(fixed_a_term(y, d), 0)
        elif NEED_A:                    # one reduction tree for both
            s_c, a_c = tl.reduce((y.to(tl.int64), fixed_a_term(y, d)), 0, _sum2)
        else:
            s_c = tl.sum(y.to(tl.int64), 0)
    return s_c, a_c


@triton.jit
def _chunk(p_l, p_u, c, V, cfg_s1, o_p, plane, p_pf, p_pi, c_t, l_cut, i_cut, tau,
           CHUNK: tl.constexpr, HAS_CFG: tl.constexpr, MASKED: tl.constexpr, NEED_S: tl.constexpr,
           NEED_A: tl.constexpr, NEED_T: tl.constexpr, TEMPERED: tl.constexpr, TRUNC: tl.constexpr,
           MAX_MODE: tl.constexpr, A_T: tl.constexpr = False):
    """One chunk's partials (§5, and with `NEED_T` §4's tempered sum), stored at `o_p` of each
    plane. A NaN max is stored as +inf; what the rest computes for such a chunk is never used.

    Only m_c and sums, of the logits as read, at every temperature: suppressed ids are taken out
    by the finish (their terms subtracted exactly, or their chunk recomputed), and a T > 0 draw
    reads its one chunk again there, so the loop over the vocab has no per-entry suppression
    and no per-entry randomness."""
    b_l, m_c = _chunk_logits(p_l, p_u, c, V, cfg_s1, CHUNK, HAS_CFG, MASKED, MAX_MODE)
    m_s = tl.where(m_c == float("-inf"), 0.0, m_c)                   # an all -inf chunk: d = -inf
    s_c, a_c = _sums(b_l, m_s, NEED_S, NEED_A, MAX_MODE)
    if NEED_S:
        tl.store(p_pi + o_p, s_c)
        if NEED_A:
            tl.store(p_pi + plane + o_p, a_c)
    if NEED_T:       # the draw's own sum: T != 1, the tempered weights (§4), or with truncation (§4a) the kept ones
        if TEMPERED:     # a second fixed_pow2 per entry
            y_t = fixed_pow2((b_l - m_s) * c_t)
        else:            # T == 1: S_c's terms (the same expression: computed once)
            y_t = fixed_pow2((b_l - m_s) * _LOG2E)
        if TRUNC:        # int32 indices within the chunk (i_cut clamped to it): no 64-bit compare per entry
            i_rel = tl.minimum(tl.maximum(i_cut - c * CHUNK, -1), CHUNK).to(tl.int32)
            y_t = tl.where(_kept(b_l, tl.arange(0, CHUNK), l_cut, i_rel), y_t, 0.0)   # trunc(0.0) = 0
        tl.store(p_pi + 2 * plane + o_p, tl.sum(y_t.to(tl.int64), 0))
        if A_T:          # §6a's entropy: A'_c of the kept weights, d in tempered nats, in A_c's plane
            tl.store(p_pi + plane + o_p, tl.sum(fixed_a_term(y_t, (b_l - m_s) * tau), 0))
    tl.store(p_pf + o_p, tl.where(m_c == m_c, m_c, float("inf")))


@triton.jit
def _sum2(a, b, c, d):
    return a + c, b + d


@triton.jit(do_not_specialize=["chunks_per_prog", "n_suppress"])   # no recompiles per step
def _sample_rows_kernel(
    p_logits, p_uncond, p_rows, p_seeds, p_pos, p_steps, p_active, p_suppress, p_pf, p_pi,
    p_count, p_x0, p_conf, p_invalid, p_lcut, p_icut,
    stride_l, stride_u, V, n_chunks, chunks_per_prog, n_suppress, tau, c_t, cfg_s1,
    CHUNK: tl.constexpr, HAS_CFG: tl.constexpr, HAS_ACTIVE: tl.constexpr, NOISE: tl.constexpr,
    TEMPERED: tl.constexpr, RULE: tl.constexpr, BLOCK_C: tl.constexpr, MAX_MODE: tl.constexpr,
    TRUNC: tl.constexpr = False, SAMPLED: tl.constexpr = False,
):
    # S_c for the confidence, or at T = 1 for the draw (the tempered weights are S_c's terms);
    # with truncation (TRUNC, numerics.md §4a: the row's last kept token at p_lcut / p_icut,
    # computed before the launch) the draw has its own sum of the kept weights at every T > 0.
    # SAMPLED (§6a): the confidence is taken on that tempered, kept distribution too (at T = 0
    # with s = LOG2E): the same kept sums S'_c (S_c itself at T = 0 or 1 without a cut), and
    # for entropy A'_c beside them; LLaDA's S_c is then not needed.
    WEIGHTS: tl.constexpr = NOISE or SAMPLED
    NEED_S: tl.constexpr = (RULE != 3 and not SAMPLED) or (WEIGHTS and not TEMPERED and not TRUNC)
    NEED_A: tl.constexpr = RULE == 2
    NEED_T: tl.constexpr = WEIGHTS and (TEMPERED or TRUNC)
    A_T: tl.constexpr = SAMPLED and NEED_A and NEED_T
    i_r = tl.program_id(0)
    i_s = tl.program_id(1)
    act = True
    if HAS_ACTIVE:
        act = tl.load(p_active + i_r) != 0
    if not act:
        if i_s == 0:
            tl.store(p_x0 + i_r, -1)
            tl.store(p_conf + i_r, float("-inf"))
            tl.store(p_invalid + i_r, False)
    else:
        plane = tl.num_programs(0).to(tl.int64) * n_chunks          # one partial plane [R, NC]
        row = tl.load(p_rows + i_r)                                  # int64
        p_l = p_logits + row * stride_l                              # int64 offsets: N * V > 2**31
        p_u = p_l
        if HAS_CFG:
            p_u = p_uncond + row * stride_u
        l_cut = 0.0
        i_cut = tl.zeros((), tl.int64)
        if TRUNC:
            l_cut = tl.load(p_lcut + i_r)
            i_cut = tl.load(p_icut + i_r)
        c = i_s * chunks_per_prog
        c_hi = tl.minimum(c + chunks_per_prog, n_chunks)
        c_full = tl.minimum(c_hi, V // CHUNK)                        # chunks without entries past V
        o_r = i_r.to(tl.int64) * n_chunks
        # `while`, not `for c in range(c, c_hi)`: triton 3.6's interpreter cannot take tensor
        # bounds in range() with numpy >= 2.3 (it calls int() on a 1-element array).
        while c < c_full:
            _chunk(p_l, p_u, c, V, cfg_s1, o_r + c, plane, p_pf, p_pi, c_t, l_cut, i_cut, tau,
                   CHUNK, HAS_CFG, False, NEED_S, NEED_A, NEED_T, TEMPERED, TRUNC, MAX_MODE, A_T)
            c += 1
        if c < c_hi:                                                 # the last chunk, partly past V
            _chunk(p_l, p_u, c, V, cfg_s1, o_r + c, plane, p_pf, p_pi, c_t, l_cut, i_cut, tau,
                   CHUNK, HAS_CFG, True, NEED_S, NEED_A, NEED_T, TEMPERED, TRUNC, MAX_MODE, A_T)
        # The last of the row's programs to finish combines its partials (the combine reads them
        # in vocab order, so which program that is changes nothing). Every thread's partial
        # stores come before the counter's release (the barrier), the counter's acquire before
        # the reads, which bypass L1 (a line may hold another row's partials, read early).
        tl.debug_barrier()
        ticket = tl.atomic_add(p_count + i_r, 1, sem="acq_rel", scope="gpu")
        if ticket == tl.num_programs(1) - 1:
            tl.store(p_count + i_r, 0)                               # ready for the next launch
            _finish(i_r, plane, p_pf, p_pi, p_seeds, p_pos, p_steps, p_x0, p_conf, p_invalid, n_chunks,
                    p_l, p_u, p_suppress, V, n_suppress, cfg_s1, tau, c_t, l_cut, i_cut, RULE, BLOCK_C, NOISE,
                    NEED_S, NEED_T, HAS_CFG, CHUNK, TRUNC, SAMPLED, A_T)


@triton.jit
def _suppress_partials(b_m, b_s, b_a, b_t, p_l, p_u, p_suppress, V, n_suppress, cfg_s1, c_t, l_cut, i_cut, tau,
                       CHUNK: tl.constexpr, BLOCK_C: tl.constexpr, HAS_CFG: tl.constexpr,
                       NEED_S: tl.constexpr, NEED_A: tl.constexpr, NEED_T: tl.constexpr,
                       TRUNC: tl.constexpr, A_T: tl.constexpr = False):
    """A row's chunk partials of the logits as read ([BLOCK_C] each) -> those after suppression.

    For each distinct suppressed id `v` in chunk `c`: when its logit lies below `m_c`, the max
    stays and its terms (the same `fixed_pow2` of the same fp32 difference as in the chunk loop)
    are subtracted from `S_c`, `A_c` and the tempered sum (from the kept sum with `TRUNC` only
    when the chunk loop counted it: its logit as read passes the cut): exact integers. Otherwise
    (it is the max, or NaN) chunk `c` is recomputed with every suppressed id set to -inf in the tile."""
    o_c = tl.arange(0, BLOCK_C)
    o_b = tl.arange(0, 128)
    redo = o_c < 0                                                   # chunks to recompute
    j = 0
    while j < n_suppress:
        v = tl.load(p_suppress + j)
        if (v >= 0) & (v < V):
            dup = v < 0                                              # an id listed twice counts once
            i0 = 0
            while i0 < j:
                b_v = tl.load(p_suppress + i0 + o_b, mask=i0 + o_b < j, other=-1)
                dup = dup | (tl.max((b_v == v).to(tl.int32), 0) > 0)
                i0 += 128
            if not dup:
                c = (v // CHUNK).to(tl.int32)
                at = o_c == c
                m_c = tl.max(tl.where(at, b_m, float("-inf")), 0)
                l_s = _one_logit(p_l, p_u, v, cfg_s1, HAS_CFG)
                if l_s < m_c:
                    if NEED_S:
                        y = fixed_pow2((l_s - m_c) * _LOG2E)
                        b_s = tl.where(at, b_s - y.to(tl.int64), b_s)
                        if NEED_A:
                            b_a = tl.where(at, b_a - fixed_a_term(y, l_s - m_c), b_a)
                    if NEED_T:
                        w = fixed_pow2((l_s - m_c) * c_t).to(tl.int64)
                        if TRUNC:
                            w = tl.where(_kept(l_s, v, l_cut, i_cut), w, 0)
                        b_t = tl.where(at, b_t - w, b_t)
                        if A_T:      # §6a: its A'_c term, where the chunk loop counted it
                            y_t = fixed_pow2((l_s - m_c) * c_t)
                            if TRUNC:
                                y_t = tl.where(_kept(l_s, v, l_cut, i_cut), y_t, 0.0)
                            b_a = tl.where(at, b_a - fixed_a_term(y_t, (l_s - m_c) * tau), b_a)
                else:
                    redo = redo | at
        j += 1
    while tl.max(redo.to(tl.int32), 0) > 0:
        c = tl.min(tl.where(redo, o_c, BLOCK_C), 0)
        m_c, s_c, a_c, t_c = _chunk_again(p_l, p_u, p_suppress, c, V, n_suppress, cfg_s1, c_t, l_cut, i_cut, tau,
                                          CHUNK, _SUB, HAS_CFG, NEED_S, NEED_A, NEED_T, TRUNC, A_T)
        at = o_c == c
        b_m = tl.where(at, tl.where(m_c == m_c, m_c, float("inf")), b_m)
        b_s = tl.where(at, s_c, b_s)
        b_a = tl.where(at, a_c, b_a)
        b_t = tl.where(at, t_c, b_t)
        redo = redo & (o_c != c)
    return b_m, b_s, b_a, b_t


@triton.jit
def _draw_token(i_r, b_m, b_t, m, invalid, p_seeds, p_pos, p_steps, p_l, p_u, p_suppress, V, n_suppress,
                cfg_s1, tau, c_t, l_cut, i_cut, BLOCK_C: tl.constexpr, HAS_CFG: tl.constexpr, CHUNK: tl.constexpr,
                TRUNC: tl.constexpr):
    """x0 at T > 0 (numerics.md §4): the chunk by inverse CDF over its row weights `W_c` (from
    the chunks' tempered sums `b_t`), then the entry by inverse CDF over that one chunk's weights,
    recomputed from memory as the chunk loop computes them. Always in [0, V)."""
    seed = tl.load(p_seeds + i_r)
    pos = tl.load(p_pos + i_r)
    step = tl.load(p_steps + i_r)
    o_c = tl.arange(0, BLOCK_C)
    w_c = chunk_weights(b_m, b_t, m, tau)                            # [BLOCK_C]; 0 past n_chunks
    total = tl.where(invalid, 1, tl.sum(w_c, 0))                     # another row's sums mean nothing
    u = draw_below(seed, pos, step, total, 0)
    c = tl.sum((tl.cumsum(w_c, 0) <= u).to(tl.int32), 0)             # first chunk with cum > u
    c = tl.minimum(c, (V - 1) // CHUNK)
    s_c = tl.where(invalid, 1, tl.sum(tl.where(o_c == c, b_t, 0), 0))
    m_s = tl.max(tl.where(o_c == c, b_m, float("-inf")), 0)
    m_s = tl.where(m_s == float("-inf"), 0.0, m_s)
    u = draw_below(seed, pos, step, s_c, 1)
    n_v = V - c * CHUNK
    x0 = (c * CHUNK).to(tl.int64) + CHUNK                            # 'none yet'
    acc = tl.zeros((), tl.int64)                                     # weights before this piece
    k = 0
    while (k < CHUNK) & (k < n_v) & (acc <= u):
        b_l, o_v = _sub_logits(p_l, p_u, p_suppress, c * CHUNK + k, V, n_suppress, cfg_s1, _SUB, HAS_CFG)
        w = fixed_pow2((b_l - m_s) * c_t).to(tl.int64)
        if TRUNC:                                                    # §4a: the dropped tokens weigh 0
            w = tl.where(_kept(b_l, o_v, l_cut, i_cut), w, 0)
        x0 = tl.minimum(x0, tl.min(tl.where(tl.cumsum(w, 0) + acc > u, o_v, x0), 0))
        acc += tl.sum(w, 0)
        k += _SUB
    return tl.minimum(x0, V - 1)                                     # past V: only an invalid row


@triton.jit(noinline=True)   # its own function: the chunk loop is compiled as without it
def _finish(i_r, plane, p_pf, p_pi, p_seeds, p_pos, p_steps, p_x0, p_conf, p_invalid, n_chunks,
            p_l, p_u, p_suppress, V, n_suppress, cfg_s1, tau, c_t, l_cut, i_cut, RULE: tl.constexpr,
            BLOCK_C: tl.constexpr, NOISE: tl.constexpr, NEED_S: tl.constexpr, NEED_T: tl.constexpr,
            HAS_CFG: tl.constexpr, CHUNK: tl.constexpr, TRUNC: tl.constexpr, SAMPLED: tl.constexpr = False,
            A_T: tl.constexpr = False):
    """The exact finish of one active row from its chunk partials (numerics.md §4-6, §6a)."""
    o_c = tl.arange(0, BLOCK_C)
    m_c = o_c < n_chunks
    o_p = i_r.to(tl.int64) * n_chunks + o_c
    b_m = tl.load(p_pf + o_p, mask=m_c, other=float("-inf"), cache_modifier=".cg")   # [BLOCK_C]
    b_s = tl.zeros((BLOCK_C,), tl.int64)
    b_a = tl.zeros((BLOCK_C,), tl.int64)                             # unused sums: no load
    b_t = tl.zeros((BLOCK_C,), tl.int64)
    if NEED_S:
        b_s = tl.load(p_pi + o_p, mask=m_c, other=0, cache_modifier=".cg")
    if RULE == 2:    # entropy needs B
        b_a = tl.load(p_pi + plane + o_p, mask=m_c, other=0, cache_modifier=".cg")
    if NEED_T:
        b_t = tl.load(p_pi + 2 * plane + o_p, mask=m_c, other=0, cache_modifier=".cg")
    b_m, b_s, b_a, b_t = _suppress_partials(b_m, b_s, b_a, b_t, p_l, p_u, p_suppress, V, n_suppress, cfg_s1,
                                            c_t, l_cut, i_cut, tau, CHUNK, BLOCK_C, HAS_CFG, NEED_S, RULE == 2,
                                            NEED_T, TRUNC, A_T)
    m = tl.max(b_m, 0)
    invalid = (m == float("inf")) | (m == float("-inf"))              # NaN / +inf, or no finite logit
    # The first chunk holding the row max (chunks are in vocab order).
    c_top = tl.min(tl.where(b_m == m, o_c, BLOCK_C), 0)
    l2 = float("-inf")
    i_top = 0
    if RULE == 1 or not NOISE:
        # Second pass over that one chunk (1/62 of a LLaDA row): the first index of the max
        # (x0 at T = 0) and the largest other entry (margin), which the chunk loop does not
        # track. The logits are recomputed exactly as there (§7).
        i_v = (c_top + 1) * CHUNK                                    # as int: 'none yet'
        n_v = V - c_top * CHUNK                                      # entries past V are -inf: no piece
        k = 0
        while (k < CHUNK) & (k < n_v):
            b_l, o_v = _sub_logits(p_l, p_u, p_suppress, c_top * CHUNK + k, V, n_suppress, cfg_s1, _SUB,
                                   HAS_CFG)
            i_v = tl.minimum(i_v, tl.min(tl.where(b_l == m, o_v, (c_top + 1) * CHUNK), 0))
            k += _SUB
        i_top = i_v - c_top * CHUNK
        if RULE == 1:    # margin: the max counted once; the other chunks' maxima
            l2 = tl.max(tl.where(o_c == c_top, float("-inf"), b_m), 0)
            k = 0
            while (k < CHUNK) & (k < n_v):
                b_l, o_v = _sub_logits(p_l, p_u, p_suppress, c_top * CHUNK + k, V, n_suppress, cfg_s1, _SUB,
                                       HAS_CFG)
                l2 = tl.maximum(l2, tl.max(tl.where(o_v == i_v, float("-inf"), b_l), 0))
                k += _SUB
    if NOISE:
        x0 = _draw_token(i_r, b_m, b_s if not NEED_T else b_t, m, invalid, p_seeds, p_pos, p_steps, p_l, p_u,
                         p_suppress, V, n_suppress, cfg_s1, tau, c_t, l_cut, i_cut, BLOCK_C, HAS_CFG, CHUNK, TRUNC)
        l_x0 = _one_logit(p_l, p_u, x0, cfg_s1, HAS_CFG)             # never a suppressed id (weight 0)
    else:            # T == 0: the first maximum
        x0 = c_top.to(tl.int64) * CHUNK + i_top
        l_x0 = m
    if RULE == 3:   # random
        conf = remask_uniform(tl.load(p_seeds + i_r), tl.load(p_pos + i_r), tl.load(p_steps + i_r))
    elif SAMPLED:   # §6a: on the tempered, kept distribution, over the draw's own total Z_T
        w_c, b_c = combine_kept_terms(b_m, b_t if NEED_T else b_s, b_a, m, tau)
        z = tl.sum(w_c, 0)
        if RULE == 0:   # p_T(x0)
            conf = fixed_ratio(fixed_pow2((l_x0 - m) * c_t).to(tl.int64), z)
        elif RULE == 1:  # p_T(top-1) - p_T(top-2): no second kept token when the cut is the first max
            if TRUNC:
                i_first = c_top.to(tl.int64) * CHUNK + i_top
                l2 = tl.where((l_cut == m) & (i_cut == i_first), float("-inf"), l2)
            conf = fixed_ratio(-fixed_pow2((l2 - m) * c_t).to(tl.int64) + _FIXED_I, z)
        else:            # sum p_T log p_T
            conf = neg(log(to_f32(z) * _INV_FIXED) + fixed_ratio(tl.sum(b_c, 0), z))
    else:
        z_c, b_c = combine_terms(b_m, b_s, b_a, m)                   # §5, per chunk, exact ints
        z = tl.sum(z_c, 0)                                           # Z, scaled by 2**40
        if RULE == 0:   # low_confidence
            conf = fixed_ratio(fixed_term(l_x0, m), z)
        elif RULE == 1:  # margin: 2**40 - t(l2)
            conf = fixed_ratio(-fixed_term(l2, m) + _FIXED_I, z)
        else:            # entropy
            conf = neg(log(to_f32(z) * _INV_FIXED) + fixed_ratio(tl.sum(b_c, 0), z))
    tl.store(p_x0 + i_r, tl.where(invalid, -1, x0))
    tl.store(p_conf + i_r, tl.where(invalid, float("nan"), conf))
    tl.store(p_invalid + i_r, invalid)


# ---------------------------------------------------------------------------------------------
# launcher
# ---------------------------------------------------------------------------------------------

def _suppress_tensor(suppress_tokens, device: torch.device) -> torch.Tensor | None:
    """Checked ids (`check_sample_args`) as an int64 device tensor, or None for none."""
    if suppress_tokens is None:
        return None
    if torch.is_tensor(suppress_tokens):
        t = suppress_tokens.reshape(-1).to(torch.int64)
    else:
        t = torch.tensor([int(i) for i in suppress_tokens], dtype=torch.int64, device=device)   # host -> device
    return t if t.numel() else None


def max_mode() -> int:
    """How the row kernel takes a chunk's max (`_chunk_logits`): 1 on bf16/fp16 logits before
    widening them (packed max instructions; triton >= 3.9), 0 after (triton 3.6 widens bf16 in a
    NaN-propagating maximum, so the widened max is cheaper), 2 under the interpreter."""
    if interpreting():
        return 2
    return 1 if tuple(int(x) for x in triton.__version__.split(".")[:2]) >= (3, 9) else 0


@functools.lru_cache(maxsize=256)   # pure function of ints: no per-call Python work after the first
def _launch_config(r: int, n_chunks: int, chunks_per_prog: int | None,
                   num_warps: int | None) -> tuple[int, int, int]:
    """(chunks per program, programs per row, warps): a performance choice only, never the bits."""
    if chunks_per_prog is None:
        n_splits = min(n_chunks, max(1, triton.cdiv(_TARGET_PROGRAMS, max(r, 1))))
        chunks_per_prog = triton.cdiv(n_chunks, n_splits)
    chunks_per_prog = max(1, min(int(chunks_per_prog), n_chunks))
    if num_warps is None:
        # 2 warps, 32 entries per thread at every temperature (the per-chunk reduction trees
        # cost per thread, so fewer threads per chunk is fewer instructions per logit).
        num_warps = 2
    return chunks_per_prog, triton.cdiv(n_chunks, chunks_per_prog), num_warps


def _block_c(n_chunks: int) -> int:
    """BLOCK_C of the finish: a row's partials in one block."""
    return max(2, triton.next_power_of_2(n_chunks))


_COUNTERS: dict = {}


def _counters(device: torch.device, r: int) -> torch.Tensor:
    """int32 [>= r] zeros: each row's count of finished programs. Every launch leaves them at 0
    (the row's last program resets its count), so one buffer serves all launches on a stream;
    one per (device, stream), since launches on two streams may overlap. A call during CUDA-graph
    capture gets its own buffer (its zeroing is captured with it) and leaves the cache alone."""
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    key = (str(device), torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0)
    buf = None if capturing else _COUNTERS.get(key)
    if buf is None or buf.numel() < r:
        buf = torch.zeros(max(r, 1024), dtype=torch.int32, device=device)
        if not capturing:
            _COUNTERS[key] = buf
    elif interpreting():
        buf.zero_()          # the interpreter can stop inside a launch (a test that raises), a GPU cannot
    return buf


def truncation_cut(logits, rows, c_t: float, truncation: Truncation, cfg_scale=0.0, uncond_logits=None,
                   suppress_tokens=None):
    """(l_cut fp32 [R], i_cut int64 [R]): each row's last kept token under `truncation`
    (numerics.md §4a, `numerics.truncate_sorted`), by torch ops on the logits' device before
    the launch: the prepared rows (§7), one stable sort per row, the exact integer cut. No host
    synchronisation (capturable in a CUDA graph). Passes over the row: the gather and
    preparation, the sort, and the element-wise weights, prefix sums and counts of
    `kept_counts` on the sorted row."""
    l = prepare_logits(logits.index_select(0, rows), cfg_scale=cfg_scale,
                       uncond_logits=None if uncond_logits is None else uncond_logits.index_select(0, rows),
                       suppress_tokens=suppress_tokens)
    return truncate_sorted(l, c_t, truncation.top_k, truncation.top_p, truncation.min_p, truncation.top_p_first)


def _sample_rows(logits, rows, seeds, positions, steps, *, temperature, remasking, cfg_scale=0.0,
                 uncond_logits=None, suppress_tokens=None, active=None, truncation=NO_TRUNCATION,
                 confidence="llada", out=None, chunks_per_prog=None, num_warps=None) -> RowSample:
    """The launcher: allocates and launches, checks nothing (`sample_rows` checks; the loop calls
    this with what it built). Index tensors int64 ``[R]`` contiguous on the logits' device,
    ``suppress_tokens`` an int64 device tensor or None, logits with unit vocab stride."""
    device = logits.device
    r, v = rows.shape[0], logits.shape[1]
    if out is None:
        out = RowSample(torch.empty(r, dtype=torch.int64, device=device),
                        torch.empty(r, dtype=torch.float32, device=device),
                        torch.empty(r, dtype=torch.bool, device=device))
    if r == 0:
        return out
    rule = _RULE[remasking]
    sampled = sampling_confidence(confidence, temperature, remasking)   # §6a: the SAMPLED flag
    noise = float(temperature) != 0.0
    tau, c_t = tempered_scales(temperature) if noise else (1.0, LOG2E)
    has_cfg = uncond_logits is not None
    n_chunks = triton.cdiv(v, CHUNK)
    cpp, n_splits, warps = _launch_config(r, n_chunks, chunks_per_prog, num_warps)
    pf = torch.empty((_N_F, r, n_chunks), dtype=torch.float32, device=device)
    pi = torch.empty((_N_I, r, n_chunks), dtype=torch.int64, device=device)
    n_sup = 0 if suppress_tokens is None else suppress_tokens.numel()
    trunc = (noise or sampled) and truncation.active             # §6a cuts at T = 0 too (s = LOG2E)
    l_cut, i_cut = out.confidence, rows                            # unread without truncation
    if trunc:
        l_cut, i_cut = truncation_cut(logits, rows, c_t, truncation, cfg_scale, uncond_logits,
                                      suppress_tokens if n_sup else None)
    _sample_rows_kernel[(r, n_splits)](
        logits, uncond_logits if has_cfg else logits, rows, seeds, positions, steps,
        active if active is not None else rows, suppress_tokens if n_sup else rows, pf, pi,
        _counters(device, r), out.x0, out.confidence, out.invalid, l_cut, i_cut,
        logits.stride(0), uncond_logits.stride(0) if has_cfg else 0, v, n_chunks, cpp,
        n_sup, tau, c_t, round_f32(float(cfg_scale) + 1.0),   # §7: s + 1 in fp32
        CHUNK=CHUNK, HAS_CFG=has_cfg, HAS_ACTIVE=active is not None, NOISE=noise, TEMPERED=tau != 1.0,
        RULE=rule,
        BLOCK_C=_block_c(n_chunks), MAX_MODE=max_mode(), TRUNC=trunc, SAMPLED=sampled, num_warps=warps,
        **LAUNCH_OPTIONS)
    return out


def sample_rows(logits: torch.Tensor, rows: torch.Tensor, seeds: torch.Tensor,
                positions: torch.Tensor, steps, *, temperature: float, remasking: str,
                cfg_scale: float = 0.0, uncond_logits: torch.Tensor | None = None,
                suppress_tokens=None, active: torch.Tensor | None = None,
                truncation: Truncation = NO_TRUNCATION, confidence: str = "llada", out: RowSample | None = None,
                chunks_per_prog: int | None = None, num_warps: int | None = None) -> RowSample:
    """Sampled token and confidence of logits rows, bit-equal to `reference.sample_rows`.

    Parameters
    ----------
    logits : fp32, bf16 or fp16 tensor [N, V]
        The model's output flattened over batch and length. Read at its own width; the row
        stride is honoured (the vocab dimension must have stride 1, else a contiguous copy is made).
    rows : int64 [R]
        Indices into `N` of the rows to sample.
    seeds, positions : int64 [R]
        Each row's seed in [0, 2**63) and its position within the generated answer.
    steps : int64 [R], or one int for every row
        Each row's own step counter (counter word `c2`), in [0, 2**32).
    temperature : float
        0 is the argmax; T > 0 draws from softmax(l / T) (numerics.md §4).
    remasking : {"low_confidence", "margin", "entropy", "random"}
        Which confidence to return (docs/numerics.md §6).
    cfg_scale : float
        With `uncond_logits`: `l = u + (cfg_scale + 1) * (c - u)` in fp32.
    uncond_logits : tensor like `logits`, optional
        Unconditional logits; the same `rows` apply. Never combined into a written tensor.
    suppress_tokens : int64 tensor [K] or sequence of int, optional
        Token ids whose logits count as -inf. Pass a device tensor to avoid a host copy per call.
    active : bool [R], optional
        Rows where False are skipped and return `x0 = -1`, `confidence = -inf`, `invalid = False`.
    out : RowSample, optional
        Preallocated outputs (int64, fp32, bool, each [R]) to write into.
    truncation : contract.Truncation, optional
        Top-k / top-p / min-p (numerics.md §4a; `contract.check_truncation`): at T > 0 the token
        is drawn from the kept tokens only. The cut is computed before the launch
        (`truncation_cut`); the kernel masks the dropped tokens in its sums and in the draw.
    confidence : {"llada", "dream", "llada2"}
        Whose confidence `remasking` takes (numerics.md §6a): LLaDA's untempered full softmax, or
        the tempered, truncated distribution (Dream's at every T, truncated at T = 0 too;
        LLaDA2's at T > 0): the `SAMPLED` flag, from the same kept sums as the draw.
    chunks_per_prog, num_warps : int, optional
        Launch tuning (vocab chunks per program, warps of the row kernel). Results do not depend
        on them.

    Returns
    -------
    RowSample
        `x0` int64 [R], `confidence` fp32 [R], `invalid` bool [R] (NaN or +inf logits, or no
        finite logit, in that row after CFG and suppression; such rows get `x0 = -1`,
        `confidence = NaN`).
    """
    steps = check_sample_args(logits, rows, seeds, positions, steps, temperature=temperature, remasking=remasking,
                              cfg_scale=cfg_scale, uncond_logits=uncond_logits, suppress_tokens=suppress_tokens,
                              active=active, truncation=truncation, confidence=confidence)   # every backend's checks
    device = logits.device
    if device.type != "cuda" and not interpreting():   # this backend's own limits
        raise ValueError(f"the triton backend needs CUDA tensors, got logits on {device} "
                         "(or set TRITON_INTERPRET=1 before importing triton, for small tests)")
    v = logits.shape[1]
    if not 1 <= v <= MAX_VOCAB:
        raise ValueError(f"vocab size {v} outside [1, {MAX_VOCAB}] supported by the triton kernels")
    logits = logits if logits.stride(1) == 1 else logits.contiguous()
    if uncond_logits is not None and uncond_logits.stride(1) != 1:
        uncond_logits = uncond_logits.contiguous()
    rows, seeds, positions, steps = (t.contiguous() for t in (rows, seeds, positions, steps))
    active = active.contiguous() if active is not None else None
    return _sample_rows(logits, rows, seeds, positions, steps, temperature=temperature,
                        remasking=remasking, cfg_scale=cfg_scale, uncond_logits=uncond_logits,
                        suppress_tokens=_suppress_tensor(suppress_tokens, device), active=active,
                        out=out, chunks_per_prog=chunks_per_prog, num_warps=num_warps, truncation=truncation,
                        confidence=confidence)
