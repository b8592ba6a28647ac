"""The ``torch`` backend: `reference.sample_rows` and `reference.select`, same bits, less work.

* `sample_rows` reads only the requested rows and walks the vocabulary in pieces of whole
  ``CHUNK``s (numerics.md §5), so the temporaries stay near ``PIECE_ELEMENTS`` elements
  whatever the vocabulary; per piece it keeps the per-chunk maxima (and their first indices at
  ``T = 0``), the top-2 logits (for ``margin``), the per-chunk fixed-point sums and, at
  ``T != 1`` or with a truncation, the (kept) tempered weight sums, which a
  ``confidence='dream'`` / ``'llada2'`` confidence (numerics.md §6a) reads too. At ``T > 0`` the
  draw (§4) then reads the one chunk it picks per row again. Because the sums are fixed per
  chunk, the result does not depend on the piece width.
* `select` ranks by one sort of an int64 key per position instead of the reference's
  pairwise comparison; the ``'factor'`` and ``'eb'`` threshold rules are `rules.rule_keep`
  (element-wise, and one int64 prefix sum) on those ranks.

No Python loop over rows or positions. Host synchronisation: at ``T > 0`` the exact draw
(`nx.draw_below`) reads whether every row accepted its attempt (one read per attempt, almost
always one per stage), and `_sample_rows_active` uses ``nonzero``; both cost nothing on a CPU,
this backend's device (``'auto'`` picks ``triton`` on CUDA, whose kernels never sync).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from fastremask.sampler import numerics as nx
from fastremask.sampler.threads import calling_thread   # the loop scopes its whole step alike
from fastremask.sampler.contract import (NO_TRUNCATION, Backend, RowSample, check_sample_args, check_select_args,
                                         sampling_confidence, write_kept)
from fastremask.sampler.reference import prepare_logits
from fastremask.sampler.rules import ranks, rule_keep

__all__ = ["sample_rows", "select", "PIECE_ELEMENTS"]

# Target size of one block of [rows, columns] worked on at a time. On a CPU a block of
# 2**15 fp32 elements (128 KiB; its int32/fp32 temporaries alike) stays in L2 through the
# ~30 element-wise passes of `exp` and the sums, and it is at ATen's GRAIN_SIZE, so every op
# runs on the calling thread (no OpenMP barrier per small op when torch has several threads).
# On an accelerator the blocks are large (2**21 elements) to keep launches few.
BLOCK_ELEMENTS_CPU = 1 << 15
PIECE_ELEMENTS = 1 << 21
NEG_INF = float("-inf")
F32_MAX = 3.4028234663852886e38


def _block_shape(R: int, V: int, device: torch.device, piece_width: Optional[int]) -> tuple[int, int]:
    """(rows per block, vocab columns per block): columns a multiple of CHUNK (or V if V <= CHUNK)."""
    budget = BLOCK_ELEMENTS_CPU if device.type == "cpu" else PIECE_ELEMENTS
    if V <= nx.CHUNK:
        W = V
    else:
        W = max(1, budget // nx.CHUNK) * nx.CHUNK
        W = min(W, -(-V // nx.CHUNK) * nx.CHUNK)
        if piece_width is not None:
            W = min(W, piece_width)
    r = max(1, min(R, budget // max(W, 1)))
    return r, W


_CONSTS: dict = {}


def _consts(device: torch.device) -> dict:
    """The fp32/int32 constants of `_fixed_sums` as 0-dim tensors (a Python scalar costs a
    wrapped-number tensor per op; the values, and so the results, are the same)."""
    key = str(device)
    if key not in _CONSTS:
        f = dict(rounder=nx.ROUNDER, lo=nx.POW2_LO, one=1.0, **{f"c{n}": c for n, c in enumerate(nx.POW2_C, 1)})
        c = {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in f.items()}
        c["bias"] = torch.tensor(nx.FIXED_BIAS, dtype=torch.int32, device=device)
        c["shift"] = torch.tensor(23, dtype=torch.int32, device=device)
        _CONSTS[key] = c
    return _CONSTS[key]


def _fixed_sums(d: torch.Tensor, scale: torch.Tensor, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """`sum trunc(nx.fixed_pow2(d * scale))` over the last axis (fp64, exact integers) of
    `d = l - m_c` [r, c, w] (consumed), with fp32 scratch `k`, `t` of the same shape: the
    operations of `nx.fixed_pow2` in place, in the same order, so the same bits.

    Each term is `trunc` of a value in [0, 2**40]; a chunk's sum of at most 2048 of them is below 2**52,
    so summing them in fp64 is exact in any order (tests/test_fast_perf_identities.py).
    """
    c = _consts(d.device)
    y = d.mul_(scale).clamp_min_(c["lo"])
    torch.add(y, c["rounder"], out=t)                              # ROUNDER + k, exactly
    torch.sub(t, c["rounder"], out=k)
    f = y.sub_(k)                                                  # exact, |f| <= 1/2
    p = torch.mul(f, c["c5"], out=k).add_(c["c4"]).mul_(f).add_(c["c3"]).mul_(f).add_(c["c2"])
    p.mul_(f).add_(c["c1"]).mul_(f).add_(c["one"])
    ti = t.view(torch.int32)
    ti.add_(c["bias"]).bitwise_left_shift_(c["shift"])             # bits of 2**(k + 40)
    # floor, not trunc: the same for these terms (each >= 0, or NaN in an invalid row), and
    # torch's CPU floor is vectorised where trunc is not (about 18x faster here).
    return p.mul_(t).floor_().sum(-1, dtype=torch.float64)


def sample_rows(
    logits: torch.Tensor,
    rows: torch.Tensor,
    seeds: torch.Tensor,
    positions: torch.Tensor,
    steps,
    *,
    temperature: float,
    remasking: str,
    cfg_scale: float = 0.0,
    uncond_logits: Optional[torch.Tensor] = None,
    suppress_tokens: Optional[torch.Tensor] = None,
    active: Optional[torch.Tensor] = None,
    truncation=NO_TRUNCATION,
    confidence: str = "llada",
    piece_width: Optional[int] = None,
) -> RowSample:
    """Same contract and result as `fastremask.sampler.reference.sample_rows`.

    ``piece_width`` (a multiple of ``CHUNK``; default from the block size) only bounds
    memory; it never changes a bit of the result (tested).
    """
    steps = check_sample_args(logits, rows, seeds, positions, steps, temperature=temperature, remasking=remasking,
                              cfg_scale=cfg_scale, uncond_logits=uncond_logits, suppress_tokens=suppress_tokens,
                              active=active, truncation=truncation, confidence=confidence)
    if piece_width is not None and (piece_width <= 0 or piece_width % nx.CHUNK):
        raise ValueError(f"piece_width must be a multiple of CHUNK={nx.CHUNK}, got {piece_width}")
    if suppress_tokens is not None and not torch.is_tensor(suppress_tokens):
        suppress_tokens = torch.tensor([int(i) for i in suppress_tokens], dtype=torch.int64, device=logits.device)
    with calling_thread(logits.device):
        return _sample_rows(logits, rows, seeds, positions, steps, temperature=temperature,
                            remasking=remasking, cfg_scale=cfg_scale, uncond_logits=uncond_logits,
                            suppress_tokens=suppress_tokens, active=active, truncation=truncation,
                            confidence=confidence, piece_width=piece_width)


def _kept(x: torch.Tensor, cut, v0: int) -> torch.Tensor:
    """bool like ``x`` [r, n]: the columns ``v0 ..`` of fp32 logits ``x`` kept by the truncation
    whose last kept token per row is ``cut = (l_cut [r], i_cut [r])`` (`nx.truncate_sorted`)."""
    l_cut, i_cut = cut[0][:, None], cut[1][:, None]
    cols = torch.arange(v0, v0 + x.shape[-1], device=x.device)
    return (x > l_cut) | ((x == l_cut) & (cols <= i_cut))


class _Plan(NamedTuple):
    """What one `_sample_rows` call computes, fixed before its chunk loop (the kernel's flags)."""
    remasking: str
    noisy: bool                 # T != 0: a draw (§4)
    tau: float
    c_t: float                  # the tempered scale (at T = 0: LOG2E)
    sampled: bool               # §6a: the confidence on the tempered, truncated distribution
    cut: Optional[tuple]        # §4a: (l_cut, i_cut) [R], the last kept token of each row
    tempered: bool              # the draw's own (kept) tempered sums S'_c
    kept_entropy: bool          # a sampled entropy: its own S'_c, A'_c (`nx.kept_sums`)
    need_s: bool                # S_c
    simple: bool                # no CFG, nothing suppressed: the block is a plain gather
    r_blk: int                  # rows per block
    W: int                      # columns per block
    cw: int                     # chunk width (a vocab under CHUNK is one chunk)


def _sample_rows(logits, rows, seeds, positions, steps, *, temperature, remasking, cfg_scale=0.0,
                 uncond_logits=None, suppress_tokens=None, active=None, truncation=NO_TRUNCATION,
                 confidence="llada", piece_width=None) -> RowSample:
    """`sample_rows` without its checks (the loop's call): ``rows``, ``seeds``, ``positions``,
    ``steps`` int64 ``[R]`` on the logits' device. The chunk statistics (`_chunk_stats`), then
    x0 (`_draw_token` at T > 0, else the first maximum) and the confidence (`_confidence`)."""
    device = logits.device
    R = rows.numel()
    if R == 0:                                 # no row asked for: the reference's empty result
        return RowSample(torch.empty(0, dtype=torch.int64, device=device),
                         torch.empty(0, dtype=torch.float32, device=device),
                         torch.empty(0, dtype=torch.bool, device=device))
    rows, seeds, positions = (t.to(device=device, dtype=torch.int64) for t in (rows, seeds, positions))
    if suppress_tokens is not None:
        suppress_tokens = suppress_tokens.to(device=device, dtype=torch.int64)
        if not suppress_tokens.numel():
            suppress_tokens = None
    p = _plan(logits, rows, temperature=temperature, remasking=remasking, cfg_scale=cfg_scale,
              uncond_logits=uncond_logits, suppress_tokens=suppress_tokens, truncation=truncation,
              confidence=confidence, piece_width=piece_width)
    st = _chunk_stats(logits, rows, p, cfg_scale, uncond_logits, suppress_tokens)

    m_c = st["m"]                                                # [R, n_chunks] fp32
    bad = torch.isnan(m_c).any(-1) | (m_c == float("inf")).any(-1)   # max propagates NaN and +inf
    invalid = bad | ~(m_c != NEG_INF).any(-1)
    s_c = st["s"].to(torch.int64) if st["s"] is not None else None
    s_t = st["st"].to(torch.int64) if st["st"] is not None else s_c   # the draw's S'_c (§4), §6a's
    if p.noisy:
        best_index, best_logit = _draw_token(logits, uncond_logits, cfg_scale, suppress_tokens, rows, seeds,
                                             positions, steps, m_c, s_t, ~invalid, p.tau, p.c_t, p.cw, p.cut)
    else:
        best_logit, j = m_c.max(-1)                              # first chunk holding the row max
        best_index = st["i"].gather(-1, j[:, None]).squeeze(-1) + j * p.cw
    confidence = _confidence(p, seeds, positions, steps, best_logit, m_c, s_c, s_t, st["a"], st["t2"])

    if active is not None:
        invalid &= active
        confidence = torch.where(active, confidence, NEG_INF)
        best_index = torch.where(active, best_index, -1)
    x0 = torch.where(invalid, -1, best_index)
    confidence = torch.where(invalid, float("nan"), confidence)
    return RowSample(x0, confidence.to(torch.float32), invalid)


def _plan(logits, rows, *, temperature, remasking, cfg_scale, uncond_logits, suppress_tokens, truncation,
          confidence, piece_width) -> _Plan:
    """The `_Plan` of a call; with an active truncation (at T > 0, or for a sampled confidence)
    it sorts the whole prepared rows once for the cut (§4a)."""
    R, V = rows.numel(), logits.shape[1]
    r_blk, W = _block_shape(R, V, logits.device, piece_width)
    noisy = float(temperature) != 0.0
    tau, c_t = nx.tempered_scales(temperature) if noisy else (1.0, nx.LOG2E)
    # §6a: the confidence on the tempered, truncated distribution (at T = 0: untempered, s = LOG2E)
    sampled = sampling_confidence(confidence, temperature, remasking)
    # §4a: the last kept token of each row, from one sort of the whole prepared rows
    cut = None
    if (noisy or sampled) and truncation.active:
        full = prepare_logits(logits.index_select(0, rows), cfg_scale=cfg_scale,
                              uncond_logits=None if uncond_logits is None else uncond_logits.index_select(0, rows),
                              suppress_tokens=suppress_tokens)
        cut = nx.truncate_sorted(full, c_t, truncation.top_k, truncation.top_p, truncation.min_p,
                                 truncation.top_p_first)
        del full
    # As the kernel's flags: S_c for the confidence, or at T = 1 for the draw (its weights are
    # S_c's terms); at T != 1, or with truncation, the draw's own (kept) tempered sums, which
    # are also S'_c of a sampled confidence (§6a; at T = 0 with s = LOG2E). Without them (T = 0
    # or 1, nothing cut) S'_c = S_c. A sampled entropy has its own sums (`nx.kept_sums`: S'_c, A'_c).
    tempered = (noisy and tau != 1.0) or cut is not None
    kept_entropy = sampled and remasking == "entropy"
    need_s = (remasking != "random" and not sampled) or ((noisy or sampled) and not tempered)
    if kept_entropy:
        tempered = need_s = False
    return _Plan(remasking, noisy, tau, c_t, sampled, cut, tempered, kept_entropy, need_s,
                 uncond_logits is None and suppress_tokens is None, r_blk, W, min(V, nx.CHUNK))


_STATS = ("m", "s", "a", "i", "st", "t2")


def _chunk_stats(logits, rows, p: _Plan, cfg_scale, uncond_logits, suppress_tokens) -> dict:
    """The chunk loop: per row, over blocks of ``p.r_blk`` rows x ``p.W`` columns, the chunk
    maxima ``m`` [R, n_chunks] and, as ``p`` asks, the sums ``s`` (S_c), ``a`` (A_c), ``st``
    (the draw's S'_c), the first index of each chunk max ``i`` (T = 0) and the top two logits
    ``t2`` [R, 2] (margin); each None where not computed."""
    device = logits.device
    R, V = rows.numel(), logits.shape[1]
    # Scratch reused by every block (flat, so a narrower last block is a contiguous prefix).
    buf = torch.empty(p.r_blk * p.W, dtype=torch.float32, device=device)
    scratch = [torch.empty_like(buf) for _ in range(3 if p.tempered else 2)]
    log2e = torch.tensor(nx.LOG2E, dtype=torch.float32, device=device)
    c_tau = torch.tensor(p.c_t, dtype=torch.float32, device=device)
    out = {k: [] for k in _STATS}                                    # per row group
    for g0 in range(0, R, p.r_blk):
        g1 = min(g0 + p.r_blk, R)
        r = g1 - g0
        rows_g = rows[g0:g1]
        cut_g = None if p.cut is None else (p.cut[0][g0:g1], p.cut[1][g0:g1])
        blk = {k: [] for k in _STATS}                                # per block
        for v0 in range(0, V, p.W):
            x, n, nc = _load_block(buf, logits, rows_g, r, v0, min(v0 + p.W, V), p, cfg_scale, uncond_logits,
                                   suppress_tokens)
            _block_stats(x, r, n, nc, v0, cut_g, p, scratch, log2e, c_tau, blk)
        out["m"].append(torch.cat(blk["m"], -1))
        for k in ("s", "a", "i", "st"):
            if blk[k]:
                out[k].append(torch.cat(blk[k], -1))
        if blk["t2"]:
            blk["t2"].insert(0, torch.full((r, 2), NEG_INF, device=device))   # V == 1: l_2 = -inf
            out["t2"].append(torch.cat(blk["t2"], -1).topk(2, dim=-1).values)
    return {k: torch.cat(v, 0) if v else None for k, v in out.items()}


def _load_block(buf, logits, rows_g, r, v0, v1, p: _Plan, cfg_scale, uncond_logits, suppress_tokens):
    """(x, n, nc): the prepared fp32 logits of the ``r`` rows ``rows_g``, columns ``v0:v1`` (n of
    them), in ``buf`` as ``x`` [r, nc * cw], padded with -inf to whole chunks."""
    n, cw = v1 - v0, p.cw
    nc = -(-n // cw)
    x = buf[: r * nc * cw].view(r, nc * cw)
    if p.simple:
        x[:, :n].copy_(logits[:, v0:v1].index_select(0, rows_g))   # gather + to fp32
    else:
        sup = None
        if suppress_tokens is not None:
            sup = suppress_tokens - v0       # out-of-block ids are dropped
            sup = sup[(sup >= 0) & (sup < n)]
        x[:, :n].copy_(prepare_logits(
            logits[:, v0:v1].index_select(0, rows_g), cfg_scale=cfg_scale,
            uncond_logits=None if uncond_logits is None
            else uncond_logits[:, v0:v1].index_select(0, rows_g),
            suppress_tokens=sup,
        ))
    if n < nc * cw:
        x[:, n:].fill_(NEG_INF)
    return x, n, nc


def _block_stats(x, r, n, nc, v0, cut_g, p: _Plan, scratch, log2e, c_tau, out) -> None:
    """Appends one block's chunk statistics (see `_chunk_stats`) to the lists in ``out``; ``x``
    [r, nc * cw] (its first ``n`` columns are the vocabulary's ``v0 ..``) is consumed."""
    cw = p.cw
    if p.remasking == "margin":
        xm = x[:, :n]
        if p.sampled and cut_g is not None:     # §6a: the top two *kept* logits
            xm = xm.masked_fill(~_kept(xm, cut_g, v0), NEG_INF)
        out["t2"].append(xm.topk(min(2, n), dim=-1).values)
    x3 = x.view(r, nc, cw)
    sz = x3.numel()
    tmp = [b[:sz].view_as(x3) for b in scratch]
    if p.kept_entropy:                         # §6a: S'_c, A'_c of the kept tokens
        mc, sc, ac = nx.kept_sums(x, None if cut_g is None else _kept(x, cut_g, v0), p.c_t, p.tau)
        out["st"].append(sc), out["a"].append(ac)
        if not p.noisy:
            out["i"].append(x3.argmax(-1))
    elif p.remasking == "entropy":
        mc, sc, ac = nx.chunk_sums(x)        # [r, nc * cw] (padded) -> [r, nc]
        out["s"].append(sc), out["a"].append(ac)
        if not p.noisy:
            out["i"].append(x3.argmax(-1))
    elif p.noisy:
        mc = x3.amax(-1)
    else:
        mc, ic = x3.max(-1)                  # chunk max and its first index
        out["i"].append(ic)
    out["m"].append(mc)
    plain = p.need_s and p.remasking != "entropy"    # S_c still to sum (entropy's came above)
    if not (p.tempered or plain):
        return
    drop = None if cut_g is None else ~_kept(x, cut_g, v0).view_as(x3)
    x3.sub_(mc.clamp_min(-F32_MAX)[..., None])   # d; an all -inf chunk stays -inf (no -inf - -inf)
    if p.tempered:                           # the weights of (l - m_c) * c (§4); it consumes
        dt = tmp[2].copy_(x3) if plain else x3   # d; the tokens §4a drops weigh 0
        out["st"].append(_fixed_sums(dt if drop is None else dt.masked_fill_(drop, NEG_INF), c_tau, *tmp[:2]))
    if plain:
        out["s"].append(_fixed_sums(x3, log2e, *tmp[:2]))


def _confidence(p: _Plan, seeds, positions, steps, best_logit, m_c, s_c, s_t, a_c, top2) -> torch.Tensor:
    """The confidence [R] from the chunk statistics, as `reference._llada_confidence` (from
    S_c, A_c) or, sampled, `reference._sampled_confidence` (§6a: from S'_c, A'_c)."""
    if p.remasking == "random":
        return nx.remask_uniform(seeds, positions, steps)
    if p.sampled:
        a_c = a_c if a_c is not None else torch.zeros_like(s_t)
        (m, Z, B), scale = nx.combine_kept(m_c, s_t, a_c, p.tau), (p.c_t,)   # Z_T: the draw's total
    else:
        a_c = a_c if a_c is not None else torch.zeros_like(s_c)
        (m, Z, B), scale = nx.combine_chunks(m_c, s_c, a_c), ()
    if p.remasking == "low_confidence":
        return nx.fixed_ratio(nx.fixed_term(best_logit, m, *scale), Z)
    if p.remasking == "margin":
        return nx.fixed_ratio(nx.FIXED - nx.fixed_term(top2[:, 1], m, *scale), Z)
    logZ = nx.log(nx.to_f32(Z) * 2.0**-nx.FIXED_BITS)
    return -(logZ + nx.fixed_ratio(B, Z))


def _draw_token(logits, uncond_logits, cfg_scale, suppress_tokens, rows, seeds, positions, steps, m_c,
                s_t, ok, tau, scale, cw, cut=None):
    """(x0, its logit) [R] at T > 0 (numerics.md §4, `reference._draw_token`): the chunk by its
    row weight, then the entry within it from the one chunk's logits, read again (with ``cut``,
    the tokens §4a drops as -inf: weight 0)."""
    device = m_c.device
    W = nx.chunk_weights(m_c, s_t, m_c.amax(-1), tau)                        # [R, n_chunks]
    c = nx.draw_index(W, ok, seeds, positions, steps, 0)
    V = logits.shape[1]
    cols = c[:, None] * cw + torch.arange(cw, device=device)                 # [R, cw]
    inside = cols < V
    at = (rows[:, None], cols.clamp_max(V - 1))
    l = prepare_logits(logits[at], cfg_scale=cfg_scale,
                       uncond_logits=None if uncond_logits is None else uncond_logits[at])
    out = ~inside if suppress_tokens is None else ~inside | torch.isin(cols, suppress_tokens)
    l = l.masked_fill_(out, NEG_INF)
    if cut is not None:          # the kept tokens of these columns (cols are per row here)
        l_cut, i_cut = cut[0][:, None], cut[1][:, None]
        kept = (l > l_cut) | ((l == l_cut) & (cols <= i_cut))
        # the chunk max m_c stays that of every logit: compute the weights against it
        m_here = l.amax(-1, keepdim=True)
        m_here = torch.where(m_here == NEG_INF, 0.0, m_here)
        d = (l - m_here).masked_fill_(~kept, NEG_INF)
        w = nx.fixed_pow2(d * torch.tensor(scale, dtype=torch.float32, device=device)).to(torch.int64)
        i = nx.draw_index(w, ok, seeds, positions, steps, 1)
        return c * cw + i, l.gather(-1, i[:, None]).squeeze(-1)
    w = nx.token_weights(l, scale)[0][:, 0, :cw]                            # [R, cw]
    i = nx.draw_index(w, ok, seeds, positions, steps, 1)
    return c * cw + i, l.gather(-1, i[:, None]).squeeze(-1)


def _sample_rows_active(logits, rows, seeds, positions, steps, *, temperature, remasking, cfg_scale=0.0,
                        uncond_logits=None, suppress_tokens=None, active=None,
                        truncation=NO_TRUNCATION, confidence="llada") -> RowSample:
    """The loop's entry point: `_sample_rows` on the ``active`` rows only, outputs over all rows.

    The loop passes every position of the block with an ``active`` mask (one shape for every
    backend); this backend computes only the active rows. ``nonzero`` synchronises, which costs
    nothing on a CPU (this backend's device; ``'auto'`` picks ``triton`` on CUDA).
    """
    kw = dict(temperature=temperature, remasking=remasking, cfg_scale=cfg_scale, uncond_logits=uncond_logits,
              suppress_tokens=suppress_tokens, truncation=truncation, confidence=confidence)
    if active is None:
        return _sample_rows(logits, rows, seeds, positions, steps, **kw)
    idx = active.nonzero().squeeze(1)
    part = _sample_rows(logits, rows[idx], seeds[idx], positions[idx], steps[idx], **kw)
    R = rows.numel()
    x0 = torch.full((R,), -1, dtype=torch.int64, device=rows.device).index_copy_(0, idx, part.x0)
    conf = torch.full((R,), NEG_INF, device=rows.device).index_copy_(0, idx, part.confidence)
    invalid = torch.zeros(R, dtype=torch.bool, device=rows.device).index_copy_(0, idx, part.invalid)
    return RowSample(x0, conf, invalid)


def select(
    confidence: torch.Tensor,
    candidate: torch.Tensor,
    deferred: torch.Tensor,
    k: torch.Tensor,
    threshold: Optional[float] = None,
    *,
    rule: str = "fixed",
    x: Optional[torch.Tensor] = None,
    x0: Optional[torch.Tensor] = None,
    start: int = 0,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Same contract and result as `fastremask.sampler.reference.select`, by one sort per row.

    The ranks come from one sort of an int64 key per position (`rules.ranks`: not-a-candidate,
    deferred, the confidence as an order-reversing integer, the position); the ``'factor'``
    and ``'eb'`` rules are `rules.rule_keep` on those ranks.
    """
    check_select_args(confidence, candidate, deferred, k, threshold, rule=rule, x=x, x0=x0, start=start, out=out)
    return _select(confidence, candidate, deferred, k, threshold, rule=rule, x=x, x0=x0, start=start, out=out)


def _select(confidence, candidate, deferred, k, threshold=None, *, rule="fixed", x=None, x0=None, start=0,
            out=None) -> torch.Tensor:
    """`select` without its checks (the loop's call)."""
    rank = ranks(confidence, candidate, deferred)
    if threshold is None:
        keep = candidate & (rank < k.to(rank.device)[:, None])
    elif rule != "fixed":
        keep = rule_keep(confidence, candidate, deferred, rank, threshold, rule)
    else:
        t = torch.tensor(float(threshold), dtype=torch.float32, device=confidence.device)
        keep = candidate & ~deferred & (confidence >= t)    # IEEE: -0.0 >= t exactly when 0.0 >= t
        keep = keep | (~keep.any(-1, keepdim=True) & candidate & (rank == 0))
    return write_kept(keep, x, x0, start, out)


BACKEND = Backend("torch", _sample_rows_active, _select)
