"""Host cost per step of `fastremask.generate` on CPU, with a model that costs nothing.

The model is a callable that returns a cached, precomputed fp32 logits tensor ``[B, L, V]``
(vocab 64, standard normal, fixed seed) for the shape of the ``x`` it gets, so everything
measured is the sampler's own work: argument checks, the loop, ``sample_rows`` and ``select``.
``mask_id`` is the last vocabulary id, so (as with LLaDA, whose mask id is in its vocabulary)
the sampler suppresses it and takes its suppression path.

For each case (backend x batch x schedule/threshold mode x temperature) it reports:

* model calls per ``generate``;
* aten ops dispatched per step (per model call), counted with a ``TorchDispatchMode`` that
  counts every ``func`` reaching ``__torch_dispatch__``; in total, and inside the backend's
  ``sample_rows`` and ``select`` (wrapped through the backend registry for the counting
  round), so that ``loop = total - sample_rows - select``. A backend whose functions cannot
  be wrapped (missing attribute, or the loop never called the wrapper because it bound the
  function elsewhere) reports the total only;
* microseconds per step: wall time of ``generate`` / model calls, median of ``--rounds`` timed
  rounds (at least 5) after one warm-up round, without the dispatch mode;
* the torch intra-op thread count.

The ``triton`` backend runs under ``TRITON_INTERPRET=1`` (set by this script before torch is
imported), batch 1 only unless ``--triton-batches``, for op counts only: the counts include
what the interpreter itself dispatches, and interpreted kernels say nothing about time. It is
skipped with a note if it does not import or fails.

On a shared machine the times at the default thread count vary a lot between runs (every
OpenMP parallel region waits for the other vCPU); ``--threads 1`` gives steadier numbers.

    python benchmarks/host_cost.py                      # markdown table on stdout
    python benchmarks/host_cost.py --json OUT.json      # and the rows + machine info as JSON
    python benchmarks/host_cost.py --threads 1 --backends torch
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter

# Set before torch is imported: entering a TorchDispatchMode imports triton, which reads this
# once. On a CPU the triton backend runs only interpreted; the other backends never use Triton.
os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

# The backend functions are wrapped through the registry (`fastremask.sampler.backends.hooked`):
# while `hooked` below is active, the `Backend` object the loop is handed has its
# ``sample_rows`` / ``select`` wrapped for the counting.
LABELS = ("sample_rows", "select")
VOCAB, PROMPT, GEN, SEED = 64, 16, 32, 0
THRESHOLD = 0.07   # ~15% of the rows' top softmax probabilities (V=64, N(0,1)) are below it


class CachedLogits:
    """``model(x) -> logits [B, L, V]``: one precomputed tensor per input shape, no work per call."""

    def __init__(self, vocab: int = VOCAB, seed: int = SEED):
        self.vocab, self.seed, self.cache, self.calls = vocab, seed, {}, 0

    def __call__(self, x, attention_mask=None):
        self.calls += 1
        key = tuple(x.shape)
        if key not in self.cache:
            g = torch.Generator().manual_seed(self.seed)
            self.cache[key] = torch.randn(*key, self.vocab, generator=g)
        return self.cache[key]


class OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched; also per `label` while a hooked backend function runs."""

    def __init__(self):
        super().__init__()
        self.total, self.inside, self.label = 0, Counter(), None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.total += 1
        if self.label is not None:
            self.inside[self.label] += 1
        return func(*args, **(kwargs or {}))


def _wrap(fn, label: str, counter: OpCounter, calls: Counter):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        calls[label] += 1
        if counter.label is not None:          # nested hook: the outermost one gets the ops
            return fn(*args, **kwargs)
        counter.label = label
        try:
            return fn(*args, **kwargs)
        finally:
            counter.label = None
    return wrapper


@contextlib.contextmanager
def hooked(backend: str, counter: OpCounter):
    """Wraps ``backend``'s ``sample_rows`` / ``select`` as the registry hands them to the loop,
    for the duration; yields the per-label call counts."""
    import dataclasses

    from fastremask.sampler import backends

    calls = Counter()

    def wrap(b):
        if b.name != backend:
            return b
        return dataclasses.replace(b, **{label: _wrap(getattr(b, label), label, counter, calls)
                                         for label in LABELS})

    with backends.hooked(wrap):
        yield calls


def cases(backends, batches=(1, 8)):
    """(backend, batch, block_length, mode, temperature) for every case."""
    modes = [(32, "schedule"), (8, "schedule"), (32, "threshold")]
    return [(be, b, blk, mode, t) for be in backends for b in batches for blk, mode in modes for t in (0.0, 1.0)]


def run_generate(model, backend, batch, block, mode, temperature):
    from fastremask import generate
    g = torch.Generator().manual_seed(SEED + 1)
    prompt = torch.randint(0, VOCAB - 1, (batch, PROMPT), generator=g)
    kw = dict(threshold=THRESHOLD) if mode == "threshold" else dict(schedule="uniform")
    model.calls = 0
    generate(model, prompt, steps=GEN, gen_length=GEN, block_length=block, temperature=temperature,
             mask_id=VOCAB - 1, seed=SEED, backend=backend, **kw)
    return model.calls


def measure(case, rounds: int, timed: bool) -> dict:
    backend, batch, block, mode, temperature = case
    model = CachedLogits()
    run_generate(model, *case)                                    # warm-up (fills the cache)
    counter = OpCounter()
    with hooked(backend, counter) as calls, counter:
        n = run_generate(model, *case)
    row = dict(backend=backend, batch=batch, gen_length=GEN, block_length=block, mode=mode,
               temperature=temperature, model_calls=n, threads=torch.get_num_threads(),
               ops_total=counter.total / n)
    for label in LABELS:                                        # None: not wrapped / never called
        row[f"ops_{label}"] = counter.inside[label] / n if calls[label] else None
    if all(row[f"ops_{lb}"] is not None for lb in LABELS):
        row["ops_loop"] = row["ops_total"] - sum(row[f"ops_{lb}"] for lb in LABELS)
    else:
        row["ops_loop"] = None
    row["us_per_step"] = None
    if timed:
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            run_generate(model, *case)
            times.append((time.perf_counter() - t0) / n * 1e6)
        row["us_per_step"] = statistics.median(times)
        row["us_per_step_min"] = min(times)
    return row


def run_triton(batches) -> tuple[list, str]:
    """The triton cases under TRITON_INTERPRET=1, op counts only; ([], why) if unavailable.
    The interpreter runs every kernel program in Python: ~13 s per generate at batch 1."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return [], "triton skipped: TRITON_INTERPRET is set to something other than 1"
    try:
        importlib.import_module("fastremask.kernels")
        return [measure(c, 0, timed=False) for c in cases(["triton"], batches)], ""
    except Exception as e:                       # missing, broken, or unsupported in the interpreter
        return [], f"triton skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _fmt(v, nd=1):
    return "n/a" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def table(rows) -> str:
    head = ("backend", "B", "gen", "block", "mode", "T", "model calls", "ops/step total",
            "sample_rows", "select", "loop", "us/step median", "min", "threads")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        us = (("interp.",) * 2 if r["us_per_step"] is None
              else (_fmt(r["us_per_step"], 0), _fmt(r["us_per_step_min"], 0)))
        cells = (r["backend"], r["batch"], r["gen_length"], r["block_length"], r["mode"],
                 _fmt(r["temperature"], 0), r["model_calls"], _fmt(r["ops_total"]),
                 _fmt(r["ops_sample_rows"]), _fmt(r["ops_select"]), _fmt(r["ops_loop"]), *us, r["threads"])
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(out)


def machine() -> dict:
    """Platform, CPUs, torch, and the git commit of the checkout `fastremask` was imported from."""
    import fastremask
    repo = os.path.dirname(os.path.dirname(os.path.abspath(fastremask.__file__)))

    def git(*a):
        try:
            return subprocess.run(["git", "-C", repo, *a], capture_output=True, text=True, check=True).stdout.strip()
        except Exception:
            return None
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "fastremask", "kernels")
    return dict(platform=platform.platform(), python=platform.python_version(), cpu_count=os.cpu_count(),
                torch=torch.__version__, threads=torch.get_num_threads(), fastremask_checkout=repo,
                git_commit=git("rev-parse", "HEAD"), sampler_tree_dirty=None if dirty is None else bool(dirty),
                load_avg=os.getloadavg(), date=time.strftime("%Y-%m-%d %H:%M:%S %Z"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="OUT", help="also write rows and machine info as JSON")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per case (>= 5)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads before measuring")
    ap.add_argument("--backends", default="torch,reference,triton", help="comma-separated")
    ap.add_argument("--triton-batches", default="1", help="batches for the (slow) interpreted triton cases")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    backends = args.backends.split(",")
    rounds = max(5, args.rounds)
    rows = [measure(c, rounds, timed=True) for c in cases([b for b in backends if b != "triton"])]
    note = ""
    if "triton" in backends:
        trows, note = run_triton([int(b) for b in args.triton_batches.split(",")])
        rows += trows
    info = machine()
    print(f"torch {info['torch']}, {info['threads']} threads, {info['cpu_count']} CPUs, commit "
          f"{info['git_commit']}{' (uncommitted changes)' if info['sampler_tree_dirty'] else ''}\n")
    print(table(rows))
    if note:
        print(f"\n{note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=info, note=note, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
