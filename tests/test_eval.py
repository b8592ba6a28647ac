"""fastremask.evaluation.evaluate, fastremask.evaluation.train and the shipped demo model (CPU, seconds)."""
from fastremask import DATA_DIR
import argparse
import json
import os
import re

import pytest
import torch

from fastremask.evaluation import evaluate as ev
from fastremask.evaluation import train
from fastremask.tools import eval_command
from fastremask.sampler.schedule import pyramid_steps
from fastremask.evaluation.tasks import MASK_ID, Addition, get_task
from fastremask.models.tiny import TinyMaskedLM, tiny_model

DEMO = DATA_DIR
HAS_DEMO = os.path.exists(os.path.join(DEMO, "model.safetensors"))


@pytest.mark.parametrize("n", [1, 2, 7, 16, 33])
def test_ramp_counts(n):
    for steps in range(1, n + 1):
        c = ev.ramp_counts(n, steps)
        assert len(c) == steps and sum(c) == n and min(c) >= 1
        assert c[0] == (n if steps == 1 else 1)
    assert ev.ramp_counts(n, n) == [1] * n
    with pytest.raises(ValueError):
        ev.ramp_counts(n, n + 1)


def test_plan():
    pts = ev.plan(["uniform", "pyramid"], ["low_confidence", "random"], [1, 4, 16], [1, 2], 16)
    assert len(pts) == 2 * 3 + 2 * 2
    assert ev.Point("pyramid", 2, "random") in pts
    assert ev.Point("pyramid", 1, "random").expected_nfe(16) == pyramid_steps(16, 1) == 6
    with pytest.raises(ValueError, match="outside"):
        ev.plan(["uniform"], ["random"], [17], [], 16)
    with pytest.raises(ValueError, match="unknown schedule family"):
        ev.plan(["cosine"], ["random"], [1], [], 16)


class _Oracle(torch.nn.Module):
    """Knows the answer: logits put mass on the true digit at every answer position, with a
    confidence that falls with the position (so confidence order is a real order)."""

    def __init__(self, task):
        super().__init__()
        self.task = task
        self.config = argparse.Namespace(vocab_size=16, mask_id=MASK_ID)
        self.mask_id = MASK_ID

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, x, attention_mask=None):
        P = self.task.prompt_length
        truth = self.task.solve(x[:, :P])
        logits = torch.zeros(x.shape[0], x.shape[1], 16)
        ramp = torch.linspace(4.0, 1.0, truth.shape[1])
        logits[:, P:].scatter_(2, truth[..., None], ramp.expand_as(truth)[..., None].contiguous())
        return argparse.Namespace(logits=logits)


def test_evaluate_oracle_is_perfect_and_nfe_is_counted():
    task = Addition(digits=4)
    rows = ev.evaluate(_Oracle(task), task, schedules=["uniform", "pyramid", "ramp"],
                       remasking=["low_confidence", "random"], nfe_grid=[1, 2, 5], factors=[1, 2],
                       n_examples=12, batch_size=5, seed=3)
    assert len(rows) == 2 * 3 + 2 * 2 + 2 * 3
    for r in rows:
        assert r.correct == r.n == 12 and r.accuracy == 1.0 and r.token_accuracy == 1.0
        assert r.ci_high == 1.0 and r.ci_low < 1.0
        fam, setting = r.family, int(r.setting.split("=")[1])
        assert r.nfe == (pyramid_steps(5, setting) if fam == "pyramid" else setting)
        assert r.nfe == ev.Point(fam, setting, r.remasking).expected_nfe(5)   # predicted = measured


def test_evaluate_untrained_model_is_deterministic():
    task = get_task("add:3")
    m = tiny_model(vocab_size=16, d_model=16, n_heads=2, n_layers=1, max_len=16)
    kw = dict(schedules=["uniform", "pyramid"], remasking=["random"], nfe_grid=[2, 4],
              factors=[1], n_examples=10, batch_size=4, seed=1)
    a = ev.evaluate(m, task, **kw)
    b = ev.evaluate(m, task, **dict(kw, batch_size=10))  # per-example seeds: batch size does not matter
    assert [(r.correct, r.token_accuracy) for r in a] == [(r.correct, r.token_accuracy) for r in b]
    assert all(r.accuracy < 0.5 for r in a)  # untrained


def test_train_reproducible(tmp_path):
    args = ["--task", "add:3", "--d-model", "16", "--layers", "1", "--heads", "2", "--steps", "3",
            "--batch", "8", "--eval-every", "3", "--eval-examples", "8", "--threads", "1"]
    train.main(args + ["--out", str(tmp_path / "a"), "--log", str(tmp_path / "log")])
    train.main(args + ["--out", str(tmp_path / "b")])
    a, b = (TinyMaskedLM.from_pretrained(tmp_path / d) for d in "ab")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    meta = json.loads((tmp_path / "a" / "demo.json").read_text())
    assert meta["task"] == "add:3" and meta["history"][-1]["step"] == 3
    assert "step      3" in (tmp_path / "log").read_text()
    model, task = ev.load_model(str(tmp_path / "a"))
    assert task == get_task("add:3") and model.config.vocab_size == 16


def test_masked_diffusion_loss_ignores_unmasked():
    task = get_task("add:3")
    m = tiny_model(vocab_size=16, d_model=16, n_heads=2, n_layers=1, max_len=16)
    p, a = task.test_set(4)
    loss = train.masked_diffusion_loss(m, p, a, torch.Generator().manual_seed(0))
    assert loss.dim() == 0 and torch.isfinite(loss) and loss > 0


@pytest.mark.skipif(not HAS_DEMO, reason="no demo checkpoint in fastremask/data")
def test_cli_eval_on_demo_model(tmp_path, capsys):
    model, task = ev.load_model()
    A = task.answer_length
    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    out = tmp_path / "eval_small"
    args = parser.parse_args(["-n", "16", "--nfe", f"1,{A}", "--factors", "1", "--remasking", "low_confidence",
                              "--out", str(out), "--quiet"])
    assert eval_command.run(args) == 0
    for ext in (".md", ".csv", ".json", ".png"):
        assert (tmp_path / ("eval_small" + ext)).stat().st_size > 0
    rows = json.loads((tmp_path / "eval_small.json").read_text())["rows"]
    assert [(r["family"], r["nfe"]) for r in rows] == [("uniform", 1), ("uniform", A), ("pyramid", pyramid_steps(A, 1))]
    # the shipped model is trained: one token per call gets most of 16 examples right
    assert rows[1]["correct"] >= 12
    assert f"| uniform | steps={A} | low_confidence | {A} | 16 |" in capsys.readouterr().out


# ----------------------------------------------------------------------------- one SamplingConfig


def _spy_run(monkeypatch):
    from fastremask.sampler import loop

    seen, real = [], loop.run

    def spy(model, prompt, config, **kw):
        seen.append((config, kw.get("seed")))
        return real(model, prompt, config, **kw)

    monkeypatch.setattr(loop, "run", spy)
    return seen


def test_points_sample_with_generates_config(monkeypatch):
    """Each point runs with the `SamplingConfig` generate builds from the same keywords."""
    from fastremask import SamplingConfig, generate

    task = Addition(digits=4)
    A = task.answer_length
    seen = _spy_run(monkeypatch)
    ev.evaluate(_Oracle(task), task, schedules=["uniform", "pyramid", "ramp", "ramp_down"], remasking=["margin"],
                nfe_grid=[2], factors=[2], n_examples=3, batch_size=3, seed=7, temperature=0.5, backend="reference")
    want = [dict(steps=2, schedule="uniform"), dict(steps=A, schedule="pyramid", factor=2),
            dict(steps=2, schedule=ev.ramp_counts(A, 2)), dict(steps=2, schedule=ev.ramp_counts(A, 2)[::-1])]
    assert [c for c, _ in seen] == [
        SamplingConfig(gen_length=A, block_length=A, temperature=0.5, remasking="margin", backend="reference",
                       **kw) for kw in want]
    assert [s for _, s in seen] == [7] * 4
    # generate with those keywords builds the same config
    got = len(seen)
    prompts, _ = task.test_set(1)
    generate(_Oracle(task), prompts, gen_length=A, block_length=A, temperature=0.5, remasking="margin",
             mask_id=None, backend="reference", seed=7, **want[1])
    assert seen[got][0] == seen[1][0]


def test_expected_nfe_is_the_config_count():
    """The predicted NFE is `SamplingConfig.model_calls`, i.e. `schedule.cost`'s count."""
    from fastremask.sampler import schedule

    A = 16
    for pt in ev.plan(list(ev.FAMILIES), ["random"], [1, 3, 5, 16], [1, 2, 3], A):
        cfg = pt.config(A)
        assert pt.expected_nfe(A) == cfg.model_calls() == schedule.cost(
            A, A, cfg.steps, cfg.schedule, cfg.factor).model_calls, pt


def test_shared_options_as_a_config(monkeypatch):
    """``config=`` gives the shared options as a `SamplingConfig`: the same run as the keywords;
    a bad shared option is rejected before any model call, with SamplingConfig's message."""
    from fastremask import SamplingConfig

    task = Addition(digits=3)
    kw = dict(schedules=["uniform"], remasking=["random"], nfe_grid=[2], n_examples=4, batch_size=4, seed=1)
    seen = _spy_run(monkeypatch)
    a = ev.evaluate(_Oracle(task), task, temperature=1.0, **kw)
    b = ev.evaluate(_Oracle(task), task, config=SamplingConfig(temperature=1.0, backend="torch"), **kw)
    assert [(r.correct, r.nfe) for r in a] == [(r.correct, r.nfe) for r in b]
    assert seen[0] == seen[1]
    with pytest.raises(ValueError, match="not both"):
        ev.evaluate(_Oracle(task), task, temperature=1.0, config=SamplingConfig(), **kw)
    del seen[:]
    with pytest.raises(ValueError) as e:
        ev.evaluate(_Oracle(task), task, **dict(kw, remasking=["random", "lowest"]))
    assert seen == []
    with pytest.raises(ValueError) as api:
        SamplingConfig(remasking="lowest")
    assert str(e.value) == str(api.value)


# ----------------------------------------------------------------------------- bad arguments


@pytest.fixture
def no_demo_json(tmp_path):
    """The demo checkpoint without its demo.json: a model folder that names no task."""
    import shutil

    folder = tmp_path / "nodemo"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(DEMO, name), folder / name)
    return str(folder)


@pytest.mark.skipif(not HAS_DEMO, reason="no demo checkpoint in fastremask/data")
def test_module_without_task_is_one_line(no_demo_json):
    """``python -m fastremask.tools.eval_command`` on a model without demo.json and no --task:
    one ``fastremask: error:`` line and status 2, as ``fastremask eval`` (it used to print a
    traceback); ``--debug`` adds the traceback."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "fastremask.tools.eval_command", "--model", no_demo_json]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.splitlines() == [f"fastremask: error: --task is required: the model folder {no_demo_json} "
                                     "has no demo.json naming its task (e.g. --task perm:12)"]
    assert p.stdout == ""
    p = subprocess.run(cmd + ["--debug"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" in p.stderr


BAD_ARGS = [
    (["--model", "{nodemo}"], "--task is required"),
    (["--task", "nope"], "--task nope: unknown task 'nope'"),
    (["--task", "perm:100"], "--task perm:100: "),
    (["--task", "sort:40"], "--task sort:40: prompt 80 + answer 40 = 120 positions, more than the model's max_len of 36"),
    (["--nfe", "1,x"], "argument --nfe: expected comma-separated integers, got '1,x'"),
    (["--factors", "two"], "argument --factors: expected comma-separated integers"),
    (["--nfe", "99"], "NFE values [99] are outside [1, answer length 12]"),
    (["-n", "0"], "-n/--examples must be >= 1, got 0"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--schedules", ","], "--schedules and --remasking each need at least one name"),
    (["--schedules", "cosine"], "unknown schedule family 'cosine'"),
    (["--remasking", "lowest"], "unknown remasking 'lowest'"),
    (["--temperature", "-1"], "temperature must be"),
    (["--backend", "fast"], "unknown backend 'fast'"),
    (["--device", "tpu9"], "--device 'tpu9'"),
    (["--model", "{missing}"], "--model: the model folder "),
    (["--model", "{file}"], "is a file, not a model folder"),
    (["--out", "{file}/x"], "is not a folder"),
    (["--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.mark.skipif(not HAS_DEMO, reason="no demo checkpoint in fastremask/data")
@pytest.mark.parametrize("argv,message", BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_bad_arguments_are_one_line(argv, message, no_demo_json, tmp_path, capsys):
    """Every argument error of the module's command line: status 2, one line naming it, no
    traceback, nothing generated (checked before any model call)."""
    file = tmp_path / "a-file"
    file.write_text("x")
    names = dict(nodemo=no_demo_json, missing=str(tmp_path / "missing"), file=str(file))
    argv = [a.format(**names) for a in argv]
    assert eval_command.main(["-n", "2", "--quiet", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("fastremask: error: ") and message in err and "Traceback" not in err


# ----------------------------------------------------------------------------- block-causal checkpoints


def test_eval_on_a_block_causal_checkpoint(tmp_path, monkeypatch):
    """`fastremask eval` on a block-causal tiny checkpoint (its ``attention``/``block_length``
    read back from config.json): ``--cache block`` samples the same tokens as the full-window
    recompute, with the same model calls (eval is for the demo tasks' token-id checkpoints;
    real block checkpoints, SDAR's layout, go through the lm-eval adapter, docs/eval.md)."""
    from fastremask.models.tiny import tiny_model
    from fastremask.sampler import loop

    folder = tmp_path / "tiny-block"
    tiny_model(vocab_size=20, attention="block_causal", block_length=4, max_len=32).save_pretrained(folder)
    model, _ = ev.load_model(str(folder))
    assert (model.attention, model.block_length) == ("block_causal", 4)
    seen, real = [], loop.run

    def spy(m, prompt, config, **kw):
        x, trace = real(m, prompt, config, **{**kw, "return_trace": True})
        seen.append((config.cache, x, trace.model_calls))
        return (x, trace) if kw.get("return_trace") else x

    monkeypatch.setattr(loop, "run", spy)
    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    for cache in ([], ["--cache", "block"]):
        args = parser.parse_args(["--model", str(folder), "--task", "add:3", "-n", "3", "--nfe", "2,4",
                                  "--schedules", "uniform", "--remasking", "low_confidence", "--block-length", "4",
                                  "--quiet", *cache])
        assert eval_command.run(args) == 0
    full = [s for s in seen if s[0] is None]
    cached = [s for s in seen if s[0] == "block"]
    assert len(full) == len(cached) == 2
    for (_, a, calls_a), (_, b, calls_b) in zip(full, cached):
        assert torch.equal(a, b) and calls_a == calls_b


def test_tiny_checkpoint_attention_fields_are_checked(tmp_path):
    from fastremask.models import ModelLoadError
    from fastremask.models.tiny import TinyMaskedLM, tiny_model

    folder = tmp_path / "tiny"
    tiny_model(vocab_size=20).save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    for fields, message in ((dict(attention="sideways"), "field 'attention' must be 'full' or 'block_causal'"),
                            (dict(attention="block_causal"), "field 'block_length' (None) goes with"),
                            (dict(block_length=4), "field 'block_length' (4) goes with")):
        (folder / "config.json").write_text(json.dumps({**cfg, **fields}))
        with pytest.raises(ModelLoadError, match=re.escape(message)):
            TinyMaskedLM.from_pretrained(folder)
