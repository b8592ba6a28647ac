"""Block KV caches in the loop (`generate(..., cache=...)`) and `stop_at_eos`.

A cache is an approximation of the model's forward, so the tokens may differ from
``cache=None``; what is exact: every backend gives the same bits under the same cache mode, a
one-layer model (whose keys depend on its own token only) gives exactly ``cache=None``'s tokens,
and the model is called with the ranges the docs describe.
"""
import pytest
import torch

import fastremask
from fastremask.models.kv import KVCache
from fastremask.models.tiny import tiny_model

MASK = 127
MODEL = tiny_model(max_len=256)
ONE_LAYER = tiny_model(max_len=256, n_layers=1, seed=3)


def _prompt(B=3, P=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, 120, (B, P), generator=g)
    am = torch.ones(B, P, dtype=torch.long)
    am[1, :3] = 0                                                # one left-padded row
    return prompt, am


def _gen(model, cache, **kw):
    prompt, am = _prompt()
    args = dict(steps=16, gen_length=32, block_length=8, mask_id=MASK, seed=5, backend="torch")
    args.update(kw)
    return fastremask.generate(model, prompt, am, cache=cache, **args)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("kw", [dict(), dict(temperature=0.8, cfg_scale=1.0), dict(threshold=0.3),
                                dict(schedule="pyramid", steps=16, remasking="margin")])
def test_one_layer_cache_is_exact(cache, kw):
    # one layer: a position's keys and values depend only on its own token, which a cache
    # keeps correct for the prompt, the finished blocks and the masked suffix
    assert torch.equal(_gen(ONE_LAYER, cache, **kw), _gen(ONE_LAYER, None, **kw))


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_backends_agree_under_a_cache(cache):
    kw = dict(temperature=0.9, cfg_scale=0.5)
    want = _gen(MODEL, cache, backend="reference", **kw)
    assert torch.equal(_gen(MODEL, cache, backend="torch", **kw), want)


@pytest.mark.interpreter
def test_triton_agrees_under_a_cache():
    pytest.importorskip("triton")
    from fastremask.kernels.numerics import interpreting

    if not (interpreting() or torch.cuda.is_available()):
        pytest.skip("the triton backend needs CUDA or TRITON_INTERPRET=1")
    kw = dict(temperature=0.9, gen_length=16, steps=4)
    assert torch.equal(_gen(MODEL, "dual", backend="triton", **kw), _gen(MODEL, "dual", backend="reference", **kw))


class Recording(torch.nn.Module):
    """The tiny model, recording every cached call's query and output ranges."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []
        self.config = model.config

    @property
    def device(self):
        return self.model.device

    def forward(self, x, attention_mask=None):
        raise AssertionError("a cached run must not call the full forward")

    def cached_logits(self, x, attention_mask, cache, *, query, out):
        self.calls.append((x.shape, query, out))
        return self.model.cached_logits(x, attention_mask, cache, query=query, out=out)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cache_calls_refresh_once_per_block(cache):
    rec = Recording(MODEL)
    _gen(rec, cache, cfg_scale=1.0)
    L, C = 12 + 32, 8
    assert len(rec.calls) == 16                                      # one call per step, as without
    for i, (shape, query, out) in enumerate(rec.calls):
        start = 12 + (i // 4) * C
        assert tuple(shape) == (6, L)                                # CFG: 2B rows
        assert out == (start, start + C)
        if i % 4 == 0:
            assert query == (0, L)                                   # the block's refresh
        else:
            assert query == ((start, L) if cache == "prefix" else (start, start + C))


def test_cache_needs_a_caching_model():
    plain = lambda x, attention_mask=None: MODEL(x, attention_mask)   # noqa: E731
    with pytest.raises(ValueError, match="cache='dual' needs a model with cached_logits"):
        _gen(plain, "dual")
    with pytest.raises(ValueError, match="unknown cache"):
        _gen(MODEL, "full")


def test_kv_cache_refuses_a_stale_shape():
    x = torch.randint(0, 120, (1, 20))
    kv = KVCache()
    with pytest.raises(ValueError, match="refresh it first"):
        MODEL.cached_logits(x, None, kv, query=(8, 16), out=(8, 16))
    MODEL.cached_logits(x, None, kv, query=(0, 20), out=(8, 16))
    with pytest.raises(ValueError, match="refresh it first"):
        MODEL.cached_logits(x[:, :18], None, kv, query=(8, 16), out=(8, 16))
    assert kv.nbytes() == 2 * MODEL.config.n_layers * 20 * MODEL.config.d_model * 4


# ------------------------------------------------------------------------------ stop_at_eos

EOS = 3


class EosAfter(torch.nn.Module):
    """The tiny model, but every position at or after answer position ``after[b]`` of row ``b``
    strongly prefers EOS."""

    def __init__(self, P: int, after):
        super().__init__()
        self.P, self.after = P, torch.tensor(after)
        self.config, self.eos_id = MODEL.config, EOS

    @property
    def device(self):
        return MODEL.device

    def forward(self, x, attention_mask=None):
        logits = MODEL(x, attention_mask).logits.clone()
        pos = torch.arange(x.shape[1]) - self.P
        late = pos[None, :] >= self.after[: x.shape[0], None]
        logits[..., EOS] = torch.where(late, 50.0, -50.0)
        return logits


def test_stop_at_eos_fills_and_saves_calls():
    prompt, am = _prompt(B=2)
    kw = dict(steps=32, gen_length=64, block_length=8, mask_id=MASK, seed=1, backend="torch")
    full, full_trace = fastremask.generate(EosAfter(12, [10, 20]), prompt, am, return_trace=True, **kw)
    out, trace = fastremask.generate(EosAfter(12, [10, 20]), prompt, am, stop_at_eos=True, return_trace=True, **kw)
    assert torch.equal(out, full)                                  # the answer pads with EOS anyway
    assert (out[0, 12 + 10:] == EOS).all() and (out[1, 12 + 20:] == EOS).all()
    assert full_trace.model_calls == 32
    assert trace.model_calls == 3 * 4                            # done after block 3 (EOS from 20 on)
    assert [bool(d[0]) for _, d in trace.stops] == [False, True, True]


def test_stop_at_eos_is_per_row():
    # row 0 is done early and filled, row 1 never emits EOS: row 0 equals row 0 alone
    prompt, am = _prompt(B=2)
    kw = dict(steps=32, gen_length=64, block_length=8, mask_id=MASK, seed=[7, 8], backend="torch",
              stop_at_eos=True)
    both = fastremask.generate(EosAfter(12, [6, 99]), prompt, am, **kw)
    kw["seed"] = [7]
    alone = fastremask.generate(EosAfter(12, [6]), prompt[:1], am[:1], **kw)
    assert torch.equal(both[0], alone[0])
    assert (both[0, 12 + 8:] == EOS).all() and not (both[1, 12:] == EOS).any()


def test_stop_at_eos_needs_an_eos_in_the_vocabulary():
    with pytest.raises(ValueError, match="stop_at_eos=True: the EOS id 126081 is outside"):
        _gen(MODEL, None, stop_at_eos=True)


def test_eval_counts_cached_calls_and_takes_blocks():
    from fastremask import models
    from fastremask.evaluation.evaluate import evaluate
    from fastremask.evaluation.tasks import get_task
    from fastremask.sampler.config import SamplingConfig

    model = models.load(fastremask.DATA_DIR)
    task = get_task("perm:12")
    base = SamplingConfig(temperature=1.0, backend="torch", cache="dual")
    rows = evaluate(model, task, schedules=["uniform"], remasking=["low_confidence"], nfe_grid=[3, 4, 6],
                    n_examples=8, config=base, block_length=4)
    assert [r.setting for r in rows] == ["steps=3", "steps=6"]          # 4 is not a multiple of 3 blocks
    assert [r.nfe for r in rows] == [3, 6]                             # the cached calls are counted
    with pytest.raises(ValueError, match="block_length must divide"):
        evaluate(model, task, n_examples=8, config=base, block_length=5)


def test_cli_options_reach_the_config():
    from fastremask.tools import cli

    args = cli.build_parser().parse_args(["generate", "--cache", "dual", "--stop-at-eos", "--threshold", "1.5",
                                          "--threshold-rule", "eb", "--remasking", "entropy"])
    config = cli.config_from_args(args)
    assert (config.cache, config.stop_at_eos, config.threshold_rule, config.threshold) == ("dual", True, "eb", 1.5)
    plain = cli.config_from_args(cli.build_parser().parse_args(["generate"]))
    assert (plain.cache, plain.stop_at_eos, plain.threshold_rule) == (None, False, "fixed")
