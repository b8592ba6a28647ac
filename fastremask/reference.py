"""The reference sampler: **the specification** of what every backend computes.

Plain PyTorch on whole tensors, written to be read rather than to be fast. Each function
states one rule of docs/numerics.md; `fastremask.fast` (the ``torch`` backend) and
`fastremask.kernels` (the ``triton`` backend) compute the same bits with the same names:

* `prepare_logits`  (numerics.md §7): fp32, classifier-free guidance, suppressed tokens.
* `sample_rows`     (§4-§6): Gumbel-max token ``x0`` and its confidence, per logit row.
* `select`          (§8): which candidates of a block keep their ``x0`` this step.
* `step`            one denoising step of one block on the whole batch.
* `generate`        the whole loop: model calls, CFG, semi-autoregressive blocks, schedule.

`fastremask.generate.generate` is the public entry point; it checks the arguments, resolves
the schedule and the seeds, and calls `generate` here for ``backend='reference'``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional, Sequence

import torch

from fastremask import numerics as nx

__all__ = [
    "REMASKING",
    "LOGIT_DTYPES",
    "RowSample",
    "TraceStep",
    "Trace",
    "prepare_logits",
    "invalid_rows",
    "describe_invalid",
    "sample_rows",
    "select",
    "call_model",
    "model_logits",
    "sampling_suppress",
    "invalid_error",
    "raise_invalid",
    "step",
    "generate",
]

REMASKING = ("low_confidence", "random", "margin", "entropy")
LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
NEG_INF = float("-inf")


class RowSample(NamedTuple):
    """What `sample_rows` returns, one entry per requested row (all ``[R]``).

    ``x0`` int64: the sampled token; ``confidence`` fp32: the remasking score (higher is kept
    first); ``invalid`` bool: the row's logits hold NaN or ``+inf`` or no finite value.
    Inactive rows: ``x0 = -1``, ``confidence = -inf``, ``invalid = False``. Invalid rows:
    ``x0 = -1``, ``confidence = NaN``.
    """

    x0: torch.Tensor
    confidence: torch.Tensor
    invalid: torch.Tensor


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


def describe_invalid(l: torch.Tensor) -> str:
    """What is wrong with one invalid prepared row ``l`` ``[V]`` (for error messages)."""
    if torch.isnan(l).any():
        return f"NaN logits ({int(torch.isnan(l).sum())} of {l.numel()})"
    if (l == float("inf")).any():
        return f"+inf logits ({int((l == float('inf')).sum())} of {l.numel()})"
    return f"no finite logit (all {l.numel()} are -inf after suppress_tokens)"


# ---------------------------------------------------------------------------------------------
# numerics.md §4-§6: one sampled token and its confidence per row
# ---------------------------------------------------------------------------------------------

def _check_sample_args(logits, rows, seeds, positions, step, temperature, remasking, uncond_logits):
    if remasking not in REMASKING:
        raise ValueError(f"unknown remasking {remasking!r}; expected one of {list(REMASKING)}")
    if logits.dim() != 2 or logits.dtype not in LOGIT_DTYPES:
        raise TypeError(f"logits must be [N, V] fp32/bf16/fp16, got {logits.dtype} {tuple(logits.shape)}")
    if uncond_logits is not None and uncond_logits.shape != logits.shape:
        raise ValueError(f"uncond_logits shape {tuple(uncond_logits.shape)} != logits shape {tuple(logits.shape)}")
    if not (rows.shape == seeds.shape == positions.shape) or rows.dim() != 1:
        raise ValueError("rows, seeds and positions must be 1-D tensors of one length")
    if not 0 <= int(step) < 2**32:
        raise ValueError(f"step must lie in [0, 2**32), got {step}")
    if not float(temperature) >= 0.0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")


def sample_rows(
    logits: torch.Tensor,
    rows: torch.Tensor,
    seeds: torch.Tensor,
    positions: torch.Tensor,
    step: int,
    *,
    temperature: float,
    remasking: str,
    cfg_scale: float = 0.0,
    uncond_logits: Optional[torch.Tensor] = None,
    suppress_tokens: Optional[torch.Tensor] = None,
    active: Optional[torch.Tensor] = None,
) -> RowSample:
    """Sample a token and its confidence for each of the rows ``logits[rows]``.

    Parameters
    ----------
    logits : [N, V] fp32, bf16 or fp16; the model's output flattened over batch and length
    rows : [R] int64, indices into ``N``
    seeds : [R] int64 in [0, 2**63), the batch row's seed
    positions : [R] int64, the position within the generated answer (RNG counter c1)
    step : int, the global step (RNG counter c2)
    temperature : float >= 0; 0 is argmax without noise
    remasking : 'low_confidence' | 'random' | 'margin' | 'entropy'
    cfg_scale, uncond_logits : classifier-free guidance (`prepare_logits`)
    suppress_tokens : [S] int64 token ids that are never sampled
    active : [R] bool or None; inactive rows are skipped (``x0 = -1``, ``confidence = -inf``)

    Returns
    -------
    RowSample(x0 [R] int64, confidence [R] fp32, invalid [R] bool)
    """
    _check_sample_args(logits, rows, seeds, positions, step, temperature, remasking, uncond_logits)
    R, V = rows.numel(), logits.shape[1]
    device = logits.device
    if active is None:
        active = torch.ones(R, dtype=torch.bool, device=device)
    rows, seeds, positions = (t.to(device=device, dtype=torch.int64) for t in (rows, seeds, positions))
    uncond = uncond_logits[rows] if uncond_logits is not None else None
    l = prepare_logits(logits[rows], cfg_scale=cfg_scale, uncond_logits=uncond,
                       suppress_tokens=suppress_tokens)                       # [R, V] fp32
    vocab = torch.arange(V, device=device)                                    # [V]

    # §4 Gumbel-max: score = l + T * g (one fp32 product, one sum); T == 0 draws no noise.
    if float(temperature) == 0.0:
        score = l
    else:
        T = torch.tensor(float(temperature), dtype=torch.float32, device=device)
        score = l + T * nx.gumbel_noise(seeds, positions, step, vocab)
    # argmax, ties to the lowest token id (stated, not left to torch.argmax)
    best = score.amax(dim=-1, keepdim=True)
    x0 = torch.where(score == best, vocab, V).amin(dim=-1)                    # [R]
    x0 = x0.clamp_max(V - 1)          # an all-NaN row has no maximum; it is invalid anyway

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
        logZ = nx.log_(nx.to_f32(Z) * 2.0**-nx.FIXED_BITS)
        confidence = -(logZ + nx.fixed_ratio(B, Z))
    else:                                       # 'random': one uniform per position and step
        confidence = nx.remask_uniform(seeds, positions, step)

    invalid = invalid_rows(l) & active
    x0 = torch.where(active & ~invalid, x0, -1)
    confidence = torch.where(active, confidence, NEG_INF)
    confidence = torch.where(invalid, float("nan"), confidence)
    return RowSample(x0, confidence.to(torch.float32), invalid)


# ---------------------------------------------------------------------------------------------
# numerics.md §8: selection
# ---------------------------------------------------------------------------------------------

def select(
    confidence: torch.Tensor,
    candidate: torch.Tensor,
    deferred: torch.Tensor,
    k: torch.Tensor,
    threshold: Optional[float] = None,
) -> torch.Tensor:
    """Which candidates keep their token this step.

    Parameters
    ----------
    confidence : [B, C] fp32 (only candidates' values are read)
    candidate : [B, C] bool, the still-masked positions of the block
    deferred : [B, C] bool, the candidate's ``x0`` is one of ``defer_tokens``
    k : [B] int64, the schedule's count for the row (unused in threshold mode)
    threshold : None (schedule mode) or a float, rounded to fp32 (threshold mode)

    Returns
    -------
    keep : [B, C] bool

    Ranking within a row: non-deferred before deferred, then higher confidence, then lower
    position (fp32 comparisons: ``-0.0 == 0.0``). Schedule mode keeps the first ``k``
    candidates; threshold mode keeps every non-deferred candidate with confidence
    ``>= threshold``, and the first candidate by the ranking when none reaches it.
    """
    B, C = confidence.shape
    deferred = deferred & candidate
    pos = torch.arange(C, device=confidence.device)
    # before[b, i, j]: candidate j ranks ahead of position i
    ci, cj = confidence[:, :, None], confidence[:, None, :]
    di, dj = deferred[:, :, None], deferred[:, None, :]
    before = (di & ~dj) | ((di == dj) & ((cj > ci) | ((cj == ci) & (pos[None, None, :] < pos[None, :, None]))))
    rank = (before & candidate[:, None, :]).sum(-1)                     # [B, C]
    if threshold is None:
        return candidate & (rank < k.to(rank.device)[:, None])
    t = torch.tensor(float(threshold), dtype=torch.float32, device=confidence.device)
    keep = candidate & ~deferred & (confidence >= t)
    none_kept = ~keep.any(-1, keepdim=True)
    return keep | (none_kept & candidate & (rank == 0))


# ---------------------------------------------------------------------------------------------
# The trace: what each step did
# ---------------------------------------------------------------------------------------------

@dataclass
class TraceStep:
    """One step of one block, all tensors ``[B, C]`` over the block's positions.

    ``step``: global step (the RNG counter); ``block``: block index; ``start``: index in ``x``
    of the block's first position (``prompt_length + block * block_length``);
    ``candidate``: masked before the step; ``x0``: sampled token (-1 where not a candidate);
    ``confidence``: its confidence (-inf where not a candidate); ``keep``: kept this step.
    """

    step: int
    block: int
    start: int
    candidate: torch.Tensor
    x0: torch.Tensor
    confidence: torch.Tensor
    keep: torch.Tensor


@dataclass
class Trace:
    """The per-step record of one `generate` call (``return_trace=True``)."""

    prompt_length: int
    gen_length: int
    block_length: int
    steps: list = field(default_factory=list)

    def kept(self, row: int = 0) -> list:
        """``[(step, position, token, confidence), ...]`` for batch row ``row``, in the order
        the tokens were kept; ``position`` counts within the generated answer."""
        out = []
        for s in self.steps:
            js = torch.nonzero(s.keep[row]).flatten().tolist()
            off = s.start - self.prompt_length
            for j in js:
                out.append((s.step, off + j, int(s.x0[row, j]), float(s.confidence[row, j])))
        return out


# ---------------------------------------------------------------------------------------------
# The whole loop
# ---------------------------------------------------------------------------------------------

def call_model(model, x: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """``model(x, attention_mask=...)`` -> logits ``[B, L, V]``, checked.

    Accepts an output with ``.logits`` (Hugging Face, `fastremask.tiny`) or a bare tensor.
    Without an attention mask the model is called as ``model(x)``.
    """
    out = model(x) if attention_mask is None else model(x, attention_mask=attention_mask)
    logits = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"model output has no .logits tensor (got {type(out).__name__})")
    if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(x.shape) or logits.shape[2] < 1:
        raise ValueError(
            f"model logits have shape {tuple(logits.shape)}; expected [B, L, V] = "
            f"[{x.shape[0]}, {x.shape[1]}, V] for input of shape {tuple(x.shape)}"
        )
    if logits.dtype not in LOGIT_DTYPES:
        raise TypeError(f"model logits have dtype {logits.dtype}; expected fp32, bf16 or fp16")
    return logits


def model_logits(model, x, attention_mask, prompt_length: int, cfg_scale: float, mask_id: int,
                 call: Callable = call_model):
    """Conditional logits ``[B, L, V]`` and, with ``cfg_scale > 0``, unconditional ones.

    CFG as LLaDA does it: one model call on ``2B`` rows, the second half a copy of ``x`` with
    the whole prompt (padding included) replaced by ``mask_id``; the same attention mask twice.
    ``call(model, x, attention_mask) -> logits`` makes the call (`call_model`; the fast loop's
    ``logits_window`` mode passes one that returns only the current block's positions).
    """
    if cfg_scale > 0:
        un_x = x.clone()
        un_x[:, :prompt_length] = mask_id
        am = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
        both = call(model, torch.cat([x, un_x]), am)
        B = x.shape[0]
        return both[:B], both[B:]
    return call(model, x, attention_mask), None


def sampling_suppress(suppress_tokens: Optional[torch.Tensor], mask_id: int, vocab: int,
                      device=None) -> Optional[torch.Tensor]:
    """The ids `sample_rows` suppresses: ``suppress_tokens`` plus ``mask_id`` when in the vocab.

    The mask token is never sampled, so a finished answer holds no mask. A suppressed id
    outside the vocabulary is a ValueError (a mistake, e.g. LLaDA's EOS id on another model).
    """
    ids = set() if suppress_tokens is None else set(suppress_tokens.tolist())
    if ids and max(ids) >= vocab:
        raise ValueError(
            f"suppress_tokens contains token id {max(ids)}, outside the model's vocabulary of "
            f"{vocab} (logits_eos_inf suppresses LLaDA's EOS id 126081)"
        )
    if mask_id < vocab:
        ids.add(mask_id)
    if not ids:
        return None
    return torch.tensor(sorted(ids), dtype=torch.int64, device=device)


def invalid_error(row, uncond_row, *, step: int, batch_row: int, position: int, prompt_length: int,
                  n_invalid: int, cfg_scale, suppress_tokens) -> ValueError:
    """The ValueError for an invalid sampled row, the same text from every backend.

    ``row``/``uncond_row``: the model's logits ``[V]`` at (``batch_row``, ``position``), the
    latter None without CFG; ``position`` indexes ``x``; ``n_invalid``: how many sampled rows
    of that step were invalid.
    """
    l = prepare_logits(row, cfg_scale=cfg_scale, uncond_logits=uncond_row, suppress_tokens=suppress_tokens)
    more = f" ({n_invalid - 1} more position(s) in this step)" if n_invalid > 1 else ""
    cfg = " after classifier-free guidance" if uncond_row is not None else ""
    return ValueError(
        f"model produced {describe_invalid(l)}{cfg} at step {step}, batch row {batch_row}, "
        f"position {position} (position {position - prompt_length} of the generated answer){more}"
    )


def raise_invalid(logits, uncond, rows_bj, invalid, step: int, start: int, prompt_length: int,
                  cfg_scale, suppress_tokens) -> None:
    """Raise the ValueError for the first invalid row (lowest batch row, then position).

    ``rows_bj``: ``[R, 2]`` (batch row, index in ``x``) of the rows ``invalid`` refers to.
    ``logits``/``uncond``: ``[B, L, V]``. Shared by every backend so the message is the same.
    """
    bad = rows_bj[invalid]
    order = torch.argsort(bad[:, 0] * (1 << 32) + bad[:, 1])
    b, p = (int(v) for v in bad[order[0]])
    raise invalid_error(logits[b, p], None if uncond is None else uncond[b, p], step=step, batch_row=b,
                        position=p, prompt_length=prompt_length, n_invalid=bad.shape[0],
                        cfg_scale=cfg_scale, suppress_tokens=suppress_tokens)


def step(
    x: torch.Tensor,
    logits: torch.Tensor,
    uncond_logits: Optional[torch.Tensor],
    *,
    step: int,
    block: int,
    start: int,
    block_length: int,
    prompt_length: int,
    seeds: torch.Tensor,
    k: Optional[torch.Tensor],
    threshold: Optional[float],
    temperature: float,
    remasking: str,
    cfg_scale: float,
    mask_id: int,
    suppress_tokens: Optional[torch.Tensor],
    defer_tokens: Optional[torch.Tensor],
) -> tuple:
    """One step on the block ``x[:, start:start + block_length]``; returns ``(x_new, TraceStep)``.

    Every position of the block is a row of `sample_rows`, active where it is still masked
    (the candidates). Nothing outside the block is written; ``x`` is not modified.
    """
    B, L = x.shape
    C = block_length
    V = logits.shape[-1]
    block_x = x[:, start:start + C]
    candidate = block_x == mask_id                                              # [B, C]
    b = torch.arange(B, device=x.device)[:, None].expand(B, C)
    j = torch.arange(C, device=x.device)[None, :].expand(B, C)
    rows = (b * L + start + j).reshape(-1)                                      # into [B*L, V]
    sample = sample_rows(
        logits.reshape(B * L, V), rows, seeds[b].reshape(-1), (start - prompt_length + j).reshape(-1),
        step, temperature=temperature, remasking=remasking, cfg_scale=cfg_scale,
        uncond_logits=None if uncond_logits is None else uncond_logits.reshape(B * L, V),
        suppress_tokens=suppress_tokens, active=candidate.reshape(-1),
    )
    if sample.invalid.any():
        rows_bj = torch.stack([b.reshape(-1), (start + j).reshape(-1)], dim=1)
        raise_invalid(logits, uncond_logits, rows_bj, sample.invalid, step, start, prompt_length,
                      cfg_scale, suppress_tokens)
    x0 = sample.x0.view(B, C)
    confidence = sample.confidence.view(B, C)
    if defer_tokens is not None and defer_tokens.numel():
        deferred = candidate & torch.isin(x0, defer_tokens.to(x0.device))
    else:
        deferred = torch.zeros_like(candidate)
    keep = select(confidence, candidate, deferred, k, threshold)
    x_new = x.clone()
    x_new[:, start:start + C] = torch.where(keep, x0, block_x)
    return x_new, TraceStep(step, block, start, candidate, x0, confidence, keep)


@torch.no_grad()
def generate(
    model,
    prompt: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    *,
    gen_length: int,
    block_length: int,
    steps_per_block: int,
    schedule,
    threshold: Optional[float],
    temperature: float,
    cfg_scale: float,
    remasking: str,
    mask_id: int,
    seeds: torch.Tensor,
    suppress_tokens: Optional[torch.Tensor],
    defer_tokens: Optional[torch.Tensor],
    callback: Optional[Callable] = None,
) -> tuple:
    """The whole sampling loop on full tensors; returns ``(x [B, P + G] int64, Trace)``.

    Arguments are already checked (`fastremask.generate.generate` does that): ``seeds`` ``[B]``
    int64 on the model's device, ``schedule`` a `fastremask.schedule.Schedule`,
    ``suppress_tokens`` the user's (`sampling_suppress` adds ``mask_id`` once the vocabulary
    is known, so the mask token is never sampled).

    For each block of ``block_length`` positions of the answer, left to right: the schedule
    gives each batch row its counts ``k_0, k_1, ...`` from the row's number of masked
    positions in the block and ``steps_per_block``; step ``i`` keeps ``k_i`` candidates. A
    step where every row keeps 0 changes nothing, so the model is not called for it (the
    global step counter still advances). Threshold mode ignores the schedule and runs until
    the block has no mask. The global step counts over all blocks.
    """
    B, P = prompt.shape
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.int64, device=prompt.device)
    x[:, :P] = prompt
    if attention_mask is not None:
        attention_mask = torch.cat(
            [attention_mask, torch.ones(B, gen_length, dtype=attention_mask.dtype, device=attention_mask.device)],
            dim=1)
    trace = Trace(P, gen_length, block_length)
    user_suppress, suppress_tokens = suppress_tokens, None
    global_step = 0
    for block in range(gen_length // block_length):
        start = P + block * block_length
        n_masked = (x[:, start:start + block_length] == mask_id).sum(1)         # [B]
        if threshold is None:
            counts = schedule.counts(n_masked, steps_per_block)                  # [B, S]
            n_steps = counts.shape[1]
        else:
            counts, n_steps = None, block_length        # each step keeps >= 1 per unfinished row
        for i in range(n_steps):
            if threshold is None:
                k = counts[:, i]
                if not k.any():
                    global_step += 1
                    continue
            else:
                k = None
                if not (x[:, start:start + block_length] == mask_id).any():
                    break
            logits, uncond = model_logits(model, x, attention_mask, P, cfg_scale, mask_id)
            suppress_tokens = sampling_suppress(user_suppress, mask_id, logits.shape[-1], logits.device)
            x, record = step(
                x, logits, uncond, step=global_step, block=block, start=start,
                block_length=block_length, prompt_length=P, seeds=seeds, k=k,
                threshold=threshold, temperature=temperature, remasking=remasking,
                cfg_scale=cfg_scale, mask_id=mask_id, suppress_tokens=suppress_tokens,
                defer_tokens=defer_tokens,
            )
            trace.steps.append(record)
            if callback is not None:
                callback(record)
            global_step += 1
        if (x[:, start:start + block_length] == mask_id).any():
            raise RuntimeError(f"block {block} still has masked positions after its schedule")
    return x, trace
