"""The sampling step alone, on the same logits, for each backend (docs/benchmarks.md).

Ids: ``test_step[<backend>-<case>]``, e.g. ``test_step[torch-bf16-p512-g512-b32-B1-T0-cfg0]``;
the benchmark group is the case, so a group holds every backend on the same logits and the
speedups over ``llada`` (the LLaDA-style step) are ratios from one run.
"""
from __future__ import annotations

import gc

import pytest
import torch

import cases

_INPUTS: dict = {}  # one case's tensors at a time: the big cases hold gigabytes


def _inputs(case: cases.StepCase, device: torch.device) -> cases.StepInputs:
    key = (case.name, str(device))
    if key not in _INPUTS:
        _INPUTS.clear()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        _INPUTS[key] = cases.step_inputs(case, device)
    return _INPUTS[key]


def pytest_generate_tests(metafunc):
    if "step_case" not in metafunc.fixturenames:
        return
    bc = metafunc.config._fastremask_bench
    params, ids = [], []
    for case in cases.step_cases(bc.set_name):
        for backend in bc.backends:  # backends of one case run back to back, inputs shared
            params.append((backend, case))
            ids.append(f"{backend}-{case.name}")
    metafunc.parametrize("backend,step_case", params, ids=ids)


def _fits(case: cases.StepCase, backend: str, device: torch.device) -> tuple[bool, str]:
    """Skip (with the numbers) a case whose step would not fit in the free memory."""
    free = cases.free_memory(device)
    held = sum(i.logits.numel() * i.logits.element_size() for i in _INPUTS.values())
    if free is None:
        return True, ""
    need = (case.llada_peak_bytes() if backend == "llada" else case.logits_bytes) + case.logits_bytes
    if need > 0.9 * (free + held):
        return False, f"needs ~{need / 2**30:.1f} GiB, {(free + held) / 2**30:.1f} GiB free"
    return True, ""


def test_step(benchmark, bench_config, backend, step_case):
    device = bench_config.device
    ok, why = cases.backend_available(backend, device)
    if not ok:
        pytest.skip(why)
    ok, why = _fits(step_case, backend, device)
    if not ok:
        pytest.skip(why)
    inp = _inputs(step_case, device)
    fn = cases.step_callable(backend, inp)
    benchmark.group = step_case.name
    benchmark.extra_info.update({
        "backend": backend, "case": step_case.name, "kind": "step",
        "bytes_moved": step_case.bytes_moved, "rows": step_case.rows, "vocab": step_case.vocab,
        **bench_config.info(),
    })
    out = cases.run_timed(benchmark, fn, bench_config.rounds, bench_config.warmup)
    assert out.shape == inp.x.shape
