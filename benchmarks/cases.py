"""Benchmark shapes by name, shared by the pytest-benchmark suites and the GPU scripts.

One `StepCase` is one sampling step on fixed logits: the state is the *first* step of the
first block (every generated position masked), so the candidate rows are the whole block,
``rows = block * batch``, the most a step of that block ever reads. The name spells the
shape, e.g. ``bf16-p512-g512-b32-B1-T0-cfg0`` (vocab 126,464 unless a ``-V<n>`` suffix says
otherwise; ``bfull`` is one block of the whole answer). A benchmark id puts the backend in
front: ``step[llada-bf16-p512-g512-b32-B1-T0-cfg0]``.

Sets (`step_cases`):

* ``quick``: tiny vocab and lengths; for CI, where only "does it still run" matters.
* ``cpu``: the representative subset that runs in minutes on 2 cores: the issue's CPU target
  (p512, g512, b32, B1, T0 and T1) in bf16 and fp32, plus one full-block and one CFG case.
  Batch 8 is left out: LLaDA's float64 copies of ``[8, L, 126464]`` need ~3 GB each.
* ``gpu``: one factor at a time around the anchor ``bf16-p512-g512-b32-B1``, at T=0 and T=1.
* ``full``: the whole grid of the issue (dtype x prompt x gen x block x batch x T x CFG).

Usage from a script in this folder: ``import cases`` (the folder is on ``sys.path`` when a
script here runs, and pytest puts it there for the suites).

Everything the suites time is built here (`step_inputs`, `step_callable`) so a GPU script
measures exactly what the suites measure.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

LLADA_VOCAB = 126_464
LLADA_MASK_ID = 126_336
SEED = 1234
BACKENDS = ("llada", "reference", "torch", "triton")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# ---------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class StepCase:
    """One sampling step: logits ``[B(*2 with CFG), prompt + gen, vocab]`` in ``dtype``."""

    dtype: str = "bf16"
    prompt: int = 512
    gen: int = 512
    block: int = 32  # block length; == gen is one block ("bfull")
    batch: int = 1
    temperature: float = 0.0
    cfg: float = 0.0  # cfg_scale; 0 is off
    vocab: int = LLADA_VOCAB
    remasking: str = "low_confidence"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not 0 < self.block <= self.gen or self.gen % self.block:
            raise ValueError(f"block {self.block} must divide gen {self.gen}")

    @property
    def name(self) -> str:
        block = "full" if self.block == self.gen else str(self.block)
        name = (
            f"{self.dtype}-p{self.prompt}-g{self.gen}-b{block}-B{self.batch}"
            f"-T{self.temperature:g}-cfg{self.cfg:g}"
        )
        return name if self.vocab == LLADA_VOCAB else f"{name}-V{self.vocab}"

    @property
    def length(self) -> int:
        return self.prompt + self.gen

    @property
    def rows(self) -> int:
        """Candidate rows of this step (the masked positions of the block, over the batch)."""
        return self.block * self.batch

    @property
    def itemsize(self) -> int:
        return torch.empty((), dtype=DTYPES[self.dtype]).element_size()

    @property
    def bytes_moved(self) -> int:
        """The floor of the performance model (docs/kernels.md): each needed logit read once, ``rows * V * bytes`` (x2 CFG)."""
        return self.rows * self.vocab * self.itemsize * (2 if self.cfg else 1)

    @property
    def logits_bytes(self) -> int:
        """The whole ``[B(*2), L, V]`` logits tensor, what the model hands the step."""
        return self.batch * (2 if self.cfg else 1) * self.length * self.vocab * self.itemsize

    def llada_peak_bytes(self) -> int:
        """Rough peak of the LLaDA-style step: the logits plus ~4 float64 copies of ``[B, L, V]``."""
        return self.logits_bytes + 4 * self.batch * self.length * self.vocab * 8


def _grid(**axes) -> list[StepCase]:
    out, seen = [], set()
    keys = list(axes)
    for values in itertools.product(*(axes[k] for k in keys)):
        kw = dict(zip(keys, values))
        if kw["block"] == "full":
            kw["block"] = kw["gen"]
        if kw["block"] > kw["gen"]:
            continue
        case = StepCase(**kw)
        if case.name not in seen:
            seen.add(case.name)
            out.append(case)
    return out


QUICK_CASES = [
    StepCase("fp32", prompt=8, gen=16, block=8, batch=1, temperature=0.0, vocab=64),
    StepCase("bf16", prompt=8, gen=16, block=16, batch=2, temperature=1.0, vocab=64),
    StepCase("fp32", prompt=4, gen=8, block=4, batch=1, temperature=1.0, cfg=1.0, vocab=64),
]

CPU_TARGET = [StepCase("bf16", 512, 512, 32, 1, t) for t in (0.0, 1.0)]
CPU_CASES = CPU_TARGET + [
    StepCase("fp32", 512, 512, 32, 1, 0.0),
    StepCase("fp32", 512, 512, 32, 1, 1.0),
    StepCase("bf16", 512, 512, 32, 1, 0.7),      # T != 1: the tempered weights' second pass
    StepCase("bf16", 128, 256, 256, 1, 0.0),
    StepCase("bf16", 128, 256, 32, 1, 0.0, cfg=1.0),
]


def _one_factor_at_a_time() -> list[StepCase]:
    anchor = dict(dtype="bf16", prompt=512, gen=512, block=32, batch=1, cfg=0.0)
    variations = [{}, {"dtype": "fp32"}, {"prompt": 128}, {"gen": 256}, {"gen": 1024},
                  {"block": 256}, {"block": 512}, {"batch": 8}, {"cfg": 1.0}]
    out = []
    for t in (0.0, 1.0):
        for v in variations:
            out.append(StepCase(**{**anchor, **v, "temperature": t}))
    return out


GPU_CASES = _one_factor_at_a_time()

FULL_CASES = _grid(
    dtype=["bf16", "fp32"], prompt=[128, 512], gen=[256, 512, 1024], block=[32, 256, "full"],
    batch=[1, 8], temperature=[0.0, 1.0], cfg=[0.0, 1.0],
)

STEP_SETS = {"quick": QUICK_CASES, "cpu": CPU_CASES, "gpu": GPU_CASES, "full": FULL_CASES}


def step_cases(name: str) -> list[StepCase]:
    """The named set of step cases (``quick``, ``cpu``, ``gpu``, ``full``)."""
    try:
        return list(STEP_SETS[name])
    except KeyError:
        raise ValueError(f"unknown case set {name!r}; choose from {sorted(STEP_SETS)}") from None


def find_case(name: str) -> StepCase:
    """The case of any set with this name (``bf16-p512-g512-b32-B1-T0-cfg0``)."""
    for cases in STEP_SETS.values():
        for c in cases:
            if c.name == name:
                return c
    raise KeyError(name)


# ---------------------------------------------------------------------------- inputs


@dataclass
class StepInputs:
    """Everything one step reads. ``logits`` ``[B(*2), L, V]`` as the model returns it."""

    case: StepCase
    logits: torch.Tensor
    x: torch.Tensor  # [B, L] int64: prompt tokens, then mask_id over the answer
    mask_id: int
    rows: torch.Tensor  # [R] int64 into the flattened cond logits [B*L, V]
    seeds: torch.Tensor  # [R] int64
    positions: torch.Tensor  # [R] int64, position within the answer
    k: torch.Tensor  # [B] int64 tokens this step keeps
    block_start: int  # index in x of the block's first position

    @property
    def device(self) -> torch.device:
        return self.logits.device


def step_inputs(case: StepCase, device: str | torch.device = "cpu") -> StepInputs:
    """Random logits (``randn * 3``, seeded) and the state of the first step of block 0."""
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(SEED)
    B2 = case.batch * (2 if case.cfg else 1)
    L, V = case.length, case.vocab
    logits = torch.empty(B2, L, V, dtype=DTYPES[case.dtype], device=device)
    # one [L, V] fp32 slab at a time keeps the peak at one extra row of the batch
    for b in range(B2):
        slab = torch.randn(L, V, generator=g, device=device, dtype=torch.float32)
        logits[b].copy_(slab.mul_(3.0))
        del slab
    mask_id = V - 1 if V != LLADA_VOCAB else LLADA_MASK_ID
    x = torch.randint(0, mask_id, (case.batch, L), generator=g, device=device)
    x[:, case.prompt:] = mask_id
    block = torch.arange(case.block, device=device)
    rows = (torch.arange(case.batch, device=device)[:, None] * L + case.prompt + block[None, :]).reshape(-1)
    seeds = (torch.arange(case.batch, device=device, dtype=torch.int64) + SEED).repeat_interleave(case.block)
    positions = block.repeat(case.batch)
    steps_per_block = case.block  # LLaDA's quality setting, steps == gen_length: one token a step
    k = torch.full((case.batch,), case.block // steps_per_block, dtype=torch.int64, device=device)
    return StepInputs(case, logits, x, mask_id, rows, seeds, positions, k, case.prompt)


# ---------------------------------------------------------------------------- backends


def backend_available(backend: str, device: torch.device) -> tuple[bool, str]:
    """Whether ``backend`` can run here, and why not."""
    try:
        _backend_module(backend)
    except Exception as e:  # noqa: BLE001 - any import failure means "not here"
        return False, f"backend {backend!r} not importable: {type(e).__name__}: {e}"
    if backend == "triton" and device.type != "cuda":
        return False, "triton backend needs CUDA (the interpreter is not a speed path)"
    return True, ""


def _backend_module(backend: str):
    if backend == "llada":
        from fastremask.sampler import llada

        return llada
    if backend == "reference":
        from fastremask.sampler import reference

        return reference
    if backend == "torch":
        from fastremask.sampler import fast

        return fast
    if backend == "triton":
        from fastremask import kernels

        if not hasattr(kernels, "sample_rows"):
            raise ImportError("fastremask.kernels has no sample_rows yet")
        return kernels
    raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")


def step_callable(backend: str, inp: StepInputs) -> Callable[[], torch.Tensor]:
    """A zero-argument callable doing one whole step with ``backend`` on ``inp``.

    It returns the updated ``x`` (a fresh copy each call, so every call does the same work).
    On CUDA it synchronises before returning, so wall time is device time.
    """
    mod = _backend_module(backend)
    case = inp.case
    sync = torch.cuda.synchronize if inp.device.type == "cuda" else (lambda: None)
    if backend == "llada":
        fn = _llada_step(mod, inp)
    else:
        fn = _rows_step(mod, inp)

    def call():
        out = fn()
        sync()
        return out

    call.__name__ = f"{backend}_step_{case.name}"
    return call


def _llada_step(mod, inp: StepInputs):
    """LLaDA's step on the whole ``[B, L, V]`` logits (`fastremask.sampler.llada.llada_step`), with
    LLaDA's CFG combine (``u + (s + 1) * (c - u)`` over all of ``[B, L, V]``) in front of it,
    as its generate loop does; the fast backends do the combine inside ``sample_rows``."""
    case = inp.case
    block_end = case.prompt + case.block
    B = case.batch

    def fn():
        torch.manual_seed(SEED)  # LLaDA draws from the global generator
        logits = inp.logits
        if case.cfg:
            c, u = logits[:B], logits[B:]
            logits = u + (case.cfg + 1) * (c - u)
        return mod.llada_step(inp.x, logits, inp.k, block_end=block_end, temperature=case.temperature,
                              remasking=case.remasking, mask_id=inp.mask_id)

    return fn


def _rows_step(mod, inp: StepInputs):
    """What `fastremask.generate`'s fast loop does in a step whose candidates are the whole
    block: sample_rows on the candidate rows, the lazy NaN/inf check (first invalid row kept
    on the device), select, write the kept tokens into x. No host sync."""
    case = inp.case
    B, L, V, C = case.batch, case.length, case.vocab, case.block
    flat = inp.logits.view(-1, V)
    cond, uncond = (flat[: B * L], flat[B * L:]) if case.cfg else (flat, None)
    candidate = torch.ones(B, C, dtype=torch.bool, device=inp.device)
    deferred = torch.zeros(B, C, dtype=torch.bool, device=inp.device)
    s0, s1 = inp.block_start, inp.block_start + C
    R = B * C
    order = torch.arange(R, device=inp.device)

    def fn():
        x = inp.x.clone()
        s = mod.sample_rows(
            cond, inp.rows, inp.seeds, inp.positions, 0, temperature=case.temperature,
            remasking=case.remasking, cfg_scale=case.cfg, uncond_logits=uncond,
        )
        # the loop's lazy NaN/inf check: the first invalid row stays on the device (no sync)
        first_invalid = torch.where(s.invalid, order, R).amin()
        x0 = s.x0.view(B, C)
        keep = mod.select(s.confidence.view(B, C), candidate, deferred, inp.k, None) & (x0 >= 0)
        blk = x[:, s0:s1]
        blk.copy_(torch.where(keep, x0, blk))
        x.first_invalid = first_invalid  # keeps it alive, as the loop does until the block ends
        return x

    return fn


# ---------------------------------------------------------------------------- machine facts


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}"


def copy_bandwidth(device: torch.device, nbytes: int | None = None, rounds: int = 10) -> float:
    """Measured device-to-device copy bandwidth in GB/s, counting read + write (2x bytes).

    The roofline ceiling a memory-bound step is compared with. Best of ``rounds``.
    """
    if nbytes is None:
        nbytes = (1 << 30) if device.type == "cuda" else (128 << 20)
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    best = float("inf")
    for i in range(rounds + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        if i:  # first is warm-up
            best = min(best, dt)
    return 2 * src.numel() * 4 / best / 1e9


def free_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (CUDA: mem_get_info; CPU: MemAvailable), or None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_timed(benchmark, fn, rounds: int, warmup: int):
    """Time ``fn`` with pytest-benchmark: ``rounds`` rounds of one call each, after ``warmup``
    untimed calls. Under ``--benchmark-disable`` it runs ``fn`` once."""
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup)


@lru_cache(maxsize=1)
def git_commit() -> str:
    if os.environ.get("FASTREMASK_COMMIT"):  # set by the GPU run, whose copy has no git history
        return os.environ["FASTREMASK_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except Exception:  # noqa: BLE001 - no git, not a checkout
        return "unknown"


def versions() -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001
        triton_version = None
    return {"torch": torch.__version__, "triton": triton_version, "commit": git_commit()}


def roofline(bytes_moved: int, seconds: float, ceiling_gbps: float | None) -> dict:
    """``bytes_moved``, effective ``gbps`` and its ``roofline`` share of ``ceiling_gbps``."""
    gbps = bytes_moved / seconds / 1e9 if seconds > 0 else float("nan")
    share = gbps / ceiling_gbps if ceiling_gbps else None
    return {"bytes_moved": bytes_moved, "gbps": gbps, "roofline": share}
