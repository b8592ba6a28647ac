"""The benchmark suites and `fastremask bench --quick` still run (tiny shapes; no speed asserted).

The suites live in benchmarks/ (not collected by the test run); here they run in a child
pytest with ``--bench-set quick`` and ``--benchmark-disable`` (each case called once), so a
change that breaks a benchmark fails CI instead of rotting until the next measurement.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastremask.tools import bench

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


def test_suites_run_quick():
    cmd = [sys.executable, "-m", "pytest", str(BENCH_DIR), "-q", "-p", "no:cacheprovider",
           f"--rootdir={BENCH_DIR}", "--bench-set=quick", "--benchmark-disable", "--bench-device=cpu",
           "--bench-threads=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert " passed" in proc.stdout


def test_bench_command_quick(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "quick.json"
    args = parser.parse_args(["--quick", "--suites", "step", "--backends", "llada,torch", "--device", "cpu",
                              "--threads", "1", "--json", str(out)])
    assert bench.run(args) == 0
    data = json.loads(out.read_text())
    kinds = {b["extra_info"]["kind"] for b in data["benchmarks"]}
    assert kinds == {"step"}
    for b in data["benchmarks"]:
        info = b["extra_info"]
        assert info["bytes_moved"] > 0 and info["gbps"] > 0 and info["commit"]
    text = capsys.readouterr().out
    assert "sampling step" in text and "speedup vs llada" in text

    # comparing a run with a copy of itself: pytest-benchmark's table, then ratios of 1.00
    copy = tmp_path / "copy.json"
    copy.write_text(out.read_text())
    args = parser.parse_args(["--compare", str(out), str(copy)])
    assert bench.run(args) == 0
    assert "1.00" in capsys.readouterr().out


def test_format_table_handles_every_suite():
    data = {"fastremask": {"device": "d", "device_type": "cuda", "copy_gbps": 100.0}, "benchmarks": [
        {"group": "g", "stats": {"min": 1.0, "median": 2.0, "max": 3.0},
         "extra_info": {"kind": "step", "case": "c", "backend": "llada", "gbps": 1.0, "roofline": 0.01}},
        {"group": "g", "stats": {"min": 0.1, "median": 0.2, "max": 0.3},
         "extra_info": {"kind": "step", "case": "c", "backend": "triton", "gbps": 10.0, "roofline": 0.1,
                        "speedup_vs_llada": {"min": 10.0, "median": 10.0, "max": 10.0}}},
        {"group": "h", "stats": {"min": 1.0, "median": 1.0, "max": 1.0},
         "extra_info": {"kind": "generate", "case": "c", "backend": "torch", "gen_tokens": 8, "model_calls": 4,
                        "ms_per_step": {"model": 1.0, "sample": 0.5, "select": 0.1}}},
        {"group": "s", "stats": {"min": 1.0, "median": 1.0, "max": 1.0},
         "extra_info": {"kind": "schedules", "schedule": "uniform", "schedule_order": 0, "gen_tokens": 8,
                        "model_calls": 8}},
    ]}
    text = bench.format_table(data)
    assert "10.0x" in text and "10.0%" in text and "uniform" in text and "1 / 0.5 / 0.1" in text


def test_bench_blocks_suite_counts_the_models_calls(tmp_path, capsys):
    """``fastremask bench --suites blocks``: the random SDAR / LLaDA2 models, recompute and exact
    block cache, each with the model calls and positions `generate` reports for the same run."""
    from fastremask import SamplingConfig
    from fastremask.sampler import loop

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "blocks.json"
    args = parser.parse_args(["--quick", "--suites", "blocks", "--backends", "torch", "--device", "cpu",
                              "--threads", "1", "--json", str(out)])
    assert bench.run(args) == 0
    rows = [b["extra_info"] for b in json.loads(out.read_text())["benchmarks"]]
    assert {(r["family"], r["cache"]) for r in rows} == {(f, c) for f in ("sdar", "llada2") for c in (None, "block")}
    for r in rows:
        model = bench.random_block_model(r["family"], "cpu", size="tiny")
        prompt = torch.randint(0, model.mask_id, (1, 8), generator=torch.Generator().manual_seed(1234))  # cases.SEED
        config = SamplingConfig(steps=32, gen_length=32, block_length=model.block_length, threshold=0.95,
                                threshold_floor="schedule", cache=r["cache"], backend="torch")
        _, trace = loop.run(model, prompt, config, seed=0, return_trace=True)
        assert (r["model_calls"], r["positions"]) == (trace.model_calls, trace.positions), r
    text = capsys.readouterr().out
    assert "block-diffusion models" in text and "none (recompute)" in text


def test_unknown_suite_is_an_error():
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    with pytest.raises(ValueError, match="unknown suite"):
        bench.pytest_command(parser.parse_args(["--suites", "nope"]), "x.json")


def test_cache_speed_quick(tmp_path):
    """benchmarks/cache_speed.py on tiny shapes through the native LLaDA path: every case runs
    and the calls are counted (no speed asserted)."""
    out = tmp_path / "cache.json"
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "cache_speed.py"), "--quick", "--threads", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = {r["case"]: r for r in json.loads(out.read_text())["rows"]}
    assert {"llada (restated)", "fastremask cache=None", "fastremask cache=prefix",
            "fastremask cache=dual"} <= set(rows)
    assert rows["fastremask cache=dual"]["model_calls"] == rows["fastremask cache=None"]["model_calls"] == 16
