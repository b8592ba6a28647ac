"""`SamplingConfig`: validated once, the same errors as `generate`, one count of model calls,
token ids resolved in one place (`SpecialIds.of`)."""
import dataclasses

import pytest
import torch
from toy_models import Counting

from fastremask import SamplingConfig, generate, models, run
from fastremask.sampler.config import SpecialIds
from fastremask.sampler.llada import LLADA_EOS, LLADA_EOT, LLADA_MASK
from fastremask.models.tiny import tiny_model

MODEL = tiny_model(vocab_size=20, d_model=16, n_heads=2, n_layers=1)
PROMPT = torch.tensor([[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize("bad", [
    dict(steps=0), dict(gen_length=10, block_length=4), dict(temperature=-1.0), dict(remasking="top_p"),
    dict(schedule="cubic"), dict(factor=2), dict(threshold=float("nan")), dict(backend="cuda"),
    dict(suppress_tokens=[1, -5]), dict(logits_eos_inf=1), dict(steps=3, gen_length=8, block_length=4),
])
def test_config_and_generate_reject_alike(bad):
    kw = {**dict(steps=4, gen_length=8, block_length=4), **bad}
    with pytest.raises((ValueError, TypeError)) as from_config:
        SamplingConfig(**kw)
    with pytest.raises(type(from_config.value)) as from_generate:
        generate(MODEL, PROMPT, mask_id=MODEL.mask_id, **kw)
    assert str(from_config.value) == str(from_generate.value)


def test_frozen_normalised_and_replace_validates():
    c = SamplingConfig(steps=4, gen_length=8, block_length=4, suppress_tokens=[3, 1, 3], threshold=1)
    assert c.suppress_tokens == (1, 3) and c.threshold == 1.0 and isinstance(c.threshold, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.steps = 8
    with pytest.raises(ValueError, match="steps"):
        c.replace(steps=0)
    assert c.replace(threshold=None).threshold is None


def test_generate_and_run_give_the_same_bits():
    kw = dict(steps=8, gen_length=8, block_length=4, temperature=1.0, remasking="margin", cfg_scale=0.5)
    a = generate(MODEL, PROMPT, mask_id=MODEL.mask_id, seed=3, **kw)
    b = run(MODEL, PROMPT, SamplingConfig(**kw), seed=3)                 # mask_id: the model's
    assert torch.equal(a, b)


@pytest.mark.parametrize("kw", [
    dict(steps=8, gen_length=8, block_length=4),
    dict(steps=16, gen_length=8, block_length=4),                       # zero-count steps skipped
    dict(steps=8, gen_length=16, block_length=8, schedule="pyramid"),
    dict(steps=8, gen_length=8, block_length=4, schedule=[0, 2, 0, 2]),
])
def test_model_calls_is_what_the_model_receives(kw):
    config = SamplingConfig(**kw)
    model = Counting(MODEL)
    _, trace = run(model, PROMPT, config, seed=0, return_trace=True)
    assert model.calls == config.model_calls()
    assert trace.model_calls == model.calls                   # the one count (ModelCall), checked


def test_threshold_model_calls_is_an_upper_bound():
    config = SamplingConfig(steps=1, gen_length=8, block_length=4, threshold=0.9, temperature=1.0)
    model = Counting(MODEL)
    run(model, PROMPT, config, seed=0)
    assert 2 <= model.calls <= config.model_calls() == 8


def test_special_ids_from_the_adapter_else_llada():
    plain = SpecialIds.of(object(), SamplingConfig(logits_eos_inf=True, confidence_eos_eot_inf=True))
    assert plain == SpecialIds(LLADA_MASK, (LLADA_EOS,), tuple(sorted((LLADA_EOS, LLADA_EOT))), LLADA_EOS)
    adapter = models.wrap(MODEL, mask_id=19, eos_id=4, eot_id=7)
    ids = SpecialIds.of(adapter, SamplingConfig(logits_eos_inf=True, confidence_eos_eot_inf=True,
                                                suppress_tokens=[2]))
    assert ids == SpecialIds(19, (2, 4), (4, 7), 4)
    assert SpecialIds.of(adapter, SamplingConfig(mask_id=5)).mask_id == 5     # given wins
    no_eos = models.wrap(MODEL, mask_id=19)
    if no_eos.eos_id is None:
        with pytest.raises(ValueError, match="no EOS"):
            SpecialIds.of(no_eos, SamplingConfig(logits_eos_inf=True))
