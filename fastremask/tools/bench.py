"""``fastremask bench``: run the benchmark suites that fit this machine and print one table.

The suites are pytest-benchmark files in the repository's ``benchmarks/`` folder
(docs/benchmarks.md); this command runs them in a child ``pytest`` (so their conftest and
options apply), reads pytest-benchmark's JSON and prints, per case, each backend's time
(min / median / max), its speedup over the LLaDA-style step measured in the same run (ratio
of the mins, medians and maxes), and on a GPU the effective GB/s and the share of the copy
bandwidth measured in the same run. ``--json PATH`` keeps pytest-benchmark's JSON;
``--compare A B`` runs pytest-benchmark's own comparison of two saved runs and then a
per-case ratio of the medians.

It also holds the random-weight models for timing the whole loop at real size without a
checkpoint: `RandomMaskedLM`, a bidirectional transformer built from a config (LLaDA-8B's shape
by default), and `random_block_model`, the native block-causal forwards (SDAR, LLaDA2-mini's
MoE) built in memory at their published shapes or scaled down (`BLOCK_SIZES`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["add_arguments", "run", "benchmarks_dir", "format_table", "RandomLMConfig", "RandomMaskedLM",
           "random_model", "random_block_model", "BLOCK_SIZES", "SUITES"]

SUITES = {"step": "test_bench_step.py", "generate": "test_bench_generate.py",
          "schedules": "test_bench_schedules.py", "blocks": "test_bench_blocks.py"}


# ---------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="tiny shapes, one round: checks that everything runs (seconds, not a measurement)")
    parser.add_argument("--set", dest="case_set", default=None, choices=["auto", "quick", "cpu", "gpu", "full"],
                        help="step shapes (benchmarks/cases.py); default auto: gpu with CUDA, cpu without")
    parser.add_argument("--suites", default="step,generate,schedules,blocks",
                        help=f"comma-separated suites to run, of {','.join(SUITES)} (default: all)")
    parser.add_argument("--backends", default=None,
                        help="comma-separated backends: llada,reference,torch,triton (default: all that run here)")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression to pick cases")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per case")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is steadier on a busy machine)")
    parser.add_argument("--json", dest="json_path", default=None, help="write pytest-benchmark's JSON here")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                        help="compare two saved JSON runs instead of running anything")
    parser.add_argument("--benchmarks-dir", default=None, help="the suites' folder (default: the checkout's benchmarks/)")


def benchmarks_dir(explicit: str | None = None) -> Path:
    """The repository's ``benchmarks/`` folder (the package is installed editable from it)."""
    if explicit:
        path = Path(explicit)
    else:
        path = Path(__file__).resolve().parents[2] / "benchmarks"
    if not (path / "conftest.py").is_file():
        raise FileNotFoundError(
            f"no benchmark suites at {path}: `fastremask bench` runs from a source checkout "
            "(pip install -e .), or pass --benchmarks-dir"
        )
    return path


def pytest_command(args, json_out: str) -> list[str]:
    bdir = benchmarks_dir(getattr(args, "benchmarks_dir", None))
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    for s in suites:
        if s not in SUITES:
            raise ValueError(f"unknown suite {s!r}; choose from {', '.join(SUITES)}")
    case_set = "quick" if args.quick else (args.case_set or "auto")
    cmd = [sys.executable, "-m", "pytest", *(str(bdir / SUITES[s]) for s in suites),
           "-q", "-p", "no:cacheprovider", f"--rootdir={bdir}", f"--benchmark-json={json_out}",
           "--benchmark-columns=min,median,max,rounds", "--benchmark-group-by=group",
           "--benchmark-sort=name", f"--bench-set={case_set}"]
    if args.backends:
        cmd.append(f"--bench-backends={args.backends}")
    if args.rounds:
        cmd.append(f"--bench-rounds={args.rounds}")
    if args.device:
        cmd.append(f"--bench-device={args.device}")
    if args.threads:
        cmd.append(f"--bench-threads={args.threads}")
    if args.keyword:
        cmd += ["-k", args.keyword]
    return cmd


def check_args(args) -> None:
    """The options, before anything runs (a `fastremask.tools.cli.CliError` naming the option):
    counts >= 1, known suites, the device, ``--json``'s folder, ``--compare``'s files."""
    from fastremask.sampler.devices import check_device
    from fastremask.tools.cli import CliError, check_output_dir

    for opt in ("rounds", "threads"):
        v = getattr(args, opt)
        if v is not None and v < 1:
            raise CliError(f"--{opt} must be >= 1, got {v}")
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    if not suites:
        raise CliError(f"--suites names no suite; choose from {', '.join(SUITES)}")
    for s in suites:
        if s not in SUITES:
            raise CliError(f"--suites: unknown suite {s!r}; choose from {', '.join(SUITES)}")
    check_device(args.device)
    check_output_dir(args.json_path, "--json")
    for path in args.compare or ():
        if not os.path.isfile(path):
            raise CliError(f"--compare {path}: no such file")
    if args.compare and os.path.samefile(*args.compare):
        raise CliError(f"--compare names {args.compare[0]} twice; give two different runs")


def run(args) -> int:
    check_args(args)
    if args.compare:
        return compare(*args.compare)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.json_path or os.path.join(tmp, "bench.json")
        cmd = pytest_command(args, out)
        print("$", " ".join(cmd), flush=True)
        rc = subprocess.call(cmd)
        if not os.path.exists(out):
            print(f"fastremask bench: pytest exited {rc} and wrote no results", file=sys.stderr)
            return rc or 1
        with open(out) as f:
            data = json.load(f)
    print()
    print(format_table(data))
    if args.json_path:
        print(f"\nwrote {args.json_path}")
    return rc


def _read_results(path: str) -> dict:
    """A saved pytest-benchmark JSON; a ValueError naming the file when it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--compare {path} is not pytest-benchmark JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"--compare {path} is not pytest-benchmark JSON (no \"benchmarks\" list)")
    return data


def compare(a: str, b: str) -> int:
    """pytest-benchmark's own comparison, then the median ratio B/A per benchmark."""
    cmd = [sys.executable, "-c", "from pytest_benchmark.cli import main; main()", "compare", a, b,
           "--group-by=group", "--columns=min,median,max,rounds", "--sort=name"]
    da, db = _read_results(a), _read_results(b)
    rc = subprocess.call(cmd)
    ma = {x["fullname"]: x["stats"]["median"] for x in da["benchmarks"]}
    rows = [("benchmark", "median A", "median B", "B / A")]
    for x in db["benchmarks"]:
        if x["fullname"] in ma:
            mb = x["stats"]["median"]
            rows.append((x["name"], _ms(ma[x["fullname"]]), _ms(mb), f"{mb / ma[x['fullname']]:.2f}"))
    print(_render(rows))
    return rc


# ---------------------------------------------------------------------------- the table


def _ms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return f"{seconds * 1e3:.3g}" if seconds < 1 else f"{seconds * 1e3:.0f}"


def _x(r: float | None) -> str:
    return "-" if r is None else f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def _render(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        lines.append(" | ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            lines.append("-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(data: dict) -> str:
    """One readable table per suite from pytest-benchmark's JSON (with our extra_info)."""
    info = data.get("fastremask") or data.get("machine_info", {}).get("fastremask", {})
    head = (f"device: {info.get('device', '?')} | torch {info.get('torch')} | triton {info.get('triton')} "
            f"| {info.get('threads', '?')} threads | commit {info.get('commit')} | copy bandwidth {info.get('copy_gbps', float('nan')):.1f} GB/s")
    out = [head]
    by_kind: dict = {}
    for b in data["benchmarks"]:
        by_kind.setdefault(b["extra_info"].get("kind", "other"), []).append(b)
    gpu = info.get("device_type") == "cuda"
    if "step" in by_kind:
        rows = [("case", "backend", "ms min/med/max", "speedup vs llada min/med/max", "GB/s", "roofline")]
        for b in sorted(by_kind["step"], key=lambda b: (b["group"], _order(b["extra_info"].get("backend")))):
            e, s = b["extra_info"], b["stats"]
            sp = e.get("speedup_vs_llada")
            rows.append((
                e["case"], e["backend"], f"{_ms(s['min'])} / {_ms(s['median'])} / {_ms(s['max'])}",
                "-" if not sp else f"{_x(sp['min'])} / {_x(sp['median'])} / {_x(sp['max'])}",
                f"{e['gbps']:.3g}" if e.get("gbps") is not None else "-",
                f"{100 * e['roofline']:.1f}%" if gpu and e.get("roofline") is not None else "-",
            ))
        out += ["", "sampling step (one step, same logits; speedup = LLaDA-style time / backend time)", _render(rows)]
    if "generate" in by_kind:
        rows = [("case", "backend", "s min/med/max", "tokens/s", "model calls", "ms/step model/sample/select")]
        for b in sorted(by_kind["generate"], key=lambda b: (b["group"], _order(b["extra_info"].get("backend")))):
            e, s = b["extra_info"], b["stats"]
            split = e.get("ms_per_step") or {}
            rows.append((
                e["case"], e["backend"], f"{s['min']:.3g} / {s['median']:.3g} / {s['max']:.3g}",
                f"{e['gen_tokens'] / s['median']:.1f}", e.get("model_calls", "-"),
                " / ".join(f"{split.get(k, float('nan')):.3g}" for k in ("model", "sample", "select")) if split else "-",
            ))
        out += ["", "whole generate loop", _render(rows)]
    if "schedules" in by_kind:
        rows = [("gen tokens", "schedule", "model calls", "s min/med/max", "tokens/s")]
        for b in sorted(by_kind["schedules"], key=lambda b: (b["extra_info"]["gen_tokens"], b["extra_info"]["schedule_order"])):
            e, s = b["extra_info"], b["stats"]
            rows.append((e["gen_tokens"], e["schedule"], e["model_calls"],
                         f"{s['min']:.3g} / {s['median']:.3g} / {s['max']:.3g}", f"{e['gen_tokens'] / s['median']:.1f}"))
        out += ["", "schedules (tiny model)", _render(rows)]
    if "blocks" in by_kind:
        rows = [("case", "family", "cache", "s min/med/max", "tokens/s", "model calls", "positions run")]
        for b in sorted(by_kind["blocks"], key=lambda b: (b["group"], b["extra_info"]["cache"] or "")):
            e, s = b["extra_info"], b["stats"]
            rows.append((e["case"], e["family"], e["cache"] or "none (recompute)",
                         f"{s['min']:.3g} / {s['median']:.3g} / {s['max']:.3g}", f"{e['gen_tokens'] / s['median']:.1f}",
                         e["model_calls"], f"{e['positions']:,}"))
        out += ["", "block-diffusion models (random SDAR / LLaDA2 shapes): exact block cache vs recompute",
                _render(rows)]
    return "\n".join(out)


def _order(backend: str | None) -> int:
    order = ("llada", "reference", "torch", "triton")
    return order.index(backend) if backend in order else len(order)


# ---------------------------------------------------------------------------- a real-size random model


@dataclass(frozen=True)
class RandomLMConfig:
    """Shape of `RandomMaskedLM`; the defaults are LLaDA-8B's (about 8.0e9 parameters)."""

    vocab_size: int = 126_464
    d_model: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    d_ff: int = 12_288
    mask_id: int = 126_336
    seed: int = 0

    @property
    def n_params(self) -> int:
        layer = 4 * self.d_model**2 + 3 * self.d_model * self.d_ff + 2 * self.d_model
        return self.n_layers * layer + 2 * self.vocab_size * self.d_model + self.d_model


class _Layer(nn.Module):
    def __init__(self, cfg: RandomLMConfig, **kw):
        super().__init__()
        d, f = cfg.d_model, cfg.d_ff
        self.n_heads = cfg.n_heads
        self.norm1 = nn.RMSNorm(d, **kw)
        self.qkv = nn.Linear(d, 3 * d, bias=False, **kw)
        self.o = nn.Linear(d, d, bias=False, **kw)
        self.norm2 = nn.RMSNorm(d, **kw)
        self.gate_up = nn.Linear(d, 2 * f, bias=False, **kw)
        self.down = nn.Linear(f, d, bias=False, **kw)

    def forward(self, h):
        B, L, D = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(B, L, 3, self.n_heads, D // self.n_heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        h = h + self.o(a.transpose(1, 2).reshape(B, L, D))
        g, u = self.gate_up(self.norm2(h)).chunk(2, dim=-1)
        return h + self.down(F.silu(g) * u)


class RandomMaskedLM(nn.Module):
    """A bidirectional pre-norm transformer (RMSNorm, SwiGLU, no positional encoding) with
    random weights and LLaDA's call interface: ``model(x).logits`` ``[B, L, V]``.

    It is a cost model, not a language model: its matmuls and attention have LLaDA-8B's
    shapes (with the default config), so the model's share of a step is realistic. RoPE
    is left out (a few elementwise ops per layer).
    """

    def __init__(self, config: RandomLMConfig | None = None, device=None, dtype=torch.bfloat16):
        super().__init__()
        self.config = cfg = config or RandomLMConfig()
        kw = {"device": device, "dtype": dtype}
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model, **kw)
        self.layers = nn.ModuleList(_Layer(cfg, **kw) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model, **kw)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False, **kw)
        g = torch.Generator(device=self.head.weight.device).manual_seed(cfg.seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    std = 1.0 if name == "embed.weight" else 1.0 / math.sqrt(p.shape[1])
                    p.normal_(0.0, std, generator=g)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def mask_id(self) -> int:
        return self.config.mask_id

    @torch.no_grad()
    def forward(self, input_ids, attention_mask=None):
        h = self.embed(input_ids)
        for layer in self.layers:
            h = layer(h)
        return _Output(self.head(self.norm(h)))


@dataclass
class _Output:
    logits: torch.Tensor


def random_model(device, dtype=torch.bfloat16, max_fraction: float = 0.6, **overrides) -> RandomMaskedLM:
    """LLaDA-8B-shaped `RandomMaskedLM`, with fewer layers if its weights would take more than
    ``max_fraction`` of the free device memory (the config says how many it got)."""
    cfg = RandomLMConfig(**overrides)
    device = torch.device(device)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        per_layer = (4 * cfg.d_model**2 + 3 * cfg.d_model * cfg.d_ff) * torch.empty((), dtype=dtype).element_size()
        fixed = 2 * cfg.vocab_size * cfg.d_model * torch.empty((), dtype=dtype).element_size()
        fit = int((max_fraction * free - fixed) // per_layer)
        if fit < cfg.n_layers:
            cfg = RandomLMConfig(**{**cfg.__dict__, "n_layers": max(fit, 1)})
    return RandomMaskedLM(cfg, device=device, dtype=dtype)


# ---------------------------------------------------------------------------- random block-causal models
#
# The published config.json fields the native forwards read (fastremask.models.native.sdar /
# .llada2): SDAR-1.7B-Chat's config.json (JetLM), LLaDA2.0-mini's (inclusionAI/dFactory,
# configs/model_configs/llada2_mini/config.json). "small" is the CPU benchmarks' shape
# (benchmarks/native_block_models.py), "tiny" the test checkpoints' (fastremask.models.testing).

_BLOCK_BASE = {
    "sdar": dict(model_type="sdar", architectures=["SDARForCausalLM"], attention_bias=False, hidden_act="silu",
                 rms_norm_eps=1e-6, rope_scaling=None, rope_theta=1000000, tie_word_embeddings=False,
                 use_sliding_window=False, block_size=4, max_position_embeddings=32768),
    "llada2": dict(model_type="llada2_moe", architectures=["LLaDA2MoeModelLM"], hidden_act="silu",
                   first_k_dense_replace=1, moe_router_enable_expert_bias=True, norm_topk_prob=True,
                   num_shared_experts=1, partial_rotary_factor=0.5, rms_norm_eps=1e-6, rope_scaling=None,
                   rope_theta=600000, routed_scaling_factor=2.5, score_function="sigmoid",
                   tie_word_embeddings=False, use_bias=False, use_qk_norm=True, use_qkv_bias=False,
                   max_position_embeddings=16384),
}
BLOCK_SIZES = {
    "sdar": {
        "full": dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                     head_dim=128, intermediate_size=6144, vocab_size=151936, mask_token_id=151669,
                     eos_token_id=151643, bos_token_id=151643),
        "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=64, intermediate_size=768, vocab_size=4096, mask_token_id=4095, eos_token_id=4094),
        "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     head_dim=8, intermediate_size=64, vocab_size=64, mask_token_id=63, eos_token_id=62),
    },
    "llada2": {
        "full": dict(hidden_size=2048, num_hidden_layers=20, num_attention_heads=16, num_key_value_heads=4,
                     head_dim=128, intermediate_size=5120, moe_intermediate_size=512, num_experts=256,
                     num_experts_per_tok=8, n_group=8, topk_group=4, vocab_size=157184,
                     mask_token_id=156895, eos_token_id=156892),
        "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1,
                      head_dim=64, intermediate_size=640, moe_intermediate_size=64, num_experts=32,
                      num_experts_per_tok=4, n_group=8, topk_group=4, vocab_size=4096, mask_token_id=4095,
                      eos_token_id=4094),
        "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                     head_dim=8, intermediate_size=64, moe_intermediate_size=16, num_experts=8,
                     num_experts_per_tok=2, n_group=4, topk_group=2, vocab_size=64, mask_token_id=63,
                     eos_token_id=62),
    },
}


def random_block_model(family: str, device, *, size: str = "full", dtype=None, max_fraction: float = 0.6,
                       seed: int = 0, **overrides):
    """The native ``family`` model (``"sdar"`` or ``"llada2"``) with random weights made on
    ``device`` (no checkpoint on disk), adapted for `generate` (`fastremask.models.wrap`).

    ``size``: ``"full"`` (SDAR-1.7B-Chat's / LLaDA2.0-mini's published shape), ``"small"`` or
    ``"tiny"`` (`BLOCK_SIZES`); ``overrides`` replace ``config.json`` fields. ``dtype``: bf16 on
    CUDA, fp32 elsewhere by default. On CUDA the model gets fewer layers if its weights would
    take more than ``max_fraction`` of the free memory (its config says how many it got).
    Weights: norms (and LLaDA2's router bias) 1, matrices N(0, 1 / fan_in)."""
    from fastremask.models import wrap
    from fastremask.models.family import get_family

    if family not in BLOCK_SIZES:
        raise ValueError(f"unknown block model {family!r}; choose {' or '.join(BLOCK_SIZES)}")
    if size not in BLOCK_SIZES[family]:
        raise ValueError(f"size {size!r}; choose from {', '.join(BLOCK_SIZES[family])}")
    device = torch.device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    record = get_family(family)
    cls = record.native_class()
    raw = {**_BLOCK_BASE[family], **BLOCK_SIZES[family][size], **overrides}
    name = f"random {record.display} ({size})"
    model = cls(cls.check_config(raw, name), device="meta")
    if device.type == "cuda":                         # fewer layers where the weights do not fit
        layers = [sum(p.numel() for p in layer.parameters()) for layer in model._layers()]
        rest = sum(p.numel() for p in model.parameters()) - sum(layers)
        size_of = torch.empty((), dtype=dtype).element_size()
        fit = int((max_fraction * torch.cuda.mem_get_info(device)[0] / size_of - rest) // max(layers))
        if fit < len(layers):
            raw["num_hidden_layers"] = max(fit, raw.get("first_k_dense_replace", 0) + 1, 1)
            model = cls(cls.check_config(raw, name), device="meta")
    model = model.to_empty(device=device).to(dtype)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5, generator=g)
    model.prepare()
    return wrap(model.requires_grad_(False).eval(), name=name)
