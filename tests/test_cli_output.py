"""``fastremask generate``'s streamed output when the run stops: the counts in the message are
the whole lines in the file (a full disk, /dev/full), and ``--resume`` finishes the same file.

The built-in tiny model, 4 tokens per prompt: each run takes about a second.
"""
import errno
import io
import json
import os

import pytest

from fastremask.tools import cli, records
from fastremask.tools import generate as gen_cmd

PROMPTS = ["Hi, I am", "The cat", "a", "bc", "Once upon", "xyz", "Q"]
GEN = ["--no-progress", "--gen-length", "4", "--temperature", "1"]


@pytest.fixture(autouse=True)
def builtin_default(monkeypatch):
    """No demo model: the built-in tiny model (any ASCII prompt)."""
    monkeypatch.setattr(gen_cmd, "_demo_dir", lambda: None)


def _gen(*argv):
    return cli.main(["generate", *GEN, *argv])


def _prompts_file(tmp_path):
    """Seven prompts and a broken line 4 (written as an error record with the first batch)."""
    lines = [json.dumps({"prompt": p, "id": i}) for i, p in enumerate(PROMPTS)]
    lines.insert(3, '{"prompt": "cut')
    f = tmp_path / "in.jsonl"
    f.write_text("\n".join(lines) + "\n")
    return f


class FullDisk(io.RawIOBase):
    """A file on a disk with ``room`` bytes left: a write takes what fits, then ENOSPC."""

    def __init__(self, path, append: bool, room: int):
        self.f = open(path, "ab" if append else "wb", buffering=0)
        self.room = room

    def writable(self):
        return True

    def write(self, b):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = min(len(b), self.room)
        self.f.write(bytes(b[:n]))
        self.room -= n
        return n

    def fileno(self):
        return self.f.fileno()

    def close(self):
        self.f.close()
        super().close()


@pytest.fixture
def full_run(tmp_path, capsys):
    """The prompts file and what one uninterrupted run writes (8 records, one an error)."""
    f, full = _prompts_file(tmp_path), tmp_path / "full.jsonl"
    assert _gen("--prompts-file", str(f), "--output", str(full), "--batch-size", "2") == 1
    capsys.readouterr()
    return f, full.read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("whole,torn", [(0, 0), (0, 7), (3, 0), (3, 10), (7, 5)])
def test_full_disk_counts_whole_lines_only(tmp_path, monkeypatch, capsys, full_run, whole, torn):
    """The disk fills after ``whole`` records and ``torn`` bytes of the next: the message counts
    ``whole`` lines, the file holds exactly those and the torn bytes; ``--resume`` then ends as
    the uninterrupted run."""
    f, lines = full_run
    o = tmp_path / "out.jsonl"
    room = sum(map(len, lines[:whole])) + torn
    monkeypatch.setattr(records, "open_output", lambda path, append: FullDisk(path, append, room))
    assert _gen("--prompts-file", str(f), "--output", str(o), "--batch-size", "2") == 1
    err = capsys.readouterr().err.splitlines()
    nxt = json.loads(lines[whole])["line"]
    assert err[-1] == (f"fastremask: error: cannot write --output {o}: No space left on device; stopped at line "
                       f"{nxt} of {f}: {whole} of 8 lines are in {o} (--resume continues)"), err
    assert not any("Traceback" in ln for ln in err)
    assert o.read_bytes() == b"".join(lines[:whole]) + lines[whole][:torn]
    monkeypatch.undo()
    monkeypatch.setattr(gen_cmd, "_demo_dir", lambda: None)
    assert _gen("--prompts-file", str(f), "--output", str(o), "--resume", "--batch-size", "3") == 1
    assert "resumed" not in capsys.readouterr().err                  # the run had errors: that line ends it
    assert o.read_bytes() == b"".join(lines)


def test_full_disk_on_resume_counts_the_earlier_lines(tmp_path, monkeypatch, capsys, full_run):
    """Resuming into a disk that fills: the earlier run's lines count, the torn new one does not."""
    f, lines = full_run
    o = tmp_path / "out.jsonl"
    o.write_bytes(b"".join(lines[:2]) + lines[2][:9])                 # 2 whole, one cut off
    monkeypatch.setattr(records, "open_output",
                        lambda path, append: FullDisk(path, append, len(lines[2]) + len(lines[3]) - 1))
    assert _gen("--prompts-file", str(f), "--output", str(o), "--resume") == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].endswith(f"stopped at line 4 of {f}: 3 of 8 lines are in {o} (--resume continues)"), err
    assert o.read_bytes() == b"".join(lines[:3]) + lines[3][:-1]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_dev_full(tmp_path, capsys):
    """/dev/full takes nothing: no line is counted; --resume cannot read a device back."""
    f = _prompts_file(tmp_path)
    assert _gen("--prompts-file", str(f), "--output", "/dev/full", "--force") == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == ("fastremask: error: cannot write --output /dev/full: No space left on device; stopped at "
                       f"line 1 of {f}: 0 of 8 lines are in /dev/full (--resume continues)"), err
    assert not any("Traceback" in ln for ln in err)
    assert _gen("--prompt", "a", "--output", "/dev/full", "--force") == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "fastremask: error: cannot write --output /dev/full: No space left on device; stopped at prompt 0: "
        "0 of 1 answers written to /dev/full")
    assert _gen("--prompts-file", str(f), "--output", "/dev/full", "--resume") == 2
    assert capsys.readouterr().err == ("fastremask: error: --resume: --output /dev/full is not a regular file; "
                                       "there is no earlier run to read back (--force writes into it)\n")
