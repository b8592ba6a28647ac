"""Block diffusion on a GPU (issue 22): LLaDA2-mini's shape, the exact block cache against the
published full-window recompute, batch 1 and 8, and the sampler's share of a step.

    python benchmarks/block_models_gpu.py --device cuda --json out.json   # LLaDA2-mini shape, bf16
    python benchmarks/block_models_gpu.py --quick                         # CPU, tiny shape, seconds

The model is fastremask's native `LLaDA2Model` (the class `models.load` builds for
`LLaDA2MoeModelLM`) with LLaDA2.0-mini's published `config.json` shape (inclusionAI/dFactory,
`configs/model_configs/llada2_mini/config.json`; `fastremask.tools.bench.BLOCK_SIZES`: 20 layers, hidden 2048, 16 heads of 128 with 4
key/value heads, the first layer dense (5120), then 256 experts of 512, top-8 in 4 of 8 groups,
one shared expert, vocabulary 157,184), random weights built on the device in memory (16B
parameters, 32 GB in bf16: no checkpoint is written). Mask id 156895, block 32.

Per batch size and cache mode (`None`: the window ``0:end of the current block`` at every step,
as the published `generate`; ``"block"``: the exact cache), one warm-up run, then ``--rounds``
timed runs (synchronised), median; tokens/s = batch x gen / time; the tokens of the two modes
are checked equal (benchmarks/block_timing.py; the model calls are the trace's; ``--cfg S``: with
classifier-free guidance, each call on 2B rows). One more run
times each model call (`fastremask.tools.profile.Phases(timing=True)`: synchronised before and
after), so ``1 - model time / step time`` is the share of a step spent outside the model: the
sampler, the loop and the host.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), HERE]        # the checkout, and benchmarks/ for block_timing
from block_timing import time_modes  # noqa: E402

# the shape fields the JSON records (the model's config.json, `fastremask.tools.bench.BLOCK_SIZES`)
SHAPE_FIELDS = ("num_hidden_layers", "hidden_size", "intermediate_size", "moe_intermediate_size",
                "num_attention_heads", "num_key_value_heads", "head_dim", "num_experts", "num_experts_per_tok",
                "n_group", "topk_group", "num_shared_experts", "first_k_dense_replace", "vocab_size")


def build(size: str, device: str, dtype: torch.dtype):
    """The native LLaDA2 with random weights made on ``device`` (no checkpoint on disk):
    `fastremask.tools.bench.random_block_model` (``size`` "full": LLaDA2.0-mini's shape)."""
    from fastremask.tools.bench import random_block_model

    return random_block_model("llada2", device, size=size, dtype=dtype, max_fraction=0.9)


def measure(model, prompt, config, rounds: int) -> dict:
    """`block_timing.time_modes`' loop for this mode, then one more run with the model phase
    timed (`fastremask.tools.profile.Phases`, synchronised around each model call)."""
    from fastremask.sampler.loop import run
    from fastremask.tools.profile import Phases

    device = prompt.device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    mode = time_modes(model, prompt, lambda cache: config, rounds, sync, modes=(config.cache,))[config.cache]
    with torch.no_grad(), Phases(timing=True, device=device) as ph:
        sync()
        t = time.perf_counter()
        run(model, prompt, config, seed=0)
        sync()
        total = time.perf_counter() - t
    return dict(seconds=mode.seconds, rounds=mode.rounds, calls=mode.calls, tokens=mode.tokens,
                outside_model_share=1.0 - ph.seconds["model"] / total)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="default: bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--cfg", type=float, default=0.0,
                    help="classifier-free guidance scale (LLaDA's: 2B rows per call; the cache keeps both halves)")
    ap.add_argument("--quick", action="store_true", help="a tiny shape on the CPU (a check that it runs)")
    ap.add_argument("--json", default=None, metavar="PATH")
    args = ap.parse_args(argv)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, None: None}[args.dtype]
    if dtype is None:
        dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    from fastremask.sampler.config import SamplingConfig

    if args.quick:
        args.prompt, args.gen, args.rounds, args.batch = 8, 64, 1, [1, 2]
        warnings.filterwarnings("ignore", message="block_length=")
    model = build("tiny" if args.quick else "full", args.device, dtype)
    V, mask_id = model.config.vocab_size, model.mask_id
    shape = {k: getattr(model.config, k) for k in SHAPE_FIELDS}
    block = 32 if not args.quick else 8
    g = torch.Generator().manual_seed(0)
    rows, meta = [], dict(command="python benchmarks/block_models_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv),
                          torch=torch.__version__, machine=platform.machine(), device=args.device,
                          dtype=str(dtype), shape=shape, prompt=args.prompt, gen=args.gen, block=block,
                          cfg_scale=args.cfg)
    if args.device.startswith("cuda"):
        meta["gpu"] = torch.cuda.get_device_name()
    print(f"# LLaDA2 {'tiny' if args.quick else 'mini'} shape, {dtype}, {args.device}; prompt {args.prompt}, "
          f"gen {args.gen}, block {block}, threshold {args.threshold} (at least the schedule's count)"
          + (f", cfg_scale {args.cfg}" if args.cfg else ""))
    print("| batch | cache | s/run | tokens/s | model calls | outside the model | tokens equal to recompute |")
    print("|---|---|---|---|---|---|---|")
    for batch in args.batch:
        prompt = torch.randint(0, min(V, mask_id) - 8, (batch, args.prompt), generator=g).to(args.device)
        base = None
        for cache in (None, "block"):
            config = SamplingConfig(steps=args.gen, gen_length=args.gen, block_length=block, mask_id=mask_id,
                                    cache=cache, threshold=args.threshold, threshold_floor="schedule",
                                    cfg_scale=args.cfg)
            r = measure(model, prompt, config, args.rounds)
            same = None if base is None else bool(torch.equal(base, r["tokens"]))
            base = r["tokens"] if base is None else base
            tps = batch * args.gen / r["seconds"]
            rows.append(dict(batch=batch, cache=cache, seconds=r["seconds"], rounds=r["rounds"], tokens_per_s=tps,
                             calls=r["calls"], outside_model_share=r["outside_model_share"], tokens_equal=same))
            print(f"| {batch} | {cache} | {r['seconds']:.3f} | {tps:.1f} | {r['calls']} | "
                  f"{r['outside_model_share']:.1%} | {'' if same is None else same} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
