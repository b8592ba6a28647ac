"""The native block-diffusion forwards (SDAR, LLaDA2 MoE): the exact block cache against the
published full-window recompute, and the MoE's grouped products against the loop over experts.

    python benchmarks/native_block_models.py            # CPU, 1 thread, prompt 128, gen 256
    python benchmarks/native_block_models.py --quick    # seconds: a check that it runs

The models are random checkpoints in the published layouts (`fastremask.models.testing`),
loaded by the native loader, fp32, shapes scaled down for a small CPU (printed with the
results):

* ``sdar``: SDAR's Qwen3 layers (per-head q/k norm, GQA 4:2 heads of 64), block 4;
* ``llada2``: LLaDA2-mini's layers (fused QKV, partial rotary, GQA 4:1 heads of 64, the first
  layer dense, then a mixture of 32 experts, top-4 in 4 of 8 groups, one shared expert), block 32.

``cache=None`` runs the window ``0:end of the current block`` at every step (the published
LLaDA2 ``generate``); ``cache="block"`` the current block against the cached keys (each block's
first call also commits the block before). Both run the same sampler (``threshold 0.95``, at
least the schedule's count per step, as LLaDA2 and SDAR's dynamic strategy do); the tokens are
checked equal. Each case runs once to warm up, then ``--rounds`` times; the median is reported.
The MoE line times one mixture-of-experts layer on a block of 32 tokens, both paths, min of
``--rounds`` after a warm-up, and checks their outputs equal.
"""
from __future__ import annotations

import argparse
import os
import warnings
import platform
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), HERE]        # the checkout, and benchmarks/ for block_timing
from block_timing import add_run_arguments, cells, time_modes  # noqa: E402


def shapes(quick: bool) -> dict:
    if quick:
        common = dict(hidden_size=32, num_attention_heads=4, head_dim=8, num_hidden_layers=2, vocab_size=64)
        return {"sdar": dict(common, num_key_value_heads=2, intermediate_size=64),
                "llada2": dict(common, num_key_value_heads=1, intermediate_size=64, moe_intermediate_size=16,
                               num_experts=8, num_experts_per_tok=2, n_group=4, topk_group=2)}
    common = dict(hidden_size=256, num_attention_heads=4, head_dim=64, num_hidden_layers=4, vocab_size=4096)
    return {"sdar": dict(common, num_key_value_heads=2, intermediate_size=768),
            "llada2": dict(common, num_key_value_heads=1, intermediate_size=640, moe_intermediate_size=64,
                           num_experts=32, num_experts_per_tok=4, n_group=8, topk_group=4)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=["sdar", "llada2"], nargs="*", default=["sdar", "llada2"])
    add_run_arguments(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.prompt, args.gen, args.rounds = 8, 32, 1
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="block_length=")     # the quick llada2 runs blocks of 8
    from fastremask.models import native, testing
    from fastremask.sampler.config import SamplingConfig

    print(f"# native block models: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s); prompt {args.prompt}, gen {args.gen}, fp32, threshold 0.95")
    print("| family | shape | block | recompute s/answer | cache s/answer | ratio | model calls/answer "
          "| positions run, recompute / cache | tokens equal |")
    print("|---|---|---|---|---|---|---|---|---|")
    moe_line = None
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.family:
            shape = shapes(args.quick)[family]
            save = testing.save_sdar_checkpoint if family == "sdar" else testing.save_llada2_checkpoint
            model = native.from_folder(save(os.path.join(tmp, family), **shape))
            C = model.block_length if not args.quick or family == "sdar" else 8
            V = shape["vocab_size"]
            g = torch.Generator().manual_seed(0)
            prompt = torch.randint(0, V - 1, (1, args.prompt), generator=g)
            res = time_modes(model, prompt, lambda cache: SamplingConfig(
                steps=args.gen, gen_length=args.gen, block_length=C, mask_id=V - 1, cache=cache, backend="torch",
                threshold=0.95, threshold_floor="schedule"), args.rounds)
            desc = (f"d {shape['hidden_size']}, {shape['num_attention_heads']}x{shape['head_dim']} heads "
                    f"({shape['num_key_value_heads']} kv), {shape['num_hidden_layers']} layers, vocab {V}")
            if family == "llada2":
                desc += (f", {shape['num_experts']} experts of {shape['moe_intermediate_size']} "
                         f"top-{shape['num_experts_per_tok']}")
            print(f"| {family} | {desc} | {C} | {cells(res)}", flush=True)
            if family == "llada2":
                moe = model.moe_layers()[0]
                x = torch.randn(1, 32, shape["hidden_size"], generator=g)
                best, outs = {}, {}
                for grouped in (True, False):
                    moe.use_grouped = grouped
                    with torch.no_grad():
                        outs[grouped] = moe(x)
                        ts = []
                        for _ in range(max(args.rounds, 3)):
                            t = time.perf_counter()
                            moe(x)
                            ts.append(time.perf_counter() - t)
                    best[grouped] = min(ts)
                moe.use_grouped = None
                moe_line = (f"MoE layer, 32 tokens, {shape['num_experts']} experts of {shape['moe_intermediate_size']}, "
                            f"top-{shape['num_experts_per_tok']}: grouped_mm {best[True] * 1e3:.2f} ms, loop over "
                            f"experts {best[False] * 1e3:.2f} ms ({best[False] / best[True]:.2f}x), outputs equal: "
                            f"{bool(torch.equal(outs[True], outs[False]))}")
    if moe_line:
        print(moe_line)


if __name__ == "__main__":
    main()
