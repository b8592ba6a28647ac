"""What the schedules cost: model calls and time to generate 256 and 1024 tokens.

Tiny model, one block of the whole answer, torch backend (or the first backend asked for
that is not ``llada``), T = 0: uniform at steps = gen_length (LLaDA's quality setting, one
token a step) against pyramid at factors 1, 2 and 4 (the post's schedule; it takes the fewest
steps that finish, about sqrt(2 * factor * gen_length)).
"""
from __future__ import annotations

import pytest
import torch

import cases

SCHEDULES = [("uniform", None), ("pyramid-f1", 1), ("pyramid-f2", 2), ("pyramid-f4", 4)]
GEN_LENGTHS = {"quick": [16], "cpu": [256, 1024], "gpu": [256, 1024], "full": [256, 1024]}
PROMPT = 16

_MODEL: dict = {}


def pytest_generate_tests(metafunc):
    if "sched" not in metafunc.fixturenames:
        return
    bc = metafunc.config._fastremask_bench
    params, ids = [], []
    for gen in GEN_LENGTHS[bc.set_name]:
        for i, (name, factor) in enumerate(SCHEDULES):
            params.append((gen, name, factor, i))
            ids.append(f"{name}-g{gen}")
    metafunc.parametrize("gen_length,sched,factor,order", params, ids=ids)


def test_schedule(benchmark, bench_config, gen_length, sched, factor, order):
    from fastremask import SamplingConfig
    from fastremask.sampler import loop
    from fastremask.tools.profile import Phases
    from fastremask.models.tiny import tiny_model

    device = bench_config.device
    backend = next((b for b in bench_config.backends if b in ("torch", "triton", "reference")), "torch")
    if backend == "triton" and device.type != "cuda":
        backend = "torch"
    ok, why = cases.backend_available(backend, device)
    if not ok:
        pytest.skip(why)
    key = (str(device), PROMPT + gen_length)
    if key not in _MODEL:
        _MODEL.clear()
        _MODEL[key] = tiny_model(max_len=max(256, PROMPT + gen_length)).to(device)
    model = _MODEL[key]
    g = torch.Generator(device="cpu").manual_seed(cases.SEED)
    prompt = torch.randint(0, model.mask_id, (1, PROMPT), generator=g).to(device)
    config = SamplingConfig(steps=gen_length, gen_length=gen_length, block_length=gen_length, temperature=0.0,
                            remasking="low_confidence", schedule="uniform" if factor is None else "pyramid",
                            factor=factor or 1, backend=backend)    # mask id: the model's
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    runs = []

    with torch.no_grad(), Phases(device=device) as ph:  # counts model calls, no syncs
        def fn():
            out = loop.run(model, prompt, config, seed=0)
            sync()
            runs.append(1)
            return out

        benchmark.group = f"schedules-g{gen_length}"
        cases.run_timed(benchmark, fn, 1 if bench_config.quick else min(bench_config.rounds, 3), 0)
    calls = ph.calls["model"] // max(len(runs), 1)
    assert calls == config.model_calls(), (calls, config.model_calls())   # the one count (schedule.cost's)
    benchmark.extra_info.update({
        "kind": "schedules", "schedule": sched, "schedule_order": order, "factor": factor,
        "gen_tokens": gen_length, "model_calls": calls, "backend": backend,
        "model": "tiny", **bench_config.info(),
    })
