"""The ``fastremask`` command: the dispatcher.

    fastremask generate --schedule pyramid --trace             (the demo model, its sample prompt)
    fastremask generate --model GSAI-ML/LLaDA-8B-Instruct --chat --prompt "..." --cache dual
    fastremask generate --prompts-file in.jsonl --output out.jsonl [--resume | --force]
    fastremask bench | profile | eval ...      (when those modules are installed)

``generate`` without ``--model`` uses the trained demo model shipped in ``fastremask/data/``
when there is one, else the untrained built-in `fastremask.models.tiny` model, so it always runs
offline. docs/cli.md describes every option.

Each command is a module with ``add_arguments(parser)`` and ``run(args) -> int``, imported by
name only when it runs: ``generate`` is `fastremask.tools.generate` (its options are declared
here, `add_generate_arguments` and `config_from_args`, and the command imports them), the
others are `EXTERNAL_COMMANDS`. This module holds what they share: `CliError`, `Stopped`,
`check_output_dir`, and `main`, which turns every error into its one line.

This module imports neither torch nor the sampler at import time (``fastremask --help`` is
fast); they are imported when a command starts working. Every error ends as one line
``fastremask: error: ...`` on stderr (exit status 2 for bad input, 1 for a failure while
working), never a traceback unless ``--debug`` or ``FASTREMASK_DEBUG=1`` asks for one.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import signal
import sys
import traceback

from fastremask.models.family import checkpoint_families   # no torch either
from fastremask.tools.options import add_config_arguments, config_kwargs, options   # no torch: --help stays fast

__all__ = ["main", "build_parser", "add_generate_arguments", "config_from_args", "check_output_dir",
           "EXTERNAL_COMMANDS", "CliError", "WriteError", "Stopped", "Terminated"]

# subcommands provided by other modules: name -> (module, help); each module exposes
# add_arguments(parser) and run(args) -> int, and is imported only when its command runs
EXTERNAL_COMMANDS = {
    "bench": ("fastremask.tools.bench", "benchmark the sampling step against the reference"),
    "profile": ("fastremask.tools.profile", "profile the kernels"),
    "eval": ("fastremask.tools.eval_command", "accuracy of schedules and remasking rules on the demo task"),
}

DEBUG_ENV = "FASTREMASK_DEBUG"


class CliError(Exception):
    """A bad input or option; printed as ``fastremask: error: ...`` with exit status 2."""


class WriteError(Exception):
    """Writing the results failed while working (a full disk, ...): one line naming the file,
    exit status 1."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (how a batch scheduler or ``kill`` stops a job), raised where the command is, as
    Ctrl-C raises KeyboardInterrupt: the same clean stop and message, exit status 143."""


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
    m.add_argument("--family", choices=checkpoint_families(), default=None,   # the records (models/family.py)
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


def check_output_dir(path: str | None, option: str) -> None:
    """The folder ``path`` is to be written into exists (and ``path`` is not a folder itself)."""
    if path is None:
        return
    if os.path.isdir(path):
        raise CliError(f"{option} {path} is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CliError(f"{option} {path}: the folder {os.path.dirname(path) or folder} does not exist")
    if not os.access(path, os.W_OK) if os.path.exists(path) else not os.access(folder, os.W_OK):
        raise CliError(f"{option} {path}: not writable")      # an existing file: its own permission


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
    g.set_defaults(run=_run_command("fastremask.tools.generate"))
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


def _run_command(module: str):
    """``run`` of ``module``, imported when the command runs (the module imports this one)."""
    def run(args):
        return importlib.import_module(module).run(args)

    return run


def _unavailable(name: str, why: str):
    def run(args):
        raise CliError(f"'fastremask {name}' is unavailable: {why}")

    return run


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def describe_error(e: BaseException) -> tuple[str, int]:
    """``(one-line message, exit status)``: 2 for a bad input or option (its message names
    it), 1 for writing the results failing (`WriteError`, naming the file) and for anything
    else (an unexpected failure: its type, and how to see the traceback)."""
    if isinstance(e, CliError):
        return _one_line(e), 2
    if isinstance(e, WriteError):
        return _one_line(e), 1
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
    errors or the work failed, 2 a bad option or input, 130 interrupted by Ctrl-C, 143 by
    SIGTERM)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
    except SystemExit as e:                 # --help (0), or a usage error already printed (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    with _sigterm_stops():
        return _run(args)


def _run(args) -> int:
    """``args.run(args)``, every way it can end turned into one line and a status."""
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
            word, code = _interrupted(cause)
            print(f"fastremask: {word}; {s.where}", file=sys.stderr)
            return code
        msg, code = describe_error(cause)
        print(f"fastremask: error: {msg}; {s.where}", file=sys.stderr)
        return code
    except KeyboardInterrupt as e:
        if _debug_wanted(args):
            traceback.print_exc()
        word, code = _interrupted(e)
        print(f"fastremask: {word} (before any result was written)", file=sys.stderr)
        return code
    except Exception as e:                  # noqa: BLE001 - one line, never a traceback
        if _debug_wanted(args):
            traceback.print_exc()
        msg, code = describe_error(e)
        print(f"fastremask: error: {msg}", file=sys.stderr)
        return code


def _interrupted(e) -> tuple[str, int]:
    return ("interrupted (SIGTERM)", 143) if isinstance(e, Terminated) else ("interrupted", 130)


@contextlib.contextmanager
def _sigterm_stops():
    """While a command runs, SIGTERM raises `Terminated` (once: a second one while the command
    stops is ignored); the handler before is restored after. Off the main thread: nothing."""
    def on_term(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    try:
        before, installed = signal.signal(signal.SIGTERM, on_term), True
    except ValueError:                      # signals are the main thread's
        before, installed = None, False
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, before if before is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
