"""``fastremask profile``: one `generate` under ``torch.profiler``, with the phases named.

Every model call runs inside a ``model`` range and every ``sample_rows`` / ``select`` call
of the backend inside ``sample`` / ``select`` ranges (``torch.profiler.record_function``,
and NVTX ranges on CUDA so Nsight Systems shows them too). The command writes a Chrome trace
(``--out``, open it in ui.perfetto.dev or chrome://tracing), prints the top operators and a
per-phase summary. docs/profiling.md shows how to run it under Nsight Systems / Compute.

`Phases` is the piece the benchmarks reuse: it wraps a model and, while active, the
backends' ``sample_rows`` / ``select`` (through the registry's hook), and can also time each phase (synchronising on CUDA,
so use that only in a run of its own).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import os
import time
from collections import defaultdict

import torch

__all__ = ["add_arguments", "run", "Phases", "PhaseModel", "build_model", "PHASES"]

PHASES = ("model", "sample", "select")
# The backends' steps are wrapped through the registry (`fastremask.sampler.backends.hooked`:
# while `Phases` is active, every backend `get_backend` hands the loop has its `sample_rows` /
# `select` in the ``sample`` / ``select`` phases). LLaDA's own loop (`fastremask.sampler.llada`,
# the comparison, not a backend) fuses the two: its whole `llada_step` counts as ``sample``,
# patched by name for the run.
_LLADA = ("fastremask.sampler.llada", "llada_step")


class _Range:
    """record_function + NVTX (on CUDA) + optional synchronised wall time, for one phase."""

    def __init__(self, owner: "Phases", name: str):
        self.owner, self.name = owner, name

    def __enter__(self):
        o = self.owner
        self._rf = torch.profiler.record_function(self.name)
        self._rf.__enter__()
        if o.nvtx:
            torch.cuda.nvtx.range_push(self.name)
        if o.timing:
            o._sync()
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        o = self.owner
        if o.timing:
            o._sync()
            o.seconds[self.name] += time.perf_counter() - self._t0
        o.calls[self.name] += 1
        if o.nvtx:
            torch.cuda.nvtx.range_pop()
        self._rf.__exit__(*exc)
        return False


class PhaseModel:
    """A model wrapper: each call runs in the ``model`` phase; everything else is delegated."""

    def __init__(self, model, phases: "Phases"):
        self._model, self._phases = model, phases

    def __call__(self, *args, **kwargs):
        with _Range(self._phases, "model"):
            return self._model(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)


class Phases:
    """Name (and optionally time) the model / sample / select phases of a `generate` run.

    >>> with Phases(model) as ph:
    ...     generate(ph.model, prompt, ...)
    >>> ph.calls["model"], ph.seconds["sample"]

    ``timing=True`` synchronises the device around every phase (to attribute device time);
    it slows a GPU loop down, so time the whole loop in a separate run.
    """

    def __init__(self, model, *, timing: bool = False, nvtx: bool | None = None, device=None):
        if device is None:
            device = getattr(model, "device", None)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.timing = timing
        self.nvtx = (self.device.type == "cuda") if nvtx is None else nvtx
        self.calls: dict = defaultdict(int)
        self.seconds: dict = defaultdict(float)
        self.model = PhaseModel(model, self)
        self._saved: list = []

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self):
        from fastremask.sampler import backends

        self._hook = backends.hooked(self._wrap_backend)
        self._hook.__enter__()
        mod = importlib.import_module(_LLADA[0])
        fn = getattr(mod, _LLADA[1])
        self._saved.append((mod, _LLADA[1], fn))
        setattr(mod, _LLADA[1], self._wrap(fn, "sample"))
        return self

    def __exit__(self, *exc):
        for mod, attr, fn in reversed(self._saved):
            setattr(mod, attr, fn)
        self._saved.clear()
        self._hook.__exit__(*exc)
        return False

    def _wrap_backend(self, b):
        """``b`` with its ``sample_rows`` / ``select`` in the ``sample`` / ``select`` phases."""
        return dataclasses.replace(b, sample_rows=self._wrap(b.sample_rows, "sample"),
                                   select=self._wrap(b.select, "select"))

    def _wrap(self, fn, phase: str):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with _Range(self, phase):
                return fn(*args, **kwargs)

        inner._fastremask_phase = True
        return inner

    def per_step_ms(self) -> dict:
        """Milliseconds per model call spent in each phase (needs ``timing=True``)."""
        n = max(self.calls["model"], 1)
        return {p: 1e3 * self.seconds[p] / n for p in PHASES}


# ---------------------------------------------------------------------------- models


def build_model(name: str, device, max_len: int):
    """``tiny`` (fastremask.models.tiny, fp32) or ``llada-8b`` (random weights, LLaDA-8B's shape, bf16,
    fewer layers if it does not fit; fastremask.tools.bench.RandomMaskedLM)."""
    device = torch.device(device)
    if name == "tiny":
        from fastremask.models.tiny import tiny_model

        return tiny_model(max_len=max(max_len, 256)).to(device)
    if name == "llada-8b":
        from fastremask.tools.bench import random_model

        return random_model(device)
    raise ValueError(f"unknown model {name!r}; choose tiny or llada-8b")


def config_from_args(args):
    """The `fastremask.SamplingConfig` of the command's sampling options (mask id: the model's)."""
    from fastremask.sampler.config import SamplingConfig

    from fastremask.sampler.config import check_int

    check_int("gen_length", args.gen_length, 1)      # before the defaults derived from it
    return SamplingConfig(
        steps=args.gen_length if args.steps is None else args.steps, gen_length=args.gen_length,
        block_length=args.gen_length if args.block_length is None else args.block_length,
        temperature=args.temperature,
        cfg_scale=args.cfg_scale, remasking=args.remasking, schedule=args.schedule, factor=args.factor,
        backend=args.backend)


# ---------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny", choices=["tiny", "llada-8b"],
                        help="tiny: fastremask.models.tiny (default); llada-8b: random weights of LLaDA-8B's shape (CUDA)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--backend", default="torch", choices=["reference", "torch", "triton"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--gen-length", type=int, default=64)
    parser.add_argument("--block-length", type=int, default=None, help="default: gen-length (one block)")
    parser.add_argument("--steps", type=int, default=None, help="default: gen-length")
    parser.add_argument("--schedule", default="uniform", choices=["uniform", "pyramid"])
    parser.add_argument("--factor", type=int, default=1, help="pyramid factor")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--cfg-scale", type=float, default=0.0)
    parser.add_argument("--remasking", default="low_confidence")
    parser.add_argument("--out", default="trace.json", help="Chrome trace to write (default trace.json)")
    parser.add_argument("--top", type=int, default=15, help="operators to list")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-trace", action="store_true",
                        help="no torch.profiler (only NVTX ranges): for running under nsys/ncu")


def check_args(args) -> None:
    """The command's own options, the device and ``--out``'s folder, before any work (a
    `fastremask.tools.cli.CliError` naming the option)."""
    from fastremask.sampler.devices import check_device
    from fastremask.tools.cli import CliError, check_output_dir

    for opt, minimum in (("batch", 1), ("prompt_length", 1), ("top", 0), ("threads", 1)):
        v = getattr(args, opt)
        if v is not None and v < minimum:
            raise CliError(f"--{opt.replace('_', '-')} must be >= {minimum}, got {v}")
    check_device(args.device)
    if not args.no_trace:
        check_output_dir(args.out, "--out")


def run(args) -> int:
    from fastremask.sampler import loop
    from fastremask.tools.cli import CliError

    check_args(args)
    config = config_from_args(args)      # a bad option fails here, before the model is built
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.backend == "triton" and device.type != "cuda":
        raise CliError("--backend triton needs a CUDA device here (the interpreter is no speed path); "
                       "use --backend torch or --device cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args.model, device, args.prompt_length + args.gen_length)
    vocab = model.config.vocab_size
    g = torch.Generator(device="cpu").manual_seed(0)
    prompt = torch.randint(0, min(vocab, model.mask_id), (args.batch, args.prompt_length), generator=g).to(device)

    with torch.no_grad():
        loop.run(model, prompt, config, seed=0)  # warm-up: allocator, kernels' compilation
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if args.no_trace:
            with Phases(model, device=device) as ph:
                loop.run(ph.model, prompt, config, seed=0)
            torch.cuda.synchronize(device) if device.type == "cuda" else None
            print(f"ran generate with NVTX ranges: {dict(ph.calls)}")
            return 0
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        t0 = time.perf_counter()
        with torch.profiler.profile(activities=activities) as prof:
            with Phases(model, device=device) as ph:
                loop.run(ph.model, prompt, config, seed=0)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
    prof.export_chrome_trace(args.out)
    if not os.path.isfile(args.out):     # torch logs a failed export and returns
        raise CliError(f"--out {args.out}: the profiler could not write the trace")
    averages = prof.key_averages()
    sort = "self_cpu_time_total"
    if device.type == "cuda":  # torch >= 2.4 names it "device"; older ones "cuda"
        sort = "self_device_time_total" if any(hasattr(e, "self_device_time_total") for e in averages) \
            else "self_cuda_time_total"
    print(averages.table(sort_by=sort, row_limit=args.top))
    print(phase_summary(averages, ph, wall, device))
    print(f"wrote {args.out} (open in ui.perfetto.dev or chrome://tracing)")
    return 0


def phase_summary(averages, ph: Phases, wall: float, device: torch.device) -> str:
    """Calls and time per phase, from the profiler's events of the phases' ranges."""
    by_name = {e.key: e for e in averages if e.key in PHASES}
    steps = max(ph.calls["model"], 1)
    lines = [f"phases over {ph.calls['model']} model calls, {wall:.3f} s wall (profiled):"]
    for p in PHASES:
        e = by_name.get(p)
        if e is None:
            lines.append(f"  {p:<7} (no range recorded)")
            continue
        cpu_ms = e.cpu_time_total / 1e3
        dev_us = getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0)) or 0
        dev = f", device {dev_us / 1e3 / steps:.3f} ms/step" if device.type == "cuda" else ""
        lines.append(f"  {p:<7} {e.count:>6} calls, host {cpu_ms / steps:.3f} ms/step{dev}")
    return "\n".join(lines)
