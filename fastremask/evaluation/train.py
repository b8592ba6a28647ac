"""Train the demo masked-diffusion model (`fastremask/data/`) with LLaDA's objective.

    python -m fastremask.evaluation.train --out fastremask/data --log fastremask/data/train.log

(the shipped checkpoint: every default, ``perm:12``, 1200 steps, seed 0, 1 thread, 507 s on
a shared 2-core box; a rerun gives the same bits). ``--task add:11`` / ``sort:12`` and
``--steps`` train the other tasks.

The objective is LLaDA's (Nie et al. 2025, eq. 3, SFT form): for each example draw
``t ~ U(0, 1]``, mask each *answer* token independently with probability ``t`` (the prompt is
never masked), and minimise the cross-entropy on the masked positions weighted by ``1/t``,
summed and divided by the number of answer tokens. (As in LLaDA's code, ``t`` is mapped to
``(1 - eps) t + eps`` with ``eps = 1e-3`` so the weight stays finite.)

Everything random comes from ``--seed`` (weights through `TinyConfig.seed`, batches and masks
through their own CPU generators), and the number of threads is fixed by ``--threads``, so a
rerun on the same torch build gives the same weights. Training examples are drawn on the fly
and never include a prompt of the task's fixed test set (`Task.train_batch`).

Progress (loss, and exact-match accuracy on held-out examples at one model call and at one
call per answer token) is printed and appended to ``--log``; the final summary is written
into ``<out>/demo.json`` beside ``config.json`` and ``model.safetensors``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time

import torch
import torch.nn.functional as F

from fastremask.evaluation.tasks import MASK_ID, PAD_ID, VOCAB, get_task
from fastremask.models.tiny import TinyConfig, TinyMaskedLM

EPS = 1e-3


def masked_diffusion_loss(model, prompts, answers, g: torch.Generator) -> torch.Tensor:
    """LLaDA's loss for one batch: ``prompts`` ``[n, P]``, ``answers`` ``[n, A]`` (int64)."""
    n, A = answers.shape
    t = torch.rand(n, 1, generator=g)  # U[0, 1); 1 - u is U(0, 1]
    p_mask = (1 - EPS) * (1 - t) + EPS  # [n, 1]
    masked = torch.rand(n, A, generator=g) < p_mask  # [n, A]
    x = torch.cat([prompts, torch.where(masked, MASK_ID, answers)], dim=1)
    logits = model(x).logits[:, prompts.shape[1]:]  # [n, A, V]
    ce = F.cross_entropy(logits[masked], answers[masked], reduction="none")
    return (ce / p_mask.expand(n, A)[masked]).sum() / (n * A)


@torch.no_grad()
def confidence_decode(model, prompts, answer_length: int, per_step: int, temperature: float = 0.0) -> torch.Tensor:
    """Decoding for monitoring only (the package's sampler is `fastremask.generate`): start
    from an all-mask answer and at each call keep the ``per_step`` most confident predictions
    (argmax, or with ``temperature > 0`` a draw from the softmax, seeded). Returns ``[n, A]``."""
    n = prompts.shape[0]
    g = torch.Generator().manual_seed(0)
    x = torch.cat([prompts, torch.full((n, answer_length), MASK_ID)], dim=1)
    P = prompts.shape[1]
    while True:
        masked = x[:, P:] == MASK_ID
        if not masked.any():
            return x[:, P:]
        logits = model(x).logits[:, P:].float()
        logits[..., MASK_ID] = -math.inf
        probs = logits.softmax(-1)
        if temperature > 0:
            probs = (logits / temperature).softmax(-1)
            pred = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=g).view(probs.shape[:-1])
            conf = probs.gather(-1, pred[..., None])[..., 0]
        else:
            conf, pred = probs.max(-1)
        conf = torch.where(masked, conf, -math.inf)
        k = min(per_step, int(masked.sum(1).max()))
        idx = conf.topk(k, dim=1).indices
        keep = torch.zeros_like(masked).scatter_(1, idx, True) & masked
        x[:, P:] = torch.where(keep, pred, x[:, P:])


def sinusoidal_positions(n: int, d: int) -> torch.Tensor:
    """The transformer's sin/cos position table ``[n, d]``, scaled to unit variance per entry."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float64) / d)
    table = torch.zeros(n, d, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return (table * math.sqrt(2.0)).to(torch.float32)


def _accuracy(model, task, prompts, per_step, temperature=0.0):
    out = confidence_decode(model, prompts, task.answer_length, per_step, temperature)
    return task.check(prompts, out).float().mean().item()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fastremask.evaluation.train", description=__doc__.split("\n")[0])
    p.add_argument("--task", default="perm:12", help="task spec (fastremask.evaluation.tasks.get_task)")
    p.add_argument("--d-model", type=int, default=96)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pos-init", choices=("sinusoidal", "random"), default="sinusoidal",
                   help="initial (learned) position embeddings (default sinusoidal)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (fixed for reproducibility; 1 is fastest on a shared box)")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-examples", type=int, default=256)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--monitor-temperature", type=float, default=None,
                   help="sampling temperature of the accuracy monitor (default: 1 for perm, else 0)")
    p.add_argument("--out", default=None, help="directory for config.json, model.safetensors, demo.json")
    p.add_argument("--log", default=None, help="write progress lines to this file (overwritten)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    task = get_task(args.task)
    if args.monitor_temperature is None:
        args.monitor_temperature = 1.0 if task.name == "perm" else 0.0
    A = task.answer_length
    model, cfg = _build_model(args, task)
    opt = _optimizer(args, model)

    g_data = torch.Generator().manual_seed(args.seed * 1000003 + 1)
    g_mask = torch.Generator().manual_seed(args.seed * 1000003 + 2)
    eval_prompts, _ = task.test_set(args.eval_examples)
    n_params = sum(p.numel() for p in model.parameters())
    command = "python -m fastremask.evaluation.train " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    log_f = open(args.log, "w") if args.log else None

    def log(msg):
        print(msg, flush=True)
        if log_f:
            log_f.write(msg + "\n")
            log_f.flush()

    log(f"# {command}")
    log(f"# task {task.describe()}; model {n_params} params {cfg.to_dict()}; threads {torch.get_num_threads()}; "
        f"torch {torch.__version__}; {platform.processor() or platform.machine()}")
    t0 = time.perf_counter()
    ema = None
    history = []
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(args, step)
        prompts, answers = task.train_batch(g_data, args.batch)
        loss = masked_diffusion_loss(model, prompts, answers, g_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        last = step + 1 == args.steps
        if (step + 1) % args.log_every == 0 and (step + 1) % args.eval_every and not last:
            log(f"step {step + 1:6d}  loss {ema:.4f}  lr {_lr_at(args, step):.2e}  ({time.perf_counter() - t0:.0f}s)")
        if (step + 1) % args.eval_every == 0 or last:
            model.eval()
            acc1 = _accuracy(model, task, eval_prompts, A, args.monitor_temperature)  # one call
            accA = _accuracy(model, task, eval_prompts, 1, args.monitor_temperature)  # one token per call
            model.train()
            elapsed = time.perf_counter() - t0
            history.append(dict(step=step + 1, loss=round(ema, 4), acc_nfe1=acc1, acc_nfeA=accA, seconds=round(elapsed)))
            log(f"step {step + 1:6d}  loss {ema:.4f}  lr {_lr_at(args, step):.2e}  acc@NFE=1 {acc1:.3f}  "
                f"acc@NFE={A} {accA:.3f}  ({elapsed:.0f}s)")
    model.eval()
    seconds = time.perf_counter() - t0
    if args.out:
        _save(args, model, command, seconds, n_params, history)
        log(f"# saved to {args.out} after {seconds:.0f}s")
    if log_f:
        log_f.close()
    return 0


def _build_model(args, task):
    """(model, its `TinyConfig`): a fresh `TinyMaskedLM` for ``task`` from ``args``, in train mode."""
    P, A = task.prompt_length, task.answer_length
    cfg = TinyConfig(
        vocab_size=len(VOCAB), d_model=args.d_model, n_layers=args.layers, n_heads=args.heads,
        max_len=P + A, mask_id=MASK_ID, seed=args.seed,
    )
    model = TinyMaskedLM(cfg)
    with torch.no_grad():
        model.head.weight.mul_(1 / 3)  # tiny.py scales the head up for sampler tests; undo for training
        if args.pos_init == "sinusoidal":  # offsets between positions become linear maps: faster alignment
            model.pos.weight.copy_(sinusoidal_positions(cfg.max_len, cfg.d_model))
    model.train()
    return model, cfg


def _optimizer(args, model):
    """AdamW with weight decay on the matrices other than the embeddings."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n and "pos" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n and "pos" not in n)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.98),
    )


def _lr_at(args, step):
    """The learning rate at ``step``: linear warm-up, cosine decay to 10%."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    frac = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def _save(args, model, command, seconds, n_params, history):
    """The model in ``args.out`` with its ``demo.json`` (how it was trained, the monitor's history)."""
    model.save_pretrained(args.out)
    meta = {
        "task": args.task,
        "vocab": list(VOCAB),
        "mask_id": MASK_ID,
        "pad_id": PAD_ID,
        "command": command,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "train_seconds": round(seconds),
        "params": n_params,
        "monitor": f"exact match on the first {args.eval_examples} test examples, low-confidence "
                   f"decoding at temperature {args.monitor_temperature} (fastremask.evaluation.train.confidence_decode)",
        "history": history,
    }
    with open(os.path.join(args.out, "demo.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    raise SystemExit(main())
