"""The reference sampler: **the specification** of what every backend computes.

Plain PyTorch on whole tensors, written to be read rather than to be fast. Each function
states one rule of docs/numerics.md; `fastremask.sampler.fast` (the ``torch`` backend) and
`fastremask.kernels` (the ``triton`` backend) compute the same bits with the same names:

* `prepare_logits`  (numerics.md §7): fp32, classifier-free guidance, suppressed tokens.
* `sample_rows`     (§4-§6): the sampled token ``x0`` and its confidence, per logit row.
* `select`          (§8): which candidates of a block keep their ``x0`` this step.

The step and the loop that call them are written once, for every backend, in
`fastremask.sampler.loop` (``backend='reference'`` runs that loop with these two functions).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from fastremask.sampler import numerics as nx
from fastremask.sampler.contract import (EB_GAMMA_LIMIT, NO_TRUNCATION, RULES, Backend, RowSample, Truncation,
                                         check_sample_args, check_select_args, sampling_confidence, write_kept)

__all__ = ["prepare_logits", "invalid_rows", "kept_tokens", "sample_rows", "select", "RULES", "factor_bound",
           "eb_bound", "factor_error", "eb_entropy"]

NEG_INF = float("-inf")


# ---------------------------------------------------------------------------------------------
# numerics.md §7: the logits a row is sampled from
# ---------------------------------------------------------------------------------------------

def prepare_logits(
    logits: torch.Tensor,
    *,
    cfg_scale: float = 0.0,
    uncond_logits: Optional[torch.Tensor] = None,
    suppress_tokens: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """fp32 logits ``[..., V]`` after classifier-free guidance and suppression.

    * Converted to fp32 (exact from fp32, bf16 and fp16).
    * With ``uncond_logits`` (same shape): ``u + (s + 1) * (c - u)`` in fp32, one rounding per
      operation, ``s + 1`` computed in Python (fp64) and rounded to fp32 once. Without it,
      ``cfg_scale`` is not used (the loop passes ``uncond_logits`` only when ``cfg_scale > 0``).
    * ``suppress_tokens`` (int64 token ids): those logits become ``-inf``, after the CFG.
    """
    c = logits.to(torch.float32)
    if uncond_logits is not None:
        u = uncond_logits.to(torch.float32)
        s1 = torch.tensor(float(cfg_scale) + 1.0, dtype=torch.float32, device=c.device)
        c = u + s1 * (c - u)                      # three fp32 ops, in this order
    if suppress_tokens is not None and suppress_tokens.numel():
        c = c.index_fill(-1, suppress_tokens.to(device=c.device, dtype=torch.int64), NEG_INF)
    return c


def invalid_rows(l: torch.Tensor) -> torch.Tensor:
    """``[...]`` bool: the fp32 row ``l[..., :]`` has a NaN, a ``+inf`` or no finite logit."""
    return torch.isnan(l).any(-1) | (l == float("inf")).any(-1) | (l == NEG_INF).all(-1)


def kept_tokens(l: torch.Tensor, scale: float, truncation: Truncation) -> torch.Tensor:
    """numerics.md §4a: ``[R, V]`` bool, the tokens of fp32 rows ``l`` that top-k / top-p / min-p
    keep. The row sorted by logit (descending; equal logits in index order, `torch.sort`'s
    stable sort), the count of leading tokens kept from the exact integer weights
    (`nx.kept_counts`), the first that many of the sorted row scattered back. ``scale``: the
    weights' ``s`` (`nx.tempered_scales` at ``T > 0``, ``LOG2E`` at ``T = 0``)."""
    l_s, idx = torch.sort(l, dim=-1, descending=True, stable=True)
    n = nx.kept_counts(l_s, l_s[:, 0], scale, truncation.top_k, truncation.top_p, truncation.min_p,
                       truncation.top_p_first)
    kept_sorted = torch.arange(l.shape[-1], device=l.device) < n[:, None]
    return torch.zeros_like(kept_sorted).scatter(-1, idx, kept_sorted)


def _draw_token(l, ok, seeds, positions, steps, tau, scale, kept=None) -> torch.Tensor:
    """numerics.md §4 at T > 0: ``x0`` [R] drawn with probability ``(W_c / sum W) * (w_v / S_c)``,
    ``w`` the tempered weights of chunk ``c`` (`nx.token_weights`), ``S_c`` their sum and ``W_c``
    the chunk's weight in the row (`nx.chunk_weights`); two exact uniform integers, one per stage.
    ``ok``: the valid rows; ``tau, scale``: `nx.tempered_scales` of the temperature; ``kept``
    (§4a, or None for all): the weights of the other tokens are 0."""
    w, m_c = nx.token_weights(l, scale)                                      # [R, n_c, CHUNK]
    if kept is not None:
        pad = w.shape[1] * nx.CHUNK - l.shape[-1]
        w = w * torch.nn.functional.pad(kept, (0, pad)).view_as(w)
    s_c = w.sum(-1)
    W = nx.chunk_weights(m_c, s_c, m_c.amax(-1), tau)                        # [R, n_c]
    c = nx.draw_index(W, ok, seeds, positions, steps, 0)                    # stage 0: the chunk
    w_c = w[torch.arange(l.shape[0], device=l.device), c]                   # [R, CHUNK]
    x0 = c * nx.CHUNK + nx.draw_index(w_c, ok, seeds, positions, steps, 1)  # stage 1: its entry
    return x0.clamp_max(l.shape[-1] - 1)     # only an invalid row can pick past the vocab


# ---------------------------------------------------------------------------------------------
# numerics.md §4-§6: one sampled token and its confidence per row
# ---------------------------------------------------------------------------------------------

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
    truncation: Truncation = NO_TRUNCATION,
    confidence: str = "llada",
) -> RowSample:
    """Sample a token and its confidence for each of the rows ``logits[rows]``.

    Parameters
    ----------
    logits : [N, V] fp32, bf16 or fp16; the model's output flattened over batch and length
    rows : [R] int64, indices into ``N``
    seeds : [R] int64 in [0, 2**63), the batch row's seed
    positions : [R] int64, the position within the generated answer (RNG counter c1)
    steps : [R] int64 (or one int for every row): each row's own step counter (RNG counter c2)
    temperature : float >= 0; 0 is the argmax, T > 0 draws from softmax(l / T) (§4)
    remasking : 'low_confidence' | 'random' | 'margin' | 'entropy'
    cfg_scale, uncond_logits : classifier-free guidance (`prepare_logits`)
    suppress_tokens : [S] int64 token ids that are never sampled
    active : [R] bool or None; inactive rows are skipped (``x0 = -1``, ``confidence = -inf``)
    truncation : top-k / top-p / min-p (`contract.Truncation`, §4a): at T > 0 the token is drawn
        from the kept tokens only; at T == 0 it changes the token nothing (the argmax is always kept)
    confidence : 'llada' | 'dream' | 'llada2': whose confidence the rule takes (§6a): LLaDA's
        untempered full softmax; Dream's tempered, truncated softmax (truncated at T == 0 too);
        LLaDA2's (Dream's at T > 0, LLaDA's at T == 0; ``low_confidence`` only)

    Returns
    -------
    RowSample(x0 [R] int64, confidence [R] fp32, invalid [R] bool)
    """
    steps = check_sample_args(logits, rows, seeds, positions, steps, temperature=temperature, remasking=remasking,
                              cfg_scale=cfg_scale, uncond_logits=uncond_logits, suppress_tokens=suppress_tokens,
                              active=active, truncation=truncation, confidence=confidence)
    R, V = rows.numel(), logits.shape[1]
    device = logits.device
    if suppress_tokens is not None and not torch.is_tensor(suppress_tokens):
        suppress_tokens = torch.tensor([int(i) for i in suppress_tokens], dtype=torch.int64, device=device)
    if active is None:
        active = torch.ones(R, dtype=torch.bool, device=device)
    rows, seeds, positions = (t.to(device=device, dtype=torch.int64) for t in (rows, seeds, positions))
    uncond = uncond_logits[rows] if uncond_logits is not None else None
    l = prepare_logits(logits[rows], cfg_scale=cfg_scale, uncond_logits=uncond,
                       suppress_tokens=suppress_tokens)                       # [R, V] fp32
    bad = invalid_rows(l)                                                     # §7: [R]
    vocab = torch.arange(V, device=device)                                    # [V]

    # §4 the token: at T == 0 the first maximum; at T > 0 a draw from the tempered softmax of
    # the fixed-point weights, by inverse CDF: first a chunk, then an entry of that chunk.
    if float(temperature) == 0.0:
        x0 = torch.where(l == l.amax(dim=-1, keepdim=True), vocab, V).amin(dim=-1)
        x0 = x0.clamp_max(V - 1)      # an all-NaN row has no maximum; it is invalid anyway
    else:
        tau, scale = nx.tempered_scales(temperature)
        kept = kept_tokens(l, scale, truncation) if truncation.active else None   # §4a
        x0 = _draw_token(l, ~bad, seeds, positions, steps, tau, scale, kept)

    # §6 / §6a the confidence of the chosen token, by rule, on LLaDA's or the sampled distribution
    if sampling_confidence(confidence, temperature, remasking):
        conf = _sampled_confidence(l, x0, remasking, temperature, truncation)
    else:
        conf = _llada_confidence(l, x0, remasking, seeds, positions, steps)

    invalid = bad & active
    x0 = torch.where(active & ~invalid, x0, -1)
    conf = torch.where(active, conf, NEG_INF)
    conf = torch.where(invalid, float("nan"), conf)
    return RowSample(x0, conf.to(torch.float32), invalid)


def _llada_confidence(l, x0, remasking, seeds, positions, steps) -> torch.Tensor:
    """§6: the confidence [R] of token ``x0`` [R] of fp32 rows ``l`` [R, V] under LLaDA's
    untempered full softmax."""
    R, V = l.shape
    device = l.device
    # §5 exact softmax sums over fixed chunks: row max m, Z and B scaled by 2**40
    m, Z, B = nx.combine_chunks(*nx.chunk_sums(l))                             # [R] each

    # §6 the confidence of the chosen token, by rule
    if remasking == "low_confidence":           # p(x0)
        l_x0 = l.gather(-1, x0[:, None]).squeeze(-1)
        confidence = nx.fixed_ratio(nx.fixed_term(l_x0, m), Z)
    elif remasking == "margin":                 # p(top-1) - p(top-2)
        if V >= 2:
            l2 = l.topk(2, dim=-1).values[:, 1]     # equals m when the max repeats
        else:
            l2 = torch.full((R,), NEG_INF, device=device)
        confidence = nx.fixed_ratio(nx.FIXED - nx.fixed_term(l2, m), Z)
    elif remasking == "entropy":                # -H = -(log Z + E[m - l]), in nats
        logZ = nx.log(nx.to_f32(Z) * 2.0**-nx.FIXED_BITS)
        confidence = -(logZ + nx.fixed_ratio(B, Z))
    else:                                       # 'random': one uniform per position and step
        confidence = nx.remask_uniform(seeds, positions, steps)
    return confidence


def _sampled_confidence(l, x0, remasking, temperature, truncation) -> torch.Tensor:
    """§6a: the confidence [R] of token ``x0`` [R] of fp32 rows ``l`` [R, V] under the tempered,
    truncated distribution (Dream's ``sample_tokens``, LLaDA2's at T > 0): the kept set of §4a
    (at T == 0 with ``s = LOG2E``), its weights against the row max over the kept mass ``Z_T``,
    built exactly as §4's draw builds its total."""
    R, V = l.shape
    tau, scale = nx.tempered_scales(temperature) if float(temperature) > 0.0 else (1.0, nx.LOG2E)
    kept = kept_tokens(l, scale, truncation) if truncation.active else None
    m, Z, B = nx.combine_kept(*nx.kept_sums(l, kept, scale, tau), tau)       # [R] each
    if remasking == "low_confidence":           # p_T(x0): Dream's maskgit_plus, LLaDA2's token_prob
        l_x0 = l.gather(-1, x0[:, None]).squeeze(-1)
        return nx.fixed_ratio(nx.fixed_term(l_x0, m, scale), Z)
    if remasking == "margin":                   # p_T(top-1) - p_T(top-2): Dream's topk_margin
        lk = l if kept is None else l.masked_fill(~kept, NEG_INF)
        # the second kept token in §4a's order (= m if the max repeats and both are kept; -inf
        # when only one token is kept, so the margin is p_T(top-1) = 1)
        l2 = lk.topk(2, dim=-1).values[:, 1] if V >= 2 else torch.full((R,), NEG_INF, device=l.device)
        return nx.fixed_ratio(nx.FIXED - nx.fixed_term(l2, m, scale), Z)
    # entropy: sum p_T log p_T = -(log Z_T + E_T[(m - l) / T]), in nats: Dream's neg_entropy
    logZ = nx.log(nx.to_f32(Z) * 2.0**-nx.FIXED_BITS)
    return -(logZ + nx.fixed_ratio(B, Z))


# ---------------------------------------------------------------------------------------------
# numerics.md §8: selection, and the threshold rules (docs/decoding.md)
# ---------------------------------------------------------------------------------------------

RULE_BITS = 30                   # the rules' fixed point: integers in units of 2**-30
_ONE = 1 << RULE_BITS
_F_CAP = 1 << 62                 # a factor above 2**32 is "no bound"; the products stay < 2**59


def factor_bound(f: float) -> int:
    """``'factor'``'s ``f`` as the integer bound ``F = ceil(f * 2**30)`` (capped at ``2**62``).

    For an integer ``x``, ``x < f * 2**30`` exactly when ``x < F``: the comparison is exact."""
    f = float(f)
    if not f > 0.0:                             # also NaN
        raise ValueError(f"threshold_rule='factor' needs f > 0, got {f!r}")
    if f >= 2.0**32:
        return _F_CAP
    return math.ceil(f * 2.0**RULE_BITS)       # f * 2**30 is exact in fp64


def eb_bound(gamma: float) -> int:
    """``'eb'``'s ``gamma`` as the integer bound ``G = floor(gamma * 2**30)``.

    For an integer ``x``, ``x <= gamma * 2**30`` exactly when ``x <= G``."""
    gamma = float(gamma)
    if not 0.0 <= gamma < EB_GAMMA_LIMIT:       # also NaN
        raise ValueError(f"threshold_rule='eb' needs gamma in [0, {EB_GAMMA_LIMIT:g}) nats, got {gamma!r}")
    return math.floor(gamma * 2.0**RULE_BITS)


def factor_error(confidence: torch.Tensor) -> torch.Tensor:
    """int64 ``E = ceil((1 - c) * 2**30)`` of ``c`` clamped to ``[0, 1]``: the error ``1 - c`` on
    the rules' grid, rounded up. Computed as ``2**30 - floor(c * 2**30)`` in fp32 (exact: a
    power-of-two scaling and ``floor``); exactly ``(1 - c) * 2**30`` for every ``c`` in
    ``{0} | [2**-7, 1]``, at most ``2**-30`` above it below that."""
    c = torch.where(confidence > 0, confidence, 0.0)        # negative, -0.0, -inf -> 0
    c = torch.where(c < 1, c, 1.0)                          # above 1, +inf -> 1
    return _ONE - torch.floor(c * float(_ONE)).to(torch.int64)


def eb_entropy(confidence: torch.Tensor) -> torch.Tensor:
    """int64 ``h = ceil(H * 2**30)`` of the entropy ``H = -c`` (``remasking='entropy'`` gives
    ``c = -H`` in nats) clamped to ``[0, 32]``: computed in fp32 (exact: ``-c``, a
    power-of-two scaling and ``ceil``); exactly ``H * 2**30`` for every ``H`` in
    ``{0} | [2**-7, 32]``, at most ``2**-30`` above it below that. ``H >= 32`` (and a NaN)
    count as 32: one such term puts any sum above every allowed ``gamma``, as ``H`` itself would."""
    H = -confidence
    H = torch.where(H < EB_GAMMA_LIMIT, H, EB_GAMMA_LIMIT)  # +inf, NaN -> 32
    H = torch.where(H > 0, H, 0.0)                          # negative, -0.0, -inf -> 0
    return torch.ceil(H * float(_ONE)).to(torch.int64)


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
    """Which candidates keep their token this step (and, with ``x``, their tokens written).

    Parameters
    ----------
    confidence : [B, C] fp32 (only candidates' values are read)
    candidate : [B, C] bool, the still-masked positions of the block
    deferred : [B, C] bool, the candidate's ``x0`` is one of ``defer_tokens``
    k : [B] int64, the schedule's count for the row (unused in threshold mode)
    threshold : None (schedule mode) or a float: the rule's parameter (threshold mode)
    rule : ``'fixed'`` | ``'factor'`` | ``'eb'``, how ``threshold`` picks (threshold mode only)
    x, x0, start : with ``x`` [B, L] int64 and ``x0`` [B, C] int64, the kept ``x0[b, i]`` are
        written into ``x[b, start + i]`` **in place** (every backend's `select` does this)
    out : [B, C] bool, optional; filled with ``keep``

    Returns
    -------
    keep : [B, C] bool

    **Ranking** within a row: non-deferred before deferred, then higher confidence, then lower
    position (fp32 comparisons: ``-0.0 == 0.0``). ``rank`` is a candidate's place in it (0 the
    first); the row's non-deferred candidates hold ranks ``0 .. m-1`` and ``c_n`` is the
    confidence of rank ``n - 1`` (``c_1 >= c_2 >= ... >= c_m``).

    **Schedule mode** keeps the first ``k`` candidates.

    **Threshold mode**: each rule gives ``n*``, the number of non-deferred candidates it keeps,
    and the step keeps the candidates of rank ``< max(n*, 1)``: at least one per row that has a
    candidate, and a deferred candidate only when the row has no other candidate (then one per
    step), as a deferred candidate's confidence were ``-inf``.

    * ``'fixed'``: every non-deferred candidate with ``c >= threshold`` (``threshold`` rounded to
      fp32); ``n*`` is their number, as they rank first.
    * ``'factor'`` (Fast-dLLM's factor rule, threshold ``= f > 0``): ``n*`` is the largest ``n``
      with ``(n + 1) * (1 - c_n) < f``, evaluated exactly in integers on the grid ``2**-30``:
      ``(n + 1) * E(c_n) < F`` with ``E = factor_error(c)`` (``1 - c`` rounded up to the grid,
      ``c`` clamped to ``[0, 1]``) and ``F = factor_bound(f) = ceil(f * 2**30)``; 0 when no
      ``n`` satisfies it.
    * ``'eb'`` (the EB-sampler's entropy bound, threshold ``= gamma`` in ``[0, 32)`` nats, for
      ``remasking='entropy'``, whose confidence is ``-H``): ``n*`` is the largest ``n`` with
      ``sum_{j<=n} h_j - max_{j<=n} h_j <= G``, where ``h = eb_entropy(c)`` (``H = -c`` rounded
      up to the grid, clamped to ``[0, 32]``) and ``G = eb_bound(gamma) = floor(gamma *
      2**30)``; int64 sums, exact. The candidates are ranked by confidence, so by increasing
      entropy (the paper's entropy error proxy).

    Integer arithmetic makes every comparison exact and the same on every device; the grid
    only rounds errors and entropies below ``2**-7`` up, by less than ``2**-30``
    (docs/decoding.md).
    """
    check_select_args(confidence, candidate, deferred, k, threshold, rule=rule, x=x, x0=x0, start=start, out=out)
    return write_kept(_keep(confidence, candidate, deferred, k, threshold, rule), x, x0, start, out)


def _keep(confidence, candidate, deferred, k, threshold, rule) -> torch.Tensor:
    """`select`'s ``keep``, as its docstring states it."""
    B, C = confidence.shape
    deferred = deferred & candidate
    pos = torch.arange(C, device=confidence.device)
    # before[b, i, j]: candidate j ranks ahead of position i
    ci, cj = confidence[:, :, None], confidence[:, None, :]
    di, dj = deferred[:, :, None], deferred[:, None, :]
    before = (di & ~dj) | ((di == dj) & ((cj > ci) | ((cj == ci) & (pos[None, None, :] < pos[None, :, None]))))
    rank = (before & candidate[:, None, :]).sum(-1)                     # [B, C]
    if threshold is None:
        if rule != "fixed":
            raise ValueError(f"threshold_rule={rule!r} needs a threshold (its parameter)")
        return candidate & (rank < k.to(rank.device)[:, None])
    plain = candidate & ~deferred                                       # the rules' candidates
    if rule == "fixed":     # n* = the number of those >= threshold: they rank first
        t = torch.tensor(float(threshold), dtype=torch.float32, device=confidence.device)
        keep = plain & (confidence >= t)
        none_kept = ~keep.any(-1, keepdim=True)
        return keep | (none_kept & candidate & (rank == 0))
    if C == 0:
        return candidate.clone()
    n = rank + 1                                                        # c_n sits at rank n - 1
    if rule == "factor":
        holds = plain & ((n + 1) * factor_error(confidence) < factor_bound(threshold))
    else:   # 'eb': over the prefix of ranks < n, the sum of h minus its largest h
        h = torch.where(plain, eb_entropy(confidence), 0)
        in_prefix = plain[:, None, :] & (rank[:, None, :] <= rank[:, :, None])   # [b, i, j]: j in i's prefix
        hj = h[:, None, :].expand(B, C, C)
        total = torch.where(in_prefix, hj, 0).sum(-1)
        largest = torch.where(in_prefix, hj, 0).amax(-1)
        holds = plain & (total - largest <= eb_bound(threshold))
    n_star = torch.where(holds, n, 0).amax(-1, keepdim=True)           # the largest n that holds
    return candidate & (rank < n_star.clamp_min(1))


BACKEND = Backend("reference", sample_rows, select)   # the specification, checked, as a backend
