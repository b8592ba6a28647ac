"""The whole `generate` loop, per backend: tokens/s, model calls, ms per step by phase.

CPU: the tiny model (fastremask.models.tiny). CUDA: random weights of LLaDA-8B's shape
(fastremask.tools.bench.RandomMaskedLM; fewer layers if it does not fit, the config is recorded).
The timed rounds run the loop as it is; one extra, untimed run with `fastremask.tools.profile.Phases`
(timing on: it synchronises around each phase) gives the split of a step into model / sample /
select, recorded in ``extra_info['ms_per_step']``.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import cases


@dataclass(frozen=True)
class GenCase:
    prompt: int
    gen: int
    block: int
    steps: int
    batch: int = 1
    temperature: float = 0.0
    cfg: float = 0.0

    @property
    def name(self) -> str:
        return (f"p{self.prompt}-g{self.gen}-b{self.block}-s{self.steps}-B{self.batch}"
                f"-T{self.temperature:g}-cfg{self.cfg:g}")


GEN_SETS = {
    "quick": [GenCase(8, 16, 8, 4)],
    "cpu": [GenCase(32, 128, 32, 128), GenCase(32, 128, 32, 128, temperature=1.0),
            GenCase(32, 128, 32, 32, batch=4)],
    "gpu": [GenCase(128, 256, 32, 256), GenCase(128, 256, 32, 256, temperature=1.0),
            GenCase(128, 256, 32, 64, batch=8)],
}
GEN_SETS["full"] = GEN_SETS["gpu"]
GEN_BACKENDS = ("llada", "reference", "torch", "triton")

_MODEL: dict = {}


def _model(device: torch.device, quick: bool):
    key = (str(device), quick)
    if key not in _MODEL:
        _MODEL.clear()
        from fastremask.tools.profile import build_model

        name = "llada-8b" if device.type == "cuda" and not quick else "tiny"
        _MODEL[key] = (name, build_model(name, device, max_len=2048))
    return _MODEL[key]


def pytest_generate_tests(metafunc):
    if "gen_case" not in metafunc.fixturenames:
        return
    bc = metafunc.config._fastremask_bench
    params, ids = [], []
    for case in GEN_SETS[bc.set_name]:
        for backend in bc.backends:
            if backend in GEN_BACKENDS:
                params.append((backend, case))
                ids.append(f"{backend}-{case.name}")
    metafunc.parametrize("backend,gen_case", params, ids=ids)


def test_generate(benchmark, bench_config, backend, gen_case):
    from fastremask import SamplingConfig
    from fastremask.sampler import loop
    from fastremask.tools.profile import Phases

    device = bench_config.device
    if backend == "triton" and device.type != "cuda":
        pytest.skip("triton backend needs CUDA (the interpreter is not a speed path)")
    ok, why = cases.backend_available(backend, device)
    if not ok:
        pytest.skip(why)
    model_name, model = _model(device, bench_config.quick)
    c = gen_case
    g = torch.Generator(device="cpu").manual_seed(cases.SEED)
    prompt = torch.randint(0, model.mask_id, (c.batch, c.prompt), generator=g).to(device)
    # one config for every loop (mask id: the model's); LLaDA's own loop takes its fields
    config = SamplingConfig(steps=c.steps, gen_length=c.gen, block_length=c.block, temperature=c.temperature,
                            cfg_scale=c.cfg, remasking="low_confidence", schedule="uniform",
                            backend="auto" if backend == "llada" else backend)

    if backend == "llada":  # LLaDA's own loop: uniform schedule, torch's global generator
        from fastremask.sampler import llada

        def generate(m, p):
            return llada.generate(m, p, steps=config.steps, gen_length=config.gen_length,
                                  block_length=config.block_length, temperature=config.temperature,
                                  cfg_scale=config.cfg_scale, remasking=config.remasking, mask_id=model.mask_id)
    else:
        def generate(m, p):
            return loop.run(m, p, config, seed=0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def fn():
        torch.manual_seed(0)
        out = generate(model, prompt)
        sync()
        return out

    with torch.no_grad():
        with Phases(timing=True, device=device) as ph:  # split run, untimed
            generate(model, prompt)
        if backend != "llada":   # the one count of model calls (schedule.cost's)
            assert ph.calls["model"] == config.model_calls(), (ph.calls["model"], config.model_calls())
        benchmark.group = f"generate-{c.name}"
        benchmark.extra_info.update({
            "backend": backend, "case": c.name, "kind": "generate", "model": model_name,
            "model_config": _config(model), "gen_tokens": c.gen * c.batch,
            "model_calls": ph.calls["model"], "ms_per_step": ph.per_step_ms(), **bench_config.info(),
        })
        # at least 3 timed rounds; the Phases run above is the warm-up (it compiles the kernels),
        # so compilation is never inside a timed round
        rounds = 1 if bench_config.quick else max(3, min(bench_config.rounds, 5))
        cases.run_timed(benchmark, fn, rounds, 0)


def _config(model) -> dict:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return {}
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, type(None)))}
