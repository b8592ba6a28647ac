"""The captured step (`fastremask.sampler.graphs`): the same bits as the eager step.

On a CPU there are no CUDA graphs, so these tests replace the capture by a plain call on the
same static buffers (what the graph would replay) and run the triton backend under the
interpreter: they check everything but the capture itself (the buffers, what is copied in
and out per step and per block, the invalid-logits record, the cache, the fallback). The
`gpu` test at the end captures for real.
"""
import warnings

import pytest
import torch
from toy_models import Poisoned

from fastremask import generate
from fastremask.models.tiny import tiny_model
from fastremask.sampler import graphs

MODEL = tiny_model(vocab_size=16, d_model=16, n_heads=2, n_layers=1, seed=4)
PROMPT = torch.tensor([[1, 2, 3], [4, 5, 6]])
ATT = torch.tensor([[1, 1, 1], [0, 1, 1]])


class _PlainCall:
    """What a graph replays, without a graph: the captured function, called."""

    def __init__(self, fn, corrupt=False):
        self.fn, self.corrupt = fn, corrupt
        self.out = fn()

    def replay(self):
        out = self.fn()
        if self.corrupt:
            out[1].add_(1.0)               # a wrong confidence: the first-replay check must see it
        return out


@pytest.fixture
def fake_graphs(monkeypatch):
    pytest.importorskip("triton")
    from fastremask.kernels.numerics import interpreting
    if not interpreting():
        pytest.skip("the triton backend needs CUDA or TRITON_INTERPRET=1")
    made = []

    def capture(fn):
        made.append(_PlainCall(fn))
        return made[-1]

    graphs.clear_cache()
    monkeypatch.setattr(graphs, "available", lambda device: True)
    monkeypatch.setattr(graphs, "_capture", capture)
    yield made
    graphs.clear_cache()


def _pair(**kw):
    kw = {**dict(mask_id=MODEL.mask_id, seed=7, backend="triton", return_trace=True), **kw}
    eager = generate(MODEL, PROMPT, ATT, cuda_graph=False, **kw)
    graphed = generate(MODEL, PROMPT, ATT, cuda_graph=True, **kw)
    return eager, graphed


def _same(a, b):
    (xa, ta), (xb, tb) = a, b
    assert torch.equal(xa, xb)
    assert len(ta.steps) == len(tb.steps)
    for s, t in zip(ta.steps, tb.steps):
        assert torch.equal(s.row_step, t.row_step) and torch.equal(s.keep, t.keep)
        assert torch.equal(s.x0, t.x0) and torch.equal(s.confidence.view(torch.int32), t.confidence.view(torch.int32))


@pytest.mark.interpreter
def test_captured_step_equals_eager_schedule_mode(fake_graphs):
    _same(*_pair(steps=4, gen_length=4, block_length=2, temperature=1.0, cfg_scale=0.5, remasking="entropy"))
    assert len(fake_graphs) == 1                 # one capture, reused by every step and block


@pytest.mark.interpreter
def test_captured_step_equals_eager_threshold_mode_and_is_cached(fake_graphs):
    kw = dict(steps=2, gen_length=4, block_length=2, temperature=1.0, threshold=0.6)
    _same(*_pair(**kw))
    _same(*_pair(**kw))                          # a second call replays the cached capture
    assert len(fake_graphs) == 1


@pytest.mark.interpreter
def test_invalid_logits_same_message_from_the_graph(fake_graphs):
    def nan(logits):
        logits[1, 4, 3] = float("nan")

    msgs = []
    for cuda_graph in (False, True):
        with pytest.raises(ValueError) as e:
            generate(Poisoned(MODEL, {1: nan}), PROMPT, ATT, 4, 4, 2, mask_id=MODEL.mask_id, seed=1, backend="triton",
                     cuda_graph=cuda_graph)
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1] and "at step 1, batch row 1, position 4 " in msgs[0]


@pytest.mark.interpreter
def test_a_graph_that_disagrees_is_dropped_with_a_warning(fake_graphs, monkeypatch):
    monkeypatch.setattr(graphs, "_capture", lambda fn: _PlainCall(fn, corrupt=True))
    kw = dict(steps=2, gen_length=2, block_length=2, temperature=1.0, mask_id=MODEL.mask_id, seed=3,
              backend="triton")
    want = generate(MODEL, PROMPT, ATT, cuda_graph=False, **kw)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = generate(MODEL, PROMPT, ATT, cuda_graph=True, **kw)
    assert torch.equal(got, want)
    assert any("without a CUDA graph" in str(m.message) for m in w)


@pytest.mark.gpu
def test_real_cuda_graph_equals_eager():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (none here)")
    model = tiny_model(vocab_size=300, d_model=32, n_heads=2, n_layers=2, seed=1).to("cuda")
    prompt = torch.randint(0, model.mask_id, (3, 9), device="cuda")
    graphs.clear_cache()
    for kw in (dict(temperature=0.0), dict(temperature=1.0, remasking="margin", cfg_scale=1.0),
               dict(temperature=0.7, remasking="entropy", threshold=-2.0)):
        kw = dict(dict(steps=24, gen_length=24, block_length=8, mask_id=model.mask_id, seed=11,
                       backend="triton", return_trace=True), **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("error")          # a fallback would be a failure here
            _same(generate(model, prompt, cuda_graph=False, **kw), generate(model, prompt, cuda_graph=True, **kw))
