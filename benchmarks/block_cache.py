"""The exact block cache against the published full-window recompute, on block-causal models.

    python benchmarks/block_cache.py                 # CPU, 1 thread: SDAR- and LLaDA2-mini-shaped
    python benchmarks/block_cache.py --quick         # seconds: a check that it runs

Both cases run the same sampler on the same random block-causal model (the tiny transformer
with ``attention="block_causal"``, `fastremask.models.tiny`; fp32): ``cache=None`` recomputes
the whole window ``0:end of the current block`` at every step with the block-causal mask, as
the published LLaDA2 ``generate`` does; ``cache="block"`` keeps the prompt's and every finished
block's keys and values and runs the current block only (docs/cache.md). The tokens are
checked equal; the model calls per answer and the positions they ran are the trace's
(`fastremask.Trace.model_calls`, `Trace.positions`; benchmarks/block_timing.py). Shapes (``--shape``):

* ``sdar``: block 4, like SDAR / TraDo (by default d_model 256, 4 heads of 64, 4 layers, vocab 4096);
* ``llada2``: block 32, like LLaDA2.x-mini (same state, block 32).

Modes: ``threshold 0.95`` (LLaDA2's default: ``threshold_floor='schedule'``, one step per
position at most) and ``editing`` (LLaDA2.1's Q mode: threshold 0.7, edit_threshold 0.5,
``max_post_edit_steps`` 16, ``force_editing``: a random model was not trained for it). Each case
runs once to warm up, then ``--rounds`` times; the median is reported, and for the median
round where its time went: the model's layers, its final norm and output head (the same work
in both modes: the logits of the block only), and the rest (the sampler and the loop, also the
same in both), with the bound these shared costs put on the end-to-end ratio.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), HERE]        # the checkout, and benchmarks/ for block_timing
from block_timing import add_run_arguments, cells, time_modes  # noqa: E402

SHAPES = {"sdar": 4, "llada2": 32}


class Split(torch.nn.Module):
    """The model, timing its calls: ``model_s`` the seconds inside ``block_logits``, ``head_s``
    those in its final norm and output head (forward hooks); the rest of an answer's time is the
    sampler and the loop. A `block_timing.time_modes` probe."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        for name in ("attention", "block_length", "mask_id", "device", "config"):
            setattr(self, name, getattr(model, name))
        self.token_editing = False
        self.model_s = self.head_s = 0.0
        self._t = 0.0

        def start(*_):
            self._t = time.perf_counter()

        def stop(*_):
            self.head_s += time.perf_counter() - self._t

        self._hooks = (model.norm.register_forward_pre_hook(start), model.head.register_forward_hook(stop))

    def reset(self):
        self.model_s = self.head_s = 0.0

    def read(self, seconds: float) -> tuple:
        """``(layers, head, rest)`` seconds of the round just timed."""
        return self.model_s - self.head_s, self.head_s, seconds - self.model_s

    def close(self):
        for h in self._hooks:
            h.remove()

    def block_logits(self, input_ids, *a, **kw):
        t = time.perf_counter()
        out = self.inner.block_logits(input_ids, *a, **kw)
        self.model_s += time.perf_counter() - t
        return out

    def forward(self, *a, **kw):
        return self.inner(*a, **kw)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=list(SHAPES), nargs="*", default=list(SHAPES))
    add_run_arguments(ap)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=4096)
    args = ap.parse_args(argv)
    if args.quick:
        args.prompt, args.gen, args.d_model, args.heads, args.layers, args.vocab, args.rounds = 8, 32, 32, 2, 2, 64, 1
    torch.set_num_threads(args.threads)
    from fastremask.models.tiny import tiny_model
    from fastremask.sampler.config import SamplingConfig

    print(f"# block cache vs full-window recompute: {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {args.threads} thread(s); prompt {args.prompt}, gen {args.gen}, "
          f"d_model {args.d_model}, {args.heads} heads, {args.layers} layers, vocab {args.vocab}, fp32")
    print("| shape | block | mode | recompute s/answer | cache s/answer | ratio | model calls/answer "
          "| positions run, recompute / cache | tokens equal |")
    print("|---|---|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, args.vocab - 1, (1, args.prompt), generator=g)
    split = []
    for shape in args.shape:
        C = SHAPES[shape]
        model = tiny_model(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads,
                           max_len=args.prompt + args.gen + C, attention="block_causal", block_length=C)
        modes = {
            "threshold 0.95": dict(threshold=0.95, threshold_floor="schedule"),
            "editing (0.7 / 0.5)": dict(threshold=0.7, threshold_floor="schedule", edit_threshold=0.5,
                                        max_post_edit_steps=16, force_editing=True),
        }
        for mode, kw in modes.items():
            split_model = Split(model)
            res = time_modes(split_model, prompt, lambda cache: SamplingConfig(
                steps=args.gen, gen_length=args.gen, block_length=C, mask_id=model.mask_id, cache=cache,
                backend="torch", **kw), args.rounds, probe=split_model)
            split_model.close()
            print(f"| {shape} | {C} | {mode} | {cells(res)}", flush=True)
            r, c = res[None], res["block"]
            pr, pc = (m.parts[sorted(range(args.rounds), key=m.rounds.__getitem__)[args.rounds // 2]] for m in (r, c))
            split.append(f"| {shape} | {C} | {mode} | {pr[0]:.2f} / {pr[1]:.2f} / {pr[2]:.2f} "
                         f"| {pc[0]:.2f} / {pc[1]:.2f} / {pc[2]:.2f} | {pr[0] / pc[0]:.1f}x "
                         f"| {r.seconds / (pc[1] + pc[2]):.1f}x |")
    print("\nWhere the time goes (the median round of each): seconds per answer in the model's layers / its "
          "final norm and output head / the rest (the sampler and the loop); the layers' ratio; the bound on "
          "the end-to-end ratio were the cache's layers free (recompute total / cache head + rest).")
    print("| shape | block | mode | recompute: layers / head / rest | cache: layers / head / rest | layers ratio "
          "| bound |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(split), flush=True)


if __name__ == "__main__":
    main()
