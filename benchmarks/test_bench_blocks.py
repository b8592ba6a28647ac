"""Block-diffusion models: the whole `generate` with the exact block cache against the
published full-window recompute, on random native SDAR- and LLaDA2-mini-shaped models.

The models are `fastremask.tools.bench.random_block_model` (built in memory, random weights):
the test checkpoints' tiny shape with ``--bench-set quick``, the CPU benchmarks' small shape on
the CPU, the published shapes (SDAR-1.7B-Chat, LLaDA2.0-mini; bf16, fewer layers if they do not
fit, recorded) on CUDA. Sampling: LLaDA2's default, ``threshold 0.95`` with at least the
schedule's count per step (``threshold_floor='schedule'``), T = 0, the family's trained block.
``extra_info`` records the model calls and the positions they ran (`fastremask.Trace`), so
the table shows what the cache saves beside the time.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import cases


@dataclass(frozen=True)
class BlockCase:
    prompt: int
    gen: int
    batch: int = 1

    @property
    def name(self) -> str:
        return f"p{self.prompt}-g{self.gen}-B{self.batch}"


BLOCK_SETS = {
    "quick": [BlockCase(8, 32)],
    "cpu": [BlockCase(128, 256)],
    "gpu": [BlockCase(128, 256), BlockCase(128, 256, batch=8)],
}
BLOCK_SETS["full"] = BLOCK_SETS["gpu"]
FAMILIES = ("sdar", "llada2")
SIZES = {"quick": "tiny", "cpu": "small", "gpu": "full", "full": "full"}

_MODEL: dict = {}


def _model(family: str, device: torch.device, size: str):
    key = (family, str(device), size)
    if key not in _MODEL:
        _MODEL.clear()
        from fastremask.tools.bench import random_block_model

        _MODEL[key] = random_block_model(family, device, size=size)
    return _MODEL[key]


def pytest_generate_tests(metafunc):
    if "block_case" not in metafunc.fixturenames:
        return
    bc = metafunc.config._fastremask_bench
    params, ids = [], []
    for case in BLOCK_SETS[bc.set_name]:
        for family in FAMILIES:
            for cache in (None, "block"):
                params.append((family, cache, case))
                ids.append(f"{family}-{cache or 'recompute'}-{case.name}")
    metafunc.parametrize("family,cache,block_case", params, ids=ids)


def test_block_model(benchmark, bench_config, family, cache, block_case):
    from fastremask import SamplingConfig
    from fastremask.models.family import get_family
    from fastremask.sampler import loop

    device = bench_config.device
    backend = next((b for b in bench_config.backends if b in ("triton", "torch", "reference")
                    and cases.backend_available(b, device)[0]), None)
    if backend is None:
        pytest.skip("no sampler backend among --bench-backends runs here")
    model = _model(family, device, SIZES[bench_config.set_name])
    c = block_case
    g = torch.Generator(device="cpu").manual_seed(cases.SEED)
    prompt = torch.randint(0, model.mask_id, (c.batch, c.prompt), generator=g).to(device)
    config = SamplingConfig(steps=c.gen, gen_length=c.gen, block_length=get_family(family).block_length,
                            threshold=0.95, threshold_floor="schedule", cache=cache, backend=backend)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def fn():
        out = loop.run(model, prompt, config, seed=0)
        sync()
        return out

    with torch.no_grad():
        _, trace = loop.run(model, prompt, config, seed=0, return_trace=True)    # warm-up, and the counts
        sync()
        benchmark.group = f"blocks-{family}-{c.name}"
        benchmark.extra_info.update({
            "kind": "blocks", "family": family, "cache": cache, "case": c.name, "backend": backend,
            "model_config": {k: v for k, v in model.config.to_dict().items() if isinstance(v, (int, float, str))},
            "gen_tokens": c.gen * c.batch, "model_calls": trace.model_calls, "positions": trace.positions,
            **bench_config.info(),
        })
        rounds = 1 if bench_config.quick else max(3, min(bench_config.rounds, 5))
        cases.run_timed(benchmark, fn, rounds, 0)
