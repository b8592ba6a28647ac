"""Several processes, the same bits (issue 20; docs/scale.md): ``fastremask generate`` and
``fastremask eval`` under ``torchrun`` (2 processes, gloo, the CPU) against one process.

Each torchrun start costs seconds, so the cases are few: generate over uneven shares (2
ranks, 11 lines, one broken), a rank killed mid-run and the run resumed in one process, an
interrupted one-process run resumed by 2 ranks, ranks started with different options, and
eval's result files. The one-process references run in this process.
"""
from __future__ import annotations

import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from fastremask.evaluation.distributed import launch_from_env, timeout_seconds
from fastremask.tools import cli

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")


def _prompts(path: pathlib.Path, n: int, broken: int | None = None, seed: int = 1) -> None:
    r = random.Random(seed)
    lines = [json.dumps({"prompt": ",".join(str(r.randrange(10)) for _ in range(12)) + ">"}) for _ in range(n)]
    if broken is not None:
        lines[broken] = '{"prompt": '                        # a broken line: its error record
    path.write_text("\n".join(lines) + "\n")


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", FASTREMASK_DIST_TIMEOUT="120")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _torchrun(args: list[str], cwd, nproc: int = 2, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _finish(p: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out + err


def _one(argv: list[str], capsys) -> tuple[int, str]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = cli.main(argv)
    finally:
        torch.set_num_threads(threads)
    return code, capsys.readouterr().err


GEN = ["generate", "--prompts-file", "p.jsonl", "--no-progress", "--batch-size", "2"]


def test_generate_two_ranks_uneven_shares_byte_identical(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _prompts(tmp_path / "p.jsonl", 11, broken=4)           # 11 lines: 6 and 5, one an error record
    code, err = _one(GEN + ["--output", "one.jsonl"], capsys)
    assert code == 1 and "p.jsonl:5" in err               # the broken line is reported, the rest generated
    code, log = _finish(_torchrun(["-m", "fastremask", *GEN, "--output", "two.jsonl"], tmp_path))
    assert code != 0 and "1 of 11 lines of p.jsonl had errors" in log      # rank 0's exit status 1
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert len((tmp_path / "one.jsonl").read_bytes().splitlines()) == 11
    assert not (tmp_path / "two.jsonl.parts").exists()      # complete: the part files are gone


def _part_of(folder: pathlib.Path, rank: int) -> pathlib.Path | None:
    found = sorted(folder.glob(f"*-{rank}.jsonl")) if folder.is_dir() else []
    return found[0] if found else None


def test_killed_rank_keeps_lines_and_resume_with_other_n(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    n = 40
    _prompts(tmp_path / "p.jsonl", n, seed=2)
    argv = ["generate", "--prompts-file", "p.jsonl", "--no-progress", "--batch-size", "1"]
    assert _one(argv + ["--output", "one.jsonl"], capsys)[0] == 0
    ref = (tmp_path / "one.jsonl").read_bytes()
    p = _torchrun(["-m", "fastremask", *argv, "--output", "two.jsonl"], tmp_path)
    folder = tmp_path / "two.jsonl.parts"
    deadline = time.monotonic() + 120
    while True:                                             # rank 1's part file, once it holds 2 lines
        part = _part_of(folder, 1)
        lines = part.read_text().splitlines() if part is not None else []
        if len(lines) >= 3 and lines[-1].endswith("}"):
            break
        assert p.poll() is None and time.monotonic() < deadline, _finish(p)[1]
        time.sleep(0.01)
    pid = json.loads(lines[0])["pid"]
    os.kill(pid, signal.SIGSTOP)
    finished = [json.loads(s) for s in part.read_text().splitlines()]
    assert not any("end" in r for r in finished), "rank 1 finished before it could be killed"
    os.kill(pid, signal.SIGKILL)
    code, log = _finish(p)
    assert code != 0
    assert f"rank 1 (pid {pid}" in log and "died without a word" in log, log
    assert "--resume continues" in log
    kept = (tmp_path / "two.jsonl").read_bytes()
    assert ref.startswith(kept) and len(kept) < len(ref)    # a prefix of the one-process file
    assert folder.is_dir()                                  # the rest of the finished lines wait there
    # the same output, resumed in one process (another number of processes)
    code, err = _one(argv + ["--output", "two.jsonl", "--resume"], capsys)
    assert code == 0, err
    assert (tmp_path / "two.jsonl").read_bytes() == ref
    assert not folder.exists()


def test_one_process_run_resumed_by_two_ranks(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _prompts(tmp_path / "p.jsonl", 9, seed=3)
    assert _one(GEN + ["--output", "one.jsonl"], capsys)[0] == 0
    ref = (tmp_path / "one.jsonl").read_bytes()
    cut = ref.index(b"\n", len(ref) // 3) + 7              # 3 whole lines and a torn one
    (tmp_path / "two.jsonl").write_bytes(ref[:cut])
    code, log = _finish(_torchrun(["-m", "fastremask", *GEN, "--output", "two.jsonl", "--resume"], tmp_path))
    assert code == 0, log
    assert (tmp_path / "two.jsonl").read_bytes() == ref


_DISAGREE = """
import os, sys
from fastremask.tools import cli
argv = sys.argv[1:] + (["--steps", "6"] if os.environ["RANK"] == "1" else [])
sys.exit(cli.main(argv))
"""


def test_ranks_with_different_options_stop_with_one_line(tmp_path):
    _prompts(tmp_path / "p.jsonl", 4)
    (tmp_path / "run.py").write_text(_DISAGREE)
    (tmp_path / "out.jsonl").write_text("kept\n")
    code, log = _finish(_torchrun(["run.py", *GEN, "--output", "out.jsonl", "--force"], tmp_path))
    assert code != 0
    assert "fastremask: error: rank 1 (" in log and "--steps: 6 there, None on rank 0" in log, log
    assert not re.search(r'File ".*fastremask[/\\]', log), log      # torchrun's own report aside, one line
    assert (tmp_path / "out.jsonl").read_text() == "kept\n"       # nothing written, nothing lost


def test_launcher_environment_checked(tmp_path, capsys, monkeypatch):
    assert launch_from_env({}) is None and launch_from_env({"WORLD_SIZE": "1"}) is None
    full = dict(WORLD_SIZE="2", RANK="1", LOCAL_RANK="1", MASTER_ADDR="h", MASTER_PORT="1")
    launch = launch_from_env(full)
    assert (launch.rank, launch.world_size, launch.device("cuda"), launch.device("cpu")) == (1, 2, "cuda:1", "cpu")
    with pytest.raises(ValueError, match="RANK=2 is outside"):
        launch_from_env({**full, "RANK": "2"})
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        launch_from_env({**full, "WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match="FASTREMASK_DIST_TIMEOUT='0'"):
        timeout_seconds({"FASTREMASK_DIST_TIMEOUT": "0"})
    monkeypatch.chdir(tmp_path)
    _prompts(tmp_path / "p.jsonl", 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    for k in ("LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    assert cli.main(GEN + ["--output", "o.jsonl"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastremask: error: WORLD_SIZE=2 is set but LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not")
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.jsonl.parts").exists()


def _without_timings(path: pathlib.Path):
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        data.pop("seconds")
        for row in data["rows"]:
            row.pop("seconds")
        return data
    return [line.rsplit(",", 1)[0] for line in path.read_text().splitlines()]     # csv: seconds is last


def test_eval_two_ranks_result_files_equal(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["eval", "-n", "9", "--nfe", "3,12", "--factors", "2", "--schedules", "uniform,pyramid",
            "--remasking", "random", "--batch-size", "2", "--threads", "1", "--quiet"]
    code, _ = _one(argv + ["--out", "one"], capsys)
    assert code == 0
    code, log = _finish(_torchrun(["-m", "fastremask", *argv, "--out", "two"], tmp_path))
    assert code == 0, log
    assert log.count("wrote two.md") == 1                  # rank 0 prints and writes
    for ext in (".md", ".png"):
        assert (tmp_path / f"two{ext}").read_bytes() == (tmp_path / f"one{ext}").read_bytes(), ext
    for ext in (".json", ".csv"):
        assert _without_timings(tmp_path / f"two{ext}") == _without_timings(tmp_path / f"one{ext}"), ext
    assert json.loads((tmp_path / "two.json").read_text())["rows"][0]["n"] == 9


def _samples(folder: pathlib.Path) -> dict:
    (path,) = folder.glob("*/samples_*.jsonl")
    return {s["doc_id"]: (s["resps"], s["filtered_resps"]) for s in map(json.loads, path.read_text().splitlines())}


def test_lm_eval_adapter_two_ranks_equal_to_one(tmp_path, monkeypatch):
    """lm-eval's own command line under torchrun (the adapter joins through ``accelerate``
    where it is installed, as lm-eval's models do) against lm-eval in this process."""
    la = pytest.importorskip("fastremask.evaluation.lm_eval_adapter")
    if not la.HAVE_LM_EVAL:
        pytest.skip("lm_eval not installed (pip install lm_eval)")
    import lm_eval
    from lm_eval.tasks import TaskManager
    from test_lm_eval_adapter import CHECK_PY, DEMO, TASK_YAML

    from fastremask.evaluation.tasks import decode, get_task

    task = get_task("perm:12")
    prompts, answers = task.test_set(7)                    # 7 documents: 4 and 3
    (tmp_path / "demo.jsonl").write_text("".join(json.dumps({"prompt": decode(p), "answer": decode(a)}) + "\n"
                                                 for p, a in zip(prompts, answers)))
    (tmp_path / "demo.yaml").write_text(TASK_YAML.format(data=tmp_path / "demo.jsonl", gen=task.answer_length))
    (tmp_path / "check.py").write_text(CHECK_PY.format(spec="perm:12"))
    model_args = f"pretrained={DEMO},steps=8,temperature=1.0"
    p = _torchrun(["-m", "fastremask.evaluation.lm_eval_adapter", "--model_args", model_args, "--device", "cpu",
                   "--tasks", "fastremask_local_demo", "--include_path", str(tmp_path), "--batch_size", "3",
                   "--log_samples", "--output_path", str(tmp_path / "two")], tmp_path)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = lm_eval.simple_evaluate(model="fastremask", model_args=model_args, device="cpu",
                                      tasks=["fastremask_local_demo"], batch_size=3, log_samples=True,
                                      task_manager=TaskManager(include_path=str(tmp_path)))
    finally:
        torch.set_num_threads(threads)
    code, log = _finish(p)
    assert code == 0, log
    (results,) = (tmp_path / "two").glob("*/results_*.json")
    two = json.loads(results.read_text())
    # the samples are the same bits; the metrics too, but lm-eval sums the stderr's squares in
    # the order the ranks' lists are gathered, so that one may differ in its last bit
    a, b = dict(two["results"]["fastremask_local_demo"]), dict(one["results"]["fastremask_local_demo"])
    assert a.pop("acc_stderr,none") == pytest.approx(b.pop("acc_stderr,none"), rel=1e-12, abs=0)
    assert a == b and 0.0 < a["acc,none"] < 1.0              # a metric that can differ
    mine = {s["doc_id"]: (s["resps"], s["filtered_resps"]) for s in one["samples"]["fastremask_local_demo"]}
    assert _samples(tmp_path / "two") == json.loads(json.dumps(mine)) and len(mine) == 7
