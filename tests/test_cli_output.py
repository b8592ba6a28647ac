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


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """The prompts file and what one uninterrupted run writes (8 records, one an error)."""
    tmp = tmp_path_factory.mktemp("full")
    f, full = _prompts_file(tmp), tmp / "full.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gen_cmd, "_demo_dir", lambda: None)
        assert _gen("--prompts-file", str(f), "--output", str(full), "--batch-size", "2") == 1
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


def test_sigterm_of_a_real_run_then_resume(tmp_path):
    """SIGTERM (a batch scheduler stopping the job) ends a run as Ctrl-C does
    (tests/test_cli.py::test_sigint_of_a_real_run): whole records kept and counted, where it
    stopped, --resume; exit 143. --resume then ends as one uninterrupted run."""
    import signal
    import subprocess
    import sys
    import time

    f = tmp_path / "in.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(200)))
    o = tmp_path / "out.jsonl"
    code = ("import sys; from fastremask.tools import cli, generate; generate._demo_dir = lambda: None; "
            "sys.exit(cli.main(sys.argv[1:]))")
    def cmd(out, *extra):
        return [sys.executable, "-c", code, "generate", "--no-progress", "--prompts-file", str(f), "--output",
                str(out), "--batch-size", "1", "--gen-length", "8", *extra]

    p = subprocess.Popen(cmd(o), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and (not o.exists() or len(o.read_text().splitlines()) < 2):
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    lines = o.read_text().splitlines()
    assert p.returncode == 143, err
    n = len(lines)
    assert err.splitlines()[-1] == (f"fastremask: interrupted (SIGTERM); stopped at line {n + 1} of {f}: {n} of 200 lines are "
                                    f"in {o} (--resume continues)"), err
    assert "Traceback" not in err and o.read_text().endswith("\n")
    assert [json.loads(ln)["line"] for ln in lines] == list(range(1, n + 1))
    # resume with 3 lines left (a short run, in this process): the same records as one uninterrupted run
    f.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(n + 3)))
    whole = tmp_path / "whole.jsonl"
    for out, extra in ((o, ["--resume"]), (whole, [])):
        assert cli.main(cmd(out, *extra)[3:]) == 0
    assert o.read_text() == whole.read_text()


# ----------------------------------------------------------------------------- --resume refuses a changed run

CHANGED = [  # (options of the resumed run, the message's option, value there, value now)
    (["--temperature", "0"], "--temperature", "1.0", "0.0"),
    (["--remasking", "random"], "--remasking", "low_confidence", "random"),
    (["--schedule", "pyramid"], "--schedule", "uniform", "pyramid"),
    (["--steps", "2"], "--steps", "4", "2"),
    (["--block-length", "2"], "--block-length", "4", "2"),
    (["--cfg-scale", "0.5"], "--cfg-scale", "0.0", "0.5"),
    (["--threshold", "0.5"], "--threshold", "unset", "0.5"),
    (["--cache", "prefix"], "--cache", "unset", "prefix"),
    (["--logits-window"], "--logits-window", "off", "on"),
    (["--keep-special-tokens"], "--keep-special-tokens", "off", "on"),
    (["--model", "elsewhere"], "--model", "the built-in tiny model", "elsewhere"),
    (["--dtype", "fp32"], "--dtype", "auto", "fp32"),
    (["--suppress-tokens", "5"], "--suppress-tokens", "SEE BELOW", "SEE BELOW"),
]


@pytest.mark.parametrize("argv,option,then,now", CHANGED, ids=[" ".join(c[0]) for c in CHANGED])
def test_resume_refuses_a_changed_run(tmp_path, monkeypatch, capsys, full_run, argv, option, then, now):
    """Each option that can change the tokens is recorded in every result and compared: a
    resumed run with another value is refused in one line naming the option and both values,
    before the model is loaded (the suppressed ids: before any model call), the file untouched."""
    f, lines = full_run
    o = tmp_path / "out.jsonl"
    o.write_bytes(b"".join(lines[:3]))

    def no_load(args):
        raise AssertionError("the model was loaded")

    if option == "--suppress-tokens":      # with the ids the model's tokenizer suppresses: compared once loaded
        then, now = json.loads(lines[0])["fastremask"]["sampling"]["suppress_tokens"], None
        now = json.dumps(sorted(then + [5]))
        then = json.dumps(then)
    else:
        monkeypatch.setattr(gen_cmd, "_load_model", no_load)
    assert _gen("--prompts-file", str(f), "--output", str(o), "--resume", *argv) == 2
    err = capsys.readouterr().err
    if option == "--suppress-tokens":      # the model loaded: its note first
        assert err.startswith("fastremask: using the built-in tiny model") and err.count("\n") == 2
        err = err.split("\n", 1)[1]
    assert err == (f"fastremask: error: --resume: {option} differs: {then} in {o} (line 1), "
                   f"{now} now; resume with the options of that run, or --force to start over\n")
    assert o.read_bytes() == b"".join(lines[:3])


def test_resume_compares_what_the_tokens_depend_on_only(tmp_path, capsys, full_run):
    """The record is the exact config (`SamplingConfig.to_dict`); another backend or batch size
    gives the same tokens, so it resumes, and the file ends as one run (but for the backend
    each record names)."""
    from fastremask import SamplingConfig

    f, lines = full_run
    rec = json.loads(lines[0])["fastremask"]
    assert SamplingConfig.from_dict(rec["sampling"]).to_dict() == rec["sampling"]
    assert (rec["model"], rec["device"], rec["sampling"]["temperature"]) == ("the built-in tiny model", "cpu", 1.0)
    assert all("fastremask" not in json.loads(ln) for ln in lines if b'"error"' in ln)   # error records as before
    o = tmp_path / "out.jsonl"
    o.write_bytes(b"".join(lines[:3]))
    assert _gen("--prompts-file", str(f), "--output", str(o), "--resume", "--backend", "reference",
                "--batch-size", "3") == 1
    got = o.read_bytes().splitlines(keepends=True)
    assert got[:3] == lines[:3] and len(got) == len(lines)
    for new, one_run in zip(got[3:], lines[3:]):           # the same records, each naming its own backend
        new, one_run = json.loads(new), json.loads(one_run)
        if "error" not in new:
            assert (new["fastremask"]["sampling"]["backend"], one_run["fastremask"]["sampling"]["backend"]) == \
                ("reference", "auto")
            new["fastremask"]["sampling"]["backend"] = "auto"
        assert new == one_run


def test_resume_refuses_records_that_do_not_say_how_they_were_made(tmp_path, capsys, full_run):
    f, lines = full_run
    o = tmp_path / "out.jsonl"
    old = json.loads(lines[0])
    del old["fastremask"]
    o.write_text(json.dumps(old) + "\n")
    assert _gen("--prompts-file", str(f), "--output", str(o), "--resume") == 2
    assert capsys.readouterr().err == (
        f'fastremask: error: --resume: the record of {o} (line 1) does not say how it was made (no "fastremask" '
        "field: an older fastremask wrote it); --force starts over\n")
