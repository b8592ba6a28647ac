"""Model families as records (`fastremask.models.family`): the registry the loader, the CLI and
the docs read, and a new family added as one record plus one module."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from fastremask import models
from fastremask.models import ModelLoadError, testing
from fastremask.models.family import (FAMILIES, Family, checkpoint_families, family_for, get_family, register,
                                      unregister)
from fastremask.models.native.llada import LLaDAModel
from fastremask.models.shift import shifted_rows, source_span
from fastremask.sampler import llada as oracle
from fastremask.sampler.names import LLADA_EOS, LLADA_EOT, LLADA_MASK


def test_builtin_records():
    assert list(FAMILIES) == ["llada", "dream", "sdar", "llada2", "tiny", "callable"]
    # the model_type table the loader used to hold, now derived from the records
    assert models.MODEL_TYPES == {"llada": "llada", "lladamoe": "llada", "llada_moe": "llada", "dream": "dream",
                                  "sdar": "sdar", "sdar_moe": "sdar", "llada2_moe": "llada2", "fastremask-tiny": "tiny"}
    assert family_for("Dream") is FAMILIES["dream"] and family_for("LLaDA") is FAMILIES["llada"]
    assert family_for("gpt2") is None and family_for(None) is None
    llada, dream = FAMILIES["llada"], FAMILIES["dream"]
    # LLaDA's published ids: generate's defaults and the oracle's are the record's
    assert (llada.mask_id, llada.eos_id, llada.eot_id) == (LLADA_MASK, LLADA_EOS, LLADA_EOT) == (126336, 126081, 126348)
    assert (oracle.LLADA_MASK, oracle.LLADA_EOS, oracle.LLADA_EOT) == (126336, 126081, 126348)
    assert (dream.mask_id, dream.eos_id, dream.eot_id) == (151666, 151643, 151645)
    assert (llada.logits_shift, dream.logits_shift) == (0, 1)
    assert llada.native_types == ("llada",) and dream.native_types == ("dream",)     # LLaDA-MoE: transformers
    assert llada.native_class() is LLaDAModel and dream.adapter_class() is models.DreamAdapter
    assert all(FAMILIES[f].attention == "full" for f in ("llada", "dream", "tiny", "callable"))
    # the block-diffusion families (issue 22): block-causal, no shift, their trained blocks and ids
    sdar, llada2 = FAMILIES["sdar"], FAMILIES["llada2"]
    assert (sdar.attention, sdar.block_length, sdar.logits_shift, sdar.mask_id) == ("block_causal", 4, 0, 151669)
    assert (llada2.attention, llada2.block_length, llada2.logits_shift) == ("block_causal", 32, 0)
    assert (llada2.mask_id, llada2.eos_id) == (156895, 156892)
    assert family_for("llada2_moe") is llada2 and family_for("SDAR") is sdar and family_for("sdar_moe") is sdar
    assert checkpoint_families() == ("llada", "dream", "sdar", "llada2", "tiny")
    with pytest.raises(ValueError, match=r"unknown family 'gpt'; expected one of llada, dream, sdar, llada2, tiny, "
                                         r"callable"):
        get_family("gpt")


@pytest.mark.parametrize("kw, message", [
    (dict(name="My"), "name must be a lower-case identifier"),
    (dict(name="x", model_types="x"), "model_types must be a tuple of non-empty strings"),
    (dict(name="x", model_types=("X",)), "model_types must be lower-cased"),
    (dict(name="x", attention="causal"), "attention must be one of full, block_causal, got 'causal'"),
    (dict(name="x", attention="block_causal"), "a block_causal family needs its trained block_length"),
    (dict(name="x", attention="block_causal", block_length=0), "block_length must be a positive integer"),
    (dict(name="x", logits_shift=2), "logits_shift must be 0 or 1, got 2"),
    (dict(name="x", logits_shift=True), "logits_shift must be 0 or 1, got True"),
    (dict(name="x", mask_id=-1), "mask_id must be a non-negative integer or None, got -1"),
    (dict(name="x", mask_id="5"), "mask_id must be a non-negative integer or None, got '5'"),
    (dict(name="x", native="fastremask.models.native.llada.LLaDAModel"), "native must be a 'module:attribute'"),
    (dict(name="x", model_types=("a",), native_types=("b",), native="m:C"), "native_types must be some of"),
    (dict(name="x", cache=1), "cache must be True or False, got 1"),
])
def test_bad_records(kw, message):
    with pytest.raises(ValueError, match="Family '.*': " + message.replace("(", r"\(").replace(")", r"\)")):
        Family(**kw)


def test_block_causal_record():
    f = Family(name="blocky", model_types=("blocky",), attention="block_causal", block_length=4)
    assert (f.attention, f.block_length, f.native_types, f.display) == ("block_causal", 4, (), "blocky")


def test_register_refuses_clashes():
    with pytest.raises(ValueError, match="family 'llada' is already registered"):
        register(Family(name="llada"))
    with pytest.raises(ValueError, match="model_type 'dream' of family 'other' already belongs to family 'dream'"):
        register(Family(name="other", model_types=("dream",)))
    assert "other" not in FAMILIES
    with pytest.raises(TypeError, match="register\\(\\) takes a Family"):
        register({"name": "x"})


def test_shift_rows():
    t = torch.arange(10).view(1, 10, 1)                      # row i holds i
    rows = lambda *a: shifted_rows(t, *a).flatten().tolist()   # noqa: E731
    assert rows(0, 0, 10, 0) == list(range(10))
    assert rows(0, 0, 10, 1) == [0] + list(range(9))          # position 0 keeps its own output
    assert rows(0, 4, 7, 1) == [3, 4, 5]
    assert rows(2, 4, 7, 1) == [1, 2, 3]                      # t holds positions 2..
    assert rows(0, 4, 7, 0) == [4, 5, 6]
    assert source_span(4, 7, 1) == (3, 6) and source_span(0, 3, 1) == (0, 3) and source_span(4, 7, 0) == (4, 7)


class MyLLaDA(LLaDAModel):
    """'The module' of a new family: here LLaDA's forward under another name."""

    family = "myllada"


@pytest.fixture
def my_family():
    record = register(Family(
        name="myllada", display="MyLLaDA", model_types=("my-llada",), architectures=("MyLLaDAModelLM",),
        native=f"{__name__}:MyLLaDA", adapter="fastremask.models.adapters:Adapter",
        mask_id=1, eos_id=2, eot_id=3, embedding="model.transformer.wte.weight", cache=True))
    try:
        yield record
    finally:
        unregister("myllada")
    assert "my-llada" not in models.MODEL_TYPES


def test_a_new_family_is_one_record_and_one_module(my_family, tmp_path):
    p = testing.save_llada_checkpoint(tmp_path / "m")
    base = models.load(p, device="cpu")
    cfg = json.loads(open(os.path.join(p, "config.json")).read())
    cfg["model_type"] = "My-LLaDA"
    open(os.path.join(p, "config.json"), "w").write(json.dumps(cfg))
    assert models.MODEL_TYPES["my-llada"] == "myllada"
    a = models.load(p, device="cpu")                         # natively, through the record
    assert type(a) is models.NativeAdapter and type(a.model) is MyLLaDA and a.family == "myllada"
    x = torch.tensor([[5, 6, 7, base.mask_id, base.mask_id]])
    assert torch.equal(a(x).logits, base(x).logits)
    assert a.mask_id == base.mask_id                          # the checkpoint's ids first
    with pytest.raises(ModelLoadError, match="family='llada' .*contradicts .*is a myllada model"):
        models.load(p, device="cpu", family="llada")
    # a look-alike of the family (no native forward): the record's adapter, and the record's name
    b = models.wrap(base.model, family="llada")
    assert b.family == "llada"


def test_wrap_takes_any_registered_family(my_family):
    def f(x, attention_mask):
        return torch.nn.functional.one_hot(x % 5, 5).float()

    a = models.wrap(f, family="myllada", mask_id=4)
    assert type(a) is models.Adapter and a.family == "myllada" and a.logits_shift == 0
    with pytest.raises(ModelLoadError, match="unknown family 'nope'; expected one of llada, dream, sdar, llada2, tiny, callable, myllada"):
        models.wrap(f, family="nope", mask_id=4)


def test_a_shifted_family_through_the_generic_adapter():
    """The shift is the record's: a family with logits_shift=1 served by the plain `Adapter`
    gets Dream's right shift, full and windowed, with the same bits as the model's own rows."""
    register(Family(name="shifty", logits_shift=1, adapter="fastremask.models.adapters:Adapter"))
    try:
        from fastremask.models.tiny import tiny_model

        m = tiny_model(vocab_size=11)
        a = models.wrap(m, family="shifty", mask_id=10)
        x = torch.randint(0, 10, (2, 9), generator=torch.Generator().manual_seed(0))
        raw = m(x).logits
        full = a(x).logits
        assert torch.equal(full[:, 0], raw[:, 0]) and torch.equal(full[:, 1:], raw[:, :-1])
        for start in (0, 3):
            win = a.window_logits(x, None, start, 4)
            assert torch.equal(win, full[:, start:start + 4])
    finally:
        unregister("shifty")


def test_cli_family_choices_are_the_records():
    code = ("import sys; from fastremask.tools import cli; rc = cli.main(['generate', '--help']); "
            "print('torch' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.stdout.strip().endswith("False")               # the registry is read without torch
    assert "--family {llada,dream,sdar,llada2,tiny}" in p.stdout


def test_one_dtype_table(tmp_path):
    from fastremask.models.dtypes import DTYPES

    p = testing.save_dream_checkpoint(tmp_path / "d")
    # names the native path accepted and the loader refused before: both accept them now
    assert models.load(p, device="cpu", dtype="half").dtype == torch.float16
    assert models.load(p, device="cpu", dtype="float").dtype == torch.float32
    assert DTYPES["bf16"] is torch.bfloat16
    with pytest.raises(ModelLoadError, match=r"unknown dtype 'int8'; expected auto, float32, fp32, float, "):
        models.load(p, device="cpu", dtype="int8")


class NoCacheLLaDA(LLaDAModel):
    family = "nocache"


def test_the_record_says_what_the_model_declares(tmp_path):
    """``cache`` (native forwards), ``attention`` and ``block_length`` are read from the record."""
    from fastremask import generate

    register(Family(name="nocache", model_types=("no-cache-llada",), native=f"{__name__}:NoCacheLLaDA",
                    embedding="model.transformer.wte.weight", cache=False))
    register(Family(name="blocky", attention="block_causal", block_length=4))
    try:
        p = testing.save_llada_checkpoint(tmp_path / "m", model_type="no-cache-llada")
        a = models.load(p, device="cpu")
        assert type(a.model) is NoCacheLLaDA and not a.supports_cache and a.attention == "full"
        with pytest.raises(ValueError, match="cache='prefix' needs a model with cached_logits"):
            generate(a, torch.tensor([[a.mask_id - 1, a.mask_id - 2]]), steps=2, gen_length=2, block_length=2, mask_id=a.mask_id,
                     cache="prefix")
        assert models.load(testing.save_llada_checkpoint(tmp_path / "l"), device="cpu").supports_cache
        b = models.wrap(lambda x, attention_mask: x, family="blocky", mask_id=0)
        assert (b.attention, b.block_length) == ("block_causal", 4)
    finally:
        unregister("nocache")
        unregister("blocky")


def families_table() -> str:
    """The families table of docs/architecture.md, written from the registry."""
    def ids(f):
        return " / ".join("—" if i is None else str(i) for i in (f.mask_id, f.eos_id, f.eot_id))

    rows = ["| family | `model_type` | native forward (types it reads) | mask / EOS / EoT ids | logits shift | "
            "attention | block length | cache |",
            "|---|---|---|---|---|---|---|---|"]
    for f in FAMILIES.values():
        types = ", ".join(f"`{t}`" for t in f.model_types) or "—"
        if f.native:
            native = f"`{f.native.split(':')[1]}` ({', '.join(f'`{t}`' for t in f.native_types)})"
        else:
            native = "own loader" if f.loader else "—"
        rows.append(f"| `{f.name}` | {types} | {native} | {ids(f)} | {f.logits_shift} | {f.attention} | "
                    f"{f.block_length or '—'} | {'yes' if f.cache else 'no'} |")
    return "\n".join(rows) + "\n"


def test_the_docs_table_is_the_registry():
    doc = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                            "architecture.md"), encoding="utf-8").read()
    table = families_table()
    assert table in doc, "docs/architecture.md's families table differs from the records; it should read:\n" + table


def test_wrap_finds_a_projects_own_model_through_its_record():
    """`wrap` recognises the project's own model classes through the records' ``classes`` (the
    tiny model's record, or any registered one), not a type check of its own."""
    from toy_models import ToyLM

    from fastremask.models.family import family_of_model
    from fastremask.models.tiny import tiny_model

    m = tiny_model()
    assert family_of_model(m) is models.FAMILIES["tiny"] and models.wrap(m).family == "tiny"
    assert family_of_model(ToyLM()) is None and models.wrap(ToyLM(), mask_id=10).family == "callable"
    register(Family(name="toys", classes=("toy_models:ToyLM",), adapter="fastremask.models.adapters:Adapter"))
    try:
        assert models.wrap(ToyLM(), mask_id=10).family == "toys"
    finally:
        unregister("toys")
    with pytest.raises(ValueError, match="classes must be a tuple of 'module:Class' strings"):
        Family(name="bad", classes="toy_models:ToyLM")
