"""One process against N (``torchrun``) on the CPU, one thread each: the wall time of
``fastremask generate`` over a prompts file and of ``fastremask eval``, start-up and model
loading included, and whether the results are the same bits (docs/scale.md).

    python benchmarks/scale_cpu.py                       # 64 prompts, eval -n 200, 1 vs 2 processes
    python benchmarks/scale_cpu.py --prompts 8 --examples 10 --nfe 2,12   # a quick look

Prints a Markdown table. Each command runs once per process count (``--rounds`` for more;
the table shows the fastest), in a scratch folder.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _launch(nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "fastremask"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "fastremask"]


def _timed(cmd: list[str], cwd: str) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return seconds


def _prompts(path: str, n: int) -> None:
    from fastremask.evaluation import tasks

    prompts, _ = tasks.get_task("perm:12").test_set(n)
    with open(path, "w") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": tasks.decode(p)}) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--nfe", default=None, help="eval's --nfe (default: its own grid)")
    ap.add_argument("--processes", default="1,2")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args(argv)
    counts = [int(v) for v in args.processes.split(",")]
    with tempfile.TemporaryDirectory() as d:
        _prompts(os.path.join(d, "p.jsonl"), args.prompts)
        ev = ["eval", "-n", str(args.examples), "--threads", "1", "--quiet"] + (["--nfe", args.nfe] if args.nfe else [])
        rows, files = [], {}
        for what, argv_of in (
            (f"generate, {args.prompts} prompts", lambda n: ["generate", "--prompts-file", "p.jsonl", "--output",
                                                             f"out{n}.jsonl", "--force", "--no-progress"]),
            (f"eval -n {args.examples}", lambda n: ev + ["--out", f"eval{n}"]),
        ):
            best = {}
            for _ in range(args.rounds):
                for n in counts:
                    s = _timed(_launch(n) + argv_of(n), d)
                    best[n] = min(best.get(n, s), s)
            rows.append((what, best))
        for n in counts:
            with open(os.path.join(d, f"out{n}.jsonl"), "rb") as f:
                files[n] = f.read()
            with open(os.path.join(d, f"eval{n}.md"), "rb") as f:
                files[n] += f.read()
        same = all(files[n] == files[counts[0]] for n in counts)
    print(f"| command | " + " | ".join(f"{n} process{'es' if n > 1 else ''}" for n in counts) + " | speed-up |")
    print("|---|" + "---:|" * (len(counts) + 1))
    for what, best in rows:
        print(f"| {what} | " + " | ".join(f"{best[n]:.1f} s" for n in counts)
              + f" | {best[counts[0]] / best[counts[-1]]:.2f}x |")
    print(f"\nthe results files are {'byte-identical' if same else 'DIFFERENT'} across process counts "
          f"(generate's JSONL, eval's table)")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
