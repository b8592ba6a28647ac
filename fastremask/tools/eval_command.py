"""``fastremask eval``: the command line of `fastremask.evaluation.evaluate`.

    fastremask eval                                   # the shipped demo model on its task
    fastremask eval -n 300 --schedules uniform,pyramid,ramp --out benchmarks/results/eval_perm12
    python -m fastremask.tools.eval_command ...       # the same command (main: cli.main(['eval', ...]))

The options, checked before the model is loaded (a ValueError naming the option: the
command's one-line error, status 2), then `fastremask.evaluation.evaluate.evaluate` over the
points and the table (with ``--out`` also CSV, JSON and a plot). The evaluation itself
imports nothing of `fastremask.tools` (the layers import downwards only).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from fastremask.evaluation.evaluate import DEFAULT_FACTORS, DEFAULT_RULES, FAMILIES, evaluate, \
    format_table, load_model, write_results
from fastremask.evaluation.tasks import Task, get_task
from fastremask.sampler.config import SamplingConfig
from fastremask.sampler.devices import check_device
from fastremask.tools.options import add_config_arguments, config_kwargs

__all__ = ["add_arguments", "run", "main"]


def _ints(s: str) -> list[int]:
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _names(s: str) -> list[str]:
    return [v.strip() for v in s.split(",") if v.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``fastremask eval`` options."""
    parser.add_argument("--model", default=None,
                        help="a fastremask.models.tiny checkpoint folder, bidirectional or block-causal (default: "
                             "the shipped demo model); real checkpoints: the lm-eval adapter (docs/eval.md)")
    parser.add_argument("--task", default=None,
                        help="task spec, e.g. add:15 or sort:12 (default: the model's own, from demo.json)")
    parser.add_argument("--schedules", type=_names, default=["uniform", "pyramid"],
                        help=f"comma-separated families among {','.join(FAMILIES)} (default: uniform,pyramid)")
    parser.add_argument("--remasking", type=_names, default=list(DEFAULT_RULES),
                        help="comma-separated remasking rules (default: low_confidence,random)")
    parser.add_argument("--nfe", type=_ints, default=None,
                        help="NFE grid for uniform and ramp (default: 1,2,3,4,6,8,12,... up to the answer length)")
    parser.add_argument("--factors", type=_ints, default=list(DEFAULT_FACTORS),
                        help="pyramid factors (default: 1,2,3,4,6,8)")
    parser.add_argument("-n", "--examples", type=int, default=200, help="test examples per point (default 200)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    # the sampling options the points share, derived from SamplingConfig's fields (each point
    # sets its own steps, schedule, factor and remasking)
    add_config_arguments(parser, ["temperature", "backend", "block_length", "cache"],
                         defaults=dict(temperature=None, backend="torch", block_length=None), helps=dict(
                             temperature="sampling temperature (default: 1 for the perm task, whose answers "
                                         "are not unique, else 0)",
                             block_length="semi-autoregressive blocks (default: one block of the answer)",
                             cache="block KV cache for every point (docs/cache.md; default: none, exact)"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--out", default=None,
                        help="write <out>.md (table), <out>.csv, <out>.json and <out>.png (plot)")
    parser.add_argument("--quiet", action="store_true", help="no per-point progress lines")


def _check_args(args) -> None:
    """The command's counts, the device and ``--out``'s folder, before the model is loaded (a
    ValueError naming the option)."""
    for opt, value in (("-n/--examples", args.examples), ("--batch-size", args.batch_size),
                       ("--threads", args.threads)):
        if value is not None and value < 1:
            raise ValueError(f"{opt} must be >= 1, got {value}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if not args.schedules or not args.remasking:
        raise ValueError("--schedules and --remasking each need at least one name")
    check_device(args.device)
    if args.backend == "triton":
        from fastremask.sampler.backends import triton_unavailable

        why = triton_unavailable(args.device)
        if why is not None:
            raise ValueError(f"--backend triton needs --device cuda, or TRITON_INTERPRET=1 in the environment "
                             f"(Triton's CPU interpreter, for small tests); {why}; use --backend torch (same results)")
    if args.out:
        folder = os.path.dirname(os.path.abspath(args.out))
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError(f"--out {args.out}: {folder} is not a folder")


def _task_arg(spec: str | None) -> Task | None:
    """``--task``'s task (checked before the model is loaded), or None for the model's own."""
    if spec is None:
        return None
    try:
        return get_task(spec)
    except ValueError as e:
        raise ValueError(f"--task {spec}: {e}") from None


def _check_fits(task: Task, model, spec: str | None) -> None:
    """A task whose prompt and answer do not fit the model's positions is an error naming both."""
    from fastremask.models import max_positions

    limit = max_positions(getattr(model, "config", None))
    need = task.prompt_length + task.answer_length
    if limit is not None and need > limit[1]:
        where = f"--task {spec}" if spec else f"the model's task {task.name}"
        raise ValueError(f"{where}: prompt {task.prompt_length} + answer {task.answer_length} = {need} "
                         f"positions, more than the model's {limit[0]} of {limit[1]}")


def run(args: argparse.Namespace) -> int:
    """``fastremask eval``: print the table; with ``--out``, write table, CSV, JSON and PNG."""
    _check_args(args)
    task = _task_arg(args.task)
    group = _group(args)                    # None: one process (the default)
    try:
        return _run(args, task, group)
    finally:
        if group is not None:
            group.close()


def _group(args):
    """Under a launcher (``torchrun``, ``accelerate launch``: ``WORLD_SIZE`` > 1) the process
    group, after every rank's options were compared (a ValueError naming the rank and the
    option); None for one process, without importing ``torch.distributed``."""
    if os.environ.get("WORLD_SIZE", "").strip() in ("", "1"):
        return None
    from fastremask.evaluation.distributed import Group, launch_from_env

    group = Group(launch_from_env())
    mine = {k: repr(v) for k, v in sorted(vars(args).items()) if k not in ("run", "quiet", "debug")
            and not callable(v)}
    everyone = group.gather(mine)
    for r, theirs in enumerate(everyone[1:], start=1):
        diff = next((k for k in sorted(set(mine) | set(theirs)) if everyone[0].get(k) != theirs.get(k)), None)
        if diff is not None:
            group.close()
            raise ValueError(f"rank {r} was started with other options than rank 0 (--{diff.replace('_', '-')}: "
                             f"{theirs.get(diff)} there, {everyone[0].get(diff)} on rank 0); every rank must run "
                             "the same command")
    args.device = group.launch.device(args.device)     # cuda -> cuda:LOCAL_RANK
    if group.rank != 0:
        args.quiet = True                                # rank 0 prints and writes
    return group


def _run(args, task, group) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, model_task = load_model(args.model, device=args.device)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise ValueError(f"--model: {e}") from None
    task = task if task is not None else model_task
    if task is None:
        raise ValueError(f"--task is required: the model folder {args.model} has no demo.json naming its task "
                         "(e.g. --task perm:12)")
    _check_fits(task, model, args.task)
    if args.temperature is None:
        args.temperature = 1.0 if task.name == "perm" else 0.0
    # what the points share
    try:                                    # a bad value: generate's message, exit 2
        config = SamplingConfig(**config_kwargs(args, ["temperature", "backend", "cache"]))
    except TypeError as e:
        raise ValueError(str(e)) from None
    say = None if args.quiet else (lambda s: print(s, flush=True))
    t0 = time.perf_counter()
    rows = evaluate(
        model, task, schedules=args.schedules, remasking=args.remasking, nfe_grid=args.nfe,
        n_examples=args.examples, seed=args.seed, factors=args.factors, batch_size=args.batch_size,
        config=config, block_length=args.block_length, progress=say, share=group,
    )
    seconds = time.perf_counter() - t0
    if group is not None and group.rank != 0:
        return 0
    table = format_table(rows)
    model_name = args.model or "demo model (fastremask/data)"
    print(table, end="")
    print(f"{task.describe()}; model {model_name}; {seconds:.0f}s on {torch.get_num_threads()} threads")
    if args.out:
        meta = dict(
            task=task.describe(), model=model_name, examples=args.examples, seed=args.seed,
            temperature=args.temperature, backend=args.backend, batch_size=args.batch_size,
            block_length=args.block_length or task.answer_length, cache=args.cache,
            threads=torch.get_num_threads(), torch=torch.__version__, seconds=round(seconds, 1),
        )
        write_results(rows, args.out, meta, title=f"{task.describe()}; {model_name}",
                      answer_length=task.answer_length)
        print(f"wrote {args.out}.md, .csv, .json, .png")
    return 0


def main(argv=None) -> int:
    """``python -m fastremask.tools.eval_command ARGV`` is ``fastremask eval ARGV``: the same
    one-line ``fastremask: error: ...`` messages and exit statuses (2: a bad option or input),
    ``--debug`` for the traceback."""
    from fastremask.tools import cli

    return cli.main(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
