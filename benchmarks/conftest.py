"""pytest-benchmark setup shared by the suites in this folder (docs/benchmarks.md).

Options (all ``--bench-*``, so they cannot clash with pytest-benchmark's ``--benchmark-*``):

* ``--bench-set auto|quick|cpu|gpu|full``: which step shapes (benchmarks/cases.py); ``auto``
  is ``gpu`` with CUDA and ``cpu`` without. ``quick`` also shrinks the generate and schedule
  suites to a few steps of the tiny model (for CI).
* ``--bench-backends llada,reference,torch,triton``: which backends to time.
* ``--bench-rounds N``: timed rounds per case (default 5 on CPU, 20 on CUDA; 1 with ``quick``).
* ``--bench-device cpu|cuda``.
* ``--bench-threads N``: ``torch.set_num_threads(N)`` (recorded in the results).

Every benchmark's ``extra_info`` gets the device, torch, triton, commit, the case's
``bytes_moved`` and, after the run, effective GB/s, roofline share (of the copy bandwidth
measured once at the start of the same session) and the speedup over the LLaDA-style step
of the same group (ratios of min, median and max).
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
import cases  # noqa: E402

if not torch.cuda.is_available():
    # the interpreter is not a speed path, but keeps `import fastremask.kernels` working
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_addoption(parser):
    g = parser.getgroup("fastremask benchmarks")
    g.addoption("--bench-set", default="auto", choices=["auto", *cases.STEP_SETS],
                help="step shapes to time (benchmarks/cases.py); auto: gpu with CUDA, else cpu")
    g.addoption("--bench-backends", default=",".join(cases.BACKENDS),
                help="comma-separated backends to time (default: all that run here)")
    g.addoption("--bench-rounds", type=int, default=None, help="timed rounds per case")
    g.addoption("--bench-device", default=None, choices=["cpu", "cuda"],
                help="device (default: cuda if available)")
    g.addoption("--bench-threads", type=int, default=None,
                help="torch.set_num_threads for the run (default: torch's own choice); on a shared, "
                     "oversubscribed CPU one thread avoids OpenMP spin-waits that make small ops 50x slower")


class BenchConfig:
    """What the options resolve to, plus facts measured once per session."""

    def __init__(self, config):
        dev = config.getoption("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(dev)
        name = config.getoption("--bench-set")
        self.set_name = name if name != "auto" else ("gpu" if self.device.type == "cuda" else "cpu")
        self.quick = self.set_name == "quick"
        self.backends = [b.strip() for b in config.getoption("--bench-backends").split(",") if b.strip()]
        for b in self.backends:
            if b not in cases.BACKENDS:
                raise pytest.UsageError(f"--bench-backends: unknown backend {b!r}; choose from {cases.BACKENDS}")
        rounds = config.getoption("--bench-rounds")
        self.rounds = rounds if rounds else (1 if self.quick else (20 if self.device.type == "cuda" else 5))
        self.warmup = 0 if self.quick else 1
        self._bandwidth = None

    @property
    def bandwidth(self) -> float:
        """Copy bandwidth (GB/s, read + write) of this device, measured on first use."""
        if self._bandwidth is None:
            nbytes = (16 << 20) if self.quick else None
            self._bandwidth = cases.copy_bandwidth(self.device, nbytes=nbytes)
        return self._bandwidth

    def info(self) -> dict:
        return {"device": cases.device_name(self.device), "device_type": self.device.type,
                **cases.versions(), "copy_gbps": self.bandwidth, "case_set": self.set_name,
                "threads": torch.get_num_threads()}


def pytest_configure(config):
    threads = config.getoption("--bench-threads")
    if threads:
        torch.set_num_threads(threads)
    config._fastremask_bench = BenchConfig(config)


@pytest.fixture(scope="session")
def bench_config(request) -> BenchConfig:
    return request.config._fastremask_bench


def pytest_benchmark_update_machine_info(config, machine_info):
    bc = config._fastremask_bench
    machine_info["fastremask"] = bc.info()


def _stats(bench):
    s = bench.get("stats") or {}
    return s.get("min"), s.get("median"), s.get("max")


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Roofline figures and speedup over the LLaDA-style step of the same group."""
    bc = config._fastremask_bench
    by_group: dict = {}
    for b in output_json["benchmarks"]:
        by_group.setdefault(b.get("group"), []).append(b)
    for group in by_group.values():
        base = next((b for b in group if b["extra_info"].get("backend") == "llada"), None)
        for b in group:
            info = b["extra_info"]
            lo, med, hi = _stats(b)
            if info.get("bytes_moved") and med:
                info.update({f"{k}": v for k, v in cases.roofline(info["bytes_moved"], med, bc.bandwidth).items()})
                info["gbps_best"] = info["bytes_moved"] / lo / 1e9
                info["copy_gbps"] = bc.bandwidth
            if base is not None and med:
                blo, bmed, bhi = _stats(base)
                info["speedup_vs_llada"] = {"min": blo / lo, "median": bmed / med, "max": bhi / hi}
    output_json["fastremask"] = bc.info()
