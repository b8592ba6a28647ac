"""Model calls per answer and accuracy of the threshold rules on the shipped demo model.

    python benchmarks/threshold_rules.py -n 1000 --out benchmarks/results/threshold-rules-2vcpu

Runs `fastremask.generate` on the first ``n`` test examples of the demo model's task
(``perm:12``: one block of 12 answer tokens; temperature 1, as the task needs, seed 0,
backend ``torch``), with ``threshold_rule`` ``'fixed'`` (``low_confidence`` and ``entropy``
remasking), ``'factor'`` (``low_confidence``) and ``'eb'`` (``entropy``) over a grid of their
parameter, and LLaDA's uniform schedule at a few step counts for comparison. Model calls are
counted per answer (the steps in which the row still had masked positions: what the answer
costs alone; a batch calls the model until its slowest row is done). Accuracy is exact match
with the task's checker, with a 95% Wilson interval. docs/decoding.md discusses the result.

``--quick``: two parameters per rule (what tests/test_docs.py runs). ``--out PATH`` writes
``PATH.md`` (the table) and ``PATH.json`` (rows and settings).
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

GRID = [("fixed", "low_confidence", t) for t in (0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.9)]
GRID += [("factor", "low_confidence", f) for f in (0.5, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0)]
GRID += [("fixed", "entropy", t) for t in (-1.5, -1.2, -1.0, -0.9, -0.8, -0.7, -0.6, -0.5, -0.1)]
GRID += [("eb", "entropy", g) for g in (0.1, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.5, 2.0)]
QUICK = [("fixed", "low_confidence", 0.5), ("fixed", "low_confidence", 0.9), ("factor", "low_confidence", 1.0),
         ("factor", "low_confidence", 2.5), ("fixed", "entropy", -1.0), ("eb", "entropy", 0.5), ("eb", "entropy", 2.0)]
UNIFORM_STEPS = (8, 10, 11, 12)


def measure(model, task, prompts, *, seed: int = 0, **kw) -> dict:
    import fastremask
    from fastremask.evaluation.tasks import wilson_interval

    A = task.answer_length
    x, trace = fastremask.generate(model, prompts, gen_length=A, block_length=A, temperature=1.0, mask_id=None,
                                   seed=seed, backend="torch", return_trace=True, **kw)
    calls = sum(s.candidate.any(1).double() for s in trace.steps)
    ok = task.check(prompts, x[:, task.prompt_length:])
    n, c = len(ok), int(ok.sum())
    lo, hi = wilson_interval(c, n)
    return dict(calls=float(calls.mean()), batch_calls=len(trace.steps), accuracy=c / n, ci_low=lo, ci_high=hi)


def main(argv=None) -> int:
    from fastremask.evaluation.evaluate import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--examples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="two parameters per rule, uniform at 10 steps")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, task = load_model()
    prompts, _ = task.test_set(args.examples)
    A = task.answer_length
    t0 = time.perf_counter()
    rows = []

    def add(row):
        rows.append(row)
        print(f"{row['rule']:8s} {row['remasking']:15s} {row['parameter']:>6}  calls/answer {row['calls']:6.3f}  "
              f"accuracy {row['accuracy']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]", flush=True)

    for steps in ((10,) if args.quick else UNIFORM_STEPS):
        for rem in ("low_confidence", "entropy"):
            add(dict(rule="uniform", remasking=rem, parameter=f"{steps} steps",
                     **measure(model, task, prompts, seed=args.seed, steps=steps, remasking=rem)))
    for rule, rem, thr in (QUICK if args.quick else GRID):
        add(dict(rule=rule, remasking=rem, parameter=thr,
                 **measure(model, task, prompts, seed=args.seed, steps=A, remasking=rem, threshold=thr,
                           threshold_rule=rule)))
    seconds = time.perf_counter() - t0
    meta = dict(task=task.describe(), examples=args.examples, seed=args.seed, temperature=1.0, backend="torch",
                threads=torch.get_num_threads(), torch=torch.__version__, python=platform.python_version(),
                machine=f"{platform.machine()} {platform.system()} {platform.release()}", seconds=round(seconds, 1))
    print(f"{task.describe()}; {args.examples} answers; {seconds:.0f}s on {torch.get_num_threads()} thread(s)")
    if args.out:
        lines = [f"# Threshold rules on the demo model ({task.describe()})", "",
                 f"`python benchmarks/threshold_rules.py -n {args.examples}"
                 f"{' --quick' if args.quick else ''}`: {args.examples} answers per row, temperature 1, seed "
                 f"{args.seed}, backend torch, {meta['threads']} thread(s), torch {meta['torch']}, {meta['machine']}, "
                 f"{meta['seconds']} s. Model calls per answer; exact-match accuracy with its 95% Wilson interval.", "",
                 "| rule | remasking | parameter | model calls per answer | accuracy | 95% interval |",
                 "|---|---|---:|---:|---:|---|"]
        lines += [f"| {r['rule']} | {r['remasking']} | {r['parameter']} | {r['calls']:.3f} | {r['accuracy']:.3f} | "
                  f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] |" for r in rows]
        with open(args.out + ".md", "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(args.out + ".json", "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)
        print(f"wrote {args.out}.md, {args.out}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
