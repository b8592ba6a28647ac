"""`fastremask profile` end to end on the tiny model, and the `Phases` wrapper it is built on."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

from fastremask import generate

from fastremask.sampler import fast

from fastremask.tools import profile

from fastremask.sampler import reference
from fastremask.models.tiny import tiny_model


def test_phases_name_count_and_restore():
    model = tiny_model()
    prompt = torch.randint(0, model.mask_id, (1, 4), generator=torch.Generator().manual_seed(0))
    originals = (fast._sample_rows_active, fast.select, reference.sample_rows, reference.select)
    for backend in ("torch", "reference"):
        with profile.Phases(model, timing=True) as ph:
            out = generate(ph.model, prompt, steps=4, gen_length=8, block_length=8, mask_id=model.mask_id,
                           seed=0, backend=backend)
        assert ph.calls["model"] == 4 and ph.calls["sample"] == 4 and ph.calls["select"] == 4, backend
        assert all(ph.seconds[p] > 0 for p in profile.PHASES), backend
        # the phases only watch: same tokens as an unwatched run
        ref = generate(model, prompt, steps=4, gen_length=8, block_length=8, mask_id=model.mask_id,
                       seed=0, backend=backend)
        assert torch.equal(out, ref)
    assert (fast._sample_rows_active, fast.select, reference.sample_rows, reference.select) == originals


def test_phases_patch_what_the_backends_call():
    """`Phases` wraps exactly the functions `fastremask.sampler.backends` hands the loop, so every
    backend's steps are seen (a stale module list would leave the phases empty)."""
    import importlib

    from fastremask.sampler import backends

    model = tiny_model()
    with profile.Phases(model) as ph:
        chosen = [backends.get_backend(b, torch.device("cpu")) for b in ("torch", "reference")]
        for b in chosen:
            assert getattr(b.sample_rows, "_fastremask_phase", False), b.name
            assert getattr(b.select, "_fastremask_phase", False), b.name
        try:
            importlib.import_module("fastremask.kernels.sample")
        except ImportError:
            pass
        else:
            t = backends.triton_backend()
            assert t.sample_rows._fastremask_phase and t.select._fastremask_phase
    assert ph.calls == {}
    for b in ("torch", "reference"):
        assert not getattr(backends.get_backend(b, torch.device("cpu")).sample_rows, "_fastremask_phase", False)


def test_profile_config_is_generates_config(monkeypatch):
    """`fastremask profile` samples with the `SamplingConfig` generate builds for its options;
    a bad option is rejected before the model is built, with generate's message."""
    from fastremask import SamplingConfig
    from fastremask.sampler import loop

    parser = argparse.ArgumentParser()
    profile.add_arguments(parser)
    args = parser.parse_args(["--gen-length", "8", "--block-length", "4", "--steps", "6", "--schedule", "pyramid",
                              "--factor", "2", "--temperature", "1", "--remasking", "margin"])
    want = SamplingConfig(steps=6, gen_length=8, block_length=4, temperature=1.0, remasking="margin",
                          schedule="pyramid", factor=2, backend="torch")
    assert profile.config_from_args(args) == want
    seen, real = [], loop.run
    monkeypatch.setattr(loop, "run", lambda m, p, c, **kw: seen.append(c) or real(m, p, c, **kw))
    model = tiny_model()
    prompt = torch.randint(0, model.mask_id, (1, 4), generator=torch.Generator().manual_seed(0))
    generate(model, prompt, steps=6, gen_length=8, block_length=4, temperature=1.0, remasking="margin", mask_id=None,
             schedule="pyramid", factor=2, backend="torch", seed=0)
    assert seen == [want]
    monkeypatch.setattr(profile, "build_model", lambda *a: pytest.fail("the model was built"))
    bad = parser.parse_args(["--remasking", "lowest"])
    with pytest.raises(ValueError) as e:
        profile.run(bad)
    with pytest.raises(ValueError) as api:
        generate(model, prompt, remasking="lowest")
    assert str(e.value) == str(api.value)


def test_profile_command_writes_a_trace(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    profile.add_arguments(parser)
    out = tmp_path / "trace.json"
    args = parser.parse_args(["--prompt-length", "4", "--gen-length", "8", "--steps", "4", "--out", str(out),
                              "--top", "5", "--device", "cpu", "--threads", "1"])
    assert profile.run(args) == 0
    trace = json.loads(out.read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"model", "sample", "select"} <= names
    text = capsys.readouterr().out
    assert "phases over 4 model calls" in text and "Name" in text
