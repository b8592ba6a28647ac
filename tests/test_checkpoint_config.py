"""Checkpoint configs validated at load (issue 17 item 5): every ``config.json`` field the
project reads is type- and range-checked with the file and the field named, and a config that
does not describe its weights is reported as a config error with the whole mismatch, on one
line. Copies of the shipped demo folder (`fastremask/data`) and of the tiny published-layout
checkpoints (`fastremask.models.testing`)."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import torch

from fastremask import DATA_DIR, models
from fastremask.models import ModelLoadError, testing
from fastremask.models.tiny import TinyMaskedLM
from fastremask.tools import cli


@pytest.fixture
def demo(tmp_path):
    """A copy of the demo checkpoint; ``demo.edit(**fields)`` rewrites its config.json."""
    folder = tmp_path / "demo"
    shutil.copytree(DATA_DIR, folder)
    return str(folder)


def _edit(folder, name="config.json", **changes):
    path = os.path.join(folder, name)
    c = json.loads(open(path).read())
    c.update(changes)
    open(path, "w").write(json.dumps(c))
    return path


def _load_error(folder) -> str:
    with pytest.raises(ModelLoadError) as e:
        models.load(folder, device="cpu")
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_the_demo_copy_loads(demo):
    a = models.load(demo, device="cpu")
    assert a.family == "tiny" and a.mask_id == 15 and a.pad_id == 14 and a.tokenize("12,3") == [1, 2, 12, 3]


@pytest.mark.parametrize("field, value, want", [
    ("eps", "1e-5", "a positive number, got '1e-5'"),
    ("eps", -1.0, "a positive number, got -1.0"),
    ("eps", 0, "a positive number, got 0"),
    ("eps", None, "a positive number, got None"),
    ("mask_id", "15", "a non-negative integer, got '15'"),
    ("mask_id", 16, "an id inside the vocabulary: 0..15 (vocab_size 16), got 16"),
    ("mask_id", -1, "a non-negative integer, got -1"),
    ("mask_id", True, "a non-negative integer, got True"),
    ("vocab_size", "16", "a positive integer, got '16'"),
    ("d_model", 96.0, "a positive integer, got 96.0"),
    ("n_layers", 0, "a positive integer, got 0"),
    ("n_heads", None, "a positive integer, got None"),
    ("max_len", [36], "a positive integer, got [36]"),
    ("d_ff", -384, "a positive integer, got -384"),
    ("seed", -1, "a non-negative integer, got -1"),
    ("seed", 2**63, "an integer: 0..9223372036854775807 (the seed limit 9223372036854775808), got 9223372036854775808"),
])
def test_bad_fields_name_the_file_and_the_field(demo, field, value, want):
    path = _edit(demo, **{field: value})
    assert _load_error(demo) == f"{path}: field {field!r} must be {want}"


def test_heads_must_divide_the_width(demo):
    path = _edit(demo, n_heads=5)
    assert _load_error(demo) == f"{path}: field 'd_model' (96) is not a multiple of 'n_heads' (5)"


@pytest.mark.parametrize("field, value, parts", [
    ("vocab_size", 17, ["tensor 'embed.weight' is [16, 96] in the weights, [17, 96] by the config (vocab_size, d_model)",
                        "tensor 'head.weight' is [16, 96] in the weights, [17, 96] by the config (vocab_size, d_model)",
                        "tensor 'head.bias' is [16] in the weights, [17] by the config (vocab_size, d_model)"]),
    ("max_len", 40, ["tensor 'pos.weight' is [36, 96] in the weights, [40, 96] by the config (max_len, d_model)"]),
    ("d_ff", 128, ["tensor 'blocks.0.up.weight' is [384, 96] in the weights, [128, 96] by the config (d_ff, d_model)"]),
    ("n_layers", 5, ["tensors ['blocks.4.norm1.weight', 'blocks.4.norm1.bias', 'blocks.4.qkv.weight'"]),
    ("n_layers", 3, ["the weights have tensors the config does not describe, ['blocks.3.down.bias', 'blocks.3.down.weight',"]),
])
def test_shapes_that_do_not_match_the_weights_are_a_config_error(demo, field, value, parts):
    path = _edit(demo, **{field: value})
    msg = _load_error(demo)
    weights = os.path.join(demo, "model.safetensors")
    assert msg.startswith(f"{path} does not describe the weights {weights}: ")
    for part in parts:
        assert part in msg, msg
    if field == "n_layers" and value == 5:
        assert msg.endswith("'blocks.4.down.bias'] are missing from the weights (n_layers?)")
    # the same from the tiny model's own from_pretrained
    with pytest.raises(ModelLoadError) as e:
        TinyMaskedLM.from_pretrained(demo)
    assert str(e.value) == msg


def test_the_command_line_says_it_in_one_line(demo, capsys):
    path = _edit(demo, eps="1e-5")
    rc = cli.main(["generate", "--model", demo, "--prompt", "12,3", "--no-progress", "--gen-length", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and err.splitlines() == [f"fastremask: error: {path}: field 'eps' must be a positive number, "
                                            "got '1e-5'"]


@pytest.mark.parametrize("changes, want", [
    (dict(vocab="0123"), "field 'vocab' must be a list of distinct non-empty token strings (one per id), got '0123'"),
    (dict(vocab=["0", "0"]), "field 'vocab' must be a list of distinct non-empty token strings"),
    (dict(mask_id=16), "field 'mask_id' must be an id inside 'vocab' (0..15), got 16"),
    (dict(task=12), "field 'task' must be a task name such as 'perm:12', got 12"),
])
def test_demo_json_fields(demo, changes, want):
    path = _edit(demo, "demo.json", **changes)
    assert _load_error(demo).startswith(f"{path}: {want}")


def test_demo_vocabulary_ships_with_the_checkpoint(demo):
    """The tokenizer comes from demo.json's "vocab" (not from the evaluation package)."""
    vocab = json.load(open(os.path.join(demo, "demo.json")))["vocab"]
    _edit(demo, "demo.json", vocab=["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"] + vocab[10:])
    a = models.load(demo, device="cpu")
    assert a.tokenize("ab+c=") == [0, 1, 10, 2, 11] and a.mask_id == 15 and a.pad_id == 14


# ----------------------------------------------------------------------------- the native LLaDA and Dream


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    return {"llada": testing.save_llada_checkpoint(root / "llada"), "dream": testing.save_dream_checkpoint(root / "dream")}


@pytest.fixture
def copy(published, tmp_path):
    def make(family):
        folder = tmp_path / family
        shutil.copytree(published[family], folder)
        return str(folder)
    return make


@pytest.mark.parametrize("family, field, value, want", [
    ("llada", "rms_norm_eps", "1e-5", "a positive number, got '1e-5'"),
    ("llada", "rms_norm_eps", -1.0, "a positive number, got -1.0"),
    ("dream", "rms_norm_eps", 0.0, "a positive number, got 0.0"),
    ("dream", "rope_theta", float("inf"), "a positive number, got inf"),
    ("llada", "rope_theta", -10000.0, "a positive number, got -10000.0"),
    ("llada", "weight_tying", "false", "true or false, got 'false'"),
    ("dream", "num_key_value_heads", 0, "a positive integer, got 0"),
    ("llada", "mask_token_id", "126336", "a non-negative integer token id, got '126336'"),
    ("dream", "mask_token_id", -5, "a non-negative integer token id, got -5"),
    ("llada", "eos_token_id", "2", "a non-negative integer token id (or a list of them), got '2'"),
    ("dream", "pad_token_id", 1.5, "a non-negative integer token id, got 1.5"),
    ("llada", "multi_query_attention", "false", "true or false, got 'false'"),
    ("llada", "max_sequence_length", "4096", "a positive integer, got '4096'"),
    ("dream", "max_position_embeddings", -1, "a positive integer, got -1"),
])
def test_native_fields(copy, family, field, value, want):
    folder = copy(family)
    path = _edit(folder, **{field: value})
    assert _load_error(folder) == f"{path}: field {field!r} must be {want}"


@pytest.mark.parametrize("family, field", [("llada", "eos_token_id"), ("dream", "pad_token_id"),
                                           ("dream", "bos_token_id")])
def test_native_ids_inside_the_vocabulary(copy, family, field):
    folder = copy(family)
    vocab = json.load(open(os.path.join(folder, "config.json")))["vocab_size"]
    path = _edit(folder, **{field: vocab})
    assert _load_error(folder) == (f"{path}: field {field!r} is {vocab}, outside the vocabulary of {vocab} "
                                   f"(0..{vocab - 1})")


def test_native_shape_mismatch_names_the_config(copy):
    folder = copy("dream")
    _edit(folder, vocab_size=60)
    msg = _load_error(folder)
    assert re.fullmatch(r".*model\.safetensors: tensor 'model\.embed_tokens\.weight' has shape \[\d+, 32\], but "
                        r"config\.json describes \[60, 32\]", msg), msg


def test_native_good_copy_still_loads(copy):
    a = models.load(copy("llada"), device="cpu")
    x = torch.tensor([[3, 4, a.mask_id]])
    assert a(x).logits.shape == (1, 3, a.config.vocab_size)
