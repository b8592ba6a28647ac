"""``--resume``: the records an earlier run left in ``--output`` are this run's first lines, made
the same way.

Every result record carries, under ``"fastremask"``, how its tokens were made (`run_record`):
the model and how it is loaded and prompted, and the exact `SamplingConfig`
(`SamplingConfig.to_dict`). `check_resume` compares the records with this run: the same lines,
prompts, seeds and answer length, and the same record, option by option (the options that cannot
change the tokens, such as ``--backend``, are not compared: `SamplingConfig.changes`). A
mismatch is a `CliError` naming the option and both values, before anything is written.
"""
from __future__ import annotations

import json
import os

from fastremask.tools.cli import CliError

__all__ = ["RUN_KEY", "run_record", "recorded_model", "check_resume"]

RUN_KEY = "fastremask"      # the field of each result record that says how it was made
_NOT_COMPARED = ("version", "sampling")     # information; the sampling config is compared option by option


def run_record(args, config, model: str, device: str) -> dict:
    """How this run makes its tokens: ``model`` (the ``--model`` given, or the default model's
    name), ``device`` (its type: the model's logits may differ between cpu and cuda), the
    options that load and prompt the model, and ``sampling``, the config's `to_dict`."""
    from fastremask import __version__

    return {"version": __version__, "model": model, "family": args.family, "dtype": args.dtype,
            "no_native": args.no_native, "device": device, "chat": args.chat, "system": args.system,
            "eos_id": args.eos_id, "eot_id": args.eot_id,
            "keep_special_tokens": args.keep_special_tokens, "sampling": config.to_dict()}


def recorded_model(args, demo_dir: str | None) -> str:
    """The model as the record names it: ``--model`` as given (a local folder normalised), else
    the default model."""
    if args.model is not None:
        return os.path.normpath(args.model) if os.path.isdir(args.model) else args.model
    return "the demo model (fastremask/data)" if demo_dir is not None else "the built-in tiny model"


def check_resume(args, items: list, done: dict, config, run: dict, tokenized: bool = True) -> None:
    """The records already in ``--output`` are this run's first lines (same lines, prompts,
    seeds, answer length, in input order) and were made as this run makes its tokens (``run``,
    `run_record`). Before the prompts are ``tokenized`` (before the model is loaded) the records
    of errors are not compared (a line's error may come from the tokenizer), nor the token ids
    the model's tokenizer suppresses."""
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
        why = _line_differs(it, rec, config)
        if why is not None:
            raise CliError(f"--resume: the record of line {it.line} in {args.output} does not match "
                           f"{args.prompts_file}:{it.line}: {why}; --force starts over")
    for it in items[:len(recs)]:
        if "error" not in recs[it.line]:
            _check_run(recs[it.line].get(RUN_KEY), run, f"{args.output} (line {it.line})", tokenized)


def _line_differs(it, rec: dict, config) -> str | None:
    """What differs between an earlier record and this run's item (None: nothing)."""
    if it.error is not None:
        return None if "error" in rec else f"it has a result there and an error now ({it.error})"
    if "error" in rec:
        return "it was an error there and is a prompt now"
    if rec.get("prompt") != it.record["prompt"]:
        return "the prompt differs"
    if rec.get("seed") != it.seed:
        return f"seed {rec.get('seed')!r} there, {it.seed} now (--seed?)"
    if not isinstance(rec.get("tokens"), list) or len(rec["tokens"]) != config.gen_length:
        n = len(rec["tokens"]) if isinstance(rec.get("tokens"), list) else "no"
        return f"{n} tokens there, --gen-length {config.gen_length} now"
    return None


def _check_run(then, now: dict, where: str, model_loaded: bool) -> None:
    """``then`` (a record's `RUN_KEY`) is ``now``, option by option; the first difference is a
    `CliError` naming the option and both values."""
    from fastremask.sampler.config import SamplingConfig
    from fastremask.tools.options import flag_of

    if not isinstance(then, dict) or not isinstance(then.get("sampling"), dict):
        raise CliError(f"--resume: the record of {where} does not say how it was made (no \"{RUN_KEY}\" "
                       "field: an older fastremask wrote it); --force starts over")
    for key, value in now.items():
        if key not in _NOT_COMPARED and then.get(key) != value:
            raise CliError(_differs("--" + key.replace("_", "-"), then.get(key), value, where))
    try:
        before = SamplingConfig.from_dict(then["sampling"])
    except (TypeError, ValueError) as e:
        raise CliError(f"--resume: the sampling options recorded in {where} cannot be read ({e}); "
                       "--force starts over") from None
    for name, a, b in before.changes(SamplingConfig.from_dict(now["sampling"])):
        if name == "suppress_tokens" and not model_loaded:
            continue                         # the model's tokenizer adds its unused ids after loading
        raise CliError(_differs(flag_of(name), a, b, where))


def _differs(option: str, then, now, where: str) -> str:
    return (f"--resume: {option} differs: {_show(then)} in {where}, {_show(now)} now; resume with the "
            "options of that run, or --force to start over")


def _show(v) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if v is None:
        return "unset"
    return v if isinstance(v, str) else json.dumps(v)
