"""The ``fastremask`` command.

    fastremask generate --prompt "Hi, I am" --gen-length 32 --schedule pyramid --trace
    fastremask generate --model GSAI-ML/LLaDA-8B-Instruct --trust-remote-code --chat --prompt "..."
    fastremask generate --prompts-file in.jsonl --output out.jsonl
    fastremask bench | profile | eval ...      (when those modules are installed)

``generate`` without ``--model`` uses the trained demo model shipped in ``fastremask/data/``
when there is one, else the untrained built-in `fastremask.models.tiny` model, so it always runs
offline. docs/cli.md describes every option.
"""
from __future__ import annotations

from fastremask import DATA_DIR
import argparse
import importlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass, field

import torch

from fastremask.tools.trace import format_trace, kept_by_step, plot_trace

__all__ = ["main", "build_parser", "config_from_args", "EXTERNAL_COMMANDS"]

# subcommands provided by other modules: name -> (module, help); each module exposes
# add_arguments(parser) and run(args) -> int, and is imported only when its command runs
EXTERNAL_COMMANDS = {
    "bench": ("fastremask.tools.bench", "benchmark the sampling step against the reference"),
    "profile": ("fastremask.tools.profile", "profile the kernels"),
    "eval": ("fastremask.evaluation.evaluate", "accuracy of schedules and remasking rules on the demo task"),
}

DEFAULT_PROMPT = "Hi, I am"


class CliError(Exception):
    """A bad input or option; printed as ``fastremask: error: ...`` with exit status 2."""


# ----------------------------------------------------------------------------- parsing helpers


def _int_list(s: str) -> list[int]:
    try:
        return [int(v) for v in s.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _schedule(s: str):
    if s in ("uniform", "pyramid"):
        return s
    try:
        return _int_list(s)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"--schedule must be uniform, pyramid or comma-separated per-step counts (e.g. 1,2,3), got {s!r}"
        ) from None


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    from fastremask.sampler.config import BACKENDS
    from fastremask.sampler.contract import REMASKING

    m = p.add_argument_group("model")
    m.add_argument("--model", metavar="PATH_OR_ID", default=None,
                   help="checkpoint folder or hub id (default: the demo model in fastremask/data, "
                        "else the untrained built-in tiny model)")
    m.add_argument("--family", choices=("llada", "dream", "tiny"), default=None,
                   help="model family, overriding config.json's model_type")
    m.add_argument("--trust-remote-code", action="store_true",
                   help="run the modeling code shipped with the checkpoint (LLaDA and Dream need it)")
    m.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    m.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    m.add_argument("--mask-id", type=int, default=None, help="mask token id (default: from the checkpoint)")
    m.add_argument("--pad-id", type=int, default=None, help="left-padding id for batches (default: tokenizer's)")
    m.add_argument("--eos-id", type=int, default=None, help="EOS id for --logits-eos-inf (default: checkpoint's)")
    m.add_argument("--eot-id", type=int, default=None, help="EoT id for --confidence-eos-eot-inf")

    i = p.add_argument_group("input and output")
    i.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                   help="a prompt; repeat for a batch (default: a sample prompt)")
    i.add_argument("--prompts-file", metavar="FILE",
                   help='JSONL, one {"prompt": ..., "seed": optional int} per line ("-": stdin); '
                        "writes JSONL: each input object plus output, tokens")
    i.add_argument("--output", metavar="FILE", default=None, help="where the JSONL goes (default: stdout)")
    i.add_argument("--chat", action="store_true", help="wrap each prompt in the model's chat template")
    i.add_argument("--system", default=None, metavar="TEXT", help="system message for --chat")
    i.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (default 8)")
    i.add_argument("--keep-special-tokens", action="store_true", help="keep EOS, EoT, ... in the output text")
    i.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    i.add_argument("--trace", action="store_true",
                   help="print, step by step, the tokens each step kept (JSONL: a trace field)")
    i.add_argument("--trace-png", metavar="FILE", default=None,
                   help="draw the denoising (position x step, coloured by commit step) to FILE; "
                        "with several prompts FILE-<n>.png per prompt")

    s = p.add_argument_group("sampling (fastremask.generate's options)")
    s.add_argument("--steps", type=int, default=None,
                   help="model-call budget (default: gen-length, one token per step)")
    s.add_argument("--gen-length", type=int, default=None,
                   help="tokens to generate (default: the demo task's answer length, else 128)")
    s.add_argument("--block-length", type=int, default=None, help="semi-autoregressive block (default: gen-length)")
    s.add_argument("--temperature", type=float, default=0.0)
    s.add_argument("--cfg-scale", type=float, default=0.0)
    s.add_argument("--remasking", choices=REMASKING, default="low_confidence")
    s.add_argument("--schedule", type=_schedule, default="uniform",
                   help="uniform | pyramid | comma-separated per-step counts (default uniform)")
    s.add_argument("--factor", type=int, default=1, help="pyramid dilation: step i keeps i // factor + 1")
    s.add_argument("--threshold", type=float, default=None,
                   help="keep every candidate with confidence >= this each step (at least one)")
    s.add_argument("--seed", type=int, default=0,
                   help="seed of the first prompt; prompt n (from 0) uses seed + n unless its line has one")
    s.add_argument("--backend", choices=BACKENDS, default="auto")
    s.add_argument("--logits-window", action="store_true",
                   help="run the output head on the current block only (less memory; not in the bit-equality promise)")
    s.add_argument("--logits-eos-inf", action="store_true", help="never generate the model's EOS")
    s.add_argument("--confidence-eos-eot-inf", action="store_true",
                   help="keep EOS/EoT predictions only after every other position of the block")
    s.add_argument("--suppress-tokens", type=_int_list, default=None, metavar="IDS", help="ids never generated")
    s.add_argument("--defer-tokens", type=_int_list, default=None, metavar="IDS",
                   help="ids kept only after every other position of the block")


# ----------------------------------------------------------------------------- model


def _demo_dir() -> str | None:
    """``fastremask/data`` when it holds a checkpoint (``config.json``)."""
    d = DATA_DIR
    return d if os.path.isfile(os.path.join(d, "config.json")) else None


def _load_model(args):
    """``(adapter, task or None, description)`` for ``--model`` or the default model."""
    from fastremask import models

    ids = dict(mask_id=args.mask_id, eos_id=args.eos_id, eot_id=args.eot_id, pad_id=args.pad_id)
    if args.model is not None:
        adapter = models.load(args.model, family=args.family, dtype=args.dtype, device=args.device,
                              trust_remote_code=args.trust_remote_code, **ids)
        return adapter, None, args.model
    demo = _demo_dir()
    if demo is not None:
        adapter = models.load(demo, dtype=args.dtype, device=args.device or "cpu", **ids)
        task = None
        meta = os.path.join(demo, "demo.json")
        if os.path.isfile(meta):
            from fastremask.evaluation.tasks import get_task

            with open(meta) as f:
                task = get_task(json.load(f)["task"])
        return adapter, task, "the demo model (fastremask/data)"
    from fastremask.models.tiny import tiny_model

    model = tiny_model()
    if args.device:
        model.to(args.device)
    adapter = models.wrap(model, name="built-in tiny model", **ids)
    print("fastremask: using the built-in tiny model (untrained: its text is noise; "
          "pass --model for a real one)", file=sys.stderr)
    return adapter, None, "the built-in tiny model"


# ----------------------------------------------------------------------------- prompts


@dataclass
class Item:
    """One prompt: where it came from (``line``: 1-based line of the prompts file, or the
    index of ``--prompt``), its record, its seed; then its tokens, output or error."""

    line: int
    record: dict
    seed: int
    ids: list = field(default_factory=list)
    error: str | None = None
    tokens: list | None = None
    text: str | None = None
    trace: object = None


def _read_prompts_file(path: str, base_seed: int) -> list[Item]:
    """Parse the JSONL prompts file; a broken line becomes an `Item` with ``error`` set."""
    try:
        f = sys.stdin if path == "-" else open(path, encoding="utf-8")
    except OSError as e:
        raise CliError(f"cannot read --prompts-file {path}: {e.strerror}") from None
    items = []
    with f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            item = Item(line=n, record={}, seed=base_seed + n - 1)
            try:
                rec = json.loads(raw.strip())
            except json.JSONDecodeError as e:
                item.error = f"invalid JSON ({e.msg} at column {e.colno})"
                items.append(item)
                continue
            if not isinstance(rec, dict):
                item.error = f'expected a JSON object like {{"prompt": "..."}}, got {type(rec).__name__}'
            elif not isinstance(rec.get("prompt"), str):
                item.error = 'missing "prompt" (a string)'
            elif "seed" in rec and (not isinstance(rec["seed"], int) or isinstance(rec["seed"], bool)
                                    or not 0 <= rec["seed"] < 2**63):
                item.error = f'"seed" must be an int in [0, 2**63), got {rec["seed"]!r}'
            else:
                item.record = rec
                item.seed = rec.get("seed", item.seed)
            items.append(item)
    return items


def _task_verdict(task, it) -> str:
    """``'Correct: yes (task perm:12)'`` when the demo task can check this answer, else ''."""
    if task is None or len(it.ids) != task.prompt_length or len(it.tokens) != task.answer_length:
        return ""
    ok = bool(task.check(torch.tensor([it.ids]), torch.tensor([it.tokens]))[0])
    return f"Correct: {'yes' if ok else 'no'} (task {task.name}, checked exactly)"


def _default_prompt(adapter, task) -> str:
    if task is not None:
        from fastremask.evaluation import tasks

        prompts, _ = task.test_set(1)
        return tasks.decode(prompts[0])
    return DEFAULT_PROMPT


# ----------------------------------------------------------------------------- the run


def config_from_args(args, adapter=None, task=None):
    """The `fastremask.SamplingConfig` of ``fastremask generate``'s sampling options.

    Validated there, once: a bad value is rejected with the message `fastremask.generate`
    gives for it. Defaults: ``--gen-length`` the demo ``task``'s answer length (else 128),
    ``--block-length`` and ``--steps`` the gen length. ``mask_id`` is left to the model
    (``--mask-id`` overrides the adapter's), and so are the EOS/EoT ids of
    ``--logits-eos-inf``/``--confidence-eos-eot-inf`` (`fastremask.sampler.config.SpecialIds`); the
    ids ``adapter``'s tokenizer has no token for (the built-in model's) are suppressed.
    """
    from fastremask.sampler.config import SamplingConfig, check_int

    gen_length = args.gen_length
    if gen_length is None:
        gen_length = task.answer_length if task is not None else 128
    check_int("gen_length", gen_length, 1)   # before the defaults derived from it
    suppress = list(args.suppress_tokens or [])
    if adapter is not None:
        suppress += list(getattr(adapter.tokenizer, "unused_ids", None) or [])
    return SamplingConfig(
        steps=gen_length if args.steps is None else args.steps, gen_length=gen_length,
        block_length=gen_length if args.block_length is None else args.block_length,
        temperature=args.temperature, cfg_scale=args.cfg_scale, remasking=args.remasking,
        logits_eos_inf=args.logits_eos_inf, confidence_eos_eot_inf=args.confidence_eos_eot_inf,
        schedule=args.schedule, factor=args.factor, threshold=args.threshold,
        suppress_tokens=suppress, defer_tokens=args.defer_tokens, backend=args.backend,
        logits_window=args.logits_window)


def _special_ids(adapter, config) -> None:
    """The model's EOS/EoT for ``--logits-eos-inf``/``--confidence-eos-eot-inf``, checked
    before any model call (`fastremask.sampler.config.SpecialIds`, as `generate` resolves them)."""
    from fastremask.sampler.config import SpecialIds

    try:
        SpecialIds.of(adapter, config)
    except ValueError as e:
        raise CliError(f"{e} (on the command line: --eos-id / --eot-id name the model's ids)") from None


def _calls_per_run(config) -> int | None:
    """Model calls of one generate call (`SamplingConfig.model_calls`, which is
    `fastremask.sampler.schedule.cost`'s count); None in threshold mode (not known in advance)."""
    return None if config.threshold is not None else config.model_calls()


def _png_path(base: str, index: int, many: bool) -> str:
    if not many:
        return base
    stem, ext = os.path.splitext(base)
    return f"{stem}-{index}{ext or '.png'}"


def run_generate(args) -> int:
    """``fastremask generate``: options, model, prompts, one `fastremask.run` per batch, output."""
    _check_options(args)
    adapter, task, model_name = _load_model(args)
    config = config_from_args(args, adapter, task)
    _special_ids(adapter, config)
    items, file_mode = _read_items(args, adapter, task)
    _generate(args, adapter, config, [it for it in items if it.error is None])
    return _write(args, adapter, task, model_name, items, file_mode)


def _check_options(args) -> None:
    """The options that are the command's own (the sampling ones are `config_from_args`')."""
    if args.prompt is not None and args.prompts_file is not None:
        raise CliError("give --prompt or --prompts-file, not both")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.system is not None and not args.chat:
        raise CliError("--system needs --chat")
    if args.trace_png:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CliError("--trace-png needs matplotlib: pip install 'fastremask[plot]'") from None


def _read_items(args, adapter, task) -> tuple[list[Item], bool]:
    """The prompts, tokenized: ``(items, file_mode)``. With ``--prompt`` a bad prompt is a
    `CliError`; in a prompts file it is that line's ``error``."""
    if args.prompts_file is not None:
        items = _read_prompts_file(args.prompts_file, args.seed)
        file_mode = True
    else:
        prompts = args.prompt or [_default_prompt(adapter, task)]
        items = [Item(line=i, record={"prompt": p}, seed=args.seed + i) for i, p in enumerate(prompts)]
        file_mode = False
    for it in items:
        if it.error is None:
            try:
                it.ids = adapter.tokenize(it.record["prompt"], chat=args.chat, system=args.system)
                if not it.ids:
                    it.error = "the prompt is empty after tokenization"
                elif adapter.mask_id in it.ids:
                    it.error = f"the prompt contains the mask token (id {adapter.mask_id})"
            except ValueError as e:
                it.error = str(e)
        if it.error is not None and not file_mode:
            raise CliError(f"prompt {it.line}: {it.error}")
    return items, file_mode


def _generate(args, adapter, config, todo: list[Item]) -> None:
    """Fill ``tokens``, ``text`` (and ``trace``) of every item, ``--batch-size`` at a time."""
    from fastremask.sampler import loop
    from fastremask.models import PadIsMaskError

    want_trace = args.trace or bool(args.trace_png)
    batches = [todo[i:i + args.batch_size] for i in range(0, len(todo), args.batch_size)]
    calls = _calls_per_run(config)
    bar = None
    if not args.no_progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=None if calls is None else calls * len(batches), file=sys.stderr, unit="step",
                   desc="generating", leave=False, dynamic_ncols=True)
    try:
        for batch in batches:
            ids, mask = adapter.pad([it.ids for it in batch])
            x, trace = loop.run(adapter, ids, config, attention_mask=mask, seed=[it.seed for it in batch],
                                return_trace=True, callback=None if bar is None else (lambda rec: bar.update(1)))
            answers = x[:, ids.shape[1]:].cpu()
            for b, it in enumerate(batch):
                it.tokens = answers[b].tolist()
                it.text = adapter.decode(it.tokens, skip_special_tokens=not args.keep_special_tokens)
                it.trace = (trace, b) if want_trace else None
    except PadIsMaskError as e:
        raise CliError(str(e)) from None
    finally:
        if bar is not None:
            bar.close()


def _write(args, adapter, task, model_name: str, items: list[Item], file_mode: bool) -> int:
    """Print or write every item (and its picture); 1 when some prompts-file lines had errors."""
    out = sys.stdout
    if args.output is not None:
        try:
            out = open(args.output, "w", encoding="utf-8")
        except OSError as e:
            raise CliError(f"cannot write --output {args.output}: {e.strerror}") from None
    n_errors = 0
    try:
        many = len(items) > 1
        for it in items:
            if it.error is not None:
                n_errors += 1
                print(f"fastremask: {args.prompts_file}:{it.line}: {it.error}", file=sys.stderr)
                out.write(json.dumps({"line": it.line, "error": it.error}) + "\n")
                continue
            if args.trace_png:
                trace, b = it.trace
                path = _png_path(args.trace_png, it.line, many)
                plot_trace(trace, adapter.token_str, path, row=b, title=f"{model_name}: {it.record['prompt'][:60]!r}")
                print(f"fastremask: wrote {path}", file=sys.stderr)
            if file_mode:
                _write_record(out, args, adapter, it)
            else:
                _write_text(out, args, adapter, task, it, many)
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    if n_errors:
        print(f"fastremask: {n_errors} of {len(items)} lines had errors (see above); the others were generated",
              file=sys.stderr)
        return 1
    return 0


def _write_record(out, args, adapter, it: Item) -> None:
    """One JSONL line: the input's fields plus ``line``, ``seed``, ``output``, ``tokens`` (``trace``)."""
    rec = dict(it.record)
    rec.update(line=it.line, seed=it.seed, output=it.text, tokens=it.tokens)
    if args.trace:
        trace, b = it.trace
        rec["trace"] = [[step, [[pos, adapter.token_str(t)] for pos, t in kept]]
                        for step, kept in kept_by_step(trace, b)]
    out.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _write_text(out, args, adapter, task, it: Item, many: bool) -> None:
    """The answer as text; with ``--trace`` the prompt and the steps first, and the demo task's verdict."""
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


# ----------------------------------------------------------------------------- main


def _first_command(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``fastremask`` parser. External commands get their options (which means importing
    their module) only when ``argv`` names them."""
    parser = argparse.ArgumentParser(
        prog="fastremask", description="Fast, exact sampling for masked diffusion language models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    g = sub.add_parser("generate", help="generate text with a masked diffusion LM",
                       description="Generate with a masked diffusion LM (docs/cli.md).")
    add_generate_arguments(g)
    g.set_defaults(run=run_generate)
    chosen = _first_command(argv or [])
    for name, (module, help_) in EXTERNAL_COMMANDS.items():
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            continue
        sp = sub.add_parser(name, help=help_, description=help_)
        if name != chosen:
            continue
        try:
            mod = importlib.import_module(module)
        except Exception as e:  # an optional command must not break the others
            sp.set_defaults(run=_unavailable(name, f"importing {module} failed: {e}"))
            continue
        if not (callable(getattr(mod, "add_arguments", None)) and callable(getattr(mod, "run", None))):
            sp.set_defaults(run=_unavailable(name, f"{module} has no add_arguments/run"))
            continue
        mod.add_arguments(sp)
        sp.set_defaults(run=mod.run)
    return parser


def _unavailable(name: str, why: str):
    def run(args):
        raise CliError(f"'fastremask {name}' is unavailable: {why}")

    return run


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    from fastremask.models import ModelLoadError

    try:
        return int(args.run(args) or 0)
    except (CliError, ModelLoadError) as e:
        print(f"fastremask: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as e:
        # generate's argument checks name the argument; show them without a traceback
        print(f"fastremask: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
