"""``fastremask generate``: options and paths checked, the prompts read, the model loaded,
the prompts tokenized and checked, then one `fastremask.run` per batch, each result written as
soon as its batch is done (docs/cli.md).

The options are `fastremask.tools.cli.add_generate_arguments`' and the sampling ones become
one `fastremask.SamplingConfig` through `fastremask.tools.cli.config_from_args`; the JSONL
reading and the streamed, resumable writing are `fastremask.tools.records`'. This module
imports torch and the sampler only when the command runs (``--help`` stays fast); the
dispatcher (`fastremask.tools.cli`) imports it by name when ``generate`` is chosen.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys

from fastremask.models.demo import demo_dir     # no torch
from fastremask.sampler.devices import check_device
from fastremask.sampler.names import SEED_LIMIT
from fastremask.tools.cli import CliError, Stopped, add_generate_arguments, check_output_dir, config_from_args
from fastremask.tools.records import Item, Output, line_seed, read_done, read_prompts_file
from fastremask.tools.resume import RUN_KEY, check_resume, recorded_model, run_record

__all__ = ["add_arguments", "run", "DEFAULT_PROMPT"]

DEFAULT_PROMPT = "Hi, I am"


def add_arguments(parser) -> None:
    """``fastremask generate``'s options (`fastremask.tools.cli.add_generate_arguments`)."""
    add_generate_arguments(parser)


# ----------------------------------------------------------------------------- run


def run(args) -> int:
    """``fastremask generate``: options and paths, the prompts file, the model, the prompts
    tokenized and checked, then one `fastremask.run` per batch, each result written as soon as
    its batch is done."""
    _check_options(args)                                   # no torch yet: options, paths
    par = _parallel(args)                                  # None: one process (the default)
    if par is None:
        return _run(args, None)
    try:
        return _run(args, par)
    except BaseException as e:
        if par.sink is None:                               # stopped before the work was shared
            par.fail(e)
        else:
            par.stop_word(e)                               # rank 0 names why this rank stopped
        raise


def _parallel(args):
    """The `fastremask.tools.distributed.Parallel` of this rank when a launcher (``torchrun``,
    ``accelerate launch``) started several processes, or when ``--output``'s part folder holds
    the lines of an interrupted parallel run; None otherwise (one process: nothing of it is
    imported)."""
    several = os.environ.get("WORLD_SIZE", "").strip() not in ("", "1")
    if not several and not (args.output is not None and os.path.isdir(args.output + ".parts")):
        return None
    from fastremask.tools import distributed

    return distributed.start(args)


def _run(args, par) -> int:
    items = read_prompts_file(args.prompts_file, args.seed) if args.prompts_file is not None else None
    done = read_done(args.output) if args.resume and os.path.exists(args.output) \
        and (par is None or par.rank == 0) else None      # rank 0 writes --output; it knows what is done
    check_device(args.device)
    _check_backend(args)
    pre = config_from_args(args, None, _model_task(args))   # a bad sampling option fails before loading
    name, device = recorded_model(args, _demo_dir()), _device_type(args)
    if done is not None:
        check_resume(args, items, done, pre, run_record(args, pre, name, device), tokenized=False)
    adapter, task, description = _load_model(args)
    config = config_from_args(args, adapter, task)
    _special_ids(adapter, config)
    _check_model_ids(args, adapter)
    file_mode = items is not None
    if not file_mode:
        prompts = args.prompt or [_default_prompt(adapter, task)]
        items = [Item(line=i, record={"prompt": p}, seed=line_seed(args.seed, i)) for i, p in enumerate(prompts)]
    _tokenize(args, adapter, config, items, file_mode)
    made = run_record(args, config, name, device)
    if done is not None:
        check_resume(args, items, done, config, made)
    out = Output(args.output, items, args.prompts_file if file_mode else None, done)
    return _stream(args, adapter, task, description, config, items, out, made, par)


def _check_options(args) -> None:
    """The options that are the command's own (the sampling ones are `config_from_args`'),
    and every path, before any work starts."""
    if args.prompt is not None and args.prompts_file is not None:
        raise CliError("give --prompt or --prompts-file, not both")
    _check_int_option("--batch-size", args.batch_size, 1)
    _check_int_option("--seed", args.seed, 0, SEED_LIMIT)
    for opt in ("mask_id", "pad_id", "eos_id", "eot_id"):
        _check_int_option("--" + opt.replace("_", "-"), getattr(args, opt), 0)
    if args.system is not None and not args.chat:
        raise CliError("--system needs --chat")
    if args.force and args.resume:
        raise CliError("give --force (start over) or --resume (continue), not both")
    if args.resume and (args.output is None or args.prompts_file is None):
        raise CliError("--resume continues a --prompts-file run into its --output; give both")
    if args.resume and os.path.exists(args.output) and not os.path.isfile(args.output):
        raise CliError(f"--resume: --output {args.output} is not a regular file; there is no earlier run to "
                       "read back (--force writes into it)")
    if args.prompts_file is not None and args.prompts_file != "-":
        if not os.path.exists(args.prompts_file):
            raise CliError(f"cannot read --prompts-file {args.prompts_file}: no such file")
        if os.path.isdir(args.prompts_file):
            raise CliError(f"cannot read --prompts-file {args.prompts_file}: it is a folder")
    if args.output is not None:
        check_output_dir(args.output, "--output")
        if args.prompts_file not in (None, "-") and os.path.exists(args.output) \
                and os.path.samefile(args.output, args.prompts_file):
            raise CliError(f"--output {args.output} is the --prompts-file; write the results elsewhere")
        if os.path.exists(args.output) and not (args.force or args.resume):
            raise CliError(f"--output {args.output} exists; pass --force to overwrite it, "
                           "or --resume to continue the run that wrote it")
    if args.trace_png:
        check_output_dir(args.trace_png, "--trace-png")
        if importlib.util.find_spec("matplotlib") is None:
            raise CliError("--trace-png needs matplotlib: pip install 'fastremask[plot]'")


def _check_backend(args) -> None:
    """``--backend triton`` where its kernels can run, before the model loads: on the device the
    model will be on (``--device``; else CUDA where there is one for ``--model``, the CPU for the
    demo and built-in models)."""
    if args.backend != "triton":
        return
    from fastremask.sampler.backends import triton_unavailable

    why = triton_unavailable(_device_type(args))
    if why is not None:
        raise CliError(f"--backend triton needs a CUDA device (--device cuda), or TRITON_INTERPRET=1 in the "
                       f"environment (Triton's CPU interpreter, for small tests); {why}"
                       "; use --backend torch (same results)")


def _device_type(args) -> str:
    """The type of the device the model will be on: ``--device``'s, else CUDA where there is one
    for ``--model`` (`fastremask.models.load`'s default), the CPU for the demo and built-in models."""
    import torch

    if args.device is not None:
        return torch.device(args.device).type
    return "cuda" if args.model is not None and torch.cuda.is_available() else "cpu"


def _check_int_option(option: str, value, minimum: int, maximum: int | None = None) -> None:
    if value is None or not isinstance(value, int):     # not an int (--mask-id): SamplingConfig names it
        return
    if value < minimum or (maximum is not None and value >= maximum):
        bound = f"in [{minimum}, 2**63)" if maximum == SEED_LIMIT else (
            f"in [{minimum}, {maximum})" if maximum is not None else f">= {minimum}")
        raise CliError(f"{option} must be {bound}, got {value}")


# ----------------------------------------------------------------------------- the model


_demo_dir = demo_dir        # fastremask/data when it holds a checkpoint (tests point it elsewhere)


def _demo_task(folder: str):
    """The task named by ``folder/demo.json`` (None without one)."""
    from fastremask.evaluation.tasks import demo_task

    try:
        return demo_task(folder)
    except ValueError as e:                      # ModelLoadError included: the file is named
        raise CliError(str(e)) from None


def _model_task(args):
    """The task of the model's folder (``--model`` a local folder, else the demo model) named
    by its ``demo.json``: it gives the default prompt and ``--gen-length`` and the verdict of
    ``--trace``, so a copy of ``fastremask/data`` is a model like the shipped one. None without."""
    folder = args.model if args.model is not None else _demo_dir()
    return _demo_task(folder) if folder is not None and os.path.isdir(folder) else None


def _load_model(args):
    """``(adapter, task or None, description)`` for ``--model`` or the default model."""
    from fastremask import models

    ids = dict(mask_id=args.mask_id, eos_id=args.eos_id, eot_id=args.eot_id, pad_id=args.pad_id)
    if args.model is not None:
        adapter = models.load(args.model, family=args.family, dtype=args.dtype, device=args.device,
                              trust_remote_code=args.trust_remote_code,
                              native=False if args.no_native else None, **ids)
        return adapter, _model_task(args), args.model
    demo = _demo_dir()
    if demo is not None:
        task = _demo_task(demo)
        adapter = models.load(demo, family=args.family, dtype=args.dtype, device=args.device or "cpu", **ids)
        return adapter, task, "the demo model (fastremask/data)"
    from fastremask.models.tiny import tiny_model

    model = tiny_model()
    if args.device:
        model.to(args.device)
    adapter = models.wrap(model, name="built-in tiny model", **ids)
    print("fastremask: using the built-in tiny model (untrained: its text is noise; "
          "pass --model for a real one)", file=sys.stderr)
    return adapter, None, "the built-in tiny model"


def _special_ids(adapter, config) -> None:
    """The model's EOS/EoT for ``--logits-eos-inf``/``--confidence-eos-eot-inf``, checked
    before any model call (`fastremask.sampler.config.SpecialIds`, as `generate` resolves them)."""
    from fastremask.sampler.config import SpecialIds

    try:
        SpecialIds.of(adapter, config)
    except ValueError as e:
        raise CliError(f"{e} (on the command line: --eos-id / --eot-id name the model's ids)") from None


def _vocab_size(adapter) -> int | None:
    v = getattr(getattr(adapter, "config", None), "vocab_size", None)
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _check_model_ids(args, adapter) -> None:
    """The ids given on the command line (and the adapter's pad id) inside the model's
    vocabulary, before any model call."""
    V = _vocab_size(adapter)
    if V is None:
        return
    pad = adapter.pad_id
    if pad is not None and not 0 <= pad < V:
        raise CliError(f"pad id {pad} is outside the model's vocabulary of {V} (config vocab_size); "
                       "pass --pad-id")
    for opt in ("eos_id", "eot_id"):
        v = getattr(args, opt)
        if v is not None and v >= V:
            raise CliError(f"--{opt.replace('_', '-')} {v} is outside the model's vocabulary of {V}")
    for opt in ("suppress_tokens", "defer_tokens"):
        bad = [t for t in getattr(args, opt) or () if t >= V]
        if bad:
            raise CliError(f"--{opt.replace('_', '-')}: token id {bad[0]} is outside the model's vocabulary of {V}")


# ----------------------------------------------------------------------------- the prompts


def _default_prompt(adapter, task) -> str:
    if task is not None:
        from fastremask.evaluation import tasks

        prompts, _ = task.test_set(1)
        return tasks.decode(prompts[0])
    return DEFAULT_PROMPT


def _tokenize(args, adapter, config, items: list[Item], file_mode: bool) -> None:
    """Tokenize and check every prompt before any model call. With ``--prompt`` a bad prompt
    is a `CliError`; in a prompts file it is that line's ``error`` (the others still run)."""
    V = _vocab_size(adapter)
    from fastremask.models import max_positions

    max_len = max_positions(getattr(adapter, "config", None))
    for it in items:
        if it.error is None:
            it.error = _prompt_error(args, adapter, config, it, V, max_len)
        if it.error is not None and not file_mode:
            raise CliError(f"prompt {it.line}: {it.error}")


def _prompt_error(args, adapter, config, it: Item, V, max_len) -> str | None:
    try:
        it.ids = adapter.tokenize(it.record["prompt"], chat=args.chat, system=args.system)
    except ValueError as e:
        return str(e)
    if not it.ids:
        return "the prompt is empty after tokenization"
    if adapter.mask_id in it.ids:
        return f"the prompt contains the mask token (id {adapter.mask_id})"
    if V is not None:
        bad = next(((p, t) for p, t in enumerate(it.ids) if not 0 <= t < V), None)
        if bad is not None:
            return (f"token id {bad[1]} (prompt token {bad[0]}) is outside the model's vocabulary of {V} "
                    "(config vocab_size): the tokenizer does not match the model")
    if max_len is not None and len(it.ids) + config.gen_length > max_len[1]:
        return (f"the prompt ({len(it.ids)} tokens) and --gen-length {config.gen_length} exceed the "
                f"model's {max_len[0]} of {max_len[1]} positions (config)")
    return None


# ----------------------------------------------------------------------------- the run, streamed


def _stream(args, adapter, task, model_name: str, config, items: list[Item], out: Output, run: dict,
            par=None) -> int:
    """Generate ``--batch-size`` prompts at a time; after each batch write every result that is
    ready, in input order, each record with ``run`` (how it was made, `run_record`). Ctrl-C or an error: a `Stopped` saying how far it
    got (its cause the interrupt or the error); the results written stay. With several
    processes (``par``) this rank's share goes to its part file and rank 0 merges the ranks'
    lines into ``out`` (`fastremask.tools.distributed`)."""
    from fastremask.sampler import loop

    want_trace = args.trace or bool(args.trace_png)
    sink = out if par is None else par.begin(out)          # where this rank's results go
    todo = [it for it in sink.pending if it.error is None]
    batches = [todo[i:i + args.batch_size] for i in range(0, len(todo), args.batch_size)]
    _check_padding(adapter, batches)
    sink.open()
    calls = _calls_per_run(config)
    bar = None
    if not args.no_progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=None if calls is None else calls * len(batches), file=sys.stderr, unit="step",
                   desc="generating", leave=False, dynamic_ncols=True)
    many = len(items) > 1
    try:
        try:
            _write_ready(args, adapter, task, model_name, sink, many, run)
            for batch in batches:
                ids, mask = adapter.pad([it.ids for it in batch])
                x, trace = loop.run(adapter, ids, config, attention_mask=mask, seed=[it.seed for it in batch],
                                    return_trace=True,
                                    callback=None if bar is None else (lambda rec: bar.update(1)))
                answers = x[:, ids.shape[1]:].cpu()
                for b, it in enumerate(batch):
                    it.tokens = answers[b].tolist()
                    it.text = adapter.decode(it.tokens, skip_special_tokens=not args.keep_special_tokens)
                    it.trace = (trace, b) if want_trace else None
                _write_ready(args, adapter, task, model_name, sink, many, run)
                if par is not None:
                    par.merge(out)
            if par is not None:
                par.finish(out)                            # rank 0: every rank's lines merged
        finally:
            if bar is not None:
                bar.close()
    except (Exception, KeyboardInterrupt) as e:
        raise Stopped(out.where() if par is None else par.stopped(out, e)) from e
    finally:
        out.close()
    if par is not None and par.rank != 0:
        return 0                                           # rank 0 reports
    errors = out.errors + out.previous_errors
    if errors:
        where = "" if args.output is None else f' and as {{"line", "error"}} records in {args.output}'
        print(f"fastremask: error: {errors} of {out.total} lines of {args.prompts_file} had errors (listed above"
              f"{where}); the others were generated", file=sys.stderr)
        return 1
    if out.previous and out.source is not None:
        print(f"fastremask: resumed: {out.previous} lines were already in {out.name}, "
              f"{out.written} added", file=sys.stderr)
    return 0


def _calls_per_run(config) -> int | None:
    """Model calls of one generate call (`SamplingConfig.model_calls`, which is
    `fastremask.sampler.schedule.cost`'s count); None in threshold mode (not known in advance)."""
    return None if config.threshold is not None else config.model_calls()


def _check_padding(adapter, batches) -> None:
    """Left padding is possible (the pad id is not the mask id), checked on the first batch
    that needs it, before any model call."""
    from fastremask.models import PadIsMaskError

    mixed = next((b for b in batches if len({len(it.ids) for it in b}) > 1), None)
    if mixed is not None:
        try:
            adapter.pad([it.ids for it in mixed])
        except PadIsMaskError as e:
            raise CliError(str(e)) from None


def _write_ready(args, adapter, task, model_name: str, out: Output, many: bool, run: dict) -> None:
    """Write every pending item that is ready (an error, or generated), in input order."""
    wrote = False
    while (it := out.next_item) is not None and (it.error is not None or it.tokens is not None):
        if it.error is not None:
            out.errors += 1
            print(f"fastremask: {args.prompts_file}:{it.line}: {it.error}", file=sys.stderr)
            out.write(json.dumps({"line": it.line, "error": it.error}) + "\n")
        else:
            if args.trace_png:
                from fastremask.tools.trace import plot_trace

                trace, b = it.trace
                path = _png_path(args.trace_png, it.line, many)
                plot_trace(trace, adapter.token_str, path, row=b,
                           title=f"{model_name}: {it.record['prompt'][:60]!r}")
                print(f"fastremask: wrote {path}", file=sys.stderr)
            if out.source is not None:
                _write_record(out, args, adapter, it, run)
            else:
                _write_text(out, args, adapter, task, it, many)
        it.trace = None                       # written: let the batch's trace go
        out.commit()
        wrote = True
    if wrote:
        out.sync()


def _write_record(out, args, adapter, it: Item, run: dict) -> None:
    """One JSONL line: the input's fields plus ``line``, ``seed``, ``output``, ``tokens``
    (``trace``) and ``run`` under `RUN_KEY` (how the tokens were made, for ``--resume``)."""
    from fastremask.tools.trace import kept_by_step

    rec = dict(it.record)
    rec.update(line=it.line, seed=it.seed, output=it.text, tokens=it.tokens)
    if args.trace:
        trace, b = it.trace
        rec["trace"] = [[step, [[pos, adapter.token_str(t)] for pos, t in kept]]
                        for step, kept in kept_by_step(trace, b)]
    rec[RUN_KEY] = run
    out.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _write_text(out, args, adapter, task, it: Item, many: bool) -> None:
    """The answer as text; with ``--trace`` the prompt and the steps first, and the demo task's verdict."""
    from fastremask.tools.trace import format_trace

    if many:
        out.write(f"[{it.line}] {it.record['prompt']}\n")
    if args.trace:
        trace, b = it.trace
        if not many:
            out.write(f"Prompt: {it.record['prompt']}\n")
        for line in format_trace(trace, adapter.token_str, row=b):
            out.write(line + "\n")
        out.write("Final output: ")
    out.write(it.text + "\n")
    verdict = _task_verdict(task, it)
    if verdict and args.trace:
        out.write(verdict + "\n")


def _task_verdict(task, it) -> str:
    """``'Correct: yes (task perm:12)'`` when the demo task can check this answer, else ''."""
    import torch

    if task is None or len(it.ids) != task.prompt_length or len(it.tokens) != task.answer_length:
        return ""
    ok = bool(task.check(torch.tensor([it.ids]), torch.tensor([it.tokens]))[0])
    return f"Correct: {'yes' if ok else 'no'} (task {task.name}, checked exactly)"


def _png_path(base: str, index: int, many: bool) -> str:
    if not many:
        return base
    stem, ext = os.path.splitext(base)
    return f"{stem}-{index}{ext or '.png'}"
