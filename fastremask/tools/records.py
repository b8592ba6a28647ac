"""JSONL in and out for ``fastremask generate``: the prompts file read line by line, an earlier
run's output read back for ``--resume``, and the results written as a stream.

`read_prompts_file` turns each line into an `Item` (a broken line is an item with an
``error``, so the other lines still run); `read_done` reads what an interrupted run left
(a last record cut off mid-write is dropped); `Output` writes each result as one line,
handed to the OS whole before it is counted, so that the message after a stop ("N of M lines
are in FILE") is true on every path (a full disk, /dev/full, Ctrl-C, an error).
No torch here.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

from fastremask.sampler.names import SEED_LIMIT
from fastremask.tools.cli import CliError, WriteError

__all__ = ["Item", "line_seed", "read_prompts_file", "read_done", "Output", "open_output"]


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


# ----------------------------------------------------------------------------- the prompts file


def read_prompts_file(path: str, base_seed: int) -> list[Item]:
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


# ----------------------------------------------------------------------------- an earlier run's output


def read_done(path: str) -> dict:
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


# ----------------------------------------------------------------------------- the results, streamed


def open_output(path: str, append: bool):
    """``path`` opened for the results, unbuffered (`Output` counts what the OS took)."""
    return open(path, "ab" if append else "wb", buffering=0)


class Output:
    """Where the results go (``path``, or stdout for None) and how far the run got.

    ``items``: every prompt in input order; ``done``: `read_done` of an earlier run to append
    to (its lines are skipped), or None. ``source``: the prompts file (None: ``--prompt``
    answers). Nothing is opened before `open`. A result is written by `write` calls, then
    `commit` hands it to the OS whole (a file is unbuffered: nothing is left to be written
    later) and only then counts it: a result the OS did not take whole (a full disk, a closed
    pipe) is never counted, so `where` is true after any stop, and a torn last line is left for
    ``--resume`` to drop.
    """

    def __init__(self, path: str | None, items: list[Item], source: str | None, done: dict | None = None):
        self.path, self.source, self.done = path, source, done
        self.name = path if path is not None else "stdout"
        self.total = len(items)
        records = done["records"] if done is not None else {}
        self.previous = len(records)                                 # whole lines already in the file
        self.previous_errors = sum("error" in r for r in records.values())
        self.pending = [it for it in items if it.line not in records]   # to write, in input order
        self.written = 0                                             # of pending: whole lines the OS took
        self.errors = 0
        self.f = None
        self._parts: list[str] = []

    def open(self) -> None:
        """Open stdout, a new file, or the earlier run's file to append to."""
        if self.path is None:
            self.f = sys.stdout
            return
        try:
            if self.done is not None:
                os.truncate(self.path, self.done["end"])       # drop a record cut off mid-line
            self.f = open_output(self.path, append=self.done is not None)
            if self.done is not None and self.done["newline"]:
                self._write_all(b"\n")
        except OSError as e:
            raise CliError(f"cannot write --output {self.path}: {e.strerror or e}") from None

    @property
    def next_item(self) -> Item | None:
        return self.pending[self.written] if self.written < len(self.pending) else None

    def write(self, text: str) -> None:
        """Part of the next pending item's text (nothing reaches the file before `commit`)."""
        self._parts.append(text)

    def commit(self) -> None:
        """The next pending item's text is complete: hand it to the OS, then count it. A write
        that fails is a `WriteError` naming the file (a closed stdout stays a BrokenPipeError)."""
        text, self._parts = "".join(self._parts), []
        try:
            if self.f is sys.stdout:
                self.f.write(text)
                self.f.flush()
            else:
                self._write_all(text.encode("utf-8"))
        except BrokenPipeError:
            if self.path is None:
                raise                                        # `... | head`: the reader left
            raise WriteError(f"cannot write --output {self.path}: the reader of the pipe left") from None
        except OSError as e:
            what = f"--output {self.path}" if self.path is not None else "to stdout"
            raise WriteError(f"cannot write {what}: {e.strerror or e}") from e
        self.written += 1

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self.f.write(view):]                 # a short write: the rest, or the error

    def where(self) -> str:
        """How far the run got, for the message when it stops."""
        nxt = self.next_item
        if self.source is not None:
            at = f"line {nxt.line} of {self.source}" if nxt is not None else "the end"
            n = self.previous + self.written
            if self.path is None:
                return f"stopped at {at}: {n} of {self.total} lines were written to stdout"
            s = f"stopped at {at}: {n} of {self.total} lines are in {self.name}"
            return s + " (--resume continues)" if nxt is not None else s
        at = f"prompt {nxt.line}" if nxt is not None else "the end"
        return f"stopped at {at}: {self.written} of {self.total} answers written to {self.name}"

    def sync(self) -> None:
        """Onto the disk (after each batch): a crash loses at most the batch in flight."""
        if self.f is not sys.stdout:
            try:
                os.fsync(self.f.fileno())
            except OSError:
                pass                # not a disk file (a pipe, /dev/full): nothing to sync

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
