"""Batches: left-padded prompts of different lengths; each row equals that prompt alone.

A row's seed is its own (`generate` takes one seed per row), its RNG counter is its position
in the answer, and the adapters give a left-padded row the positions and attention it has
alone, so a batch changes nothing but speed. Checked through `generate` for the built-in
tiny model and for tiny LLaDA-like and Dream-like checkpoints loaded through `transformers`.
"""
import pytest
import torch

from fastremask import generate, models

from fastremask.models import testing
from fastremask.models import PadIsMaskError, pad_batch
from fastremask.models.tiny import tiny_model

PROMPTS_TEXT = ["Hi, I am", "The", "Once upon a time"]
PROMPTS_WORDS = ["hi i am a cat", "hello", "the dog sat on the"]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("batches")
    return {
        "tiny": (models.wrap(tiny_model()), PROMPTS_TEXT),
        "llada": (models.load(testing.save_tiny_llada(root / "llada"), trust_remote_code=True, device="cpu"),
                  PROMPTS_WORDS),
        "dream": (models.load(testing.save_tiny_dream(root / "dream"), trust_remote_code=True, device="cpu"),
                  PROMPTS_WORDS),
    }


CASES = [
    # (family, gen_length, block_length, steps, options)
    ("tiny", 8, 4, 6, dict(temperature=1.0, schedule="pyramid")),
    ("tiny", 6, 6, 6, dict(temperature=0.0, remasking="random", backend="reference")),
    ("llada", 8, 4, 8, dict(temperature=0.7, remasking="margin")),
    ("llada", 6, 6, 3, dict(temperature=0.0, cfg_scale=1.0)),
    ("dream", 8, 4, 6, dict(temperature=1.0, schedule="pyramid")),
    ("dream", 6, 3, 6, dict(temperature=0.0, remasking="entropy", backend="reference")),
]


@pytest.mark.parametrize("family,gen_length,block_length,steps,opts", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_row_equals_prompt_alone(adapters, family, gen_length, block_length, steps, opts):
    a, prompts = adapters[family]
    seeds = [11, 12345, 2**40 + 7]
    ids, mask = a.encode(prompts)
    assert mask is not None and int((mask == 0).sum()) > 0            # really padded
    assert bool((ids[mask == 0] == a.pad_id).all())
    kw = dict(steps=steps, gen_length=gen_length, block_length=block_length, mask_id=a.mask_id, **opts)
    batch = generate(a, ids, mask, seed=seeds, **kw)
    P = ids.shape[1]
    assert torch.equal(batch[:, :P], ids)
    for b, (p, s) in enumerate(zip(prompts, seeds)):
        one, one_mask = a.encode([p])
        assert one_mask is None
        alone = generate(a, one, one_mask, seed=s, **kw)
        assert torch.equal(batch[b, P:], alone[0, one.shape[1]:]), f"row {b} differs from its prompt alone"


def test_int_seed_means_seed_plus_row(adapters):
    a, prompts = adapters["tiny"]
    ids, mask = a.encode(prompts)
    kw = dict(steps=4, gen_length=4, block_length=4, mask_id=a.mask_id, temperature=1.0)
    assert torch.equal(generate(a, ids, mask, seed=5, **kw), generate(a, ids, mask, seed=[5, 6, 7], **kw))


def test_pad_equal_to_mask_is_refused(adapters):
    a, prompts = adapters["llada"]
    with pytest.raises(PadIsMaskError, match=r"pad id \d+ equals the mask id"):
        a.encode(prompts, pad_id=a.mask_id)
    with pytest.raises(PadIsMaskError, match="left padding would be read as masked"):
        pad_batch([[1, 2], [3]], pad_id=9, mask_id=9)
    # no padding needed: nothing to refuse
    ids, mask = pad_batch([[1, 2], [3, 4]], pad_id=9, mask_id=9)
    assert mask is None and ids.tolist() == [[1, 2], [3, 4]]
    # and generate itself refuses mask ids inside a prompt (padding built by hand)
    x = torch.tensor([[a.mask_id, 7], [6, 7]])
    with pytest.raises(ValueError, match="prompt contains mask_id"):
        generate(a, x, torch.tensor([[0, 1], [1, 1]]), steps=2, gen_length=2, block_length=2, mask_id=a.mask_id)


def test_pad_batch_layout():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, mask_id=9)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        pad_batch([[1], []], pad_id=0, mask_id=9)
    with pytest.raises(ValueError, match="no prompts"):
        pad_batch([], pad_id=0, mask_id=9)
