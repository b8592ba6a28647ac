"""Top-k / top-p on a GPU (issue 19): bit-equality and time of the truncated step.

    python benchmarks/truncation_gpu.py [--rows 256] [--out DIR]

On ``rows`` bf16 rows of LLaDA's vocabulary (126,464), T = 1 and T = 0.7:

1. the triton backend with ``top_p=0.95, top_k=50`` bit-equal to the reference (tokens and
   confidences), both orders;
2. device time per call (CUDA events, median of 20 after 3 warm-ups): plain ``sample_rows``, the
   truncated call, the cut alone (`kernels.sample.truncation_cut`: prepare, sort, count), the
   published samplers' sort-based torch code restated (Dream's ``top_p_logits`` then
   ``top_k_logits``, softmax, ``multinomial``), and FlashInfer's
   ``top_k_top_p_sampling_from_logits`` when FlashInfer is installed.
3. the confidence kinds (numerics.md §6a: ``confidence='dream'`` at T = 0 and 0.7, ``'llada2'``
   at 0.7, with the same truncation): bit-equal to the reference, and their time against
   ``confidence='llada'`` (``confidence_cases``).

Writes ``truncation_gpu.json`` to ``--out`` (default ``$OUT``, else benchmarks/results/).
Not measured yet (written without a GPU).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import torch

V = 126_464


def device_time(fn, warm: int = 3, reps: int = 20) -> float:
    """Median device milliseconds of one call of ``fn``."""
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def published_sort_based(logits: torch.Tensor, T: float, top_p: float, top_k: int) -> torch.Tensor:
    """Dream's order restated (temperature, top-p on the whole distribution, top-k, softmax,
    one multinomial draw): the sort-based baseline."""
    l = logits.float() / T
    s, idx = torch.sort(l, descending=True)
    cum = torch.softmax(s, -1).cumsum(-1)
    drop = cum > top_p
    drop[..., 1:] = drop[..., :-1].clone()
    drop[..., 0] = False
    l = l.masked_fill(torch.zeros_like(drop).scatter(-1, idx, drop), torch.finfo(l.dtype).min)
    l = l.masked_fill(l < torch.topk(l, top_k)[0][..., -1, None], torch.finfo(l.dtype).min)
    return torch.multinomial(torch.softmax(l, -1), 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--out", default=os.environ.get("OUT", str(Path(__file__).parent / "results")))
    args = ap.parse_args()
    from fastremask.kernels import sample as ks
    from fastremask.sampler import reference as ref
    from fastremask.sampler.contract import check_truncation
    from fastremask.sampler.numerics import tempered_scales

    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    logits = (torch.randn(args.rows, V, device=dev, generator=g) * 3).to(torch.bfloat16)
    r = torch.arange(args.rows, device=dev)
    out = {"rows": args.rows, "vocab": V, "card": torch.cuda.get_device_name(), "cases": []}
    for T in (1.0, 0.7):
        for order in ("top_k_first", "top_p_first"):
            tr = check_truncation(top_k=50, top_p=0.95, order=order)
            got = ks.sample_rows(logits, r, r, r, 1, temperature=T, remasking="low_confidence", truncation=tr)
            want = ref.sample_rows(logits, r, r, r, 1, temperature=T, remasking="low_confidence", truncation=tr)
            same = torch.equal(got.x0, want.x0) and torch.equal(got.confidence.view(torch.int32),
                                                                 want.confidence.view(torch.int32))
            case = {"T": T, "order": order, "bit_equal": same}
            case["plain_ms"] = device_time(lambda: ks.sample_rows(logits, r, r, r, 1, temperature=T,
                                                                  remasking="low_confidence"))
            case["truncated_ms"] = device_time(lambda: ks.sample_rows(logits, r, r, r, 1, temperature=T,
                                                                      remasking="low_confidence", truncation=tr))
            c_t = tempered_scales(T)[1]
            case["cut_only_ms"] = device_time(lambda: ks.truncation_cut(logits, r, c_t, tr))
            case["published_sort_based_ms"] = device_time(lambda: published_sort_based(logits, T, 0.95, 50))
            try:
                import flashinfer
                case["flashinfer_ms"] = device_time(lambda: flashinfer.sampling.top_k_top_p_sampling_from_logits(
                    logits.float() / T, 50, 0.95))
            except Exception as e:          # not installed, or another signature
                case["flashinfer"] = f"unavailable: {type(e).__name__}: {e}"[:200]
            print(case, flush=True)
            out["cases"].append(case)
    # The confidence kinds (numerics.md §6a, the SAMPLED flag): bit-equal to the reference, and
    # timed against confidence='llada' with the same truncation (at T = 0 'llada' has none).
    out["confidence_cases"] = []
    for T, kind, rule, order in ((0.0, "dream", "entropy", "top_p_first"), (0.7, "dream", "entropy", "top_p_first"),
                                 (0.0, "dream", "low_confidence", "top_p_first"),
                                 (0.7, "llada2", "low_confidence", "top_k_first")):
        tr = check_truncation(top_k=50, top_p=0.95, order=order)
        kw = dict(temperature=T, remasking=rule, truncation=tr, confidence=kind)
        got = ks.sample_rows(logits, r, r, r, 1, **kw)
        want = ref.sample_rows(logits, r, r, r, 1, **kw)
        same = torch.equal(got.x0, want.x0) and torch.equal(got.confidence.view(torch.int32),
                                                             want.confidence.view(torch.int32))
        plain = dict(kw, confidence="llada", truncation=tr if T > 0 else check_truncation())
        case = {"T": T, "confidence": kind, "rule": rule, "order": order, "bit_equal": same,
                "sampled_ms": device_time(lambda: ks.sample_rows(logits, r, r, r, 1, **kw)),
                "llada_ms": device_time(lambda: ks.sample_rows(logits, r, r, r, 1, **plain))}
        print(case, flush=True)
        out["confidence_cases"].append(case)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with open(Path(args.out) / "truncation_gpu.json", "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
