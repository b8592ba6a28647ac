"""Model calls counted once (issue 18 item 5): `ModelCall` counts the calls and the positions
they computed, the trace reports them (`Trace.model_calls`, `Trace.positions`), and the count
is what the model receives (an independent counter, `toy_models.Counting`)."""
import pytest
import torch
from toy_models import Counting

from fastremask import SamplingConfig, run
from fastremask.models.tiny import tiny_model

MODEL = tiny_model(vocab_size=20, d_model=16, n_heads=2, n_layers=1, max_len=64)
PROMPT = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
B, P = PROMPT.shape


def _run(**kw):
    config = SamplingConfig(**kw)
    model = Counting(MODEL)
    x, trace = run(model, PROMPT, config, seed=0, return_trace=True)
    return config, model, trace


@pytest.mark.parametrize("kw", [
    dict(steps=8, gen_length=8, block_length=4),
    dict(steps=16, gen_length=8, block_length=4),                      # steps that keep 0: no call
    dict(steps=8, gen_length=8, block_length=4, schedule=[0, 2, 0, 2]),
    dict(steps=8, gen_length=8, block_length=4, logits_window=True),
])
def test_schedule_mode_counts(kw):
    config, model, trace = _run(**kw)
    L = P + config.gen_length
    assert trace.model_calls == model.calls == config.model_calls() == len(trace.steps)
    assert trace.positions == model.calls * B * L                      # the forward runs every position


def test_threshold_mode_counts():
    config, model, trace = _run(steps=8, gen_length=8, block_length=4, threshold=0.9, temperature=1.0)
    assert trace.model_calls == model.calls == len(trace.steps) <= config.model_calls()


def test_cfg_is_one_call_of_twice_the_rows():
    config, model, trace = _run(steps=8, gen_length=8, block_length=4, cfg_scale=1.0)
    assert trace.model_calls == model.calls == config.model_calls() and set(model.rows) == {2 * B}
    assert trace.positions == trace.model_calls * 2 * B * (P + 8)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cached_calls_count_the_positions_they_compute(cache):
    G, C, steps = 12, 4, 12
    config, model, trace = _run(steps=steps, gen_length=G, block_length=C, cache=cache)
    L, per_block = P + G, steps // (G // C)
    assert trace.model_calls == model.calls == config.model_calls() == steps
    want = 0
    for b in range(G // C):
        start = P + b * C
        later = (L - start) if cache == "prefix" else C                # the query after the refresh
        want += B * L + (per_block - 1) * B * later
    assert trace.positions == want
    _, _, full = _run(steps=steps, gen_length=G, block_length=C)
    assert trace.positions < full.positions


@pytest.mark.parametrize("cache", [None, "block"])
def test_block_calls_count_the_columns_they_run(cache):
    """A block-causal model: the full-window recompute runs ``0:end`` of the current block, the
    exact block cache the columns after its own; `Trace.positions` is rows x those columns."""
    model = Counting(tiny_model(vocab_size=20, d_model=16, n_heads=2, n_layers=1, max_len=64,
                                attention="block_causal", block_length=4))
    am = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])                 # left padding
    config = SamplingConfig(steps=12, gen_length=12, block_length=4, cache=cache)
    _, trace = run(model, PROMPT, config, attention_mask=am, seed=0, return_trace=True)
    assert trace.model_calls == model.calls == len(model.columns) > 0
    assert trace.positions == sum(r * c for r, c in zip(model.rows, model.columns))
    if cache is None:
        ends = sorted(set(model.columns))
        assert all(c % 4 == 0 for c in ends) and len(ends) > 1            # the window grows by a block
    else:
        assert max(model.columns) <= 8                                    # a block, plus the one it commits
