"""How many masked tokens each step of a block keeps (unmasks for good).

A *schedule* maps ``(n_masked, steps)`` to per-step counts ``[c_0, ..., c_{S-1}]`` with
``sum == n_masked``, every ``c_i >= 0`` and ``S <= steps``: ``n_masked`` is the number of
masked positions of the current block in one batch row and ``steps`` is LLaDA's per-block step
count (``generate``'s ``steps // num_blocks``). The block takes one model call per step with
``c_i > 0``: ``generate`` skips a step that keeps 0 tokens without calling the model. The
schedules:

* ``uniform()``: LLaDA's ``get_num_transfer_tokens``: ``n // steps`` every step, the remainder
  one by one to the first steps. Always ``S == steps``; ``steps > n`` gives steps that keep
  nothing (LLaDA still calls the model for them; ``generate`` here skips them: they change
  nothing).
* ``pyramid(factor)``: step ``i`` keeps ``min(i // factor + 1, still masked)`` and the block
  takes the fewest steps that unmask all of it; ``steps`` is a budget (a ValueError names both
  numbers when the pyramid needs more). See docs/schedules.md for how this differs from the
  step count in the post that proposed it (`post_steps`, `post_outcome`).
* ``dream()``: Dream's ``diffusion_generate`` counts (its ``maskgit_plus`` / ``topk_margin`` /
  ``entropy`` algorithms): timesteps ``t = linspace(1, eps, steps + 1)`` (fp32, ``eps = 1e-3``),
  step ``i < steps - 1`` keeps ``int(n_i * (1 - t[i + 1] / t[i]))`` of the ``n_i`` still masked
  (fp32 arithmetic, as Dream's tensors), the last step the rest.
* ``origin()``: Dream's ``alg="origin"``: no fixed counts. At step ``i < steps - 1`` each
  still-masked position is unmasked by its own draw with probability ``p_i = 1 - t[i + 1] / t[i]``
  (fp32, the same timesteps), every one left at the last step; every step calls the model
  (`Origin`; the draw is numerics.md §8's ``transfer_uniform``).
* a list of ints: those counts, for every block (they must sum to its masked count).
* a callable ``fn(n_masked, steps) -> sequence of ints``, checked like a list.

`resolve` turns any of these (or the names ``"uniform"``/``"pyramid"``/``"dream"``/``"origin"``) into a `Schedule`;
`counts` is the batched form (rows may have different ``n_masked``); `cost` says what a
``generate`` configuration costs in model calls (steps that keep 0 tokens are skipped by
``generate`` and not counted).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

__all__ = [
    "Schedule",
    "Uniform",
    "Pyramid",
    "Explicit",
    "FromCallable",
    "uniform",
    "pyramid",
    "Dream",
    "dream",
    "Origin",
    "origin",
    "resolve",
    "counts",
    "pyramid_steps",
    "pyramid_total",
    "post_steps",
    "PostOutcome",
    "post_outcome",
    "Cost",
    "cost",
]


# ---------------------------------------------------------------------------- argument checks


def _int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        v = operator.index(value)  # int, numpy int, 0-d int tensor; not float
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})") from None
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _check_counts(where: str, cs, n_masked: int, steps: int) -> list[int]:
    """Validate per-step counts for one block: ints, >= 0, sum == n_masked, len <= steps."""
    if isinstance(cs, torch.Tensor):
        cs = cs.tolist()
    if isinstance(cs, (str, bytes)) or not hasattr(cs, "__iter__"):
        raise TypeError(f"{where} must be a sequence of ints, got {cs!r}")
    out = [_int(f"{where}[{i}]", c, 0) for i, c in enumerate(cs)]
    if sum(out) != n_masked:
        raise ValueError(f"{where} sums to {sum(out)}, but the block has n_masked={n_masked} masked tokens")
    if len(out) > steps:
        raise ValueError(f"{where} has {len(out)} steps, more than the budget steps={steps}")
    return out


# ---------------------------------------------------------------------------- schedules


class Schedule:
    """Base class: ``schedule(n_masked, steps) -> list[int]`` and the batched `counts`."""

    def __call__(self, n_masked: int, steps: int) -> list[int]:
        n_masked = _int("n_masked", n_masked, 0)
        steps = _int("steps", steps, 1)
        return self._counts(n_masked, steps)

    def _counts(self, n: int, steps: int) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def counts(self, n_masked: torch.Tensor, steps: int) -> torch.Tensor:
        """Per-row counts ``[B, S]`` int64 on ``n_masked``'s device (``n_masked`` ``[B]`` int).

        Row ``b`` holds ``self(n_masked[b], steps)`` followed by zeros; ``S`` is the longest
        row's length (a block costs one model call for the whole batch per column with a
        count > 0 in some row).
        """
        n, steps = _check_batch(n_masked, steps)
        rows = {v: self._counts(v, steps) for v in torch.unique(n).tolist()}
        S = max((len(r) for r in rows.values()), default=0)
        table = {v: r + [0] * (S - len(r)) for v, r in rows.items()}
        return torch.tensor([table[v] for v in n.tolist()], dtype=torch.int64, device=n.device).view(len(n), S)


def _check_batch(n_masked, steps) -> tuple[torch.Tensor, int]:
    steps = _int("steps", steps, 1)
    if not isinstance(n_masked, torch.Tensor):
        raise TypeError(f"n_masked must be a 1-D integer tensor, got {type(n_masked).__name__}")
    if n_masked.dim() != 1 or n_masked.dtype.is_floating_point or n_masked.dtype.is_complex or n_masked.dtype == torch.bool:
        raise TypeError(f"n_masked must be a 1-D integer tensor, got {n_masked.dtype} of shape {tuple(n_masked.shape)}")
    n = n_masked.to(torch.int64)
    if n.numel() and int(n.min()) < 0:
        raise ValueError(f"n_masked must be >= 0, got min {int(n.min())}")
    return n, steps


@dataclass(frozen=True)
class Uniform(Schedule):
    """LLaDA's counts: ``n // steps`` each step, the remainder to the first ``n % steps`` steps."""

    def _counts(self, n: int, steps: int) -> list[int]:
        base, rem = divmod(n, steps)
        return [base + (i < rem) for i in range(steps)]

    def counts(self, n_masked: torch.Tensor, steps: int) -> torch.Tensor:
        n, steps = _check_batch(n_masked, steps)
        i = torch.arange(steps, device=n.device)
        base, rem = n // steps, n % steps  # [B]
        return base[:, None] + (i[None, :] < rem[:, None]).to(torch.int64)


def pyramid_total(m: int, factor: int) -> int:
    """Tokens a full pyramid unmasks in ``m`` steps: ``sum(i // factor + 1 for i < m)``."""
    q, r = divmod(m, factor)
    return factor * q * (q + 1) // 2 + r * (q + 1)


def pyramid_steps(n_masked: int, factor: int = 1) -> int:
    """The fewest steps ``m`` with ``pyramid_total(m, factor) >= n_masked`` (0 for 0 tokens)."""
    n = _int("n_masked", n_masked, 0)
    f = _check_factor(factor)
    # start from the real root of f*q*(q+1)/2 = n (exact integer arithmetic), then step to m
    q = max((math.isqrt(8 * n // f + 1) - 1) // 2 - 1, 0)
    m = q * f
    while pyramid_total(m, f) >= n and m > 0:
        m -= 1
    while pyramid_total(m, f) < n:
        m += 1
    return m


def _check_factor(factor) -> int:
    return _int("factor", factor, 1)


@dataclass(frozen=True)
class Pyramid(Schedule):
    """Step ``i`` keeps ``min(i // factor + 1, still masked)``; the fewest steps that finish."""

    factor: int = 1

    def __post_init__(self):
        _check_factor(self.factor)

    def _budget(self, n: int, steps: int) -> int:
        m = pyramid_steps(n, self.factor)
        if m > steps:
            raise ValueError(
                f"pyramid(factor={self.factor}) needs {m} steps to unmask n_masked={n} tokens, "
                f"but steps={steps}"
            )
        return m

    def _counts(self, n: int, steps: int) -> list[int]:
        m = self._budget(n, steps)
        out, left = [], n
        for i in range(m):
            k = min(i // self.factor + 1, left)
            out.append(k)
            left -= k
        return out

    def counts(self, n_masked: torch.Tensor, steps: int) -> torch.Tensor:
        n, steps = _check_batch(n_masked, steps)
        S = self._budget(int(n.max()) if n.numel() else 0, steps)
        k = torch.arange(S, device=n.device) // self.factor + 1  # [S]
        before = torch.cumsum(k, 0) - k  # [S] unmasked before step i if the row is not done
        return torch.minimum((n[:, None] - before[None, :]).clamp_min(0), k[None, :])


@dataclass(frozen=True)
class Explicit(Schedule):
    """Fixed per-step counts, the same for every block; they must sum to its masked count."""

    per_step: tuple[int, ...]

    def __post_init__(self):
        cs = self.per_step
        if isinstance(cs, torch.Tensor):
            cs = cs.tolist()
        if isinstance(cs, (str, bytes)) or not hasattr(cs, "__iter__"):
            raise TypeError(f"schedule must be a sequence of ints, got {cs!r}")
        cs = tuple(_int(f"schedule[{i}]", c, 0) for i, c in enumerate(cs))
        object.__setattr__(self, "per_step", cs)

    def _counts(self, n: int, steps: int) -> list[int]:
        return _check_counts(f"schedule {list(self.per_step)}", self.per_step, n, steps)


@dataclass(frozen=True)
class FromCallable(Schedule):
    """``fn(n_masked, steps) -> sequence of ints``, its result checked like an explicit list."""

    fn: Callable[[int, int], Sequence[int]]

    def _counts(self, n: int, steps: int) -> list[int]:
        name = getattr(self.fn, "__name__", repr(self.fn))
        return _check_counts(f"schedule {name}({n}, {steps})", self.fn(n, steps), n, steps)


@dataclass(frozen=True)
class Dream(Schedule):
    """Dream's per-step counts (``diffusion_generate``, non-``origin`` algorithms), read in two
    published copies of its ``generation_utils.py``: ``timesteps = torch.linspace(1, eps, steps +
    1)`` and, at step ``i`` with ``n_i`` positions still masked, ``int(n_i * (1 - s / t))`` for
    ``t, s = timesteps[i], timesteps[i + 1]`` (fp32 tensors; ``n_i`` as Dream's
    ``mask_index.sum() / batch``, an fp32 value, for one row), all the rest at the last step.
    Computed with the same torch ops on the CPU, so the counts are Dream's. Steps that keep 0
    are skipped by ``generate`` (Dream calls the model for them; they change nothing at ``T = 0``)."""

    eps: float = 1e-3

    def _counts(self, n: int, steps: int) -> list[int]:
        t = torch.linspace(1, self.eps, steps + 1)
        out, left = [], n
        for i in range(steps):
            if i < steps - 1:
                n_i = torch.tensor(left) / 1            # Dream's mask_index.sum() / batch: fp32
                k = int(n_i * (1 - t[i + 1] / t[i]))    # <= n_i: s / t >= 0
            else:
                k = left
            out.append(k)
            left -= k
        return out


def _dream_timesteps(eps: float, steps: int) -> torch.Tensor:
    """Dream's ``torch.linspace(1, eps, steps + 1)``, fp32 on the CPU."""
    return torch.linspace(1, eps, steps + 1)


@dataclass(frozen=True)
class Origin(Schedule):
    """Dream's ``alg="origin"`` (``diffusion_generate``'s ``_sample``, read in two published copies
    of its ``generation_utils.py``): with ``t, s = timesteps[i], timesteps[i + 1]`` of
    ``torch.linspace(1, eps, steps + 1)``, step ``i < steps - 1`` unmasks each still-masked
    position independently with probability ``p_transfer = 1 - s / t`` (fp32 tensors, as Dream's),
    the last step all of them (Dream's ``p_transfer = 1``); the token is sampled for the
    transferred positions. The count a step keeps is random, so `Origin` has no counts:
    `probabilities` gives the ``p_i`` and the loop draws each position's transfer
    (numerics.md §8). Every step calls the model, as Dream's loop does, even one where no
    position transfers or none is left (``steps`` calls per block)."""

    eps: float = 1e-3
    random_counts = True          # a class attribute: not a dataclass field

    def __post_init__(self):
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not 0 < self.eps < 1:
            raise ValueError(f"origin's eps must be a number in (0, 1), got {self.eps!r}")

    def probabilities(self, steps: int) -> list:
        """``[p_0, ..., p_{steps-1}]``: the fp32 values of ``1 - t[i + 1] / t[i]`` (Python floats,
        exact), ``1.0`` at the last step."""
        steps = _int("steps", steps, 1)
        t = _dream_timesteps(self.eps, steps)
        return [float(1 - t[i + 1] / t[i]) if i < steps - 1 else 1.0 for i in range(steps)]

    def _counts(self, n: int, steps: int) -> list[int]:
        raise ValueError("schedule='origin' (Dream's alg='origin') has no fixed per-step counts: each "
                         "position is unmasked by its own draw (Origin.probabilities gives the chances)")

    def counts(self, n_masked: torch.Tensor, steps: int) -> torch.Tensor:
        _check_batch(n_masked, steps)
        return self._counts(0, steps)


def origin(eps: float = 1e-3) -> Origin:
    """Dream's ``alg="origin"`` (`Origin`)."""
    return Origin(float(eps))


def dream(eps: float = 1e-3) -> Dream:
    """Dream's timestep schedule (`Dream`)."""
    return Dream(float(eps))


def uniform() -> Uniform:
    """LLaDA's schedule (`Uniform`)."""
    return Uniform()


def pyramid(factor: int = 1) -> Pyramid:
    """The pyramid schedule (`Pyramid`): step ``i`` keeps ``i // factor + 1`` tokens."""
    return Pyramid(factor)


_NAMES = {"uniform": Uniform, "pyramid": Pyramid, "dream": Dream, "origin": Origin}


def resolve(schedule="uniform", factor: int = 1) -> Schedule:
    """Any accepted form of a schedule -> a `Schedule`.

    ``schedule``: ``"uniform"``, ``"pyramid"`` (with ``factor``), a `Schedule`, the factories
    `uniform`/`pyramid` themselves, a list/tuple/1-D tensor of per-step counts, or a callable
    ``fn(n_masked, steps)``. ``factor`` applies to ``"pyramid"`` only; anything else with
    ``factor != 1`` is an error rather than silently ignored.
    """
    factor = _check_factor(factor)
    if schedule is pyramid or (isinstance(schedule, str) and schedule == "pyramid"):
        return Pyramid(factor)
    if factor != 1:
        raise ValueError(f"factor={factor} applies to schedule='pyramid' only, got schedule={schedule!r}")
    if schedule is uniform:
        return Uniform()
    if schedule is dream:
        return Dream()
    if schedule is origin:
        return Origin()
    if isinstance(schedule, str):
        if schedule not in _NAMES:
            raise ValueError(f"unknown schedule {schedule!r}; expected one of {sorted(_NAMES)}, a list or a callable")
        return _NAMES[schedule]()
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, (list, tuple)) or (isinstance(schedule, torch.Tensor) and schedule.dim() == 1):
        return Explicit(schedule)
    if callable(schedule):
        return FromCallable(schedule)
    raise TypeError(
        f"schedule must be a name, a Schedule, a list of ints or a callable, got {schedule!r} "
        f"({type(schedule).__name__})"
    )


def counts(schedule, n_masked: torch.Tensor, steps: int, factor: int = 1) -> torch.Tensor:
    """``resolve(schedule, factor).counts(n_masked, steps)``: ``[B, S]`` int64."""
    return resolve(schedule, factor).counts(n_masked, steps)


# ---------------------------------------------------------------------------- the post's formula


def post_steps(n: int, factor: int = 1) -> int:
    """The pyramid post's step count, exactly as its code computes it (Python floats):
    ``int(factor * (1 + 8 * n / factor) ** 0.5 / 2)``."""
    n = _int("n", n, 0)
    factor = _check_factor(factor)
    return int(factor * (1 + 8 * n / factor) ** 0.5 / 2)


@dataclass(frozen=True)
class PostOutcome:
    """What the post's loop does to one block of ``n`` masked tokens.

    ``steps``: the post's step count (model calls); ``kept``: tokens unmasked at each step;
    ``left_masked``: tokens still masked at the end; ``idle_steps``: steps that unmask
    nothing (the block was already full); ``needed``: `pyramid_steps` (ours).
    """

    n: int
    factor: int
    steps: int
    kept: tuple[int, ...]
    left_masked: int
    idle_steps: int
    needed: int

    @property
    def complete(self) -> bool:
        return self.left_masked == 0

    @property
    def minimal(self) -> bool:
        return self.complete and self.idle_steps == 0


def post_outcome(n: int, factor: int = 1) -> PostOutcome:
    """Replay the post's ``generate`` loop on one block of ``n`` masked tokens.

    The post runs ``post_steps(n, factor)`` steps (stopping if ``i > n``) and at step ``i``
    asks top-k for ``i // factor + 1`` positions; past the masked ones its extra picks are
    positions whose confidence is ``-inf``, so a step keeps ``min(i // factor + 1, left)``.
    """
    n = _int("n", n, 0)
    factor = _check_factor(factor)
    S = post_steps(n, factor)
    kept, left = [], n
    for i in range(S):
        if i > n:  # the post's `if i > gen_length: break`
            break
        k = min(i // factor + 1, left)
        kept.append(k)
        left -= k
    return PostOutcome(
        n=n,
        factor=factor,
        steps=len(kept),
        kept=tuple(kept),
        left_masked=left,
        idle_steps=sum(1 for k in kept if k == 0),
        needed=pyramid_steps(n, factor),
    )


# ---------------------------------------------------------------------------- cost


@dataclass(frozen=True)
class Cost:
    """What one ``generate`` call costs.

    ``model_calls``: forward passes (NFEs), one per step that keeps >= 1 token (steps keeping
    0 are skipped); CFG runs cond and uncond in one call of 2B rows, so it does not double it.
    ``rows_through_model``: sequence positions through the model, ``model_calls * batch *
    (2 if cfg) * (prompt_length + gen_length)``. ``sampled_rows``: masked positions of the
    current block summed over steps (times batch, times 2 with CFG): the logit rows a fast
    sampler must read, the floor of docs/architecture.md's performance model.
    """

    model_calls: int
    rows_through_model: int
    sampled_rows: int


def cost(
    gen_length: int,
    block_length: int,
    steps: int,
    schedule="uniform",
    factor: int = 1,
    batch: int = 1,
    cfg: bool = False,
    prompt_length: int = 0,
) -> Cost:
    """Cost of ``generate(..., steps, gen_length, block_length)`` with this schedule.

    Follows LLaDA's rules: ``gen_length % block_length == 0`` and ``steps % num_blocks == 0``;
    each block has ``block_length`` masked tokens and a budget of ``steps // num_blocks``.
    ``model_calls`` is exactly how often ``generate`` (schedule mode, any backend) calls the
    model: once per step whose count is > 0; steps that keep 0 tokens (uniform with
    ``steps // num_blocks > block_length``, zeros in an explicit list or a callable's result)
    are skipped and cost nothing. With CFG it is still one call per step, on ``2 * batch``
    rows. ``schedule='origin'``: every step calls the model (``steps`` calls, exact) and
    ``sampled_rows`` is its expected value, rounded (`_origin_cost`). Threshold mode is not
    covered (its step count depends on the logits).
    """
    gen_length = _int("gen_length", gen_length, 1)
    block_length = _int("block_length", block_length, 1)
    steps = _int("steps", steps, 1)
    batch = _int("batch", batch, 1)
    prompt_length = _int("prompt_length", prompt_length, 0)
    if not isinstance(cfg, bool):
        raise TypeError(f"cfg must be a bool, got {cfg!r}")
    if gen_length % block_length:
        raise ValueError(f"gen_length={gen_length} must be a multiple of block_length={block_length}")
    num_blocks = gen_length // block_length
    if steps % num_blocks:
        raise ValueError(f"steps={steps} must be a multiple of the number of blocks ({num_blocks})")
    plan = resolve(schedule, factor)
    rows = batch * (2 if cfg else 1)
    if isinstance(plan, Origin):
        return _origin_cost(plan, num_blocks, block_length, steps // num_blocks, rows, prompt_length + gen_length)
    per_block = plan(block_length, steps // num_blocks)
    # a step that keeps 0 tokens (in every row: each block starts fully masked, so all rows
    # share these counts) is skipped by `generate` without calling the model or sampling
    left, sampled, called = block_length, 0, 0
    for c in per_block:
        if c:
            called += 1
            sampled += left
            left -= c
    calls = num_blocks * called
    return Cost(
        model_calls=calls,
        rows_through_model=calls * rows * (prompt_length + gen_length),
        sampled_rows=num_blocks * sampled * rows,
    )


def _origin_cost(plan: Origin, num_blocks: int, block_length: int, per_block: int, rows: int,
                 length: int) -> Cost:
    """`cost` of ``schedule='origin'``: every step calls the model (``per_block`` calls per block,
    exact); the rows sampled are random, so ``sampled_rows`` is their expected number, rounded to
    the nearest int: a position is still masked at step ``i`` with probability ``prod_{j < i} (1 -
    q_j)``, ``q_j = ceil(p_j * 2**24) / 2**24`` the exact chance of its transfer (numerics.md §8)."""
    left, expected = 1.0, 0.0
    for p in plan.probabilities(per_block):
        expected += left
        left *= 1 - math.ceil(p * 2**24) / 2**24
    calls = num_blocks * per_block
    return Cost(model_calls=calls, rows_through_model=calls * rows * length,
                sampled_rows=round(num_blocks * block_length * expected * rows))
