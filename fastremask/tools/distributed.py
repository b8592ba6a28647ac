"""``fastremask generate`` over several processes (``torchrun``, ``accelerate launch``):
every rank generates a share of the prompts file's lines and rank 0 writes the one results
file, in input order, byte-identical to one process (docs/scale.md).

How (`Parallel`):

* **Start** (`start`, every rank, before the model loads): the launcher's environment read
  (`fastremask.evaluation.distributed`), the process group joined, and every rank's options
  gathered: ranks that disagree (another ``--steps``, another prompts file, ...) all stop with
  one line naming the rank and the option. Each rank then creates its *part file*,
  ``OUTPUT.parts/RUN-RANK.jsonl``, beside ``--output`` (so the folder must be on a file system
  every rank can write); one that cannot stops every rank, before anything is written.
* **The share** (`begin`): rank 0 says which lines are done (in ``--output`` and in the part
  files an interrupted run left, any number of ranks ago); the rest, in input order, is dealt
  round robin: rank ``r`` takes the ``r``-th, ``r + N``-th, ... line. A line keeps its seed
  (its line number), so where it runs does not change its bits.
* **The run**: each rank writes each finished line to its part file (whole lines, unbuffered,
  synced after each batch: `PartOutput`); rank 0, between its own batches and then until every
  line is in, reads the part files and appends to ``--output`` every line whose turn has come
  (`merge`), so ``--output`` is always the results of the first lines, as in one process.
  When it is complete, the part folder is removed.
* **A stop** (a rank that dies, Ctrl-C, SIGTERM, no result for ``FASTREMASK_DIST_TIMEOUT``
  seconds): rank 0 writes what it can, says how far ``--output`` got, which rank stopped and
  how many finished lines wait in the part folder; ``--resume``, with any number of processes
  (one too), takes them from there and computes only the rest.

A ``--resume`` in one process that finds a part folder goes the same way with one rank; a
run in one process without one never imports this module.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid

from fastremask.tools.cli import CliError, WriteError
from fastremask.tools.records import Item, Output

__all__ = ["wanted", "parts_dir", "start", "Parallel", "PartOutput", "RankFailed"]

PARTS = ".parts"
# options that do not change the results (the others must be the same on every rank and in
# the part files a resumed run takes)
_NOT_COMPARED = {"run", "no_progress", "resume", "force", "debug"}


class RankFailed(WriteError):
    """The results could not all be written: another rank stopped, died or went silent (one
    line naming it; exit status 1)."""


def parts_dir(output: str) -> str:
    """The folder of the part files of ``--output``."""
    return output + PARTS


def wanted(args) -> bool:
    """Whether this run goes through the part files: a launcher started several processes,
    or a ``--resume`` finds the part folder an interrupted parallel run left."""
    world = os.environ.get("WORLD_SIZE", "").strip()
    if world not in ("", "1"):
        return True
    return args.output is not None and os.path.isdir(parts_dir(args.output))


def _options(args) -> dict:
    """The options that decide the results, as JSON values, with the prompts file's SHA-256."""
    opts = {}
    for k, v in sorted(vars(args).items()):
        if k in _NOT_COMPARED or callable(v):
            continue
        opts[k] = v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
    if args.prompts_file not in (None, "-"):
        h = hashlib.sha256()
        with open(args.prompts_file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        opts["prompts_sha256"] = h.hexdigest()
    return opts


def _differs(a: dict, b: dict) -> str | None:
    """The first option that differs, as ``'--steps 12 ... 8'`` words, or None."""
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            name = "the prompts file's content" if k == "prompts_sha256" else "--" + k.replace("_", "-")
            return f"{name}: {b.get(k)!r} there, {a.get(k)!r} on rank 0"
    return None


def start(args) -> "Parallel":
    """Every rank: the launcher read, the group joined, the options compared, the part file
    created. A problem on any rank is a `CliError` on every rank (nothing written yet)."""
    from fastremask.evaluation.distributed import Group, launch_from_env, timeout_seconds

    try:
        launch = launch_from_env()
        timeout = timeout_seconds()
    except ValueError as e:
        raise CliError(str(e)) from None
    world = 1 if launch is None else launch.world_size
    rank = 0 if launch is None else launch.rank
    if world > 1 and (args.prompts_file in (None, "-") or args.output is None):
        raise CliError(f"with {world} processes (WORLD_SIZE={world}) generate needs --prompts-file (a file, "
                       "not stdin) and --output: each rank reads the file and rank 0 writes the results")
    folder = parts_dir(args.output)
    problem = None
    if os.path.exists(folder) and not os.path.isdir(folder):
        problem = f"{folder} (where the ranks' part files go) exists and is not a folder"
    elif rank == 0 and os.path.isdir(folder) and not args.resume:
        if args.force:
            shutil.rmtree(folder)                                  # --force: start over
        else:
            problem = (f"{folder} holds the finished lines of an interrupted run; --resume continues it "
                       "(with any number of processes), --force starts over")
    group = Group(launch, timeout) if launch is not None else None
    mine = dict(options=_options(args), host=socket.gethostname(), pid=os.getpid(),
                run=uuid.uuid4().hex[:12], problem=problem)
    if launch is not None:                       # one GPU per rank: cuda -> cuda:LOCAL_RANK
        args.device = launch.device(args.device)
        if args.device is None and args.model is not None:
            import torch

            if torch.cuda.is_available():
                args.device = f"cuda:{launch.local_rank}"
    everyone = group.gather(mine) if group is not None else [mine]
    try:
        _agree(everyone)
    except CliError:
        if group is not None:
            group.close()
        raise
    par = Parallel(args, rank, world, group, timeout, everyone)
    problem = par.create_part()
    for r, why in enumerate(group.gather(problem) if group is not None else [problem]):
        if why is not None:
            if group is not None:
                group.close()
            raise CliError(f"rank {r} ({everyone[r]['host']}) {why}" if world > 1 else why)
    if rank != 0:
        args.no_progress = True                  # one progress bar: rank 0's
    return par


def _agree(everyone: list[dict]) -> None:
    for r, facts in enumerate(everyone):
        if facts["problem"] is not None:
            raise CliError(facts["problem"] if len(everyone) == 1 else
                           f"rank {r} ({facts['host']}): {facts['problem']}")
    for r, facts in enumerate(everyone[1:], start=1):
        diff = _differs(everyone[0]["options"], facts["options"])
        if diff is not None:
            raise CliError(f"rank {r} ({facts['host']}) was started with other options than rank 0 "
                           f"({diff}); every rank must run the same command on the same files")


def _read_records(path: str, offset: int = 0) -> tuple[list[dict], int]:
    """The whole JSON lines of a part file from byte ``offset``: ``(records, new offset)``; a
    last line still being written is left for later."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    records, pos = [], offset
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            break
        pos += len(raw)
        try:
            rec = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CliError(f"{path}: byte {pos - len(raw)} is not a JSON record of a part file; "
                           "--force starts over") from None
        records.append(rec)
    return records, pos


class _Peer:
    """Rank 0's reader of another rank's part file."""

    def __init__(self, rank: int, path: str, facts: dict):
        self.rank, self.path, self.facts = rank, path, facts
        self.offset = 0
        self.end = None                  # the rank's last word: {"end": "done"|"stopped", "why": ...}
        self.lines = 0

    def read(self, chunks: dict) -> int:
        try:
            records, self.offset = _read_records(self.path, self.offset)
        except FileNotFoundError:
            return 0
        n = 0
        for rec in records:
            if "line" in rec:
                chunks.setdefault(rec["line"], rec["text"])
                n += 1
            elif "end" in rec:
                self.end = rec
        self.lines += n
        return n

    def alive(self) -> bool | None:
        """Whether its process lives (None: another machine, cannot tell)."""
        if self.facts["host"] != socket.gethostname():
            return None
        try:
            os.kill(self.facts["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def describe(self) -> str:
        who = f"rank {self.rank} (pid {self.facts['pid']} on {self.facts['host']})"
        if self.end is not None and self.end["end"] == "stopped":
            return f"{who} stopped: {self.end.get('why')}"
        if self.end is None and self.alive() is False:
            return f"{who} died without a word (killed, or out of memory?)"
        return ""


class Parallel:
    """One rank's side of a parallel ``generate`` (see the module's docstring)."""

    def __init__(self, args, rank: int, world: int, group, timeout: float, everyone: list[dict]):
        self.args, self.rank, self.world, self.group, self.timeout = args, rank, world, group, timeout
        self.everyone = everyone
        self.run_id = everyone[0]["run"]
        self.folder = parts_dir(args.output)
        self.options = everyone[rank]["options"]
        self.part = os.path.join(self.folder, f"{self.run_id}-{rank}.jsonl")
        self.f = None
        self.ended = False
        self.chunks: dict[int, str] = {}          # rank 0: finished lines not yet in --output
        self.peers: list[_Peer] = []
        self.share: list[Item] = []
        self.sink: PartOutput | None = None

    # --- start --------------------------------------------------------------------------------
    def create_part(self) -> str | None:
        """This rank's part file, with its header; the problem, or None."""
        try:
            os.makedirs(self.folder, exist_ok=True)
            self.f = open(self.part, "xb", buffering=0)
            self.write_record({"part": 1, "run": self.run_id, "rank": self.rank, "world_size": self.world,
                               "pid": os.getpid(), "host": socket.gethostname(), "options": self.options})
        except OSError as e:
            return (f"cannot write its part file {self.part}: {e.strerror or e}; with several processes the "
                    "folder of --output must be writable by every rank (a shared file system)")
        return None

    def write_record(self, rec: dict) -> None:
        data = memoryview((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))
        while data:
            data = data[self.f.write(data):]

    def fail(self, e: BaseException) -> None:
        """This rank stopped before `begin`: tell the others (they raise), best effort."""
        self._end("stopped", _describe(e))
        if self.group is not None:
            try:
                self.group.gather({"error": _describe(e)})
            except Exception:       # noqa: BLE001 - the others may be gone already
                pass
            self.group.close()

    def begin(self, out: Output) -> "PartOutput":
        """Every rank, after the prompts are tokenized: the lines done (rank 0's word: in
        ``--output`` and in earlier part files), this rank's share, its `PartOutput`; rank 0
        opens ``--output``. Another rank that stopped before: a `CliError` here."""
        known = self._fold_earlier(out) if self.rank == 0 else None
        words = self.group.gather({"known": known}) if self.group is not None else [{"known": known}]
        for r, w in enumerate(words):
            if "error" in w:
                self.close()
                raise CliError(f"rank {r} stopped: {w['error']}")
        skip = set(words[0]["known"]) | set(self.chunks)
        todo = [it for it in out.pending if it.line not in skip]
        self.share = todo[self.rank::self.world]
        self.sink = PartOutput(self, out.source, self.share)
        if self.rank == 0:
            self.peers = [_Peer(r, os.path.join(self.folder, f"{self.run_id}-{r}.jsonl"), self.everyone[r])
                          for r in range(1, self.world)]
            out.open()
        return self.sink

    def _fold_earlier(self, out: Output) -> list[int]:
        """Rank 0: the finished lines in the part files of earlier runs (same options) that
        ``--output`` lacks, kept in ``chunks``; their line numbers."""
        pending = {it.line for it in out.pending}
        for name in sorted(os.listdir(self.folder)):
            path = os.path.join(self.folder, name)
            if name.startswith(self.run_id + "-") or not name.endswith(".jsonl"):
                continue
            records, _ = _read_records(path)
            if not records or records[0].get("part") != 1:
                continue
            diff = _differs(self.options, records[0].get("options", {}))
            if diff is not None:
                raise CliError(f"--resume: {path} was written with other options ({diff}); "
                               "--force starts over")
            for rec in records[1:]:
                if "line" in rec and rec["line"] in pending:
                    self.chunks.setdefault(rec["line"], rec["text"])
        return sorted(self.chunks)

    # --- the run ------------------------------------------------------------------------------
    def merge(self, out: Output) -> int:
        """Rank 0: read the others' part files, append to ``--output`` every line whose turn
        has come; the number of new lines read."""
        if self.rank != 0:
            return 0
        n = sum(p.read(self.chunks) for p in self.peers)
        wrote = False
        while (it := out.next_item) is not None and it.line in self.chunks:
            out.write(self.chunks.pop(it.line))
            out.commit()
            if it.error is not None:
                out.errors += 1
            wrote = True
        if wrote:
            out.sync()
        return n

    def finish(self, out: Output) -> None:
        """The end of this rank's share. Rank 0 then waits for the others' lines, merging them
        as they come; a rank that stops, dies or stays silent for the timeout is a
        `RankFailed`. Complete: the part folder is removed."""
        self._end("done", None)
        if self.rank != 0:
            return
        last, pause = time.monotonic(), 0.01
        while True:
            if self.merge(out):
                last, pause = time.monotonic(), 0.01
            if out.next_item is None:
                break
            bad = [d for d in (p.describe() for p in self.peers) if d]
            if bad:
                raise RankFailed("; ".join(bad))
            if all(p.end is not None for p in self.peers) and not self.merge(out) and out.next_item is not None:
                raise RankFailed(f"every rank ended but line {out.next_item.line} never came (a bug: "
                                 f"please report it; the part files are in {self.folder})")
            if time.monotonic() - last > self.timeout:
                waiting = sorted({r for r in range(1, self.world)
                                  if self.peers[r - 1].end is None})
                raise RankFailed(f"no result from rank(s) {', '.join(map(str, waiting))} for {self.timeout:g} s "
                                 "(FASTREMASK_DIST_TIMEOUT sets the wait)")
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def stopped(self, out: Output, e: BaseException) -> str:
        """How far the run got, after a stop on this rank (for `fastremask.tools.cli.Stopped`)."""
        self._end("stopped", _describe(e))
        if self.rank != 0:
            self.close()
            n = self.sink.written if self.sink is not None else 0
            return (f"rank {self.rank} of {self.world}: {n} of its {len(self.share)} lines are in {self.part} "
                    "(rank 0 writes them into --output; --resume continues)")
        if isinstance(e, KeyboardInterrupt):
            time.sleep(1.0)                # a launcher stops every rank: let them say why first
        try:
            self.merge(out)
        except Exception:                  # noqa: BLE001 - what stopped the run is reported already
            pass
        self.close()
        where = out.where()
        waiting = len(self.chunks)
        if waiting and out.next_item is not None:
            where += f"; {waiting} more finished lines wait in {self.folder} for --resume"
        if not isinstance(e, RankFailed):
            bad = [d for d in (p.describe() for p in self.peers) if d]
            if bad:
                where += "; " + "; ".join(bad)
        return where

    def stop_word(self, e: BaseException) -> None:
        """This rank stopped after `begin` (its last word, unless it said one already)."""
        self._end("stopped", _describe(e))
        self.close()

    def _end(self, word: str, why: str | None) -> None:
        if self.f is not None and not self.ended:
            self.ended = True
            try:
                self.write_record({"end": word, "why": why})
            except OSError:
                pass

    def close(self) -> None:
        if self.f is not None:
            try:
                self.f.close()
            except OSError:
                pass
            self.f = None
        if self.group is not None:
            self.group.close()
            self.group = None


def _describe(e: BaseException) -> str:
    from fastremask.tools.cli import describe_error

    if isinstance(e, KeyboardInterrupt):
        return "interrupted (SIGTERM)" if type(e).__name__ == "Terminated" else "interrupted"
    return describe_error(e)[0]


class PartOutput:
    """A rank's share written to its part file: the face of `fastremask.tools.records.Output`
    that ``generate``'s writer uses (``next_item``, ``write``, ``commit``, ``sync``, ``errors``),
    each line one record ``{"line", "text"}``, ``text`` the exact bytes ``--output`` gets."""

    def __init__(self, par: Parallel, source: str | None, share: list[Item]):
        self.par, self.source, self.pending = par, source, share
        self.path = par.part
        self.written = 0
        self.errors = 0
        self._parts: list[str] = []

    @property
    def next_item(self) -> Item | None:
        return self.pending[self.written] if self.written < len(self.pending) else None

    def open(self) -> None:
        pass                                     # opened by `Parallel.create_part`

    def write(self, text: str) -> None:
        self._parts.append(text)

    def commit(self) -> None:
        text, self._parts = "".join(self._parts), []
        it = self.next_item
        try:
            self.par.write_record({"line": it.line, "text": text})
        except OSError as e:
            raise WriteError(f"cannot write the part file {self.path}: {e.strerror or e}") from e
        if self.par.rank == 0:
            self.par.chunks[it.line] = text
        self.written += 1

    def sync(self) -> None:
        try:
            os.fsync(self.par.f.fileno())
        except (OSError, AttributeError):
            pass

    def close(self) -> None:
        pass                                     # `Parallel.finish`/`stopped` close it
