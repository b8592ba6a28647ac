"""What ``generate(..., logits_window=True)`` saves: logits memory, model-call time, generate time.

A tiny model (`fastremask.models.tiny`) with LLaDA-8B's vocabulary (126,464) stands in for LLaDA: its
body is cheap, so the output head and the logits dominate, which isolates what the mode
changes. Each mode runs in its own subprocess. Peak memory is measured above what is in use
before the timed calls (CUDA: max allocated; CPU: the peak RSS, VmHWM, reset through
/proc/self/clear_refs, so Linux only), once over the model calls alone and once over generate.

    python benchmarks/logits_window.py                          # CPU, prints a table
    python benchmarks/logits_window.py --json benchmarks/results/cpu-logits-window-2vcpu-shared.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024                         # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak(device) -> float:
    """Start a new peak-memory window; returns the memory in use now (MiB)."""
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    with open("/proc/self/clear_refs", "w") as f:      # Linux >= 4.0: "5" resets VmHWM
        f.write("5")
    return _status_mib("VmRSS")


def _peak(device) -> float:
    _sync(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return _status_mib("VmHWM")


def run_mode(args, window: bool) -> dict:
    from fastremask import SamplingConfig, run
    from fastremask.sampler.model_call import call_model, window_call
    from fastremask.models.tiny import tiny_model

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = tiny_model(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers, n_heads=4,
                       max_len=args.prompt + args.gen).to(device)
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, args.vocab - 1, (args.batch, args.prompt), generator=g).to(device)
    L, C = args.prompt + args.gen, args.block
    x = torch.cat([prompt, torch.full((args.batch, args.gen), model.mask_id, device=device)], 1)
    call = window_call(args.prompt, C) if window else call_model
    base = _reset_peak(device)

    # the model call alone (what the mode changes), median of --repeat
    times = []
    for _ in range(args.repeat + 1):
        _sync(device)
        t = time.perf_counter()
        logits = call(model, x, None)
        _sync(device)
        times.append(time.perf_counter() - t)
        shape = tuple(logits.shape)
        del logits
    call_s = statistics.median(times[1:])
    call_peak = _peak(device) - base


    # the whole generate (model calls + sampling), median of --repeat
    config = SamplingConfig(steps=args.steps, gen_length=args.gen, block_length=C, temperature=args.temperature,
                            logits_window=window)      # mask id: the model's
    base = _reset_peak(device)
    gen_times = []
    for _ in range(args.repeat):
        _sync(device)
        t = time.perf_counter()
        out = run(model, prompt, config, seed=0)
        _sync(device)
        gen_times.append(time.perf_counter() - t)
    res = {
        "mode": "window" if window else "full",
        "logits_shape": list(shape),
        "logits_mib": shape[0] * shape[1] * shape[2] * model.dtype.itemsize / 2**20,
        "model_call_s": call_s,
        "generate_s": statistics.median(gen_times),
        "model_call_peak_mib": call_peak,
        "generate_peak_mib": _peak(device) - base,
        "memory": "CUDA max allocated" if device.type == "cuda" else "peak RSS (VmHWM)",
        "tokens": out.tolist(),
    }
    return res


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} CPUs"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--vocab", type=int, default=126464)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt", type=int, default=480)
    p.add_argument("--gen", type=int, default=64)
    p.add_argument("--block", type=int, default=32)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--mode", choices=["full", "window"], help=argparse.SUPPRESS)   # child process
    args = p.parse_args(argv)
    if args.mode:
        print(json.dumps(run_mode(args, args.mode == "window")))
        return
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--json" in argv:
        i = argv.index("--json")
        argv = argv[:i] + argv[i + 2:]
    res = {}
    for mode in ("full", "window"):
        out = subprocess.run([sys.executable, __file__, *argv, "--mode", mode], check=True,
                             capture_output=True, text=True).stdout
        res[mode] = json.loads(out.strip().splitlines()[-1])
    same = res["full"].pop("tokens") == res["window"].pop("tokens")
    print(f"memory: {res['full']['memory']}, MiB above the memory in use before")
    print(f"{'':8s} {'logits shape':>18s} {'logits MiB':>10s} {'call peak':>10s} {'call s':>8s} "
          f"{'generate peak':>13s} {'generate s':>10s}")
    for mode in ("full", "window"):
        r = res[mode]
        print(f"{mode:8s} {str(tuple(r['logits_shape'])):>18s} {r['logits_mib']:10.1f} {r['model_call_peak_mib']:10.1f} "
              f"{r['model_call_s']:8.3f} {r['generate_peak_mib']:13.1f} {r['generate_s']:10.3f}")
    print(f"same tokens: {same}")
    if args.json:
        dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else _cpu_name()
        info = {"command": "python benchmarks/logits_window.py " + " ".join(sys.argv[1:]),
                "device": dev, "torch": torch.__version__, "threads": args.threads,
                "args": {k: v for k, v in vars(args).items() if k not in ("json", "mode")},
                "same_tokens": same, **res}
        with open(args.json, "w") as f:
            json.dump(info, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
