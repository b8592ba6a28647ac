"""`fastremask profile` end to end on the tiny model, and the `Phases` wrapper it is built on."""
from __future__ import annotations

import argparse
import json
import re

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
            out = generate(model, prompt, steps=4, gen_length=8, block_length=8, mask_id=model.mask_id,
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


@pytest.mark.parametrize("cache", [None, "prefix", "dual"])
def test_phases_name_every_model_call_of_a_cached_run(cache):
    """The ``model`` phase wraps the sampler's one call site: full, cached (``cached_logits``)
    and CFG calls alike, one range per `Trace.model_calls`, with the model passed as it is (a
    wrapper of ``model.__call__``, the old ``PhaseModel``, saw no cached call)."""
    from toy_models import Counting

    model = Counting(tiny_model())
    prompt = torch.randint(0, 127, (2, 5), generator=torch.Generator().manual_seed(1))
    with profile.Phases(model) as ph:
        out, trace = generate(model, prompt, steps=8, gen_length=8, block_length=4, mask_id=None, seed=0,
                              cache=cache, cfg_scale=0.5 if cache is None else 0.0, return_trace=True)
    assert trace.model_calls == 8 == model.calls                  # 2 blocks of 4 steps
    assert ph.calls["model"] == trace.model_calls
    assert ph.calls["sample"] == ph.calls["select"] == trace.model_calls
    ref = generate(model.model, prompt, steps=8, gen_length=8, block_length=4, mask_id=None, seed=0,
                   cache=cache, cfg_scale=0.5 if cache is None else 0.0)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("family", ["sdar", "llada2"])
@pytest.mark.parametrize("cache", [None, "block"])
def test_phases_name_every_block_call(family, cache):
    """A block-causal model's ``block_logits`` calls (the window recompute and the exact block
    cache) are in the ``model`` phase, one per `Trace.model_calls`."""
    from toy_models import Counting

    from fastremask.tools.bench import random_block_model

    model = Counting(random_block_model(family, "cpu", size="tiny"))
    prompt = torch.randint(0, 60, (1, 6), generator=torch.Generator().manual_seed(2))
    with profile.Phases(model) as ph:
        gen = max(8, model.block_length)
        out, trace = generate(model, prompt, steps=gen, gen_length=gen, block_length=model.block_length,
                              mask_id=None, seed=0, cache=cache, threshold=0.9, threshold_floor="schedule", return_trace=True)
    assert trace.model_calls == model.calls > 0
    assert ph.calls["model"] == trace.model_calls


def test_phases_name_llada_loops_model_calls():
    """LLaDA's own loop (the comparison) stays profiled: its model calls in ``model``, its fused
    step in ``sample``."""
    from fastremask.sampler import llada

    model = tiny_model()
    prompt = torch.randint(0, model.mask_id, (1, 4), generator=torch.Generator().manual_seed(0))
    originals = (llada._logits, llada.llada_step)
    with profile.Phases(model) as ph:
        llada.generate(model, prompt, steps=4, gen_length=8, block_length=4, mask_id=model.mask_id)
    assert ph.calls["model"] == 4 and ph.calls["sample"] == 4 and ph.calls["select"] == 0
    assert (llada._logits, llada.llada_step) == originals


def test_profile_flags_are_the_configs_options():
    """profile's sampling flags are derived from SamplingConfig's fields (every option but the
    mask id, the model's), as generate's and eval's are."""
    from fastremask.sampler.config import options

    parser = argparse.ArgumentParser()
    profile.add_arguments(parser)
    dests = {a.dest for a in parser._actions}
    assert set(options()) - dests == {"mask_id"}
    args = parser.parse_args(["--top-k", "5", "--temperature", "1", "--threshold", "0.9", "--cache", "prefix", "--no-cuda-graph"])
    config = profile.config_from_args(args)
    assert (config.top_k, config.threshold, config.cache, config.cuda_graph) == (5, 0.9, "prefix", False)
    assert (config.steps, config.gen_length, config.block_length, config.backend) == (64, 64, 64, "torch")
    sdar = profile.config_from_args(parser.parse_args(["--model", "sdar"]))
    assert sdar.block_length == 4             # the family's trained block


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


@pytest.mark.parametrize("family,cache", [("sdar", "block"), ("llada2", None)])
def test_profile_command_on_a_block_model(tmp_path, capsys, family, cache):
    """``fastremask profile --model sdar|llada2`` (tiny size, CPU): the phase summary counts the
    model calls `generate` makes on the same random model, each phase once per call."""
    from fastremask.tools import cli

    out = tmp_path / "trace.json"
    block = 4 if family == "sdar" else 32                # the family's trained block: profile's default
    argv = ["profile", "--model", family, "--size", "tiny", "--device", "cpu", "--prompt-length", "6",
            "--gen-length", str(2 * block), "--threshold", "0.9", "--threshold-floor", "schedule", "--out", str(out),
            "--top", "3", "--threads", "1"] + (["--cache", cache] if cache else [])
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    from fastremask.tools.bench import random_block_model

    model = random_block_model(family, "cpu", size="tiny")
    prompt = torch.randint(0, model.mask_id, (1, 6), generator=torch.Generator(device="cpu").manual_seed(0))
    _, trace = generate(model, prompt, steps=2 * block, gen_length=2 * block, block_length=block, mask_id=None, seed=0,
                        threshold=0.9, threshold_floor="schedule", cache=cache, backend="torch",
                        return_trace=True)
    n = trace.model_calls
    assert f"phases over {n} model calls ({trace.positions} positions computed)" in text
    for phase, calls in (("model", n), ("sample", n), ("select", 2 * n)):    # the schedule floor selects twice
        assert re.search(rf"^  {phase} +{calls} calls", text, re.M), (phase, text)
    names = {e.get("name") for e in json.loads(out.read_text())["traceEvents"]}
    assert {"model", "sample", "select"} <= names
