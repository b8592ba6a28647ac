"""Roofline of the Triton kernels on a GPU, and the whole step against LLaDA's and torch's.

    python benchmarks/bench_kernels_gpu.py [--out DIR] [--quick]

Sections (each in its own try/except: one failure is recorded and the rest still run; the
JSON is rewritten after every section, so a timeout keeps what finished):

1. ``machine``: card, torch, triton, commit, device-to-device copy bandwidth measured now
   (read + write bytes over time, best of 10; the ceiling the kernels are compared with).
2. ``rows``: `fastremask.kernels.sample_rows` (the row kernel, one launch) on ``rows`` logits rows
   of vocab 126,464: device time from CUDA-graph replays (no launch overhead), effective GB/s
   for the bytes it must read (``rows * V * bytes``, x2 with CFG) and the fraction of the copy
   bandwidth; also the host-inclusive eager time of one call.
3. ``tune``: chunks per program x warps for a few shapes (results never depend on them), so
   the launch heuristic can be checked against the best measured configuration.
4. ``step``: one whole step at prompt 512, gen 512, block 32 (benchmarks/cases.py shapes):
   LLaDA-style (`fastremask.sampler.llada.llada_step`), the torch backend, the triton backend as the
   generate loop calls it, and the triton step fused for graphs (sample_rows + select with the
   x write, no host sync) replayed from a CUDA graph.

Writes ``kernels_gpu.json`` and ``kernels_gpu.txt`` to ``--out`` (default ``$OUT``, else
``benchmarks/results/``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

V = 126_464
MASK_ID = 126_336
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


def log(msg: str) -> None:
    print(f"[bench_kernels_gpu {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def graph_time(fn, reps: int = 10, replays: int = 20) -> float:
    """Device seconds per call of `fn`: `reps` calls captured in one CUDA graph, replayed."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()                                   # compile and warm up off the capture
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3 / reps)
    del g
    return statistics.median(times)


def wall_time(fn, iters: int = 20, warmup: int = 3) -> float:
    """Host-inclusive seconds per call (synchronised after each), median."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _row_inputs(rows: int, dtype: str, cfg: bool, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    lg = torch.empty(rows, V, dtype=DTYPES[dtype], device="cuda")
    un = torch.empty_like(lg) if cfg else None
    for t in (lg, un):
        if t is not None:
            for i in range(0, rows, 64):
                t[i:i + 64].copy_(torch.randn(min(64, rows - i), V, generator=g, device="cuda") * 3)
    idx = torch.arange(rows, device="cuda")
    return lg, un, idx, idx + 12345, idx % 512


def section_machine(res: dict) -> None:
    import cases
    dev = torch.device("cuda")
    res["machine"] = {"device": torch.cuda.get_device_name(dev), **cases.versions(),
                      "copy_gbps": cases.copy_bandwidth(dev),
                      "capability": list(torch.cuda.get_device_capability(dev))}


def section_rows(res: dict, quick: bool) -> None:
    from fastremask.kernels import sample_rows
    ceiling = res.get("machine", {}).get("copy_gbps")
    out = res.setdefault("rows", [])
    sizes = (32, 256) if quick else (32, 256, 1024)
    grid = [(r, d, T, cfg) for r in sizes for d in ("bf16", "fp32") for T in (0.0, 1.0) for cfg in (False, True)]
    grid += [(r, "bf16", 0.7, False) for r in sizes]       # T != 1: the tempered weights' second term
    for rows, dtype, T, cfg in grid:
        name = f"rows{rows}-{dtype}-T{T:g}-cfg{int(cfg)}"
        try:
            lg, un, idx, seeds, pos = _row_inputs(rows, dtype, cfg)
            for remasking in (("low_confidence",) if quick else ("low_confidence", "entropy")):
                kw = dict(temperature=T, remasking=remasking, cfg_scale=1.0 if cfg else 0.0, uncond_logits=un)
                fn = lambda: sample_rows(lg, idx, seeds, pos, 3, **kw)  # noqa: E731
                dev_s = graph_time(fn)
                host_s = wall_time(fn)
                nbytes = rows * V * lg.element_size() * (2 if cfg else 1)
                gbps = nbytes / dev_s / 1e9
                out.append({"case": f"{name}-{remasking}", "rows": rows, "dtype": dtype, "temperature": T,
                            "cfg": cfg, "remasking": remasking, "bytes": nbytes, "device_us": dev_s * 1e6,
                            "eager_us": host_s * 1e6, "gbps": gbps,
                            "fraction_of_copy_bw": gbps / ceiling if ceiling else None})
                frac = f" ({gbps / ceiling:.2f} of copy)" if ceiling else ""
                log(f"rows {name}-{remasking}: {dev_s * 1e6:8.1f} us device, {host_s * 1e6:8.1f} us eager, "
                    f"{gbps:7.1f} GB/s{frac}")
            del lg, un
        except Exception as e:  # noqa: BLE001
            out.append({"case": name, "error": f"{type(e).__name__}: {e}"})
            log(f"rows {name} FAILED: {e}")


def section_tune(res: dict, quick: bool) -> None:
    from fastremask.kernels import sample_rows
    from fastremask.kernels.sample import _launch_config
    out = res.setdefault("tune", [])
    shapes = [(32, 0.0), (256, 0.0), (32, 1.0), (256, 1.0)]
    for rows, T in shapes:
        lg, un, idx, seeds, pos = _row_inputs(rows, "bf16", False)
        n_chunks = -(-V // 2048)
        default = _launch_config(rows, n_chunks, None, None)
        best = None
        for warps in ((4, 8) if quick else (2, 4, 8, 16)):
            for cpp in ((1, 4) if quick else (1, 2, 4, 8, 16, 62)):
                try:
                    fn = lambda: sample_rows(lg, idx, seeds, pos, 3, temperature=T,  # noqa: E731
                                             remasking="low_confidence", chunks_per_prog=cpp, num_warps=warps)
                    t = graph_time(fn, reps=5, replays=10)
                    out.append({"rows": rows, "temperature": T, "num_warps": warps, "chunks_per_prog": cpp,
                                "device_us": t * 1e6})
                    if best is None or t < best[0]:
                        best = (t, warps, cpp)
                except Exception as e:  # noqa: BLE001
                    out.append({"rows": rows, "temperature": T, "num_warps": warps, "chunks_per_prog": cpp,
                                "error": f"{type(e).__name__}: {e}"})
        try:
            t_def = graph_time(lambda: sample_rows(lg, idx, seeds, pos, 3, temperature=T,
                                                   remasking="low_confidence"), reps=5, replays=10)
        except Exception:  # noqa: BLE001
            t_def = None
        out.append({"rows": rows, "temperature": T, "summary": True, "default": list(default),
                    "default_us": t_def and t_def * 1e6, "best_us": best and best[0] * 1e6,
                    "best_warps": best and best[1], "best_chunks_per_prog": best and best[2]})
        log(f"tune rows={rows} T={T:g}: default (cpp, splits, warps) {default}: "
            f"{'-' if t_def is None else f'{t_def * 1e6:.1f}'} us; best (s, warps, cpp) {best}")
        del lg, un


def section_step(res: dict, quick: bool) -> None:
    import cases
    from fastremask.kernels import sample_rows, select
    ceiling = res.get("machine", {}).get("copy_gbps")
    out = res.setdefault("step", [])
    variants = [(d, T, cfg) for d in ("bf16",) for T in (0.0, 1.0) for cfg in (0.0, 1.0)]
    if not quick:
        variants += [("fp32", 0.0, 0.0), ("fp32", 1.0, 0.0)]
    for dtype, T, cfg in variants:
        case = cases.StepCase(dtype=dtype, prompt=512, gen=512, block=32, batch=1, temperature=T, cfg=cfg)
        try:
            inp = cases.step_inputs(case, "cuda")
        except Exception as e:  # noqa: BLE001
            out.append({"case": case.name, "error": f"inputs: {type(e).__name__}: {e}"})
            continue
        row = {"case": case.name, "bytes": case.bytes_moved}
        for backend in ("llada", "torch", "triton"):
            try:
                fn = cases.step_callable(backend, inp)
                row[f"{backend}_us"] = wall_time(fn, iters=10 if backend == "llada" else 20, warmup=2) * 1e6
            except Exception as e:  # noqa: BLE001
                row[f"{backend}_error"] = f"{type(e).__name__}: {e}"
        try:   # triton, fused for graphs: no host sync, select writes x in place
            B, L, C = case.batch, case.length, case.block
            flat = inp.logits.view(-1, case.vocab)
            cond, uncond = (flat[:B * L], flat[B * L:]) if cfg else (flat, None)
            cand = torch.ones(B, C, dtype=torch.bool, device="cuda")
            dfr = torch.zeros_like(cand)
            active = cand.reshape(-1)
            x = inp.x.clone()

            def fused():
                s = sample_rows(cond, inp.rows, inp.seeds, inp.positions, 0, temperature=T,
                                remasking=case.remasking, cfg_scale=cfg, uncond_logits=uncond, active=active)
                select(s.confidence.view(B, C), cand, dfr, inp.k, None, x=x, x0=s.x0.view(B, C),
                       start=inp.block_start)
            row["triton_fused_graph_us"] = graph_time(fused) * 1e6
            row["triton_fused_eager_us"] = wall_time(fused) * 1e6
        except Exception as e:  # noqa: BLE001
            row["triton_fused_error"] = f"{type(e).__name__}: {e}"
        for k in ("llada_us", "torch_us", "triton_us", "triton_fused_graph_us"):
            if k in row and ceiling:
                row[k.replace("_us", "_fraction_of_copy_bw")] = case.bytes_moved / (row[k] / 1e6) / 1e9 / ceiling
        if "llada_us" in row:
            for k in ("torch_us", "triton_us", "triton_fused_graph_us"):
                if k in row:
                    row[f"speedup_vs_llada_{k[:-3]}"] = row["llada_us"] / row[k]
        out.append(row)
        log(f"step {case.name}: " + ", ".join(f"{k}={v:.1f}" for k, v in row.items()
                                               if k.endswith("_us")))
        del inp
        torch.cuda.empty_cache()


def table(res: dict) -> str:
    m = res.get("machine", {})
    lines = [f"card: {m.get('device')} (sm_{''.join(map(str, m.get('capability', [])))}) | torch {m.get('torch')}"
             f" | triton {m.get('triton')} | commit {m.get('commit')}",
             f"device-to-device copy bandwidth (measured): {m.get('copy_gbps', float('nan')):.0f} GB/s", "",
             "sample_rows (row kernel, one launch), vocab 126,464; device time from CUDA-graph replay",
             f"{'case':42} {'device us':>10} {'eager us':>9} {'GB/s':>8} {'of copy':>8}"]
    for r in res.get("rows", []):
        if "error" in r:
            lines.append(f"{r['case']:42} ERROR {r['error'][:80]}")
        else:
            frac = r.get("fraction_of_copy_bw")
            lines.append(f"{r['case']:42} {r['device_us']:10.1f} {r['eager_us']:9.1f} {r['gbps']:8.1f} "
                         f"{(frac if frac is not None else float('nan')):8.2f}")
    summ = [t for t in res.get("tune", []) if t.get("summary")]
    if summ:
        lines += ["", "launch config (bf16, low_confidence): default vs best measured",
                  f"{'rows':>5} {'T':>4} {'default (cpp,splits,warps)':>28} {'us':>8} {'best warps,cpp':>15} {'us':>8}"]
        for t in summ:
            lines.append(f"{t['rows']:5} {t['temperature']:4g} {str(t['default']):>28} "
                         f"{(t['default_us'] or float('nan')):8.1f} {str((t['best_warps'], t['best_chunks_per_prog'])):>15} "
                         f"{(t['best_us'] or float('nan')):8.1f}")
    if res.get("step"):
        lines += ["", "one step, prompt 512, gen 512, block 32, batch 1 (wall time, synchronised; fused: graph replay)",
                  f"{'case':34} {'llada us':>10} {'torch us':>10} {'triton us':>10} {'fused us':>9} {'x llada':>8}"]
        for r in res["step"]:
            f = lambda k: f"{r[k]:10.1f}" if k in r else f"{'-':>10}"  # noqa: E731
            sp = r.get("speedup_vs_llada_triton_fused_graph") or r.get("speedup_vs_llada_triton")
            lines.append(f"{r['case']:34} {f('llada_us')} {f('torch_us')} {f('triton_us')} "
                         f"{f('triton_fused_graph_us')[1:]} {(sp or float('nan')):8.1f}")
            errs = [f"{k}: {v[:100]}" for k, v in r.items() if k.endswith("error")]
            lines += [f"    {e}" for e in errs]
    if res.get("errors"):
        lines += ["", "section errors:"] + [f"  {k}: {v.splitlines()[-1] if v else v}" for k, v in res["errors"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or str(HERE / "results"))
    ap.add_argument("--quick", action="store_true", help="fewer cases (a smoke run)")
    ap.add_argument("--sections", default="machine,rows,step,tune")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        log("no CUDA device: nothing to measure")
        return 2
    res: dict = {"errors": {}}
    sections = {"machine": lambda: section_machine(res), "rows": lambda: section_rows(res, args.quick),
                "tune": lambda: section_tune(res, args.quick), "step": lambda: section_step(res, args.quick)}
    for name in args.sections.split(","):
        log(f"section {name}")
        t0 = time.time()
        try:
            sections[name]()
        except Exception:  # noqa: BLE001 - keep going; the trace is in the JSON
            res["errors"][name] = traceback.format_exc()
            log(f"section {name} FAILED:\n{res['errors'][name]}")
        res.setdefault("section_seconds", {})[name] = round(time.time() - t0, 1)
        (out / "kernels_gpu.json").write_text(json.dumps(res, indent=1, default=str))
        (out / "kernels_gpu.txt").write_text(table(res))
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
