"""Tokens per second of `generate` with and without block KV caches, against LLaDA's sampler.

    python benchmarks/cache_speed.py                       # CPU: 6 layers, d_model 512, vocab 4096
    python benchmarks/cache_speed.py --quick               # a few seconds (the suite runs this)
    python benchmarks/cache_speed.py --device cuda --llada-8b --prompt 512 --gen 256 --block 32

The model is a random checkpoint in LLaDA's published layout (`fastremask.models.testing`),
loaded through the native path (`fastremask.models.load`); ``--tiny`` uses the demo
architecture instead. Every case is the same prompt, ``steps = gen`` (one token per model call)
unless ``--steps``; each is run once to warm up, then ``--rounds`` times, and the median is
reported. Random weights decide nothing about quality: accuracy per cache mode is measured on the
demo model by ``fastremask eval --cache`` (docs/cache.md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch


def build_model(args, folder: str):
    from fastremask import models

    if args.tiny:
        from fastremask.models.tiny import tiny_model

        m = tiny_model(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers,
                       n_heads=args.heads, d_ff=4 * args.d_model, max_len=args.prompt + args.gen)
        return m.to(args.device)
    from fastremask.models import testing

    if args.in_memory:
        return _in_memory(args)
    cfg = dict(d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, n_kv_heads=args.heads,
               mlp_hidden_size=args.mlp or int(8 / 3 * args.d_model) // 64 * 64,
               vocab_size=args.vocab, embedding_size=args.vocab, max_sequence_length=4096)
    path = testing.save_llada_checkpoint(folder, **cfg)
    return models.load(path, dtype=args.dtype, device=args.device)


def _in_memory(args):
    """The native LLaDA with random weights built on the device, no checkpoint written (the
    LLaDA-8B shape is 16 GB in bf16): the same model class `models.load` builds."""
    from fastremask import models
    from fastremask.models import native, testing
    from fastremask.models.native.common import parse_dtype

    raw = testing._llada_config(testing.llada_tokenizer(), torch.float32, dict(
        d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, n_kv_heads=args.heads,
        mlp_hidden_size=args.mlp or int(8 / 3 * args.d_model) // 64 * 64, vocab_size=args.vocab,
        embedding_size=args.vocab, mask_token_id=args.vocab - 1, eos_token_id=args.vocab - 2))
    model = native.LLaDAModel(native.llada_config(raw, "in memory"), device="meta")
    model = model.to_empty(device=args.device).to(parse_dtype(args.dtype, raw, "in memory"))
    g = torch.Generator(device=args.device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)                                          # the norms' weights
            else:
                p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5, generator=g)
    model.requires_grad_(False).eval()
    return models.wrap(model, mask_id=args.vocab - 1, eos_id=args.vocab - 2)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_case(fn, rounds: int, device) -> tuple:
    fn()                                                            # warm-up (and compilation)
    times = []
    for _ in range(rounds):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--mlp", type=int, default=None, help="MLP hidden size (default 8/3 d_model, rounded)")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--gen", type=int, default=128)
    p.add_argument("--block", type=int, default=32)
    p.add_argument("--steps", type=int, default=None, help="model-call budget (default: gen)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--backend", default="auto")
    p.add_argument("--threshold", type=float, default=0.9, help="the threshold-decoding cases' threshold")
    p.add_argument("--no-threshold", action="store_true", help="skip the threshold-decoding cases")
    p.add_argument("--tiny", action="store_true", help="the demo architecture instead of LLaDA's")
    p.add_argument("--llada-8b", action="store_true", help="LLaDA-8B's shape (a GPU; built in memory)")
    p.add_argument("--in-memory", action="store_true",
                   help="build the native model with random weights on the device, no checkpoint on disk")
    p.add_argument("--quick", action="store_true", help="tiny shapes, one round: a smoke run")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's; 1 is steadier on a busy machine)")
    p.add_argument("--json", default=None, metavar="PATH")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.llada_8b:
        args.layers, args.d_model, args.heads, args.mlp, args.vocab = 32, 4096, 32, 12288, 126464
        args.dtype = "bf16" if args.dtype == "fp32" else args.dtype
        args.in_memory = True
    if args.quick:
        args.layers, args.d_model, args.heads, args.vocab = 2, 64, 4, 256
        args.prompt, args.gen, args.block, args.rounds = 16, 16, 8, 1
    steps = args.steps or args.gen

    import fastremask
    from fastremask.sampler import llada

    with tempfile.TemporaryDirectory() as folder:
        model = build_model(args, folder)
        g = torch.Generator().manual_seed(0)
        prompt = torch.randint(0, args.vocab - 2, (args.batch, args.prompt), generator=g).to(args.device)
        base = dict(steps=steps, gen_length=args.gen, block_length=args.block, mask_id=model.mask_id,
                    seed=0, backend=args.backend)
        # each case returns its model calls: the trace's count (`ModelCall`); LLaDA's restated
        # loop calls the model once per step
        cases = [("llada (restated)", lambda: llada.generate(model, prompt, None, steps, args.gen, args.block,
                                                            mask_id=model.mask_id) is not None and steps)]
        for cache in (None, "prefix", "dual"):
            cases.append((f"fastremask cache={cache}", lambda c=cache: fastremask.generate(
                model, prompt, cache=c, return_trace=True, **base)[1].model_calls))
        for cache in () if args.no_threshold else (None, "dual"):
            cases.append((f"fastremask cache={cache} threshold={args.threshold}", lambda c=cache: fastremask.generate(
                model, prompt, cache=c, threshold=args.threshold, return_trace=True, **base)[1].model_calls))
        rows = []
        for name, fn in cases:
            calls = fn()
            med, times = time_case(fn, args.rounds, args.device)
            tok_s = args.batch * args.gen / med
            rows.append(dict(case=name, seconds=med, rounds=times, tokens_per_s=tok_s, model_calls=calls))
            print(f"{name:44s} {med * 1e3:9.1f} ms  {tok_s:8.1f} tok/s  {calls:4d} calls", flush=True)
        ref = next(r for r in rows if r["case"] == "fastremask cache=None")["seconds"]
        llada_s = rows[0]["seconds"]
        print()
        for r in rows[1:]:
            print(f"{r['case']:44s} {ref / r['seconds']:5.2f}x cache=None   {llada_s / r['seconds']:5.2f}x llada")
    meta = dict(command="python benchmarks/cache_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                machine=_cpu_name(), cpus=os.cpu_count(),
                torch=torch.__version__, device=args.device, threads=torch.get_num_threads(),
                shape=dict(layers=args.layers, d_model=args.d_model, heads=args.heads, vocab=args.vocab,
                           prompt=args.prompt, gen=args.gen, block=args.block, steps=steps, batch=args.batch,
                           dtype=args.dtype, model="tiny" if args.tiny else "llada (native)"))
    if torch.device(args.device).type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
