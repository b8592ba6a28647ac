"""The ``fastremask`` command.

    fastremask generate --schedule pyramid --trace             (the demo model, its sample prompt)
    fastremask generate --model GSAI-ML/LLaDA-8B-Instruct --chat --prompt "..." --cache dual
    fastremask generate --prompts-file in.jsonl --output out.jsonl [--resume | --force]
    fastremask bench | profile | eval ...      (when those modules are installed)

``generate`` without ``--model`` uses the trained demo model shipped in ``fastremask/data/``
when there is one, else the untrained built-in `fastremask.models.tiny` model, so it always runs
offline. docs/cli.md describes every option.

This module imports neither torch nor the sampler at import time (``fastremask --help`` is
fast); they are imported when a command starts working. Every error ends as one line
``fastremask: error: ...`` on stderr (exit status 2 for bad input, 1 for a failure while
working), never a traceback unless ``--debug`` or ``FASTREMASK_DEBUG=1`` asks for one.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import traceback
from dataclasses import dataclass, field

from fastremask import DATA_DIR
from fastremask.sampler.names import SEED_LIMIT
from fastremask.tools.options import add_config_arguments, config_kwargs, options   # no torch: --help stays fast

__all__ = ["main", "build_parser", "config_from_args", "check_device", "check_output_dir", "EXTERNAL_COMMANDS",
           "CliError"]

# subcommands provided by other modules: name -> (module, help); each module exposes
# add_arguments(parser) and run(args) -> int, and is imported only when its command runs
EXTERNAL_COMMANDS = {
    "bench": ("fastremask.tools.bench", "benchmark the sampling step against the reference"),
    "profile": ("fastremask.tools.profile", "profile the kernels"),
    "eval": ("fastremask.evaluation.evaluate", "accuracy of schedules and remasking rules on the demo task"),
}

DEFAULT_PROMPT = "Hi, I am"
DEBUG_ENV = "FASTREMASK_DEBUG"


class CliError(Exception):
    """A bad input or option; printed as ``fastremask: error: ...`` with exit status 2."""


class Stopped(Exception):
    """The run stopped after it had started writing results: ``where`` says how far it got;
    ``__cause__`` is what stopped it (an error, or a KeyboardInterrupt)."""

    def __init__(self, where: str):
        super().__init__(where)
        self.where = where


# ----------------------------------------------------------------------------- parsing helpers


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line ``fastremask: error: ...`` (status 2)."""

    def error(self, message):
        self.exit(2, f"fastremask: error: {message} (see '{self.prog} --help')\n")


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("model")
    m.add_argument("--model", metavar="PATH_OR_ID", default=None,
                   help="checkpoint folder or hub id (default: the demo model in fastremask/data, "
                        "else the untrained built-in tiny model)")
    m.add_argument("--family", choices=("llada", "dream", "tiny"), default=None,
                   help="model family, for a config.json model_type fastremask does not know")
    m.add_argument("--trust-remote-code", action="store_true",
                   help="run the modeling code shipped with the checkpoint (models without a native "
                        "forward; LLaDA-8B/1.5 and Dream-v0 run natively, docs/models/)")
    m.add_argument("--no-native", action="store_true",
                   help="LLaDA/Dream through their remote code instead of the native forward "
                        "(with --trust-remote-code; transformers 4.46-4.57)")
    m.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    m.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    add_config_arguments(m, ["mask_id"], helps=dict(mask_id="mask token id (default: from the checkpoint)"))
    m.add_argument("--pad-id", type=int, default=None, help="left-padding id for batches (default: tokenizer's)")
    m.add_argument("--eos-id", type=int, default=None, help="EOS id for --logits-eos-inf (default: checkpoint's)")
    m.add_argument("--eot-id", type=int, default=None, help="EoT id for --confidence-eos-eot-inf")

    i = p.add_argument_group("input and output")
    i.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                   help="a prompt; repeat for a batch (default: a sample prompt)")
    i.add_argument("--prompts-file", metavar="FILE",
                   help='JSONL, one {"prompt": ..., "seed": optional int} per line ("-": stdin); '
                        "writes JSONL: each input object plus line, seed, output, tokens")
    i.add_argument("--output", metavar="FILE", default=None,
                   help="where the results go, each written as soon as its batch is done (default: stdout); "
                        "an existing FILE needs --force or --resume")
    i.add_argument("--force", action="store_true", help="overwrite an existing --output")
    i.add_argument("--resume", action="store_true",
                   help="continue an interrupted --prompts-file run: keep the results already in --output, "
                        "generate the other lines")
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

    s = p.add_argument_group("sampling (fastremask.generate's options: SamplingConfig's fields)")
    add_config_arguments(s, [n for n in options() if n != "mask_id"], defaults=_CLI_DEFAULTS, helps=_CLI_HELPS)
    s.add_argument("--seed", type=int, default=0,
                   help="seed of the first prompt; prompt n (from 0; file line n + 1) uses seed + n unless "
                        "its line has one")


# the command's own defaults and help of the options derived from SamplingConfig (None: derived
# from --gen-length or the demo task in config_from_args)
_CLI_DEFAULTS = dict(steps=None, gen_length=None, block_length=None)
_CLI_HELPS = dict(
    steps="model-call budget (default: gen-length, one token per step)",
    gen_length="tokens to generate (default: the demo task's answer length, else 128)",
    block_length="semi-autoregressive block (default: gen-length)",
)


# ----------------------------------------------------------------------------- checks shared by the commands


def check_device(value, option: str = "--device"):
    """``value`` as a `torch.device` that exists here (None stays None); a `CliError` naming
    ``option`` otherwise: an unknown device type, CUDA without CUDA, a GPU index past the last."""
    if value is None:
        return None
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise CliError(f"{option} {value!r} is not a device; expected cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is built without CUDA" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise CliError(f"{option} {value}: CUDA is not available ({why}); use --device cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise CliError(f"{option} {value}: this machine has {n} CUDA device{'s' * (n != 1)} "
                           f"(cuda:0 to cuda:{n - 1})")
        return dev
    mps = getattr(torch.backends, "mps", None)
    if dev.type == "mps" and mps is not None and mps.is_available():
        return dev
    raise CliError(f"{option} {value}: fastremask runs on cpu or cuda (cuda:N), not on {dev.type!r}")


def check_output_dir(path: str | None, option: str) -> None:
    """The folder ``path`` is to be written into exists (and ``path`` is not a folder itself)."""
    if path is None:
        return
    if os.path.isdir(path):
        raise CliError(f"{option} {path} is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CliError(f"{option} {path}: the folder {os.path.dirname(path) or folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise CliError(f"{option} {path}: not writable")


def _check_int_option(option: str, value, minimum: int, maximum: int | None = None) -> None:
    if value is None or not isinstance(value, int):     # not an int: SamplingConfig names it
        return
    if value < minimum or (maximum is not None and value >= maximum):
        bound = f"in [{minimum}, 2**63)" if maximum == SEED_LIMIT else (
            f"in [{minimum}, {maximum})" if maximum is not None else f">= {minimum}")
        raise CliError(f"{option} must be {bound}, got {value}")


# ----------------------------------------------------------------------------- model


def _demo_dir() -> str | None:
    """``fastremask/data`` when it holds a checkpoint (``config.json``)."""
    d = DATA_DIR
    return d if os.path.isfile(os.path.join(d, "config.json")) else None


def _demo_task(folder: str):
    """The task named by ``folder/demo.json`` (None without one)."""
    meta = os.path.join(folder, "demo.json")
    if not os.path.isfile(meta):
        return None
    from fastremask.evaluation.tasks import get_task

    try:
        with open(meta, encoding="utf-8") as f:
            return get_task(json.load(f)["task"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CliError(f"{meta}: cannot read the demo task ({type(e).__name__}: {e})") from None


def _load_model(args):
    """``(adapter, task or None, description)`` for ``--model`` or the default model."""
    from fastremask import models

    ids = dict(mask_id=args.mask_id, eos_id=args.eos_id, eot_id=args.eot_id, pad_id=args.pad_id)
    if args.model is not None:
        adapter = models.load(args.model, family=args.family, dtype=args.dtype, device=args.device,
                              trust_remote_code=args.trust_remote_code,
                              native=False if args.no_native else None, **ids)
        return adapter, None, args.model
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


def line_seed(base_seed: int, index: int) -> int:
    """The seed of prompt ``index`` (from 0; a prompts file's line ``index + 1``) without a
    ``"seed"`` of its own: ``(base_seed + index) % 2**63``, as `generate` seeds batch row
    ``index`` of an int seed. It depends on the line alone, not on the batch it runs in, so an
    interrupted run resumed gives the same results."""
    return (base_seed + index) % SEED_LIMIT


def _read_prompts_file(path: str, base_seed: int) -> list[Item]:
    """Parse the JSONL prompts file, each line decoded on its own: a broken line (not UTF-8,
    bad JSON, no string "prompt", a bad "seed") becomes an `Item` with ``error`` set; a file
    without any prompt is a `CliError`."""
    try:
        f = sys.stdin.buffer if path == "-" else open(path, "rb")
    except OSError as e:
        raise CliError(f"cannot read --prompts-file {path}: {e.strerror}") from None
    items = []
    try:
        for n, raw in enumerate(f, start=1):
            item = Item(line=n, record={}, seed=line_seed(base_seed, n - 1))
            try:
                text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                item.error = f"not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line)"
                items.append(item)
                continue
            if not text.strip():
                continue
            item.error = _parse_record(item, text.strip())
            items.append(item)
    except OSError as e:
        raise CliError(f"cannot read --prompts-file {path}: {e.strerror or e}") from None
    finally:
        if f is not sys.stdin.buffer:
            f.close()
    if not items:
        raise CliError(f"--prompts-file {path} has no prompts (it is empty or blank); "
                       'expected one JSON object like {"prompt": "..."} per line')
    return items


def _parse_record(item: Item, text: str) -> str | None:
    """Fill ``item.record`` (and its seed) from one JSON line; the error, or None."""
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        return f"invalid JSON ({e.msg} at column {e.colno})"
    except RecursionError:
        return "invalid JSON (nested too deeply)"
    if not isinstance(rec, dict):
        return f'expected a JSON object like {{"prompt": "..."}}, got {_json_type(rec)}'
    if "prompt" not in rec:
        return 'missing "prompt" (a string)'
    if not isinstance(rec["prompt"], str):
        return f'"prompt" must be a string, got {_json_type(rec["prompt"])} ({_short(rec["prompt"])})'
    if "seed" in rec and (not isinstance(rec["seed"], int) or isinstance(rec["seed"], bool)
                          or not 0 <= rec["seed"] < SEED_LIMIT):
        return f'"seed" must be an int in [0, 2**63), got {_short(rec["seed"])}'
    item.record = rec
    item.seed = rec.get("seed", item.seed)
    return None


def _json_type(v) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "true/false", int: "a number",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def _short(v, n: int = 40) -> str:
    s = json.dumps(v, ensure_ascii=False)
    return s if len(s) <= n else s[:n - 3] + "..."


def _task_verdict(task, it) -> str:
    """``'Correct: yes (task perm:12)'`` when the demo task can check this answer, else ''."""
    import torch

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

    kw = config_kwargs(args)
    gen_length = kw["gen_length"]
    if gen_length is None:
        gen_length = task.answer_length if task is not None else 128
    try:
        check_int("gen_length", gen_length, 1)   # before the defaults derived from it
        kw["gen_length"] = gen_length
        for name in ("steps", "block_length"):
            kw[name] = gen_length if kw[name] is None else kw[name]
        if adapter is not None:
            kw["suppress_tokens"] = [*(kw["suppress_tokens"] or ()),
                                     *(getattr(adapter.tokenizer, "unused_ids", None) or ())]
        return SamplingConfig(**kw)
    except (TypeError, ValueError) as e:     # generate's message for the same value
        raise CliError(str(e)) from None


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
    """``fastremask generate``: options and paths, the prompts file, the model, the prompts
    tokenized and checked, then one `fastremask.run` per batch, each result written as soon as
    its batch is done."""
    _check_options(args)                                   # no torch yet: options, paths
    items = _read_prompts_file(args.prompts_file, args.seed) if args.prompts_file is not None else None
    done = _read_done(args.output) if args.resume and os.path.exists(args.output) else None
    check_device(args.device)
    task = _demo_task(_demo_dir()) if args.model is None and _demo_dir() is not None else None
    pre = config_from_args(args, None, task)               # a bad sampling option fails before loading
    if done is not None:
        _check_resume(args, items, done, pre, tokenized=False)
    adapter, task, model_name = _load_model(args)
    config = config_from_args(args, adapter, task)
    _special_ids(adapter, config)
    _check_model_ids(args, adapter)
    file_mode = items is not None
    if not file_mode:
        prompts = args.prompt or [_default_prompt(adapter, task)]
        items = [Item(line=i, record={"prompt": p}, seed=line_seed(args.seed, i)) for i, p in enumerate(prompts)]
    _tokenize(args, adapter, config, items, file_mode)
    out = _Output(args, items, file_mode, done, config)
    return _stream(args, adapter, task, model_name, config, items, out)


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


# ----------------------------------------------------------------------------- output, streamed


def _read_done(path: str) -> dict:
    """What an earlier run left in ``path``: ``{"records": {line: record}, "end": bytes of
    whole records, "newline": whether the last record lacks its newline}``. A last line cut
    off mid-record is dropped (the file is truncated to ``end`` before appending)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CliError(f"--resume: cannot read --output {path}: {e.strerror}") from None
    records, end, pos = {}, 0, 0
    raws = data.splitlines(keepends=True)
    for k, raw in enumerate(raws, start=1):
        pos += len(raw)
        if not raw.strip():
            end = pos
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if k == len(raws) and not raw.endswith(b"\n"):
                break                                    # cut off while being written
            raise CliError(f"--resume: line {k} of {path} is not a JSON record; is it the output of "
                           "'fastremask generate --prompts-file'? (--force starts over)") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("line"), int) or rec["line"] in records:
            raise CliError(f"--resume: line {k} of {path} is not a record of 'fastremask generate "
                           '--prompts-file\' (each has a unique "line"); --force starts over')
        records[rec["line"]] = rec
        end = pos
    return {"records": records, "end": end, "newline": end > 0 and not data[:end].endswith(b"\n")}


def _check_resume(args, items: list[Item], done: dict, config, tokenized: bool = True) -> None:
    """The records already in ``--output`` are this run's first lines: same lines, prompts,
    seeds, answer length, in input order. Before the prompts are ``tokenized`` (before the
    model is loaded) the records of errors are not compared (a line's error may come from the
    tokenizer)."""
    recs = done["records"]
    first = [it.line for it in items[:len(recs)]]
    if sorted(recs) != first:
        extra = sorted(set(recs) - {it.line for it in items})
        what = (f"line {extra[0]}, which {args.prompts_file} does not have" if extra
                else f"lines {sorted(recs)[:3]}... that are not the first {len(recs)} of {args.prompts_file}")
        raise CliError(f"--resume: {args.output} holds {what}; is it this file's output? (--force starts over)")
    for it in items[:len(recs)]:
        rec = recs[it.line]
        if not tokenized and "error" in rec:
            continue
        why = None
        if it.error is not None:
            if "error" not in rec:
                why = f"it has a result there and an error now ({it.error})"
        elif "error" in rec:
            why = "it was an error there and is a prompt now"
        elif rec.get("prompt") != it.record["prompt"]:
            why = "the prompt differs"
        elif rec.get("seed") != it.seed:
            why = f"seed {rec.get('seed')!r} there, {it.seed} now (--seed?)"
        elif not isinstance(rec.get("tokens"), list) or len(rec["tokens"]) != config.gen_length:
            n = len(rec["tokens"]) if isinstance(rec.get("tokens"), list) else "no"
            why = f"{n} tokens there, --gen-length {config.gen_length} now"
        if why is not None:
            raise CliError(f"--resume: the record of line {it.line} in {args.output} does not match "
                           f"{args.prompts_file}:{it.line}: {why}; --force starts over")


class _Output:
    """Where results go and how far the run got: opened (stdout, a new file, or an earlier
    run's file to append to) only once everything has been checked."""

    def __init__(self, args, items, file_mode: bool, done: dict | None, config):
        self.args, self.file_mode = args, file_mode
        self.total = len(items)
        self.previous = 0
        skip = set()
        if done is not None:
            _check_resume(args, items, done, config)
            skip = set(done["records"])
            self.previous = len(skip)
            self.previous_errors = sum("error" in r for r in done["records"].values())
        else:
            self.previous_errors = 0
        self.pending = [it for it in items if it.line not in skip]    # to write, in input order
        self.written = 0
        self.errors = 0
        self.name = args.output if args.output is not None else "stdout"
        self.done = done
        self.f = None

    def open(self) -> None:
        """Open stdout, a new file, or the earlier run's file to append to."""
        args, done = self.args, self.done
        if args.output is None:
            self.f = sys.stdout
            return
        try:
            if done is not None:
                os.truncate(args.output, done["end"])        # drop a record cut off mid-line
                self.f = open(args.output, "a", encoding="utf-8")
                if done["newline"]:
                    self.f.write("\n")
            else:
                self.f = open(args.output, "w", encoding="utf-8")
        except OSError as e:
            raise CliError(f"cannot write --output {args.output}: {e.strerror}") from None

    @property
    def next_item(self) -> Item | None:
        return self.pending[self.written] if self.written < len(self.pending) else None

    def where(self) -> str:
        """How far the run got, for the message when it stops."""
        nxt = self.next_item
        if self.file_mode:
            at = f"line {nxt.line} of {self.args.prompts_file}" if nxt is not None else "the end"
            n = self.previous + self.written
            if self.args.output is None:
                return f"stopped at {at}: {n} of {self.total} lines were written to stdout"
            s = f"stopped at {at}: {n} of {self.total} lines are in {self.name}"
            return s + " (--resume continues)" if nxt is not None else s
        at = f"prompt {nxt.line}" if nxt is not None else "the end"
        return f"stopped at {at}: {self.written} of {self.total} answers written to {self.name}"

    def close(self) -> None:
        if self.f is None:
            return
        try:
            if self.f is not sys.stdout:
                self.f.close()
            else:
                self.f.flush()
        except OSError:
            pass              # what stopped the run (a full disk, a closed pipe) is reported already

    def sync(self) -> None:
        self.f.flush()
        if self.f is not sys.stdout:
            try:
                os.fsync(self.f.fileno())
            except OSError:
                pass


def _stream(args, adapter, task, model_name: str, config, items: list[Item], out: _Output) -> int:
    """Generate ``--batch-size`` prompts at a time; after each batch write (and flush) every
    result that is ready, in input order. Ctrl-C or an error: a `Stopped` saying how far it
    got (its cause the interrupt or the error); the results written stay."""
    from fastremask.sampler import loop

    want_trace = args.trace or bool(args.trace_png)
    todo = [it for it in out.pending if it.error is None]
    batches = [todo[i:i + args.batch_size] for i in range(0, len(todo), args.batch_size)]
    _check_padding(adapter, batches)
    out.open()
    calls = _calls_per_run(config)
    bar = None
    if not args.no_progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=None if calls is None else calls * len(batches), file=sys.stderr, unit="step",
                   desc="generating", leave=False, dynamic_ncols=True)
    many = len(items) > 1
    try:
        try:
            _write_ready(args, adapter, task, model_name, out, many)
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
                _write_ready(args, adapter, task, model_name, out, many)
        finally:
            if bar is not None:
                bar.close()
    except (Exception, KeyboardInterrupt) as e:
        raise Stopped(out.where()) from e
    finally:
        out.close()
    errors = out.errors + out.previous_errors
    if errors:
        where = "" if args.output is None else f' and as {{"line", "error"}} records in {args.output}'
        print(f"fastremask: error: {errors} of {out.total} lines of {args.prompts_file} had errors (listed above"
              f"{where}); the others were generated", file=sys.stderr)
        return 1
    if out.previous and out.file_mode:
        print(f"fastremask: resumed: {out.previous} lines were already in {out.name}, "
              f"{out.written} added", file=sys.stderr)
    return 0


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


def _write_ready(args, adapter, task, model_name: str, out: _Output, many: bool) -> None:
    """Write every pending item that is ready (an error, or generated), in input order."""
    wrote = False
    while (it := out.next_item) is not None and (it.error is not None or it.tokens is not None):
        if it.error is not None:
            out.errors += 1
            print(f"fastremask: {args.prompts_file}:{it.line}: {it.error}", file=sys.stderr)
            out.f.write(json.dumps({"line": it.line, "error": it.error}) + "\n")
        else:
            if args.trace_png:
                from fastremask.tools.trace import plot_trace

                trace, b = it.trace
                path = _png_path(args.trace_png, it.line, many)
                plot_trace(trace, adapter.token_str, path, row=b,
                           title=f"{model_name}: {it.record['prompt'][:60]!r}")
                print(f"fastremask: wrote {path}", file=sys.stderr)
            if out.file_mode:
                _write_record(out.f, args, adapter, it)
            else:
                _write_text(out.f, args, adapter, task, it, many)
        it.trace = None                       # written: let the batch's trace go
        out.written += 1
        wrote = True
    if wrote:
        out.sync()


def _write_record(out, args, adapter, it: Item) -> None:
    """One JSONL line: the input's fields plus ``line``, ``seed``, ``output``, ``tokens`` (``trace``)."""
    from fastremask.tools.trace import kept_by_step

    rec = dict(it.record)
    rec.update(line=it.line, seed=it.seed, output=it.text, tokens=it.tokens)
    if args.trace:
        trace, b = it.trace
        rec["trace"] = [[step, [[pos, adapter.token_str(t)] for pos, t in kept]]
                        for step, kept in kept_by_step(trace, b)]
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


# ----------------------------------------------------------------------------- main


def _first_command(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _add_debug(p: argparse.ArgumentParser, top: bool = False) -> None:
    p.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                   help=f"show the traceback of an error (also: {DEBUG_ENV}=1)")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``fastremask`` parser. External commands get their options (which means importing
    their module) only when ``argv`` names them."""
    parser = _Parser(prog="fastremask", description="Fast, exact sampling for masked diffusion language models.")
    _add_debug(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    g = sub.add_parser("generate", help="generate text with a masked diffusion LM",
                       description="Generate with a masked diffusion LM (docs/cli.md).")
    add_generate_arguments(g)
    _add_debug(g)
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
        if not any("--debug" in a.option_strings for a in sp._actions):
            _add_debug(sp)
        sp.set_defaults(run=mod.run)
    return parser


def _unavailable(name: str, why: str):
    def run(args):
        raise CliError(f"'fastremask {name}' is unavailable: {why}")

    return run


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def describe_error(e: BaseException) -> tuple[str, int]:
    """``(one-line message, exit status)``: 2 for a bad input or option (its message names
    it), 1 for anything else (an unexpected failure: its type, and how to see the traceback)."""
    if isinstance(e, CliError):
        return _one_line(e), 2
    if isinstance(e, ValueError):          # the library's argument checks, ModelLoadError
        return _one_line(e), 2
    if isinstance(e, OSError) and e.filename is not None:
        return _one_line(f"{e.filename}: {e.strerror or e}"), 2
    msg = _one_line(e)
    return (f"{type(e).__name__}: {msg}" if msg else type(e).__name__) + \
        " (unexpected; rerun with --debug for the traceback)", 1


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _debug_wanted(args) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    """Run ``fastremask ARGV``; returns the exit status (0 done, 1 some prompts-file lines had
    errors or the work failed, 2 a bad option or input, 130 interrupted by Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
    except SystemExit as e:                 # --help (0), or a usage error already printed (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.run(args) or 0)
    except Stopped as s:
        cause = s.__cause__
        if isinstance(cause, BrokenPipeError) and args.output is None:   # `... | head`: the reader left
            _quiet_stdout()
            return 141
        if _debug_wanted(args) and cause is not None and not isinstance(cause, KeyboardInterrupt):
            traceback.print_exception(cause)
        if isinstance(cause, KeyboardInterrupt) or cause is None:
            print(f"fastremask: interrupted; {s.where}", file=sys.stderr)
            return 130
        msg, code = describe_error(cause)
        print(f"fastremask: error: {msg}; {s.where}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        if _debug_wanted(args):
            traceback.print_exc()
        print("fastremask: interrupted (before any result was written)", file=sys.stderr)
        return 130
    except Exception as e:                  # noqa: BLE001 - one line, never a traceback
        if _debug_wanted(args):
            traceback.print_exc()
        msg, code = describe_error(e)
        print(f"fastremask: error: {msg}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
