"""At temperature 0 with the uniform schedule and `low_confidence`, `fastremask.generate`
produces what LLaDA's `generate` (restated in `fastremask.sampler.llada`) produces.

The two differ only where LLaDA is not exact: its confidence is a softmax in the logits'
dtype and its top-k breaks ties arbitrarily; ours is exact with ties to the lower position.
With fp32 logits and no exact ties the tokens agree. The tiny model's mask token is made
unlikely (as a trained model's is), because fastremask never samples the mask token while
LLaDA would.
"""
import pytest
import torch

import fastremask
from fastremask.sampler import llada
from fastremask.models.tiny import tiny_model


class NoMaskPrediction(torch.nn.Module):
    """A tiny model whose mask-token logit is -1e4 (finite, so LLaDA's CFG stays finite)."""

    def __init__(self, **cfg):
        super().__init__()
        self.inner = tiny_model(d_model=32, **cfg)
        self.config = self.inner.config

    @property
    def device(self):
        return self.inner.device

    def forward(self, x, attention_mask=None):
        out = self.inner(x, attention_mask=attention_mask)
        out.logits[..., self.inner.mask_id] = -1e4
        return out


CASES = [  # steps, gen_length, block_length, cfg_scale
    (12, 24, 8, 0.0),
    (8, 24, 24, 0.0),
    (12, 12, 4, 1.5),
    (5, 10, 10, 0.0),
    (16, 16, 16, 0.0),
]


@pytest.mark.parametrize("model_seed, vocab", [(0, 128), (1, 50), (2, 300)], ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_greedy_matches_llada(model_seed, vocab, case):
    _check(model_seed, vocab, case, "torch")


def test_greedy_matches_llada_reference_backend():
    _check(1, 50, (12, 12, 4, 1.5), "reference")


def _check(model_seed, vocab, case, backend):
    steps, gen_length, block_length, cfg = case
    model = NoMaskPrediction(vocab_size=vocab, seed=model_seed)
    mask_id = model.inner.mask_id
    g = torch.Generator().manual_seed(model_seed)
    prompt = torch.randint(0, vocab - 1, (3, 6), generator=g)
    am = torch.ones(3, 6, dtype=torch.long)
    am[1, :2] = 0
    am[2, :4] = 0
    want = llada.generate(model, prompt, am, steps, gen_length, block_length, 0.0, cfg, mask_id=mask_id)
    got = fastremask.generate(model, prompt, am, steps, gen_length, block_length, 0.0, cfg,
                              mask_id=mask_id, backend=backend)
    assert torch.equal(got, want)


def test_same_positional_signature_as_llada():
    import inspect

    ours = list(inspect.signature(fastremask.generate).parameters.values())[:12]
    theirs = list(inspect.signature(llada.generate).parameters.values())
    assert [(p.name, p.default) for p in ours] == [(p.name, p.default) for p in theirs]


def test_llada_step_random_and_counts():
    """`llada_step` (used by the benchmarks) keeps exactly k per row, inside the block."""
    torch.manual_seed(0)
    x = torch.full((2, 10), 9)
    x[:, :3] = 1
    logits = torch.randn(2, 10, 9)
    out = llada.llada_step(x, logits, torch.tensor([2, 3]), block_end=7, temperature=1.0,
                           remasking="random", mask_id=9)
    assert (out[:, :3] == 1).all() and (out[:, 7:] == 9).all()
    assert ((out != 9).sum(1) - 3).tolist() == [2, 3]
    assert llada.get_num_transfer_tokens(torch.ones(1, 10, dtype=torch.bool), 4).tolist() == [[3, 3, 2, 2]]
