"""Why `generate` (backend 'torch', CPU) is slower with torch's default thread count.

The torch backend's checked `sample_rows` runs each call at one thread
(``torch.set_num_threads(1)``, restored on exit). One `generate` over cached LLaDA-sized bf16
logits (prompt 992, gen 32, block 32, 32 steps, vocab 126,464, T = 0) was reported at 182 ms
with the default 2 threads and 117 ms with ``OMP_NUM_THREADS=1`` on a 2-core machine. This
script times, in one run, one worker process per configuration (rounds interleaved across
workers, so a busy shared machine hits them alike):

* ``default``    torch's default thread count, the code as it is;
* ``omp1``       ``OMP_NUM_THREADS=1`` in the environment;
* ``set1_start`` ``torch.set_num_threads(1)`` once at process start;
* ``no_toggle``  default threads, ``torch.set_num_threads`` patched to a no-op (so `sample_rows`
  runs its ops at the default thread count);
* ``once``       default threads, ``torch.set_num_threads(1)`` around each whole `generate`;
* ``scoped``     as ``once``, but the model call runs at the default thread count again: what a
  single-thread scope around the sampling part of each step (not the model) would cost;
* ``passive``    default threads, ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP workers sleep at
  once instead of spinning);
* ``sub_grain``  ``no_toggle`` with `fast.BLOCK_ELEMENTS_CPU` = 15 chunks (30,720 elements,
  below GRAIN_SIZE, so its ops run serially without any toggle; same bits by design);

and per `generate` the wall time inside the backend's ``sample_rows`` the loop calls (the torch
backend's ``fast._sample_rows_active``, wrapped through the registry's hook,
`fastremask.sampler.backends.hooked`), inside ``fast._sample_rows`` (the work), inside the
backend's ``select``, the rest (the loop), and the CPU time
of the process (all threads) and of the main thread (process CPU above main-thread CPU: other
OpenMP threads working or spinning). It also times LLaDA's own generate (`llada.py`) for
``default`` and ``omp1``, one ``set_num_threads(1)`` + restore pair, a parallel op with and
without a pair before it, and every aten op outside the backend entry at the default thread
count and at one thread.

    python benchmarks/threads_probe.py                 # markdown on stdout
    python benchmarks/threads_probe.py --json OUT.json --rounds 7 --llada-rounds 3
    python benchmarks/threads_probe.py --busy 1 --llada-rounds 0   # with a busy-loop neighbour

``--busy N`` runs N busy-loop processes alongside (a neighbour on a shared machine), stopped at
the end.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter

P, G, V, MASK = 992, 32, 126464, 126336
GRAIN = 32768
# name -> extra environment of its worker (what else a name changes: `_setup`, `_fast`)
CONFIGS = {"default": {}, "omp1": {"OMP_NUM_THREADS": "1"}, "set1_start": {}, "no_toggle": {}, "once": {},
           "scoped": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "sub_grain": {}}


# ---------------------------------------------------------------------------------------------
# worker side: one process per configuration, commands on stdin, one JSON line each on stdout
# ---------------------------------------------------------------------------------------------

def _module(name):
    """fastremask.sampler's module ``name`` (fast, numerics, llada)."""
    import importlib
    return importlib.import_module(f"fastremask.sampler.{name}")


def _wrap(fn, name, seconds):
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            seconds[name] += time.perf_counter() - t0
    return wrapper


class Timed:
    """Accumulates the wall time spent inside the backend's ``sample_rows`` and ``select`` (every
    backend the registry hands the loop, wrapped through `fastremask.sampler.backends.hooked`)
    and inside ``fast._sample_rows`` (a module attribute `_sample_rows_active` looks up at call
    time); registered for the worker's life."""

    def __init__(self):
        import dataclasses
        from fastremask.sampler import backends
        self.t = Counter()
        fast = _module("fast")
        fast._sample_rows = _wrap(fast._sample_rows, "_sample_rows", self.t)
        self._hook = backends.hooked(lambda b: dataclasses.replace(
            b, sample_rows=_wrap(b.sample_rows, "sample_rows", self.t), select=_wrap(b.select, "select", self.t)))
        self._hook.__enter__()


def _setup(name):
    import torch
    if name == "set1_start":
        torch.set_num_threads(1)
    if name in ("no_toggle", "sub_grain"):
        torch.set_num_threads = lambda n: None
    if name == "sub_grain":
        fast, numerics = _module("fast"), _module("numerics")
        fast.BLOCK_ELEMENTS_CPU = 15 * numerics.CHUNK
    default_threads = torch.get_num_threads()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, P + G, V, generator=g).to(torch.bfloat16)
    prompt = torch.randint(0, 126000, (1, P), generator=g)
    calls = Counter()

    def model(x, attention_mask=None):
        calls["n"] += 1
        assert tuple(x.shape) == tuple(logits.shape[:2])
        if name == "scoped":                 # the model call at the default thread count
            torch.set_num_threads(default_threads)
            torch.set_num_threads(1)
        return logits
    return torch, model, prompt, calls


def _fast(torch, model, prompt, calls, timed, once):
    import fastremask
    timed.t.clear()
    calls.clear()
    t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
    threads = torch.get_num_threads()
    if once:
        torch.set_num_threads(1)
    try:
        fastremask.generate(model, prompt, steps=G, gen_length=G, block_length=G, temperature=0.0,
                            seed=0, backend="torch")
    finally:
        if once:
            torch.set_num_threads(threads)
    total, cpu, main = time.perf_counter() - t0, time.process_time() - c0, time.thread_time() - m0
    t = Counter({k: v * 1e3 for k, v in timed.t.items()})
    entry = t["sample_rows"]
    return dict(total_ms=total * 1e3, sample_rows_ms=entry, inner_ms=t["_sample_rows"],
                select_ms=t["select"], loop_ms=total * 1e3 - entry - t["select"],
                cpu_ms=cpu * 1e3, main_cpu_ms=main * 1e3, calls=calls["n"], threads=threads)


def _llada(torch, model, prompt):
    llada = _module("llada")
    t0 = time.perf_counter()
    llada.generate(model, prompt, steps=G, gen_length=G, block_length=G, temperature=0.0)
    return dict(total_ms=(time.perf_counter() - t0) * 1e3, threads=torch.get_num_threads())


def _toggle(torch, n=300):
    """us per set_num_threads(1)+restore pair; a parallel op alone and right after a pair."""
    t, a = torch.get_num_threads(), torch.randn(1 << 20)
    out = {}

    def per(f):
        f()
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        return (time.perf_counter() - t0) / n * 1e6
    out["pair_us"] = per(lambda: (torch.set_num_threads(1), torch.set_num_threads(t)))
    out["op_us"] = per(lambda: a.mul(1.5))
    out["pair_then_op_us"] = per(lambda: (torch.set_num_threads(1), torch.set_num_threads(t), a.mul(1.5)))
    out["threads"] = t
    return out


def _outside_ops(torch, model, prompt, calls, rounds=3):
    """Per aten op outside `sample_rows`: calls per step, us per call at the default thread count
    and with set_num_threads(1) around generate, and whether it touches >= GRAIN elements."""
    import dataclasses
    import fastremask
    from fastremask.sampler import backends
    from torch.utils._python_dispatch import TorchDispatchMode
    wall, n, big, state = {}, Counter(), set(), {"inside": False}

    class Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            t0 = time.perf_counter()
            out = func(*args, **(kwargs or {}))
            if not state["inside"]:
                key = str(func)
                wall[self.th][key] += time.perf_counter() - t0
                n[self.th, key] += 1
                ts = [*args, *(kwargs or {}).values(), *(out if isinstance(out, (tuple, list)) else (out,))]
                if any(isinstance(t, torch.Tensor) and t.numel() >= GRAIN for t in ts):
                    big.add(key)
            return out

    default = torch.get_num_threads()

    def inside(fn):
        def wrapper(*a, **k):
            state["inside"] = True
            try:
                return fn(*a, **k)
            finally:
                state["inside"] = False
        return wrapper
    hook = backends.hooked(lambda b: dataclasses.replace(b, sample_rows=inside(b.sample_rows)))
    hook.__enter__()
    steps = 0
    try:
        for _ in range(rounds):
            for th in (default, 1):
                torch.set_num_threads(th)
                mode, calls["n"] = Mode(), 0
                mode.th = th
                wall.setdefault(th, Counter())
                with mode:
                    fastremask.generate(model, prompt, steps=G, gen_length=G, block_length=G, seed=0, backend="torch")
                steps += calls["n"] if th == 1 else 0
    finally:
        hook.__exit__(None, None, None)
        torch.set_num_threads(default)
    rows = [[k, n[1, k] / steps, wall[default][k] / n[default, k] * 1e6, wall[1][k] / n[1, k] * 1e6, k in big]
            for k in wall[1] if n[default, k]]
    rows.sort(key=lambda r: -(r[2] - r[3]) * r[1])
    return dict(threads=default, steps=steps / rounds, ops=rows)


def worker(name):
    torch, model, prompt, calls = _setup(name)
    timed = Timed()
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "fast":
            res = _fast(torch, model, prompt, calls, timed, once=name in ("once", "scoped"))
        elif cmd == "llada":
            res = _llada(torch, model, prompt)
        elif cmd == "toggle":
            res = _toggle(torch)
        elif cmd == "outside":
            res = _outside_ops(torch, model, prompt, calls)
        else:
            break
        print(json.dumps(res), flush=True)


# ---------------------------------------------------------------------------------------------
# driver side
# ---------------------------------------------------------------------------------------------

class Worker:
    def __init__(self, name):
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        env.update(CONFIGS[name])
        self.name = name
        self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", name], env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died on {cmd!r}")
        return json.loads(line)

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def interleaved(workers, cmd, rounds):
    """One warm-up each, then `rounds` rounds, the order rotated each round; results by name."""
    for w in workers:
        w(cmd)
    res = {w.name: [] for w in workers}
    for r in range(rounds):
        for w in workers[r % len(workers):] + workers[:r % len(workers)]:
            res[w.name].append(w(cmd))
    return res


def _med(rows, key):
    return statistics.median(r[key] for r in rows)


def report(fast, llada, toggle, big, info) -> str:
    base = _med(fast["omp1"], "total_ms")
    out = [f"{info['date']}; commit {info['git_commit']}; torch {info['torch']}; {info['cpu_count']} CPUs; "
           f"load average before/after {info['load_before']} / {info['load_after']}; "
           f"busy-loop neighbours: {info['busy_neighbours']}", "",
           f"`generate` (backend torch, P={P}, gen=block=steps={G}, V={V}, bf16 cached logits, T=0): "
           f"median of {len(fast['omp1'])} rounds after 1 warm-up, ms", "",
           "| config | threads | total | min | / omp1 | in sample_rows | of which _sample_rows | entry - _sample_rows "
           "| select | loop (rest) | process CPU | main-thread CPU |", "|" + "---|" * 12]
    keys = ("total_ms", "sample_rows_ms", "inner_ms", "select_ms", "loop_ms", "cpu_ms", "main_cpu_ms")
    for name, rows in fast.items():
        m = {k: _med(rows, k) for k in keys}
        out.append(f"| {name} | {rows[0]['threads']} | {m['total_ms']:.1f} | {min(r['total_ms'] for r in rows):.1f} "
                   f"| {m['total_ms'] / base:.2f} | {m['sample_rows_ms']:.1f} | {m['inner_ms']:.1f} "
                   f"| {m['sample_rows_ms'] - m['inner_ms']:.1f} | {m['select_ms']:.1f} | {m['loop_ms']:.1f} "
                   f"| {m['cpu_ms']:.1f} | {m['main_cpu_ms']:.1f} |")
    if llada:
        out += ["", f"LLaDA's generate (`llada.py`), same logits: median of {len(llada['omp1'])} rounds "
                "after 1 warm-up, ms", "", "| config | threads | total | min |", "|---|---|---|---|"]
        for name, rows in llada.items():
            out.append(f"| {name} | {rows[0]['threads']} | {_med(rows, 'total_ms'):.0f} "
                       f"| {min(r['total_ms'] for r in rows):.0f} |")
    out += ["", f"Toggle (threads {toggle['threads']}, 300 iterations): set_num_threads(1)+restore pair "
            f"{toggle['pair_us']:.1f} us; a parallel op (mul of 2**20 fp32) {toggle['op_us']:.1f} us alone, "
            f"{toggle['pair_then_op_us']:.1f} us with a pair before it", "",
            f"aten ops outside `sample_rows` (default worker; {big['steps']:g} steps), the 10 with the largest "
            f"extra time per step at {big['threads']} threads over 1 thread:", "",
            f"| op | calls/step | us/call, {big['threads']} threads | us/call, 1 thread | touches >= {GRAIN} elements |",
            "|---|---|---|---|---|"]
    out += [f"| `{k}` | {c:.2f} | {a:.1f} | {b:.1f} | {'yes' if g else ''} |" for k, c, a, b, g in big["ops"][:10]]
    return "\n".join(out)


def machine() -> dict:
    import torch
    import fastremask
    repo = os.path.dirname(os.path.dirname(os.path.abspath(fastremask.__file__)))
    commit = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return dict(platform=platform.platform(), cpu_count=os.cpu_count(), torch=torch.__version__,
                git_commit=commit or None, date=time.strftime("%Y-%m-%d %H:%M:%S %Z"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--rounds", type=int, default=7, help="timed fastremask rounds (>= 3)")
    ap.add_argument("--llada-rounds", type=int, default=3, help="timed LLaDA rounds (>= 3; 0: skip)")
    ap.add_argument("--busy", type=int, default=0, help="busy-loop neighbour processes to run alongside")
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    load_before = os.getloadavg()
    workers = [Worker(n) for n in CONFIGS]
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        fast = interleaved(workers, "fast", max(3, args.rounds))
        llada = (interleaved([w for w in workers if w.name in ("default", "omp1")], "llada",
                             max(3, args.llada_rounds)) if args.llada_rounds else {})
        toggle, big = workers[0]("toggle"), workers[0]("outside")
    finally:
        for p in busy:
            p.kill()
            p.wait()
        for w in workers:
            w.close()
    info = dict(machine(), busy_neighbours=args.busy, load_before=[round(x, 2) for x in load_before],
                load_after=[round(x, 2) for x in os.getloadavg()])
    print(report(fast, llada, toggle, big, info))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=info, fast=fast, llada=llada, toggle=toggle, big_ops=big), f, indent=1)


if __name__ == "__main__":
    main()
