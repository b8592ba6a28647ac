"""The timing loop of the block-cache benchmarks (`block_cache.py`, `native_block_models.py`,
`block_models_gpu.py`): the same sampler with ``cache=None`` (the published full-window
recompute) and ``cache="block"`` (the exact block cache) on one model.

Per mode one warm-up run gives the tokens and the counts (`fastremask.Trace.model_calls` and
`Trace.positions`, the sampler's own count of the calls and of the positions they ran), then
``rounds`` timed runs (``sync`` before and after each, for a GPU); the median is reported.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

MODES = (None, "block")


def add_run_arguments(ap) -> None:
    """The flags the CPU block benchmarks share: --prompt, --gen, --rounds, --threads, --quick."""
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="a tiny run (seconds)")


@dataclass
class Mode:
    seconds: float                  # median of the timed rounds
    rounds: list = field(repr=False)
    tokens: torch.Tensor = field(repr=False)
    calls: int = 0                  # model calls of one run
    positions: int = 0              # positions they ran, over all rows
    parts: list = field(default_factory=list, repr=False)   # per timed round: probe.read(seconds)


def time_modes(model, prompt, config_for, rounds: int, sync=lambda: None, modes=MODES, probe=None) -> dict:
    """``{cache: Mode}`` for ``cache`` in ``modes`` (None, "block"); ``config_for(cache)`` is
    the mode's `fastremask.SamplingConfig`. ``probe``: ``reset()`` before each timed round and
    ``read(seconds)`` after it, kept in `Mode.parts` (block_cache.py's split of the time)."""
    from fastremask.sampler.loop import run

    res = {}
    with torch.no_grad():
        for cache in modes:
            config = config_for(cache)
            tokens, trace = run(model, prompt, config, seed=0, return_trace=True)      # warm-up
            times, parts = [], []
            for _ in range(rounds):
                if probe is not None:
                    probe.reset()
                sync()
                t = time.perf_counter()
                run(model, prompt, config, seed=0)
                sync()
                times.append(time.perf_counter() - t)
                if probe is not None:
                    parts.append(probe.read(times[-1]))
            res[cache] = Mode(statistics.median(times), times, tokens, trace.model_calls, trace.positions, parts)
    return res


def cells(res: dict) -> str:
    """The table cells both CPU benchmarks print: recompute s, cache s, ratio, calls, positions,
    whether the tokens (and the call counts) are equal."""
    r, c = res[None], res["block"]
    same = bool(torch.equal(r.tokens, c.tokens)) and r.calls == c.calls
    return (f"{r.seconds:.2f} | {c.seconds:.2f} | **{r.seconds / c.seconds:.1f}x** | {c.calls} "
            f"| {r.positions:,} / {c.positions:,} ({r.positions / c.positions:.0f}x) | {same} |")
