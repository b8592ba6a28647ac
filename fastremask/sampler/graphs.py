"""The sampling step captured in a CUDA graph, once per shape and configuration, and replayed.

Eagerly, a step of the ``triton`` backend costs a few hundred microseconds of Python and
launches (docs/benchmarks.md); replayed from a graph it costs the kernels. `GraphedStep`
holds static buffers for everything `loop.step` reads (the block's logits rows, its tokens,
the counts, the row counters, positions, seeds, the step index) and captures `loop.step` on
them; per step the loop copies the inputs in, replays, and copies the block's tokens out.

* One graph per (device, batch, block length, vocab, logits dtype, CFG, the sampling options
  that change the step: `SamplingConfig.step_key`),
  kept in a small cache across `generate` calls.
* The first replay of a new graph is checked against the same step run eagerly on the same
  inputs, bit for bit; a mismatch or any error while capturing gives a one-line warning and
  that key runs eagerly from then on. So a result is never wrong because of the graph.
* Only the sampling step is captured, not the model's forward.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from types import SimpleNamespace

import torch

from fastremask.sampler.contract import same_bits
from fastremask.sampler.errors import FirstInvalid

__all__ = ["GraphedStep", "graphed_step", "clear_cache"]

_CACHE: "OrderedDict[tuple, object]" = OrderedDict()
_CACHE_SIZE = 8
_FAILED = object()          # a key whose capture failed or did not match: run it eagerly


def clear_cache() -> None:
    _CACHE.clear()


class _Graph:
    """`torch.cuda.CUDAGraph` around a callable; `capture` runs two warm-up calls first."""

    def __init__(self, fn):
        self.graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()                                   # compiles the kernels, fills the allocator
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(self.graph):
            self.out = fn()

    def replay(self):
        self.graph.replay()
        return self.out


def available(device: torch.device) -> bool:
    """Whether steps on ``device`` can be captured (tests on a CPU replace this too)."""
    return device.type == "cuda"


def _capture(fn):
    """How a step is captured (tests on a CPU replace it with a plain call)."""
    return _Graph(fn)


class GraphedStep:
    """`loop.step` on static buffers, captured: `load`, then `step` stands for one `loop.step` call."""

    def __init__(self, step_fn, backend, B: int, C: int, V: int, dtype, has_cfg: bool, *, config,
                 suppress, defer, mask_id: int, prompt_length: int, device):
        z = dict(device=device)
        self.B, self.C, self.mask_id = B, C, mask_id
        self.lg = torch.zeros(B * C, V, dtype=dtype, **z)
        self.un = torch.zeros_like(self.lg) if has_cfg else None
        self.xb = torch.zeros(B, C, dtype=torch.int64, **z)
        self.k = torch.zeros(B, dtype=torch.int64, **z)
        self.row_step = torch.zeros(B, dtype=torch.int64, **z)
        self.step_index = torch.zeros(1, dtype=torch.int64, **z)
        bi = torch.arange(B, **z).repeat_interleave(C)
        self.blk = SimpleNamespace(rows=torch.arange(B * C, **z), bi=bi, start=0,
                                   seeds=torch.zeros(B * C, dtype=torch.int64, **z),
                                   positions=torch.zeros(B * C, dtype=torch.int64, **z),
                                   origin=torch.zeros(1, dtype=torch.int64, **z), x=self.xb)
        self.checker = FirstInvalid(prompt_length, config.cfg_scale)
        self.checker.suppress = suppress
        no_defer = torch.zeros(B, C, dtype=torch.bool, **z)
        threshold_mode = config.threshold is not None

        def body():
            cand = self.xb == mask_id
            return step_fn(backend, self.xb, cand, self.lg, self.un, self.blk, self.row_step,
                           None if threshold_mode else self.k, config=config, suppress=suppress,
                           defer=defer, no_defer=no_defer, checker=self.checker,
                           step_index=self.step_index)[:3]      # (x0, confidence, keep): no editing here

        self.body = body
        self.graph = None

    def load(self, logits, uncond, blk, row_step, k, step_index: int, window: bool) -> None:
        """Copy one step's inputs into the static buffers."""
        B, C = self.B, self.C
        lo = 0 if window else blk.start
        self.lg.view(B, C, -1).copy_(logits[:, lo:lo + C])
        if self.un is not None:
            self.un.view(B, C, -1).copy_(uncond[:, lo:lo + C])
        self.xb.copy_(blk.x)
        if k is not None:
            self.k.copy_(k)
        self.row_step.copy_(row_step)
        self.step_index.fill_(step_index)

    def start_block(self, blk) -> None:
        """Copy what changes per block: the rows' seeds (per call) and positions, the origin."""
        self.blk.seeds.copy_(blk.seeds)
        self.blk.positions.copy_(blk.positions)
        self.blk.origin.fill_(blk.start)

    def _capture_checked(self) -> bool:
        """Capture, then replay once and compare with the eager step on the same inputs: the
        replay is this step's result when they agree."""
        xb, rec = self.xb.clone(), self.checker.rec
        rec = None if rec is None else rec.clone()
        want = [t.clone() for t in self.body()] + [self.xb.clone()]            # eager: the reference
        want_rec = self.checker.rec.clone()
        restore = rec if rec is not None else torch.zeros_like(want_rec)
        self.xb.copy_(xb)
        self.checker.rec.copy_(restore)
        self.graph = _capture(self.body)                # its warm-up call runs the step once more
        self.xb.copy_(xb)
        self.checker.rec.copy_(restore)
        got = list(self.graph.replay()) + [self.xb]
        return all(same_bits(a, b) for a, b in zip(want, got)) and torch.equal(want_rec, self.checker.rec)

    def step(self, blk):
        """One step from the loaded inputs: capture (checked) on first use, else replay; the
        block's tokens are written back into the sequence (``blk.x``). Returns `loop.step`'s
        outputs (static buffers: clone them to keep them), or None when the graph cannot be
        used (`fail` was called: run this step eagerly)."""
        if self.graph is None:
            try:
                ok, why = self._capture_checked(), "the captured step did not match the eager step"
            except Exception as e:           # noqa: BLE001 - any capture problem means: run eagerly
                ok, why = False, f"{type(e).__name__}: {e}"
            if not ok:
                fail(self, why)
                return None
            out = self.graph.out
        else:
            out = self.graph.replay()
        blk.x.copy_(self.xb)
        return out


def graphed_step(step_fn, backend, logits, uncond, *, config, suppress, defer, mask_id: int,
                 prompt_length: int, B: int, C: int):
    """The cached `GraphedStep` for this shape and configuration, or None (run eagerly)."""
    # the shapes, the config's step options (every field declared with step=True: a new one
    # cannot be left out) and the ids resolved against the model
    key = (str(logits.device), B, C, logits.shape[-1], logits.dtype, uncond is not None, config.step_key(),
           None if suppress is None else tuple(suppress.tolist()),
           None if defer is None else tuple(defer.tolist()), mask_id, prompt_length)
    g = _CACHE.get(key)
    if g is _FAILED:
        return None
    if g is not None:
        _CACHE.move_to_end(key)
        return g
    g = GraphedStep(step_fn, backend, B, C, logits.shape[-1], logits.dtype, uncond is not None,
                    config=config, suppress=suppress, defer=defer, mask_id=mask_id,
                    prompt_length=prompt_length, device=logits.device)
    _CACHE[key] = g
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return g


def fail(g: GraphedStep, why: str) -> None:
    """Mark ``g``'s key eager from now on, with a one-line warning."""
    for key, v in list(_CACHE.items()):
        if v is g:
            _CACHE[key] = _FAILED
    warnings.warn(f"fastremask: the sampling step runs without a CUDA graph ({why}); "
                  "results are unchanged (cuda_graph=False silences this)", RuntimeWarning, stacklevel=3)
