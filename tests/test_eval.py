"""fastremask.evaluation.evaluate, fastremask.evaluation.train and the shipped demo model (CPU, seconds)."""
from fastremask import DATA_DIR
import argparse
import json
import os

import pytest
import torch

from fastremask.evaluation import evaluate as ev
from fastremask.evaluation import train
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
    ev.add_arguments(parser)
    out = tmp_path / "eval_small"
    args = parser.parse_args(["-n", "16", "--nfe", f"1,{A}", "--factors", "1", "--remasking", "low_confidence",
                              "--out", str(out), "--quiet"])
    assert ev.run(args) == 0
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
