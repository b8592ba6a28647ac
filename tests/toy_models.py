"""Models shared by the tests (import as ``from toy_models import ...``; pytest puts tests/ on
the path). Each is small, CPU, fp32 unless asked, and seeded."""
from __future__ import annotations

import torch

__all__ = ["Counting", "ToyLM", "PaddingBlindLM", "RandomLM", "Poisoned"]


class Counting:
    """Wraps a model and counts what it receives, independently of fastremask's own count
    (`fastremask.Trace.model_calls`, which the tests check against it): ``calls`` (forward,
    ``cached_logits`` and ``block_logits`` calls), ``rows`` (the batch rows of each) and
    ``columns`` (of a ``block_logits`` call: the columns it runs, ``L - start``), ``logits`` (a
    copy of what each ``block_logits`` call returned).
    Everything else (``device``, ``mask_id``, ``config``, ``attention``, ...) is the wrapped
    model's."""

    def __init__(self, model):
        self.model, self.calls, self.rows, self.columns, self.logits = model, 0, [], [], []

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
        out = self.model.block_logits(x, *a, **kw)
        self.logits.append(out.detach().clone())
        return out

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


class PaddingBlindLM(torch.nn.Module):
    """Logits from table lookups and elementwise ops only: row ``b``'s logits at position ``i``
    depend on its token there, its previous real token and its position counted from its first
    real token, so left padding and batch neighbours change no bit."""

    device = torch.device("cpu")

    def __init__(self, vocab=13, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.E = torch.randn(vocab, vocab, generator=g) * 2
        self.Prev = torch.randn(vocab, vocab, generator=g)
        self.Pos = torch.randn(64, vocab, generator=g)

    def forward(self, x, attention_mask=None):
        am = torch.ones_like(x) if attention_mask is None else attention_mask.to(x.dtype)
        pos = (am.cumsum(1) - 1).clamp_min(0)                        # from the first real token
        prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)
        prev_real = torch.cat([torch.zeros_like(am[:, :1]), am[:, :-1]], 1)
        p = self.Prev[prev] * prev_real[..., None]
        return self.E[x] + p + self.Pos[pos]

    eos_id = 1                                                       # for stop_at_eos

    def cached_logits(self, x, attention_mask, cache, *, query, out):
        """The block-cache protocol (`fastremask.models.kv`): this model attends to nothing, so
        its cached logits are its logits; the loop's cache plumbing is what is exercised."""
        return self(x, attention_mask)[:, out[0]:out[1]]


class RandomLM:
    """Random logits ``[B, L, vocab]`` from a seeded generator (a fresh draw at every call);
    records the rows of every call (``rows``)."""

    def __init__(self, vocab=9, seed=0):
        self.vocab, self.rows = vocab, []
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, x, attention_mask=None):
        self.rows.append(x.shape[0])
        return torch.randn(*x.shape, self.vocab, generator=self.gen)


class Poisoned(torch.nn.Module):
    """``inner``'s logits, edited in place at some calls: ``poison`` maps a call (counted from 0)
    to ``edit(logits)``. ``calls`` counts the calls made so far (a run that raises returns no
    trace; set it to 0 to run again); ``vocab``: every call also asserts that the ids it is given
    lie in ``[0, vocab)`` (a sampler never writes a -1 into ``x``)."""

    device = torch.device("cpu")

    def __init__(self, inner, poison: dict, vocab=None):
        super().__init__()
        self.inner, self.poison, self.vocab, self.calls = inner, dict(poison), vocab, 0

    def forward(self, x, attention_mask=None):
        if self.vocab is not None:
            assert int(x.min()) >= 0 and int(x.max()) < self.vocab, x
        logits = self.inner(x, attention_mask=attention_mask).logits
        if self.calls in self.poison:
            self.poison[self.calls](logits)
        self.calls += 1
        return logits
