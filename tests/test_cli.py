"""The ``fastremask`` command: generate with the built-in model, the demo model and tiny HF
checkpoints; JSONL in and out; the trace and its picture; clear errors for bad inputs."""
from fastremask import DATA_DIR
import json
import shutil
import subprocess
import sys

import pytest
import torch

from fastremask import generate, models

from fastremask.tools import cli

from fastremask.models import testing
from fastremask.models.tiny import tiny_model


@pytest.fixture(autouse=True)
def builtin_default(monkeypatch):
    """Unless a test says otherwise, no demo model: the default is the built-in tiny model."""
    monkeypatch.setattr(cli, "_demo_dir", lambda: None)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return {
        "llada": str(testing.save_tiny_llada(root / "llada")),
        "dream": str(testing.save_tiny_dream(root / "dream")),
        "mdlm": str(testing.save_tiny_mdlm(root / "mdlm")),
        "nomask": str(testing.save_tiny_llada(root / "nomask", mask_token=False)),
    }


def run(capsys, *argv):
    rc = cli.main(["generate", "--no-progress", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_builtin_model_trace(capsys):
    rc, out, err = run(capsys, "--prompt", "Hi, I am", "--gen-length", "8", "--trace")
    assert rc == 0, err
    assert "built-in tiny model" in err
    prompt_line, *lines = out.splitlines()
    assert prompt_line == "Prompt: Hi, I am"
    assert [ln.split(",")[0] for ln in lines[:8]] == [f"step {i}" for i in range(8)]
    assert all(", Keeping: [" in ln for ln in lines[:8])
    assert lines[8].startswith("Final output: ")
    # the same tokens as generate itself (seed 0 for the first prompt)
    a = models.wrap(tiny_model())
    ids, _ = a.encode(["Hi, I am"])
    sup = a.tokenizer.unused_ids
    x = generate(a, ids, steps=8, gen_length=8, block_length=8, mask_id=a.mask_id, seed=0, suppress_tokens=sup)
    assert lines[8] == "Final output: " + a.decode(x[0, ids.shape[1]:].tolist())


def test_pyramid_trace_counts(capsys):
    rc, out, _ = run(capsys, "--gen-length", "10", "--schedule", "pyramid", "--trace", "--temperature", "1")
    assert rc == 0
    steps = [ln for ln in out.splitlines() if ln.startswith("step ")]
    kept = [len(eval(ln.split("Keeping: ", 1)[1])) for ln in steps]  # noqa: S307 - our own repr
    assert kept == [1, 2, 3, 4]


def test_prompts_file_broken_lines(tmp_path, capsys):
    f = tmp_path / "in.jsonl"
    f.write_text("\n".join([
        json.dumps({"prompt": "Hi, I am", "id": "first"}),
        '{"prompt": "broken"',
        "",
        json.dumps({"text": "no prompt field"}),
        json.dumps({"prompt": "The cat", "seed": 99}),
        json.dumps([1, 2]),
    ]) + "\n")
    out_file = tmp_path / "out.jsonl"
    rc = cli.main(["generate", "--no-progress", "--prompts-file", str(f), "--output", str(out_file),
                   "--gen-length", "4", "--temperature", "1", "--batch-size", "2", "--trace"])
    _, err = capsys.readouterr()
    assert rc == 1
    assert f"{f}:2: invalid JSON" in err
    assert f'{f}:4: missing "prompt"' in err
    assert f"{f}:6: expected a JSON object" in err
    recs = [json.loads(ln) for ln in out_file.read_text().splitlines()]
    assert [r["line"] for r in recs] == [1, 2, 4, 5, 6]
    good = {r["line"]: r for r in recs if "error" not in r}
    assert set(good) == {1, 5}
    assert good[1]["id"] == "first" and good[1]["seed"] == 0 and good[5]["seed"] == 99
    assert len(good[1]["tokens"]) == 4 and isinstance(good[1]["output"], str)
    assert sum(len(kept) for _, kept in good[1]["trace"]) == 4
    # each line's tokens are what generate gives that prompt alone with that seed
    a = models.wrap(tiny_model())
    for r in good.values():
        ids, _ = a.encode([r["prompt"]])
        x = generate(a, ids, steps=4, gen_length=4, block_length=4, mask_id=a.mask_id, seed=r["seed"],
                     temperature=1.0, suppress_tokens=a.tokenizer.unused_ids)
        assert x[0, ids.shape[1]:].tolist() == r["tokens"]


def test_trace_png(tmp_path, capsys):
    png = tmp_path / "trace.png"
    rc, _, err = run(capsys, "--gen-length", "12", "--block-length", "6", "--schedule", "pyramid",
                     "--trace-png", str(png))
    assert rc == 0, err
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    rc, _, _ = run(capsys, "--gen-length", "4", "--prompt", "a", "--prompt", "bc", "--trace-png", str(png))
    assert rc == 0
    assert (tmp_path / "trace-0.png").exists() and (tmp_path / "trace-1.png").exists()


def test_hf_llada_chat_batch(ckpt, capsys):
    rc, out, err = run(capsys, "--model", ckpt["llada"], "--trust-remote-code", "--chat",
                       "--prompt", "hi i am a cat", "--prompt", "hello", "--gen-length", "4",
                       "--temperature", "1", "--logits-eos-inf", "--confidence-eos-eot-inf")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "[0] hi i am a cat" and lines[2] == "[1] hello"


def test_hf_dream(ckpt, capsys):
    rc, out, err = run(capsys, "--model", ckpt["dream"], "--trust-remote-code", "--prompt", "hi i am",
                       "--gen-length", "4", "--block-length", "2", "--trace")
    assert rc == 0, err
    assert out.count("Keeping:") == 4


def test_demo_model_is_the_default(tmp_path, monkeypatch, capsys):
    from fastremask.evaluation import tasks

    demo = tmp_path / "data"
    tiny_model(vocab_size=len(tasks.VOCAB)).save_pretrained(demo)
    (demo / "demo.json").write_text(json.dumps({"task": "add:3"}))
    monkeypatch.setattr(cli, "_demo_dir", lambda: str(demo))
    rc, out, err = run(capsys)
    assert rc == 0, err
    answer = out.strip()
    assert len(answer) == tasks.get_task("add:3").answer_length     # the task's answer length
    assert set(answer) <= set(tasks.VOCAB[:14])


@pytest.mark.parametrize("argv,message", [
    (["--model", "{mdlm}", "--trust-remote-code"], "--family"),
    (["--model", "{llada}"], "--trust-remote-code"),
    (["--model", "{nomask}", "--trust-remote-code"], "--mask-id"),
    (["--model", "{llada}", "--trust-remote-code", "--prompt", "hi i am", "--prompt", "cat",
      "--pad-id", "5"], "equals the mask id"),
    (["--prompt", "a", "--prompts-file", "x.jsonl"], "not both"),
    (["--prompts-file", "/nonexistent/in.jsonl"], "cannot read --prompts-file"),
    (["--gen-length", "6", "--block-length", "4"], "multiple of block_length"),
    (["--system", "be brief"], "--system needs --chat"),
    (["--model", "{mdlm}", "--trust-remote-code", "--family", "llada", "--prompt", "hi <|mdm_mask|>"],
     "contains the mask token"),
])
def test_bad_inputs_are_clear(ckpt, capsys, argv, message):
    argv = [a.format(**ckpt) for a in argv]
    rc, _, err = run(capsys, *argv)
    assert rc == 2
    assert "fastremask: error:" in err and message in err
    assert "Traceback" not in err


def test_unknown_subcommand_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["frobnicate"])
    assert e.value.code == 2
    assert cli.main([]) == 2
    assert "generate" in capsys.readouterr().err


def test_external_commands_are_optional(monkeypatch, capsys):
    monkeypatch.setattr(cli, "EXTERNAL_COMMANDS", {
        "missing": ("fastremask_no_such_module", "absent"),
        "nocli": ("json", "present but without add_arguments/run"),
    })
    parser = cli.build_parser(["generate"])
    helptext = parser.format_help()
    assert "nocli" in helptext and "missing" not in helptext
    assert cli.main(["nocli"]) == 2
    assert "'fastremask nocli' is unavailable" in capsys.readouterr().err


def test_external_command_runs(monkeypatch, tmp_path, capsys):
    mod = tmp_path / "fr_fake_cmd.py"
    mod.write_text("def add_arguments(p):\n    p.add_argument('--n', type=int, default=1)\n"
                   "def run(args):\n    print('ran', args.n)\n    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "EXTERNAL_COMMANDS", {"fake": ("fr_fake_cmd", "a fake command")})
    assert cli.main(["fake", "--n", "3"]) == 0
    assert capsys.readouterr().out == "ran 3\n"


@pytest.mark.skipif(shutil.which("fastremask") is None, reason="the fastremask script is not installed")
def test_console_script():
    r = subprocess.run(["fastremask", "generate", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--trace-png" in r.stdout


def test_module_entry():
    r = subprocess.run([sys.executable, "-m", "fastremask.tools.cli", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "generate" in r.stdout


def _spy_run(monkeypatch):
    """Record the `SamplingConfig` of every `fastremask.run` call (the CLI's and generate's)."""
    from fastremask.sampler import loop

    seen, real = [], loop.run

    def spy(model, prompt, config, **kw):
        seen.append(config)
        return real(model, prompt, config, **kw)

    monkeypatch.setattr(loop, "run", spy)
    return seen


def test_logits_window_flag_gives_the_same_answer(capsys, monkeypatch):
    seen = _spy_run(monkeypatch)
    argv = ("--prompt", "Hi, I am", "--gen-length", "8", "--block-length", "4", "--steps", "8",
            "--temperature", "1", "--backend", "torch")
    rc, full, err = run(capsys, *argv)
    assert rc == 0, err
    rc, window, err = run(capsys, *argv, "--logits-window")
    assert rc == 0, err
    assert [c.logits_window for c in seen] == [False, True]
    assert window == full


def test_shipped_demo_trace_prints_prompt_and_exact_verdict(monkeypatch, capsys):
    from fastremask.evaluation import tasks

    demo = DATA_DIR
    monkeypatch.setattr(cli, "_demo_dir", lambda: demo)
    task = tasks.get_task(json.load(open(demo + "/demo.json"))["task"])
    for schedule in ("uniform", "pyramid"):
        rc, out, err = run(capsys, "--trace", "--schedule", schedule, "--temperature", "1")
        assert rc == 0, err
        lines = out.splitlines()
        prompt = lines[0].removeprefix("Prompt: ")
        answer = lines[-2].removeprefix("Final output: ")
        ok = task.check(torch.tensor([tasks.encode(prompt)]), torch.tensor([tasks.encode(answer)]))[0]
        assert lines[-1] == f"Correct: {'yes' if ok else 'no'} (task {task.name}, checked exactly)"


# ----------------------------------------------------------------------------- one SamplingConfig


def _args(*argv):
    return cli.build_parser(["generate"]).parse_args(["generate", *argv])


@pytest.mark.parametrize("argv,keywords", [
    ([], dict(steps=128, gen_length=128, block_length=128)),
    (["--gen-length", "12", "--block-length", "4", "--steps", "9", "--temperature", "0.5", "--cfg-scale", "1.5",
      "--remasking", "margin", "--schedule", "pyramid", "--factor", "2", "--backend", "reference",
      "--logits-eos-inf", "--confidence-eos-eot-inf", "--suppress-tokens", "5,4", "--defer-tokens", "7",
      "--logits-window"],
     dict(steps=9, gen_length=12, block_length=4, temperature=0.5, cfg_scale=1.5, remasking="margin",
          schedule="pyramid", factor=2, backend="reference", logits_eos_inf=True, confidence_eos_eot_inf=True,
          suppress_tokens=[4, 5], defer_tokens=[7], logits_window=True)),
    (["--gen-length", "8", "--threshold", "0.7", "--schedule", "1,2,5"],
     dict(steps=8, gen_length=8, block_length=8, threshold=0.7, schedule=[1, 2, 5])),
])
def test_config_from_args_is_generates_config(monkeypatch, argv, keywords):
    """The CLI's options become the `SamplingConfig` generate builds from the same keywords."""
    from fastremask import SamplingConfig

    assert cli.config_from_args(_args(*argv)) == SamplingConfig(**keywords)
    # ... and generate itself builds exactly that one (spy on the run it calls)
    seen = _spy_run(monkeypatch)
    a = models.wrap(tiny_model())
    ids, _ = a.encode(["Hi"])
    generate(a, ids, seed=0, mask_id=None, **keywords)        # mask_id None: the model's, as the CLI
    assert seen == [cli.config_from_args(_args(*argv))]


def test_cli_runs_with_its_config(capsys, monkeypatch):
    """What `fastremask generate` samples with: its config, with the tokenizer's unused ids
    suppressed and the ids left to the model (mask, EOS and EoT resolved from the adapter)."""
    seen = _spy_run(monkeypatch)
    rc, _, err = run(capsys, "--gen-length", "6", "--block-length", "3", "--steps", "4", "--logits-eos-inf",
                     "--suppress-tokens", "9")
    assert rc == 0, err
    a = models.wrap(tiny_model())
    want = cli.config_from_args(_args("--gen-length", "6", "--block-length", "3", "--steps", "4",
                                      "--logits-eos-inf", "--suppress-tokens", "9"), a)
    assert seen == [want]
    assert want.mask_id is None and want.logits_eos_inf
    assert want.suppress_tokens == tuple(sorted({9, *a.tokenizer.unused_ids}))


@pytest.mark.parametrize("argv,keywords", [
    (["--temperature", "-1"], dict(temperature=-1.0)),
    (["--cfg-scale", "-0.5"], dict(cfg_scale=-0.5)),
    (["--threshold", "nan"], dict(threshold=float("nan"))),
    (["--gen-length", "8", "--block-length", "4", "--steps", "3"], dict(gen_length=8, block_length=4, steps=3)),
    (["--gen-length", "4", "--schedule", "1,2"], dict(gen_length=4, block_length=4, steps=4, schedule=[1, 2])),
    (["--gen-length", "4", "--factor", "0", "--schedule", "pyramid"],
     dict(gen_length=4, block_length=4, steps=4, factor=0, schedule="pyramid")),
    (["--gen-length", "0"], dict(gen_length=0)),
    (["--suppress-tokens", "-3"], dict(suppress_tokens=[-3])),
])
def test_bad_option_same_message_as_generate(capsys, monkeypatch, argv, keywords):
    """A bad sampling option is rejected once, before any model call, with generate's message."""
    a = models.wrap(tiny_model())
    ids, _ = a.encode(["Hi"])
    with pytest.raises((ValueError, TypeError)) as api:
        generate(a, ids, **keywords)
    seen = _spy_run(monkeypatch)
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == "" and seen == []
    assert err.count("fastremask: error:") == 1 and "Traceback" not in err
    assert str(api.value) in err


def test_model_without_eos_is_a_clear_error(capsys, monkeypatch):
    a = models.wrap(tiny_model())
    a.eos_id = a.eot_id = None
    monkeypatch.setattr(cli, "_load_model", lambda args: (a, None, "a model without EOS"))
    seen = _spy_run(monkeypatch)
    for flag in ("--logits-eos-inf", "--confidence-eos-eot-inf"):
        rc, _, err = run(capsys, "--gen-length", "4", flag)
        assert rc == 2 and seen == []
        assert err.startswith("fastremask: error: ") and err.count("\n") == 1, err
        assert "has no EOS" in err and "--eos-id" in err and "Traceback" not in err
    rc, _, err = run(capsys, "--gen-length", "4")          # without the flags it runs
    assert rc == 0, err


class _Counting(torch.nn.Module):
    """The tiny model, counting its forward calls."""

    def __init__(self):
        super().__init__()
        self.inner, self.calls = tiny_model(), 0

    def forward(self, *a, **kw):
        self.calls += 1
        return self.inner(*a, **kw)


@pytest.mark.parametrize("argv", [
    ["--gen-length", "8", "--steps", "8"],
    ["--gen-length", "8", "--block-length", "4", "--steps", "16"],     # uniform: steps that keep 0
    ["--gen-length", "12", "--block-length", "6", "--schedule", "pyramid"],
    ["--gen-length", "12", "--block-length", "6", "--steps", "8", "--schedule", "pyramid", "--factor", "2"],
    ["--gen-length", "6", "--steps", "5", "--schedule", "0,2,0,4,0"],  # a list with zeros
    ["--gen-length", "6", "--steps", "6", "--cfg-scale", "1"],
])
def test_calls_per_run_counts_the_model_calls(capsys, monkeypatch, argv):
    """The progress bar's total (`SamplingConfig.model_calls`, `schedule.cost`'s count) is what
    the model receives, per batch."""
    from fastremask.sampler import schedule

    m = _Counting()
    a = models.wrap(m.inner)
    a.model = m
    monkeypatch.setattr(cli, "_load_model", lambda args: (a, None, "counting"))
    config = cli.config_from_args(_args(*argv), a)
    expect = cli._calls_per_run(config)
    assert expect == schedule.cost(config.gen_length, config.block_length, config.steps, config.schedule,
                                   config.factor).model_calls
    rc, _, err = run(capsys, *argv, "--prompt", "a", "--prompt", "b", "--prompt", "c", "--batch-size", "2")
    assert rc == 0, err
    assert m.calls == 2 * expect
    assert cli._calls_per_run(cli.config_from_args(_args("--threshold", "0.5"))) is None
