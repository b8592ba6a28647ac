"""Checking a checkpoint's ``config.json`` fields where they are read: one function, one message.

Every field the project reads from a checkpoint (the tiny/demo model, the native LLaDA and
Dream) goes through `check_field`, so a bad value is a `ModelLoadError` naming the file, the
field, what it must be and what it is, at load time, never a ``TypeError`` deep in torch at the
first model call.
"""
from __future__ import annotations

import json
import math

from fastremask.sampler.protocol import ModelLoadError

__all__ = ["check_field", "read_json_object", "MISSING"]


def read_json_object(path: str, what: str = "") -> dict:
    """The JSON object in the file ``path``; a `ModelLoadError` naming the file when it cannot be
    read, is not UTF-8, is not JSON or holds something else (``what`` says what it should hold,
    e.g. ``" (the model's config)"``)."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    except UnicodeDecodeError as e:
        raise ModelLoadError(f"{path} is not UTF-8 text (byte {e.start + 1})") from e
    except OSError as e:
        raise ModelLoadError(f"cannot read {path}: {e.strerror or e}") from e
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path} must hold a JSON object{what}, got {type(value).__name__}")
    return value

MISSING = object()


def check_field(raw: dict, path: str, name: str, kind=int, *, default=MISSING, positive: bool = True,
                below: int | None = None, below_name: str | None = None, null: bool = True):
    """``raw[name]`` checked, or ``default`` when it is absent, or null where ``null`` allows it
    (a missing field without a default is an error).

    ``kind``: ``int`` (not a bool; positive unless ``positive=False``, then non-negative; below
    ``below`` when given, e.g. an id inside a vocabulary named ``below_name``), ``float`` (an int
    or a float, finite, positive unless told), ``bool``, or any type for `isinstance`.
    """
    if name not in raw or (raw[name] is None and null):
        if default is MISSING:
            raise ModelLoadError(f"{path}: field {name!r} is missing (needed to build the model)")
        return default
    v = raw[name]
    if kind is int:
        ok = isinstance(v, int) and not isinstance(v, bool) and (v > 0 if positive else v >= 0)
        want = "a positive integer" if positive else "a non-negative integer"
        if ok and below is not None and v >= below:
            ok = False
            what = "an id inside the vocabulary" if below_name in (None, "vocab_size") else "an integer"
            want = f"{what}: 0..{below - 1} ({below_name or 'vocab_size'} {below})"
    elif kind is float:
        ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
              and (v > 0 or not positive))
        want = "a positive number" if positive else "a finite number"
    elif kind is bool:
        ok, want = isinstance(v, bool), "true or false"
    else:
        ok, want = isinstance(v, kind), kind.__name__
    if not ok:
        raise ModelLoadError(f"{path}: field {name!r} must be {want}, got {v!r}")
    return v
