"""Models shared by the tests (import as ``from toy_models import ...``; pytest puts tests/ on
the path). Each is small, CPU, fp32 unless asked, and seeded."""
from __future__ import annotations

import torch

__all__ = ["Counting", "ToyLM"]


class Counting:
    """Wraps a model and counts what it receives, independently of fastremask's own count
    (`fastremask.Trace.model_calls`, which the tests check against it): ``calls`` (forward,
    ``cached_logits`` and ``block_logits`` calls), ``rows`` (the batch rows of each) and
    ``columns`` (of a ``block_logits`` call: the columns it runs, ``L - start``).
    Everything else (``device``, ``mask_id``, ``config``, ``attention``, ...) is the wrapped
    model's."""

    def __init__(self, model):
        self.model, self.calls, self.rows, self.columns = model, 0, [], []

    def __call__(self, x, attention_mask=None, **kw):
        self.calls += 1
        self.rows.append(x.shape[0])
        return self.model(x, attention_mask=attention_mask, **kw)

    def cached_logits(self, x, *a, **kw):
        self.calls += 1
        self.rows.append(x.shape[0])
        return self.model.cached_logits(x, *a, **kw)

    def block_logits(self, x, *a, **kw):
        self.calls += 1
        self.rows.append(x.shape[0])
        self.columns.append(x.shape[1] - kw.get("start", 0))
        return self.model.block_logits(x, *a, **kw)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.model, name)


class ToyLM(torch.nn.Module):
    """Row-wise, elementwise-only logits: bit-identical for a row alone or in any batch.

    logits[b, i] = E[x[b, i]] + 0.5 * E[x[b, i - 1]] + Pos[i] (with a learned-free table);
    enough structure that the tokens depend on the context and the step.
    """

    def __init__(self, vocab=11, dtype=torch.float32, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.E = torch.randn(vocab, vocab, generator=g) * 2
        self.Pos = torch.randn(64, vocab, generator=g)
        self.out_dtype = dtype
        self.calls = 0

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, x, attention_mask=None):
        self.calls += 1
        e = self.E[x]                                              # [B, L, V]
        prev = torch.cat([torch.zeros_like(e[:, :1]), e[:, :-1]], 1)
        return (e + prev * 0.5 + self.Pos[: x.shape[1]]).to(self.out_dtype)
