"""`fastremask profile` end to end on the tiny model, and the `Phases` wrapper it is built on."""
from __future__ import annotations

import argparse
import json

import torch

from fastremask import fast, generate, profile, reference
from fastremask.tiny import tiny_model


def test_phases_name_count_and_restore():
    model = tiny_model()
    prompt = torch.randint(0, model.mask_id, (1, 4), generator=torch.Generator().manual_seed(0))
    originals = (fast.sample_rows, fast.select, reference.sample_rows, reference.select)
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
    assert (fast.sample_rows, fast.select, reference.sample_rows, reference.select) == originals


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
