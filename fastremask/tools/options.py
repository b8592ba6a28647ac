"""Command-line flags derived from `fastremask.SamplingConfig`'s fields (their `Option` metadata).

    add_config_arguments(group)                      every option as a flag (``fastremask generate``)
    add_config_arguments(p, ["temperature", ...])    some of them, with a command's own defaults
    config_kwargs(args)                              the parsed values -> SamplingConfig keywords

Nothing here names an option: the flag, help, parser and accepted names come from the field
(docs/architecture.md, "Where options are declared"). A value is read by the option's parser
and checked by `SamplingConfig`, so a bad one gets the message `fastremask.generate` gives it
(argparse's own ``choices`` are not used for that reason; they are shown in ``--help``).
Imports no torch.
"""
from __future__ import annotations

import argparse

from fastremask.sampler.config import check_options, options

__all__ = ["add_config_arguments", "config_kwargs", "flag_of", "options"]


def flag_of(name: str, cls=None) -> str:
    """The command-line flag of option ``name``."""
    field, opt = options(cls)[name]
    if opt.flag is not None:
        return opt.flag
    dashed = name.replace("_", "-")
    return f"--no-{dashed}" if field.default is True else f"--{dashed}"


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def add_config_arguments(parser, names=None, *, defaults: dict | None = None, helps: dict | None = None,
                         cls=None) -> list:
    """Add the flags of the options ``names`` (default: every option, in declaration order) to
    ``parser`` (a parser or an argument group); returns the names added.

    ``defaults``: a command's own defaults (``None`` for "derived later", e.g. ``--steps``);
    ``helps``: a command's own help texts. Each flag stores into ``args.<name>``: a bool option
    is a switch (``--x`` for a False default, ``--no-x`` for True), any other reads its value
    with the option's parser.
    """
    known = options(cls)
    names = list(known) if names is None else list(names)
    check_options(names, cls)
    defaults, helps = defaults or {}, helps or {}
    for name in names:
        field, opt = known[name]
        default = defaults.get(name, field.default)
        text = helps.get(name, opt.help)
        if isinstance(field.default, bool):
            parser.add_argument(flag_of(name, cls), dest=name, default=default,
                                action="store_false" if field.default else "store_true",
                                help=f"turn off: {text}" if field.default and name not in helps else text)
            continue
        if default not in (None, (), []) and "default" not in text:
            text = f"{text} (default: {_shown(default)})"
        metavar = opt.metavar or ("{" + ",".join(opt.choices) + "}" if opt.choices else None)
        parser.add_argument(flag_of(name, cls), dest=name, type=opt.parse, default=default,
                            metavar=metavar, help=text)
    return names


def config_kwargs(args, names=None, cls=None) -> dict:
    """``{name: args.<name>}`` of the options ``names`` (default: every option ``args`` has)."""
    known = options(cls)
    names = [n for n in known if hasattr(args, n)] if names is None else list(names)
    check_options(names, cls)
    return {n: getattr(args, n) for n in names}
