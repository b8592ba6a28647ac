"""``fastremask profile``: one `generate` under ``torch.profiler``, with the phases named.

Every model call runs inside a ``model`` range and every ``sample_rows`` / ``select`` call
of the backend inside ``sample`` / ``select`` ranges (``torch.profiler.record_function``,
and NVTX ranges on CUDA so Nsight Systems shows them too). The command writes a Chrome trace
(``--out``, open it in ui.perfetto.dev or chrome://tracing), prints the top operators and a
per-phase summary. docs/profiling.md shows how to run it under Nsight Systems / Compute.

`Phases` is the piece the benchmarks reuse: while active it wraps the sampler's one model call
site (`fastremask.sampler.model_call.hooked`: full, window, cached and block calls alike, the
calls `fastremask.Trace.model_calls` counts) and the backends' ``sample_rows`` / ``select``
(`fastremask.sampler.backends.hooked`), and can also time each phase (synchronising on CUDA,
so use that only in a run of its own). The model is passed to `generate` as it is.
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

from fastremask.tools.options import add_config_arguments, config_kwargs, options

__all__ = ["add_arguments", "run", "Phases", "build_model", "MODELS", "PHASES"]

PHASES = ("model", "sample", "select")
# The sampler's model calls and the backends' steps are wrapped through their registries'
# hooks (`fastremask.sampler.model_call.hooked`, `fastremask.sampler.backends.hooked`). LLaDA's
# own loop (`fastremask.sampler.llada`, the comparison, not the sampler) is patched by name for
# the run: its model call (`_logits`) counts as ``model``, and its `llada_step`, which fuses the
# two other phases, as ``sample``.
_LLADA = "fastremask.sampler.llada"
_LLADA_PHASES = (("_logits", "model"), ("llada_step", "sample"))


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


class Phases:
    """Name (and optionally time) the model / sample / select phases of a `generate` run.

    >>> with Phases(device=model.device) as ph:
    ...     x, trace = generate(model, prompt, ..., return_trace=True)
    >>> ph.calls["model"] == trace.model_calls, ph.seconds["sample"]

    ``calls["model"]`` counts the calls of the sampler's one call site, so it equals the
    trace's `fastremask.Trace.model_calls` (every kind of call, a CFG call once). ``device``
    (default: ``model.device`` when a model is given, else the CPU) is what ``timing=True``
    synchronises around every phase (to attribute device time); that slows a GPU loop down,
    so time the whole loop in a separate run.
    """

    def __init__(self, model=None, *, timing: bool = False, nvtx: bool | None = None, device=None):
        if device is None:
            device = getattr(model, "device", None)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.timing = timing
        self.nvtx = (self.device.type == "cuda") if nvtx is None else nvtx
        self.calls: dict = defaultdict(int)
        self.seconds: dict = defaultdict(float)
        self._saved: list = []
        self._hooks: list = []

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self):
        from fastremask.sampler import backends, model_call

        for hook in (backends.hooked(self._wrap_backend), model_call.hooked(self._wrap_model_call)):
            hook.__enter__()
            self._hooks.append(hook)
        mod = importlib.import_module(_LLADA)
        for attr, phase in _LLADA_PHASES:
            fn = getattr(mod, attr)
            self._saved.append((mod, attr, fn))
            setattr(mod, attr, self._wrap(fn, phase))
        return self

    def __exit__(self, *exc):
        for mod, attr, fn in reversed(self._saved):
            setattr(mod, attr, fn)
        self._saved.clear()
        while self._hooks:
            self._hooks.pop().__exit__(*exc)
        return False

    def _wrap_backend(self, b):
        """``b`` with its ``sample_rows`` / ``select`` in the ``sample`` / ``select`` phases."""
        return dataclasses.replace(b, sample_rows=self._wrap(b.sample_rows, "sample"),
                                   select=self._wrap(b.select, "select"))

    def _wrap_model_call(self, call):
        """The sampler's model call ``call(model, x, attention_mask)`` in the ``model`` phase."""
        return self._wrap(call, "model")

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

MODELS = {
    "tiny": "fastremask.models.tiny, fp32 (default)",
    "llada-8b": "random weights of LLaDA-8B's shape, bf16 (CUDA; fewer layers if it does not fit)",
    "sdar": "random native SDAR, block-causal, block 4: SDAR-1.7B-Chat's shape on CUDA (bf16, fewer layers "
            "if it does not fit), a small one on the CPU (fp32; --size)",
    "llada2": "random native LLaDA2 MoE, block-causal, block 32: LLaDA2.0-mini's shape on CUDA (bf16, fewer "
              "layers if it does not fit), a small one on the CPU (fp32; --size)",
}
SIZES = ("auto", "full", "small", "tiny")


def build_model(name: str, device, max_len: int, size: str = "auto"):
    """The model ``name`` of `MODELS` on ``device``: ``tiny`` (fastremask.models.tiny, fp32),
    ``llada-8b`` (`fastremask.tools.bench.random_model`), ``sdar`` / ``llada2`` (the native
    block-causal models with random weights, `fastremask.tools.bench.random_block_model`;
    ``size`` ``"auto"``: the published shape on CUDA, ``"small"`` elsewhere)."""
    device = torch.device(device)
    if name == "tiny":
        from fastremask.models.tiny import tiny_model

        return tiny_model(max_len=max(max_len, 256)).to(device)
    if name == "llada-8b":
        from fastremask.tools.bench import random_model

        return random_model(device)
    if name in ("sdar", "llada2"):
        from fastremask.tools.bench import random_block_model

        if size == "auto":
            size = "full" if device.type == "cuda" else "small"
        return random_block_model(name, device, size=size, max_position_embeddings=max(max_len, 32768))
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


def trained_block_length(name: str):
    """The block length a block-causal ``--model`` was trained with (its family record's), else None."""
    if name not in ("sdar", "llada2"):
        return None
    from fastremask.models.family import get_family

    return get_family(name).block_length


# the sampling options profile takes: every option of SamplingConfig but the mask id (the
# model's), with the command's own defaults (None: derived in config_from_args)
_NAMES = [n for n in options() if n != "mask_id"]
_DEFAULTS = dict(gen_length=64, steps=None, block_length=None, backend="torch")
_HELPS = dict(steps="model-call budget (default: gen-length)",
              block_length="semi-autoregressive block (default: gen-length; a block-causal --model: its "
                           "trained block, 4 for sdar, 32 for llada2)")


def config_from_args(args):
    """The `fastremask.SamplingConfig` of the command's sampling options (mask id: the model's);
    a bad value is generate's ValueError, before any model is built."""
    from fastremask.sampler.config import SamplingConfig, check_int

    kw = config_kwargs(args, _NAMES)
    check_int("gen_length", kw["gen_length"], 1)      # before the defaults derived from it
    if kw["block_length"] is None:
        kw["block_length"] = trained_block_length(getattr(args, "model", None)) or kw["gen_length"]
    if kw["steps"] is None:
        kw["steps"] = kw["gen_length"]
    try:
        return SamplingConfig(**kw)
    except TypeError as e:
        raise ValueError(str(e)) from None


# ---------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny", choices=list(MODELS),
                        help="; ".join(f"{k}: {v}" for k, v in MODELS.items()))
    parser.add_argument("--size", default="auto", choices=SIZES,
                        help="shape of --model sdar/llada2: full (published), small, tiny (default auto: "
                             "full on CUDA, small on the CPU)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--out", default="trace.json", help="Chrome trace to write (default trace.json)")
    parser.add_argument("--top", type=int, default=15, help="operators to list")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-trace", action="store_true",
                        help="no torch.profiler (only NVTX ranges): for running under nsys/ncu")
    s = parser.add_argument_group("sampling (fastremask.generate's options: SamplingConfig's fields)")
    add_config_arguments(s, _NAMES, defaults=_DEFAULTS, helps=_HELPS)


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
    if args.size != "auto" and args.model not in ("sdar", "llada2"):
        raise CliError(f"--size {args.size} is for --model sdar or llada2, not {args.model}")
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
    model = build_model(args.model, device, args.prompt_length + config.gen_length, args.size)
    vocab = model.config.vocab_size
    g = torch.Generator(device="cpu").manual_seed(0)
    prompt = torch.randint(0, min(vocab, model.mask_id), (args.batch, args.prompt_length), generator=g).to(device)

    with torch.no_grad():
        loop.run(model, prompt, config, seed=0)  # warm-up: allocator, kernels' compilation
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if args.no_trace:
            with Phases(device=device) as ph:
                _, trace = loop.run(model, prompt, config, seed=0, return_trace=True)
            torch.cuda.synchronize(device) if device.type == "cuda" else None
            _check_counts(ph, trace)
            print(f"ran generate with NVTX ranges: {dict(ph.calls)}")
            return 0
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        t0 = time.perf_counter()
        with torch.profiler.profile(activities=activities) as prof:
            with Phases(device=device) as ph:
                _, trace = loop.run(model, prompt, config, seed=0, return_trace=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
    _check_counts(ph, trace)
    prof.export_chrome_trace(args.out)
    if not os.path.isfile(args.out):     # torch logs a failed export and returns
        raise CliError(f"--out {args.out}: the profiler could not write the trace")
    averages = prof.key_averages()
    sort = "self_cpu_time_total"
    if device.type == "cuda":  # torch >= 2.4 names it "device"; older ones "cuda"
        sort = "self_device_time_total" if any(hasattr(e, "self_device_time_total") for e in averages) \
            else "self_cuda_time_total"
    print(averages.table(sort_by=sort, row_limit=args.top))
    print(phase_summary(averages, ph, wall, device, trace))
    print(f"wrote {args.out} (open in ui.perfetto.dev or chrome://tracing)")
    return 0


def _check_counts(ph: Phases, trace) -> None:
    """The ``model`` ranges are the trace's model calls (one call site): a RuntimeError if not."""
    if ph.calls["model"] != trace.model_calls:
        raise RuntimeError(f"profile recorded {ph.calls['model']} model ranges, but generate made "
                           f"{trace.model_calls} model calls (Trace.model_calls)")


def phase_summary(averages, ph: Phases, wall: float, device: torch.device, trace=None) -> str:
    """Calls and time per phase, from the profiler's events of the phases' ranges; with the
    run's ``trace``, the model calls and the positions they computed (`fastremask.Trace`)."""
    by_name = {e.key: e for e in averages if e.key in PHASES}
    steps = max(ph.calls["model"], 1)
    computed = f" ({trace.positions} positions computed)" if trace is not None else ""
    lines = [f"phases over {ph.calls['model']} model calls{computed}, {wall:.3f} s wall (profiled):"]
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
