"""Block diffusion on a GPU (issue 22): LLaDA2-mini's shape, the exact block cache against the
published full-window recompute, batch 1 and 8, and the sampler's share of a step.

    python benchmarks/block_models_gpu.py --device cuda --json out.json   # LLaDA2-mini shape, bf16
    python benchmarks/block_models_gpu.py --quick                         # CPU, tiny shape, seconds

The model is fastremask's native `LLaDA2Model` (the class `models.load` builds for
`LLaDA2MoeModelLM`) with LLaDA2.0-mini's published `config.json` shape (inclusionAI/dFactory,
`configs/model_configs/llada2_mini/config.json`: 20 layers, hidden 2048, 16 heads of 128 with 4
key/value heads, the first layer dense (5120), then 256 experts of 512, top-8 in 4 of 8 groups,
one shared expert, vocabulary 157,184), random weights built on the device in memory (16B
parameters, 32 GB in bf16: no checkpoint is written). Mask id 156895, block 32.

Per batch size and cache mode (`None`: the window ``0:end of the current block`` at every step,
as the published `generate`; ``"block"``: the exact cache), one warm-up run, then ``--rounds``
timed runs (synchronised), median; tokens/s = batch x gen / time; the tokens of the two modes
are checked equal (``--cfg S``: with classifier-free guidance, each call on 2B rows). One more instrumented run times each model call (synchronised before and
after), so ``1 - model time / step time`` is the share of a step spent outside the model: the
sampler, the loop and the host.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

MINI = dict(num_hidden_layers=20, hidden_size=2048, intermediate_size=5120, moe_intermediate_size=512,
            num_attention_heads=16, num_key_value_heads=4, head_dim=128, num_experts=256,
            num_experts_per_tok=8, n_group=8, topk_group=4, num_shared_experts=1, first_k_dense_replace=1,
            vocab_size=157184, max_position_embeddings=16384)
MINI_IDS = dict(mask_id=156895, eos_id=156892)
QUICK = dict(num_hidden_layers=2, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
             num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=8, num_experts_per_tok=2,
             n_group=4, topk_group=2, num_shared_experts=1, first_k_dense_replace=1)


def build(shape: dict, device: str, dtype: torch.dtype):
    """The native LLaDA2 with random weights made on ``device`` (no checkpoint on disk)."""
    from fastremask.models import native, testing

    raw = testing._llada2_config(testing.llada2_tokenizer(), dtype, dict(shape))
    model = native.LLaDA2Model(native.llada2_config(raw, "in memory"), device="meta")
    model = model.to_empty(device=device).to(dtype)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)                         # norms (and the router's expert bias: equal)
            else:
                p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5, generator=g)
        model.rotary = model.rotary.to(device) if hasattr(model.rotary, "to") else model.rotary
    model.prepare()
    return model.requires_grad_(False).eval()


class Timed(torch.nn.Module):
    """Forwards the block protocol; optionally times each call (synchronised)."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.seconds, self.calls, self.timing = model, 0.0, 0, False
        for name in ("attention", "block_length", "device", "config"):
            setattr(self, name, getattr(model, name))

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def block_logits(self, *a, **kw):
        self.calls += 1
        if not self.timing:
            return self.inner.block_logits(*a, **kw)
        self._sync()
        t = time.perf_counter()
        out = self.inner.block_logits(*a, **kw)
        self._sync()
        self.seconds += time.perf_counter() - t
        return out

    def forward(self, *a, **kw):
        return self.inner(*a, **kw)


def measure(model, prompt, config, rounds: int) -> dict:
    from fastremask.sampler.loop import run

    m = Timed(model)
    sync = m._sync
    with torch.no_grad():
        out = run(m, prompt, config, seed=0)                         # warm-up (and the tokens)
        calls = m.calls
        times = []
        for _ in range(rounds):
            sync()
            t = time.perf_counter()
            run(m, prompt, config, seed=0)
            sync()
            times.append(time.perf_counter() - t)
        m.timing, m.seconds = True, 0.0
        sync()
        t = time.perf_counter()
        run(m, prompt, config, seed=0)
        sync()
        total = time.perf_counter() - t
    return dict(seconds=statistics.median(times), rounds=times, calls=calls, tokens=out,
                outside_model_share=1.0 - m.seconds / total)


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
        shape, args.prompt, args.gen, args.rounds, args.batch = QUICK, 8, 64, 1, [1, 2]
        warnings.filterwarnings("ignore", message="block_length=")
    else:
        shape = MINI
    model = build(shape, args.device, dtype)
    V = model.config.vocab_size if hasattr(model.config, "vocab_size") else shape.get("vocab_size")
    mask_id = MINI_IDS["mask_id"] if not args.quick else model.config.vocab_size - 1
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
