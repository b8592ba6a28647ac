"""`generate`: the one sampling loop, for every backend.

    prompt -> x = [prompt | masks] -> for each block, for each step:
        model(x) -> logits -> backend.sample_rows -> x0, confidence
                           -> backend.select      -> keep;  x[keep] = x0[keep] (select writes it)

``fastremask.generate(model, prompt, ...)`` takes LLaDA's ``generate`` arguments in LLaDA's
order with LLaDA's defaults, builds a `SamplingConfig` from them and calls `run`; the
command line, ``eval`` and the lm-eval adapter call `run` with their config. `step` is one
denoising step as tensors only: shapes are fixed per block (every position of the block is a
row, ``active`` where still masked) and it has no Python branch on tensor values (on a CPU the
invalid-logits check reads one flag, which costs nothing there), so it runs the same on every
backend and device, and on CUDA it is captured in a graph and replayed (`graphs`).

Batch invariance: row ``b``'s draws use its own step counter ``row_step[b]``, which advances
at every step of a block in which the row still has masked positions (schedule mode: every
step of the schedule, skipped ones included, for every row alike). So a row's tokens never
depend on how many steps the other rows of the batch needed.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from fastremask.sampler.backends import Backend, get_backend
from fastremask.sampler.threads import calling_thread
from fastremask.sampler.config import SamplingConfig, SpecialIds, options, row_seeds
from fastremask.sampler.names import LLADA_MASK
from fastremask.sampler import errors, graphs
from fastremask.sampler import numerics as nx
from fastremask.sampler.model_call import (ModelCall, block_call, cache_call, call_model, check_cache_support,
                                           sampling_suppress, window_call)
from fastremask.sampler import block as _block
from fastremask.sampler.protocol import KVCache, check_window_support
from fastremask.sampler.trace import Trace, TraceStep

__all__ = ["generate", "run", "step", "Block"]


class Block:
    """What the steps of one block share: its position and its rows' indices, all ``[B * C]``.

    Row ``r = b * C + j`` is position ``start + j`` of batch row ``b``: ``rows`` indexes the
    flat logits ``[B * Lw, V]`` (``Lw`` the sequence length, or ``C`` with a logits window),
    ``bi`` is ``b``, ``seeds`` the row's seed, ``positions`` its position in the answer; ``x``
    is the block's view of the sequence; ``origin`` is ``start`` (the index in ``x`` errors name;
    a captured step holds it as a tensor, `fastremask.sampler.graphs`).
    """

    def __init__(self, x, start: int, C: int, P: int, config: SamplingConfig, bi, seeds, j, kv=None,
                 layout=None):
        L = x.shape[1]
        self.start, self.origin = start, start
        self.x = x[:, start:start + C]                     # [B, C], a view: written in place
        self.bi, self.seeds = bi, seeds
        if layout is not None:          # block-causal: each row's answer starts at its own column
            col = j + start                  # the row's answer and the published tail, not filler
            self.answer = (col >= layout.gen_start.index_select(0, bi)) & (col < layout.row_end.index_select(0, bi))
            self.positions = (j + start - layout.gen_start.index_select(0, bi)).clamp_min(0)
            self.rows = bi * C + j
            self.call = block_call(kv, start, C)
            return
        self.answer = None
        self.positions = j + (start - P)
        self.rows = bi * C + j if config.block_logits else bi * L + (j + start)
        if config.cache is not None:
            self.call = cache_call(kv, config.cache, start, C)
        else:
            self.call = window_call(start, C) if config.logits_window else call_model


def step(backend: Backend, x: torch.Tensor, cand: torch.Tensor, logits: torch.Tensor,
         uncond: Optional[torch.Tensor], blk: Block, row_step: torch.Tensor, k: Optional[torch.Tensor],
         *, config: SamplingConfig, suppress, defer, no_defer, checker, step_index: int,
         floor_k: Optional[torch.Tensor] = None, editable: Optional[torch.Tensor] = None,
         transfer: Optional[torch.Tensor] = None) -> tuple:
    """One denoising step of block ``blk``: writes the kept tokens into ``x`` in place.

    ``cand`` ``[B, C]`` bool: the block's still-masked positions (``x[:, block] == mask_id``);
    ``row_step`` ``[B]`` int64: each row's step counter (its RNG counter); ``k`` ``[B]``:
    the schedule's counts (None in threshold mode). ``floor_k`` ``[B]``: with
    ``threshold_floor='schedule'``, the fewest the step keeps (the threshold compares strictly,
    as LLaDA2 and SDAR do). ``editable`` ``[B, C]`` bool: token editing (LLaDA2.1): decoded
    answer positions of the block, sampled as rows too; one whose token differs from its
    ``x0`` with confidence ``> edit_threshold`` takes ``x0``. Returns ``(x0, confidence, keep,
    edit)``, each ``[B, C]`` (``edit`` None without editing). ``transfer`` ``[B, C]`` bool
    (``schedule='origin'``, Dream's ``alg='origin'``; ``k`` is None): the positions whose own draw
    unmasks them this step; the step keeps exactly those (with valid logits).
    """
    B, C = cand.shape
    V = logits.shape[-1]
    active = cand if editable is None else cand | editable
    sample = backend.sample_rows(
        logits.view(-1, V), blk.rows, blk.seeds, blk.positions, row_step.index_select(0, blk.bi),
        temperature=config.temperature, remasking=config.remasking, cfg_scale=config.cfg_scale,
        uncond_logits=None if uncond is None else uncond.view(-1, V), suppress_tokens=suppress,
        active=active.view(-1), truncation=config.truncation, confidence=config.confidence)
    x0, conf = sample.x0.view(B, C), sample.confidence.view(B, C)
    ok = checker.note(sample.invalid, active, blk, step_index, logits, uncond)   # no bad row kept
    candidate = ok if editable is None else ok & cand
    if transfer is not None:      # origin: keep every transferred candidate (no defer_tokens with it)
        candidate = candidate & transfer
        k = candidate.sum(1)
    deferred = no_defer if defer is None else candidate & torch.isin(x0, defer)
    edit = None
    if editable is not None:      # before the write: compared with the tokens the model saw
        et = torch.tensor(config.edit_threshold, dtype=torch.float32, device=conf.device)
        edit = ok & editable & (conf > et) & (x0 != blk.x)
    threshold = config.threshold
    if floor_k is not None:       # strict comparison: c >= next fp32 above t  <=>  c > t
        t32 = torch.tensor(threshold, dtype=torch.float32)
        threshold = float(torch.nextafter(t32, torch.tensor(float("inf"))))
    rank = conf          # Dream's alg_temp > 0 (schedule mode only): the top k of confidence / alg_temp + Gumbel noise
    if config.alg_temp > 0:
        rank = nx.gumbel_key(sample.confidence, config.alg_temp, blk.seeds, blk.positions,
                             row_step.index_select(0, blk.bi)).view(B, C)
    # every backend's select writes the kept tokens into x itself: no branch on the backend
    keep = backend.select(rank, candidate, deferred, k, threshold, rule=config.threshold_rule,
                          x=x, x0=x0, start=blk.start)
    if floor_k is not None:
        keep = keep | backend.select(conf, candidate, deferred, floor_k, None, x=x, x0=x0, start=blk.start)
    if edit is not None:
        torch.where(edit, x0, blk.x, out=blk.x)
    return x0, conf, keep, edit


def _positive_int(v):
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def vocab_size(model) -> tuple:
    """``(V, where)``: the vocabulary size the model states, or ``(None, None)``. Read from
    ``model.config.vocab_size`` (an adapter's is its model's), else ``model.vocab_size``, else
    the rows of the input embedding (``get_input_embeddings()``, of the model or of the model an
    adapter wraps)."""
    v = _positive_int(getattr(getattr(model, "config", None), "vocab_size", None))
    if v is not None:
        return v, "config.vocab_size"
    v = _positive_int(getattr(model, "vocab_size", None))
    if v is not None:
        return v, "model.vocab_size"
    for m in (model, getattr(model, "model", None)):
        get = getattr(m, "get_input_embeddings", None)
        if callable(get):
            try:
                weight = getattr(get(), "weight", None)
            except (NotImplementedError, AttributeError):
                continue
            if isinstance(weight, torch.Tensor) and weight.dim() == 2:
                return int(weight.shape[0]), "the input embedding's rows"
    return None, None


def _check_prompt(model, prompt, attention_mask, mask_id: int):
    if not isinstance(prompt, torch.Tensor):
        raise TypeError(f"prompt must be a 2-D integer tensor [batch, length], got {type(prompt).__name__}")
    if prompt.dim() != 2 or prompt.dtype.is_floating_point or prompt.dtype.is_complex or prompt.dtype == torch.bool:
        raise TypeError(f"prompt must be a 2-D integer tensor [batch, length], got {prompt.dtype} of shape {tuple(prompt.shape)}")
    if prompt.shape[0] < 1:
        raise ValueError(f"prompt must have at least one batch row, got shape {tuple(prompt.shape)}")
    if prompt.device.type == "meta":
        raise ValueError("prompt is on the 'meta' device (it has no values); put it on the model's device")
    dev = getattr(model, "device", None)
    device = torch.device(dev) if isinstance(dev, (torch.device, str)) else prompt.device
    prompt = prompt.to(device=device, dtype=torch.int64)
    B, P = prompt.shape
    if prompt.numel() and int(prompt.min()) < 0:
        raise ValueError(f"prompt must hold token ids >= 0, got {int(prompt.min())}")
    masked = torch.nonzero(prompt == mask_id)
    if masked.numel():
        b, p = masked[0].tolist()
        raise ValueError(
            f"prompt contains mask_id={mask_id} at batch row {b}, position {p} "
            f"({masked.shape[0]} in all); masks inside the prompt are not supported: "
            "pad with another token (LLaDA pads with EOS) and mark padding in attention_mask")
    vocab, where = vocab_size(model)
    if vocab is not None:
        if mask_id >= vocab:
            raise ValueError(f"mask_id={mask_id} is outside the model's vocabulary ({where}={vocab})")
        outside = torch.nonzero(prompt >= vocab)
        if outside.numel():
            b, p = outside[0].tolist()
            raise ValueError(
                f"prompt holds token id {int(prompt[b, p])} at batch row {b}, position {p}, outside the "
                f"model's vocabulary of {vocab} ({where}; {outside.shape[0]} such ids in all)")
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(f"attention_mask must be a tensor or None, got {type(attention_mask).__name__}")
        if tuple(attention_mask.shape) != (B, P):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected the prompt's {(B, P)}")
        if attention_mask.device.type == "meta":
            raise ValueError("attention_mask is on the 'meta' device (it has no values)")
        if attention_mask.numel() and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError("attention_mask must hold only 0 and 1")
        _check_left_padding(attention_mask)
        attention_mask = attention_mask.to(device)
    return prompt, attention_mask, device


def _check_left_padding(am: torch.Tensor) -> None:
    """Each row: zeros (padding) then ones (its tokens), at least one token when P > 0."""
    if not am.numel():
        return
    am = am.to(torch.int64)
    empty = (am.sum(1) == 0).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"attention_mask row {int(empty[0])} is all zeros: that prompt has no token "
                         "(the model would see nothing of it)")
    right = (am[:, 1:] < am[:, :-1]).any(1).nonzero().flatten()
    if right.numel():
        raise ValueError(f"attention_mask row {int(right[0])} has padding after a token: prompts must be "
                         "left-padded (padding first, then the prompt; fastremask.models.pad_batch)")


@torch.no_grad()
def run(model, prompt, config: SamplingConfig, *, attention_mask=None, seed=None,
        return_trace: bool = False, callback: Optional[Callable] = None):
    """`generate` with its sampling options given as one `SamplingConfig`.

    Returns ``x`` ``[B, P + gen_length]`` int64 on the model's device, or ``(x, trace)`` with
    ``return_trace``.
    """
    if not isinstance(config, SamplingConfig):
        raise TypeError(f"config must be a SamplingConfig, got {type(config).__name__}")
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    if not isinstance(return_trace, bool):
        raise TypeError(f"return_trace must be True or False, got {return_trace!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {callback!r}")
    ids = SpecialIds.of(model, config)
    prompt, attention_mask, device = _check_prompt(model, prompt, attention_mask, ids.mask_id)
    B, P = prompt.shape
    seeds = torch.tensor(row_seeds(seed, B), dtype=torch.int64, device=device)
    backend = get_backend(config.backend, device)
    if config.cache is not None and not _block.is_block_causal(model):
        check_cache_support(model, config.cache)       # clear errors before any model call
    elif config.logits_window and not _block.is_block_causal(model):
        check_window_support(model)
    if config.stop_at_eos:
        _check_eos(model, ids.eos)
    if _block.is_block_causal(model):
        return _run_block_causal(model, prompt, attention_mask, config, ids, seeds, backend,
                                 return_trace, callback)
    _check_not_block_options(model, config)
    x = torch.full((B, P + config.gen_length), ids.mask_id, dtype=torch.int64, device=device)
    x[:, :P] = prompt
    calls = ModelCall(model, attention_mask, prompt_length=P, gen_length=config.gen_length,
                      cfg_scale=config.cfg_scale, mask_id=ids.mask_id)
    trace = Trace(P, config.gen_length, config.block_length)
    _blocks(backend, x, calls, seeds, config, ids, trace if return_trace else None, callback)
    trace.model_calls, trace.positions = calls.calls, calls.positions
    return (x, trace) if return_trace else x


def _check_not_block_options(model, config: SamplingConfig) -> None:
    """Options only a block-causal model has: clear errors before any model call."""
    name = type(model).__name__
    if config.cache == "block":
        raise ValueError(f"cache='block' (the exact block cache) needs a block-causal model (LLaDA2, SDAR); "
                         f"{name} attends bidirectionally: use cache=None, 'prefix' or 'dual'")
    if config.eos_early_stop:
        raise ValueError(f"eos_early_stop is LLaDA2's block-diffusion stop; {name} is not block-causal: "
                         "use stop_at_eos")
    if config.editing:
        raise ValueError(f"edit_threshold (token editing) needs a block-diffusion family trained for it "
                         f"(LLaDA2.1); {name} is not block-causal")


def _run_block_causal(model, prompt, attention_mask, config: SamplingConfig, ids: SpecialIds, seeds,
                      backend, return_trace: bool, callback):
    """`run` for a block-causal model (`fastremask.sampler.block`): the rows' blocks as the
    published generates cut them, the full-window recompute or the exact block cache."""
    import warnings

    _block.check_block_model(model)
    name = type(model).__name__
    if config.cache not in (None, "block"):
        raise ValueError(f"cache={config.cache!r} is Fast-dLLM's approximation for bidirectional models; "
                         f"{name} is block-causal: use cache='block' (exact) or None")
    if config.stop_at_eos:
        raise ValueError("stop_at_eos is for bidirectional models; a block-causal model stops with "
                         "eos_early_stop=True (LLaDA2's rule)")
    if config.editing and not config.force_editing and not _block.supports_editing(model):
        raise ValueError(f"edit_threshold={config.edit_threshold}: {name} was not trained for token "
                         "editing (LLaDA2.1 is); pass force_editing=True to edit anyway")
    if config.origin:
        raise ValueError(f"schedule='origin' is Dream's sampler for bidirectional models; {name} is "
                         "block-causal: use another schedule")
    if config.eos_early_stop:
        _check_eos(model, ids.eos)
    trained = _block.trained_block_length(model)
    if trained is not None and trained != config.block_length:
        warnings.warn(f"block_length={config.block_length} differs from the block length {name} was "
                      f"trained with ({trained}); its tokens may be poor", stacklevel=3)
    B, P = prompt.shape
    layout = _block.BlockLayout(prompt, attention_mask, config.gen_length, config.block_length, ids.mask_id)
    limit = _block.max_positions(model)
    if limit is not None and layout.longest > limit:
        raise ValueError(
            f"prompt of {layout.longest_prompt} tokens + gen_length={config.gen_length}, in blocks of "
            f"block_length={config.block_length}, needs {layout.longest} positions; {name} has {limit}")
    x = layout.x0.clone()
    # CFG as LLaDA's: the unconditional rows mask each row's prompt (every column before its answer)
    prompt_columns = torch.arange(layout.L, device=x.device)[None, :] < layout.gen_start[:, None]
    calls = ModelCall(model, layout.attention_mask, prompt_length=layout.L, gen_length=0,
                      cfg_scale=config.cfg_scale, mask_id=ids.mask_id, prompt_columns=prompt_columns)
    trace = Trace(P, config.gen_length, config.block_length)
    _blocks(backend, x, calls, seeds, config, ids, trace if return_trace else None, callback, layout)
    trace.model_calls, trace.positions = calls.calls, calls.positions
    out = layout.answer(x, prompt)
    return (out, trace) if return_trace else out


class _Steps:
    """What the loop's steps share within one `run`: the options as tensors, the invalid-logits
    check, and the captured step where one can be used (`graphs`); ``self(...)`` is one step."""

    def __init__(self, backend: Backend, config: SamplingConfig, ids: SpecialIds, B: int, C: int,
                 P: int, device):
        self.backend, self.config, self.mask_id, self.B, self.C, self.P = backend, config, ids.mask_id, B, C, P
        self.no_defer = torch.zeros(B, C, dtype=torch.bool, device=device)
        self.defer = torch.tensor(ids.defer, dtype=torch.int64, device=device) if ids.defer else None
        self.user_suppress, self.suppress, self.V = ids.suppress, None, None
        self.checker = errors.checker_for(device)(P, config.cfg_scale)
        self.use_graph = config.cuda_graph and backend.capturable and graphs.available(device)
        self.graph, self.graph_block = None, None

    def check_vocab(self, logits) -> None:
        V = logits.shape[-1]
        if self.V is None:
            self.V = V
            self.suppress = sampling_suppress(self.user_suppress, self.mask_id, V, logits.device,
                                              eos_flag=self.config.logits_eos_inf)
            self.checker.suppress = self.suppress
        elif V != self.V:
            raise ValueError(f"model logits changed vocabulary size from {self.V} to {V}")

    def __call__(self, x, blk: Block, cand, logits, uncond, row_step, k, step_index: int, record: bool,
                 floor_k=None, editable=None, transfer=None):
        graph = self.use_graph and floor_k is None and editable is None and transfer is None
        out = self._replay(blk, logits, uncond, row_step, k, step_index, record) if graph else None
        if out is None:
            with calling_thread(x.device):       # a CPU step is many small ops: no thread pool
                return step(self.backend, x, cand, logits, uncond, blk, row_step, k, config=self.config,
                            suppress=self.suppress, defer=self.defer, no_defer=self.no_defer,
                            checker=self.checker, step_index=step_index, floor_k=floor_k, editable=editable,
                            transfer=transfer)
        return tuple(out) + (None,)

    def _replay(self, blk, logits, uncond, row_step, k, step_index: int, record: bool):
        """The step from the cached CUDA graph, or None (then it runs eagerly, from now on)."""
        if self.graph is None:                      # the first model call: the shapes are known
            self.graph = graphs.graphed_step(
                step, self.backend, logits, uncond, config=self.config, suppress=self.suppress,
                defer=self.defer, mask_id=self.mask_id, prompt_length=self.P, B=self.B, C=self.C)
            if self.graph is None:
                self.use_graph = False
                return None
            self.checker = self.graph.checker.reset(self.suppress)
        if self.graph_block is not blk:
            self.graph.start_block(blk)
            self.graph_block = blk
        self.graph.load(logits, uncond, blk, row_step, k, step_index, self.config.block_logits)
        out = self.graph.step(blk)
        if out is None:
            self.use_graph = False
            return None
        return tuple(t.clone() for t in out) if record else out


class _Run:
    """What `_blocks` keeps across blocks: the per-step schedules, each block position's row and
    column, the cache, the steps and the counters (``row_step``, ``global_step``, ``stopped``)."""

    def __init__(self, backend, x, seeds, config: SamplingConfig, ids: SpecialIds, record: bool, layout):
        B, L = x.shape
        C = config.block_length
        device = x.device
        self.B, self.C, self.device, self.record = B, C, device, record
        self.P = P = L - config.gen_length if layout is None else layout.P
        self.num_blocks = config.num_blocks if layout is None else layout.num_blocks
        self.counts = counts = config.block_counts()          # schedule mode: one list for all rows
        def per_step(ks):                                     # [n_steps] -> n_steps tensors [B]
            return torch.tensor(ks, dtype=torch.int64, device=device).expand(B, -1).t().contiguous().unbind(0)

        self.k_cols = None if counts is None else per_step(counts)
        floor = config.floor_counts()                            # threshold_floor='schedule'
        self.floor_cols = self.zero_k = None
        if floor is not None:
            self.floor_cols = per_step(floor)
            self.zero_k = torch.zeros(B, dtype=torch.int64, device=device)
        self.origin = origin = config.transfer_probabilities()   # schedule='origin': each step's p_transfer
        self.max_steps = len(counts) if counts is not None else len(origin) if origin is not None else max(
            C, len(floor or ())) + (config.max_post_edit_steps if config.editing else 0)
        self.scheduled = counts is not None or origin is not None   # a fixed number of steps, no per-step sync
        self.bi = torch.arange(B, device=device).repeat_interleave(C)                     # [B * C]
        self.j = torch.arange(C, device=device).repeat(B)
        self.seeds_r = seeds.index_select(0, self.bi)
        self.row_step = torch.zeros(B, dtype=torch.int64, device=device)
        self.steps = _Steps(backend, config, ids, B, C, P, device)
        if layout is not None:
            self.steps.use_graph = False     # block-causal steps run eagerly (not captured yet)
        self.kv = None
        if layout is not None:
            self.kv = _block.BlockCache(layout.L) if config.cache == "block" else None
        elif config.cache is not None:
            self.kv = KVCache()
        self.global_step = 0
        self.stopped = torch.zeros(B, dtype=torch.bool, device=device)     # eos_early_stop: rows done


def _blocks(backend, x, calls, seeds, config: SamplingConfig, ids: SpecialIds, trace, callback,
            layout=None) -> None:
    """The loop over blocks and steps (`run`'s body); ``x`` is filled in place. ``layout``: a
    block-causal model's `fastremask.sampler.block.BlockLayout` (its blocks, each row's answer
    start, the exact cache), else None. Each block's steps: `_block_steps`."""
    run = _Run(backend, x, seeds, config, ids, trace is not None or callback is not None, layout)
    C, P = run.C, run.P
    for b in range(run.num_blocks):
        start = P + b * C if layout is None else layout.block_start(b)
        blk = Block(x, start, C, P, config, run.bi, run.seeds_r, run.j, run.kv, layout)
        if _block_steps(run, x, calls, blk, b, config, ids, trace, callback, layout):
            return
        run.steps.checker.check()                             # schedule mode's one sync per block
        if layout is not None:
            if config.eos_early_stop and b + 1 < run.num_blocks:
                run.stopped = _eos_early_stop(x, layout, blk.start + C, ids.eos, ids.mask_id)
                if trace is not None:
                    trace.stops.append((b, run.stopped.clone()))
                if bool(run.stopped.all()):
                    return
            continue
        if config.stop_at_eos and b + 1 < config.num_blocks and _stop_at_eos(x, P, blk.start + C, ids.eos, trace, b):
            break


def _block_steps(run: _Run, x, calls, blk, b, config: SamplingConfig, ids: SpecialIds, trace, callback,
                 layout) -> bool:
    """The steps of block ``b`` (`Block` ``blk``); True when every row has stopped (the run ends)."""
    B, C, device, editing, steps, row_step = run.B, run.C, run.device, config.editing, run.steps, run.row_step
    counts, origin, scheduled, record = run.counts, run.origin, run.scheduled, run.record
    if editing:
        answer = blk.answer.view(B, C)
        finished = run.stopped | ~answer.any(1)     # done at EOS, or only filler in this block
        post = torch.zeros(B, dtype=torch.int64, device=device)
    for i in range(run.max_steps):
        if counts is not None and counts[i] == 0:                 # keeps nothing: no model call
            row_step += 1 if layout is None else (blk.x == ids.mask_id).any(1)
            run.global_step += 1
            continue
        cand = blk.x == ids.mask_id                                   # [B, C]
        editable = None
        if not scheduled or layout is not None:     # threshold mode's (block-causal: every) one sync
            # [B] rows with masks left; a block-causal row's first block is partly prompt, so
            # even in schedule mode a row can finish early: it stops there, as alone
            busy = cand.any(1)
            if editing:      # SGLang's JointThreshold: post-edit steps once the block is unmasked
                post += ~busy & ~finished
                finished |= post > config.max_post_edit_steps
                busy = ~finished
                editable = answer & ~cand & busy[:, None]
            if steps.checker.block_done(busy):
                break
        logits, uncond = calls(x, blk.call)
        steps.check_vocab(logits)
        if editing and config.penalty_lambda:
            # on both halves under CFG: guided, the same as penalising the guided logits
            logits = _repeat_penalty(logits, blk.x, config.penalty_lambda)
            if uncond is not None:
                uncond = _repeat_penalty(uncond, blk.x, config.penalty_lambda)
        rs = row_step.clone() if record else row_step
        before = blk.x.clone() if editing and record else None
        fk = None
        if run.floor_cols is not None:
            fk = run.floor_cols[i] if i < len(run.floor_cols) else run.zero_k
        transfer = None
        if origin is not None:    # Dream's alg='origin': each position's own draw < p_transfer (fp32)
            u = nx.transfer_uniform(blk.seeds, blk.positions, row_step.index_select(0, blk.bi))
            transfer = (u < torch.tensor(origin[i], dtype=torch.float32, device=device)).view(B, C)
        x0, conf, keep, edit = steps(x, blk, cand, logits, uncond, row_step,
                                     None if run.k_cols is None else run.k_cols[i], run.global_step, record,
                                     floor_k=fk, editable=editable, transfer=transfer)
        row_step += 1 if scheduled and layout is None else busy
        if editing:
            finished |= busy & ~(keep | edit).any(1)               # a step that changed nothing
        if record:
            rec = TraceStep(run.global_step, rs, b, blk.start, cand, x0, conf, keep, edit=edit, before=before,
                            offset=None if layout is None else blk.start - layout.gen_start)
            if trace is not None:
                trace.steps.append(rec)
            if callback is not None:
                callback(rec)
        run.global_step += 1
        if layout is not None and config.eos_early_stop and not editing:
            run.stopped = _eos_early_stop(x, layout, blk.start + C, ids.eos, ids.mask_id)
            if bool(run.stopped.all()):
                steps.checker.check()
                return True
    return False


def _repeat_penalty(logits, xb, lam: float):
    """LLaDA2.1's repetition penalty (SGLang's ``penalty_lambda``): the logit, at block position
    ``j >= 1``, of the token now at ``j - 1`` is lowered by ``lam``. Applied to the logits, so
    every backend samples the same."""
    logits = logits.clone()
    B, C, V = logits.shape
    if C > 1:
        idx = xb[:, :-1].clamp(0, V - 1).unsqueeze(-1)
        pen = torch.where(xb[:, :-1] < V, -lam, 0.0).to(logits.dtype).unsqueeze(-1)
        logits[:, 1:].scatter_add_(2, idx, pen)
    return logits


def _eos_early_stop(x, layout, end: int, eos: int, mask_id: int) -> bool:
    """LLaDA2's ``eos_early_stop``, per row: a row whose answer so far holds an EOS with no mask
    before its first EOS is done (its answer ends there); everything after that EOS is set to EOS,
    so the row has nothing left to sample. Returns the rows done ``[B]`` bool."""
    cols = torch.arange(x.shape[1], device=x.device)
    in_answer = (cols >= layout.gen_start[:, None]) & (cols < end)
    is_eos = (x == eos) & in_answer
    first = torch.where(is_eos, cols, x.shape[1]).amin(1)                 # [B] first EOS column
    before = in_answer & (cols < first[:, None])
    done = is_eos.any(1) & ~((x == mask_id) & before).any(1)
    after = (cols > first[:, None]) & (cols < layout.row_end[:, None]) & done[:, None]
    x.masked_fill_(after, eos)
    return done


def _check_eos(model, eos) -> None:
    vocab, where = vocab_size(model)
    if vocab is not None and eos >= vocab:
        raise ValueError(f"stop_at_eos=True: the EOS id {eos} is outside the model's vocabulary "
                         f"({where}={vocab}); give the model an eos_id (fastremask.models.wrap)")


def _stop_at_eos(x, P: int, end: int, eos: int, trace, block: int) -> bool:
    """After a block: a row whose answer so far holds an EOS with only EOS after it is done, and
    its remaining positions are filled with EOS (LLaDA's instruct models pad the answer with
    EOS); True when every row is done. Per row, so a row's tokens do not depend on the batch."""
    is_eos = x[:, P:end] == eos                                             # [B, A]
    after_first = is_eos.to(torch.int8).cummax(1).values.bool()             # at or after its first EOS
    done = is_eos.any(1) & (is_eos | ~after_first).all(1)                  # [B]
    x[:, end:].masked_fill_(done[:, None], eos)                              # no-op for rows not done
    if trace is not None:
        trace.stops.append((block, done.clone()))
    return bool(done.all())                                                # one sync per block


@torch.no_grad()
def generate(
    model,
    prompt,
    attention_mask=None,
    steps=128,
    gen_length=128,
    block_length=128,
    temperature=0.0,
    cfg_scale=0.0,
    remasking="low_confidence",
    mask_id=LLADA_MASK,
    logits_eos_inf=False,
    confidence_eos_eot_inf=False,
    *,
    top_k=None,
    top_p=1.0,
    min_p=0.0,
    truncation_order="top_k_first",
    confidence="llada",
    alg_temp=0.0,
    schedule="uniform",
    factor=1,
    threshold=None,
    threshold_rule="fixed",
    seed=None,
    suppress_tokens=None,
    defer_tokens=None,
    backend="auto",
    return_trace=False,
    callback=None,
    logits_window=False,
    cuda_graph=True,
    cache=None,
    stop_at_eos=False,
    threshold_floor="one",
    minimal_topk=1,
    eos_early_stop=False,
    edit_threshold=None,
    max_post_edit_steps=16,
    penalty_lambda=0.0,
    force_editing=False,
):
    """Fill ``gen_length`` masked positions after ``prompt`` with a masked diffusion LM.

    The positional parameters are LLaDA's ``generate``'s, in its order, with its defaults;
    docs/api.md describes every parameter, the trace and what is exact. The sampling options
    (every keyword but ``model``, ``prompt``, ``attention_mask``, ``seed``, ``return_trace`` and
    ``callback``: exactly `fastremask.SamplingConfig`'s fields) become one config (validated
    there) and `run` samples.

    Parameters
    ----------
    model : callable, ``model(x [B, L] int64, attention_mask=...)`` -> ``.logits`` ``[B, L, V]``
        (fp32, bf16 or fp16); ``model.device`` (if present) is where ``x`` is built
    prompt : [B, P] integer tensor, left-padded; must not contain ``mask_id``
    attention_mask : [B, P] (1 = token, 0 = padding) or None; ones are appended for the answer
    steps : model-call budget: per block ``steps // num_blocks`` (uniform: exactly that many;
        pyramid: at most that many; unused in threshold mode)
    gen_length, block_length : answer length and semi-autoregressive block length
    temperature : sampling temperature: 0 is greedy, T > 0 draws from softmax(l / T) (numerics.md §4)
    cfg_scale : classifier-free guidance scale (0 = off)
    top_k : at ``T > 0``, draw only from the ``top_k`` most likely tokens (None: off; ties at the
        cut by lower index). top-k, top-p and min-p are an exact integer cut (numerics.md §4a)
        and change nothing at ``T = 0``
    top_p : at ``T > 0``, draw only from the smallest most-likely set whose mass exceeds
        ``top_p``, in (0, 1] (1: off)
    min_p : at ``T > 0``, draw only from the tokens with ``p >= min_p * p_max``, in [0, 1) (0: off)
    alg_temp : Dream's position choice: ``> 0`` keeps each step's count of positions drawn without
        replacement from ``softmax(confidence / alg_temp)`` (Gumbel-top-k with counter-based
        noise, `numerics.gumbel_key`) instead of the most confident; schedule mode only
    truncation_order : 'top_k_first' (LLaDA2's and Hugging Face's: top-p on what top-k keeps) |
        'top_p_first' (Dream's: top-p on the whole distribution, then top-k)
    remasking : 'low_confidence' | 'random' | 'margin' | 'entropy'
    confidence : whose confidence the remasking rule takes (numerics.md §6a): 'llada' (the
        untempered full softmax) | 'dream' (Dream's ``sample_tokens``: the tempered softmax after
        top-p / top-k, truncated at ``T = 0`` too) | 'llada2' (LLaDA2's: the tempered, truncated
        softmax at ``T > 0``, 'llada' at ``T = 0``; ``low_confidence`` only)
    mask_id : the mask token id (LLaDA's 126336 by default, as in LLaDA's signature; None: the
        model's ``model.mask_id``, e.g. an adapter's, else LLaDA's)
    logits_eos_inf : suppress the model's EOS (``model.eos_id``; LLaDA's 126081 otherwise)
    confidence_eos_eot_inf : defer the model's EOS and EoT (LLaDA's 126081 and 126348 otherwise)
    schedule : 'uniform' | 'pyramid' | 'dream' | 'origin' (Dream's alg='origin': each position
        unmasked by its own draw; every step calls the model) | list of per-step counts |
        callable(n, steps) | Schedule
    factor : pyramid dilation (step i keeps ``i // factor + 1``)
    threshold : keep every candidate with confidence >= threshold each step (at least one);
        with another ``threshold_rule``, that rule's parameter
    threshold_rule : 'fixed' (the threshold above) | 'factor' (Fast-dLLM's factor rule, threshold
        = f) | 'eb' (the EB-sampler's entropy bound, threshold = gamma); docs/decoding.md
    seed : int, one int per batch row, or None (drawn from torch's default generator)
    suppress_tokens : token ids never generated
    defer_tokens : token ids kept only after every other candidate of the block
    backend : 'auto' | 'reference' | 'torch' | 'triton'
    return_trace : also return a `fastremask.Trace`
    callback : called with each step's `fastremask.TraceStep` after it is applied
    logits_window : the model computes its output projection for the current block's
        positions only (``[B, block_length, V]`` logits instead of ``[B, L, V]``); needs a model
        `fastremask.sampler.protocol.window_logits` supports. Same tokens when the model's logits for a
        slice equal its full logits' slice, which is not promised on every GPU (docs/api.md)
    cuda_graph : on CUDA with the ``triton`` backend, capture the sampling step in a CUDA graph
        once per shape and configuration and replay it (`fastremask.sampler.graphs`; the same
        bits, checked on the first replay); False runs it eagerly. Ignored elsewhere
    cache : None (exact) | 'prefix' | 'dual': block KV caches (docs/cache.md), an approximation
        of the model's forward, so the tokens may differ from ``cache=None``; needs a model with
        ``cached_logits`` (the native LLaDA and Dream, the tiny model)
    stop_at_eos : once a row's finished blocks end in EOS (its answer is over), fill the rest of
        the row with EOS; stop when every row is done (fewer model calls for instruct models)

    Block diffusion (a block-causal model: LLaDA2.x, SDAR; docs/decoding.md, "Block diffusion"):
    the blocks are cut from each row's position 0, ``cache='block'`` is the exact block cache.

    threshold_floor : 'one' (a threshold step keeps at least one) | 'schedule' (LLaDA2's and
        SDAR's ``low_confidence_dynamic``: confidence > threshold, at least the schedule's count)
    minimal_topk : LLaDA2's cap, at most ``gen_length // minimal_topk`` steps per block
    eos_early_stop : a row whose answer holds an EOS with no mask before it is done (LLaDA2)
    edit_threshold : token editing (LLaDA2.1; None: off): a decoded token of the current block
        takes the sampled token when its probability is > edit_threshold
    max_post_edit_steps : token editing: steps of a block after its last mask
    penalty_lambda : token editing: lower the logit of the previous position's token
    force_editing : allow editing on a family not trained for it

    Returns
    -------
    x : [B, P + gen_length] int64 on the model's device, prompt included
    (x, trace) when ``return_trace``
    """
    given = locals()          # the keywords; a test holds them equal to SamplingConfig's fields
    config = SamplingConfig(**{name: given[name] for name in options()})
    return run(model, prompt, config, attention_mask=attention_mask, seed=seed,
               return_trace=return_trace, callback=callback)
