"""The ``fastremask`` command: generate with the built-in model, the demo model and tiny HF
checkpoints; JSONL in and out; the trace and its picture; clear errors for bad inputs."""
from fastremask import DATA_DIR
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from toy_models import Counting

from fastremask import generate, models

from fastremask.tools import cli, records
from fastremask.tools import generate as gen_cmd

from fastremask.models import testing
from fastremask.models.tiny import tiny_model


REAL_DEMO_DIR = gen_cmd._demo_dir


@pytest.fixture(autouse=True)
def builtin_default(monkeypatch):
    """Unless a test says otherwise, no demo model: the default is the built-in tiny model."""
    monkeypatch.setattr(gen_cmd, "_demo_dir", lambda: None)


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
    monkeypatch.setattr(gen_cmd, "_demo_dir", lambda: str(demo))
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
      "--pad-id", "5", "--gen-length", "32"], "equals the mask id"),
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
    assert cli.main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastremask: error: ") and err.count("\n") == 1 and "frobnicate" in err
    assert cli.main([]) == 2
    assert "generate" in capsys.readouterr().err
    assert cli.main(["generate", "--help"]) == 0
    assert "--resume" in capsys.readouterr().out


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
    monkeypatch.setattr(gen_cmd, "_demo_dir", lambda: demo)
    task = tasks.get_task(json.load(open(demo + "/demo.json"))["task"])
    for schedule in ("uniform", "pyramid"):
        rc, out, err = run(capsys, "--trace", "--schedule", schedule, "--temperature", "1")
        assert rc == 0, err
        lines = out.splitlines()
        prompt = lines[0].removeprefix("Prompt: ")
        answer = lines[-2].removeprefix("Final output: ")
        ok = task.check(torch.tensor([tasks.encode(prompt)]), torch.tensor([tasks.encode(answer)]))[0]
        assert lines[-1] == f"Correct: {'yes' if ok else 'no'} (task {task.name}, checked exactly)"


@pytest.mark.skipif(not os.path.isfile(os.path.join(DATA_DIR, "config.json")), reason="no demo checkpoint")
def test_copy_of_the_demo_folder_is_a_model_like_the_shipped_one(tmp_path, monkeypatch, capsys):
    """``--model`` on a copy of fastremask/data reads its demo.json: the task's prompt and answer
    length by default, the exact verdict, the same trace as the shipped demo model."""
    copy = tmp_path / "demo copy"
    shutil.copytree(DATA_DIR, copy)
    rc, out, err = run(capsys, "--model", str(copy), "--trace", "--device", "cpu")
    assert rc == 0, err
    assert out.splitlines()[-1].startswith("Correct: ")
    monkeypatch.setattr(gen_cmd, "_demo_dir", lambda: DATA_DIR)
    rc, shipped, err = run(capsys, "--trace", "--device", "cpu")
    assert rc == 0 and out == shipped, err
    assert json.load(open(os.path.join(DATA_DIR, "demo.json")))["command"].startswith(
        "python -m fastremask.evaluation.train ")                       # the module that exists


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
    # ... and generate itself builds exactly that one (spy on the run it calls; no sampling)
    from fastremask.sampler import loop

    seen = []
    monkeypatch.setattr(loop, "run", lambda model, prompt, config, **kw: seen.append(config) or prompt)
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
    monkeypatch.setattr(gen_cmd, "_load_model", lambda args: (a, None, "a model without EOS"))
    seen = _spy_run(monkeypatch)
    for flag in ("--logits-eos-inf", "--confidence-eos-eot-inf"):
        rc, _, err = run(capsys, "--gen-length", "4", flag)
        assert rc == 2 and seen == []
        assert err.startswith("fastremask: error: ") and err.count("\n") == 1, err
        assert "has no EOS" in err and "--eos-id" in err and "Traceback" not in err
    rc, _, err = run(capsys, "--gen-length", "4")          # without the flags it runs
    assert rc == 0, err


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

    m = Counting(tiny_model())                   # counts what the model receives, across the CLI's batches
    a = models.wrap(m.model)
    a.model = m
    monkeypatch.setattr(gen_cmd, "_load_model", lambda args: (a, None, "counting"))
    config = cli.config_from_args(_args(*argv), a)
    expect = gen_cmd._calls_per_run(config)
    assert expect == schedule.cost(config.gen_length, config.block_length, config.steps, config.schedule,
                                   config.factor).model_calls
    rc, _, err = run(capsys, *argv, "--prompt", "a", "--prompt", "b", "--prompt", "c", "--batch-size", "2")
    assert rc == 0, err
    assert m.calls == 2 * expect
    assert gen_cmd._calls_per_run(cli.config_from_args(_args("--threshold", "0.5"))) is None


# ----------------------------------------------------------------------------- streamed, crash-safe output


PROMPTS = ["Hi, I am", "The cat", "a", "bc", "Once upon", "xyz", "Q"]


def _prompts_file(tmp_path, bad_line: bool = True):
    """Seven prompts; line 4 is broken JSON when ``bad_line``, line 6 blank."""
    lines = [json.dumps({"prompt": p, "id": i}) for i, p in enumerate(PROMPTS)]
    if bad_line:
        lines.insert(3, '{"prompt": "cut')
    lines.insert(5, "")
    f = tmp_path / "in.jsonl"
    f.write_text("\n".join(lines) + "\n")
    return f


GEN = ["--no-progress", "--gen-length", "4", "--temperature", "1"]


def _gen(*argv):
    return cli.main(["generate", *GEN, *argv])


def _stop_at_call(monkeypatch, n: int, exc: BaseException, seen_lines=None, out=None):
    """`loop.run` that raises ``exc`` on its ``n``-th call (from 1); records how many lines
    ``out`` had at each call."""
    from fastremask.sampler import loop

    real, calls = loop.run, []

    def run(*a, **kw):
        calls.append(None)
        if seen_lines is not None:
            seen_lines.append(len(out.read_text().splitlines()) if out.exists() else None)
        if len(calls) == n:
            raise exc
        return real(*a, **kw)

    monkeypatch.setattr(loop, "run", run)
    return calls


def test_seeds_are_a_function_of_the_line(tmp_path, capsys):
    """Line n's seed is --seed + n - 1 whatever the batch it runs in: the same records for
    --batch-size 1, 2 and 7."""
    f = _prompts_file(tmp_path)
    outs = []
    for bs in (1, 2, 7):
        o = tmp_path / f"out{bs}.jsonl"
        assert _gen("--prompts-file", str(f), "--output", str(o), "--batch-size", str(bs), "--seed", "5") == 1
        outs.append(o.read_text())
    assert outs[0] == outs[1] == outs[2]
    recs = [json.loads(ln) for ln in outs[0].splitlines()]
    assert [(r["line"], r.get("seed")) for r in recs] == [(1, 5), (2, 6), (3, 7), (4, None), (5, 9), (7, 11),
                                                          (8, 12), (9, 13)]
    assert records.line_seed(5, 3) == 8 and records.line_seed(2**63 - 1, 2) == 1     # wraps as generate's row seeds


def test_each_batch_is_written_before_the_next_runs(tmp_path, monkeypatch):
    f, o = _prompts_file(tmp_path), tmp_path / "out.jsonl"
    seen = []
    _stop_at_call(monkeypatch, 0, RuntimeError, seen, o)
    assert _gen("--prompts-file", str(f), "--output", str(o), "--batch-size", "2") == 1
    # lines 1,2 | 3,5 (4 is the broken line, written with them) | 7,8 | 9
    assert seen == [0, 2, 5, 7]
    assert len(o.read_text().splitlines()) == 8


@pytest.mark.parametrize("exc,rc,word", [
    (KeyboardInterrupt(), 130, "fastremask: interrupted; "),
    (RuntimeError("the GPU fell over"), 1,
     "fastremask: error: RuntimeError: the GPU fell over (unexpected; rerun with --debug for the traceback); "),
])
def test_stop_keeps_the_results_and_resume_finishes_the_same(tmp_path, monkeypatch, capsys, exc, rc, word):
    f = _prompts_file(tmp_path)
    full = tmp_path / "full.jsonl"
    assert _gen("--prompts-file", str(f), "--output", str(full), "--batch-size", "2") == 1
    o = tmp_path / "out.jsonl"
    capsys.readouterr()
    _stop_at_call(monkeypatch, 3, exc)
    assert _gen("--prompts-file", str(f), "--output", str(o), "--batch-size", "2") == rc
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"{word}stopped at line 7 of {f}: 5 of 8 lines are in {o} (--resume continues)", err
    assert not any("Traceback" in ln for ln in err)
    assert o.read_text() == "".join(full.read_text().splitlines(keepends=True)[:5])   # batches 1, 2 kept
    monkeypatch.undo()
    monkeypatch.setattr(gen_cmd, "_demo_dir", lambda: None)
    # without --resume or --force the partial file is refused ...
    assert _gen("--prompts-file", str(f), "--output", str(o)) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    # ... with it the run continues (another batch size: the seeds are the lines') and ends as the full one
    assert _gen("--prompts-file", str(f), "--output", str(o), "--resume", "--batch-size", "3") == 1
    assert o.read_text() == full.read_text()
    # the broken line, written before the stop, still counts
    assert f"fastremask: error: 1 of 8 lines of {f} had errors" in capsys.readouterr().err


def test_interrupt_on_stdout(tmp_path, monkeypatch, capsys):
    _stop_at_call(monkeypatch, 2, KeyboardInterrupt())
    rc = _gen("--prompt", "a", "--prompt", "b", "--prompt", "c", "--batch-size", "2")
    out, err = capsys.readouterr()
    assert rc == 130
    assert out.splitlines()[0] == "[0] a" and out.splitlines()[2] == "[1] b" and len(out.splitlines()) == 4
    assert err.splitlines()[-1] == "fastremask: interrupted; stopped at prompt 2: 2 of 3 answers written to stdout"
    _stop_at_call(monkeypatch, 1, KeyboardInterrupt())
    f = _prompts_file(tmp_path, bad_line=False)
    assert _gen("--prompts-file", str(f)) == 130
    out, err = capsys.readouterr()
    assert out == "" and err.endswith(f"stopped at line 1 of {f}: 0 of 7 lines were written to stdout\n")


def test_closed_stdout_ends_quietly(tmp_path, monkeypatch, capsys):
    """``fastremask generate --prompts-file F | head -1``: the reader leaves; exit 141, no message."""

    class Closed:
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    assert _gen("--prompts-file", str(_prompts_file(tmp_path, bad_line=False))) == 141
    assert "error" not in capsys.readouterr().err


def test_resume_drops_a_cut_off_record_and_checks_the_file(tmp_path, capsys):
    f = _prompts_file(tmp_path)
    full, o = tmp_path / "full.jsonl", tmp_path / "out.jsonl"
    assert _gen("--prompts-file", str(f), "--output", str(full)) == 1
    text = full.read_text()
    o.write_text(text[:len(text) - 30])                     # killed mid-write: the last record is cut
    assert _gen("--prompts-file", str(f), "--output", str(o), "--resume") == 1
    assert o.read_text() == text
    o.write_text(text.rstrip("\n"))                         # the last newline missing: nothing to do
    assert _gen("--prompts-file", str(f), "--output", str(o), "--resume") == 1
    assert o.read_text() == text
    capsys.readouterr()
    # --resume with a missing file starts afresh
    o.unlink()
    assert _gen("--prompts-file", str(f), "--output", str(o), "--resume") == 1 and o.read_text() == text
    capsys.readouterr()
    # not this run's output: refused before the model is loaded, the file untouched
    for bad, why in [(["--seed", "1"], "line 1 in"), (["--seed", "1"], "seed 0 there, 1 now"),
                     (["--gen-length", "8"], "4 tokens there, --gen-length 8 now")]:
        o.write_text("".join(text.splitlines(keepends=True)[:2]))
        before = o.read_text()
        rc = cli.main(["generate", "--no-progress", "--temperature", "1", "--gen-length", "4", *bad,
                       "--prompts-file", str(f), "--output", str(o), "--resume"])
        err = capsys.readouterr().err
        assert rc == 2 and why in err and err.count("\n") == 1 and o.read_text() == before, err
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"prompt": "else"}) + "\n")
    o.write_text(text)
    assert _gen("--prompts-file", str(other), "--output", str(o), "--resume") == 2
    assert "which" in capsys.readouterr().err and o.read_text() == text
    o.write_text("not json\n{}\n")
    assert _gen("--prompts-file", str(f), "--output", str(o), "--resume") == 2
    assert "line 1 of" in capsys.readouterr().err


def test_existing_output_needs_force(tmp_path, capsys):
    f = _prompts_file(tmp_path, bad_line=False)
    o = tmp_path / "out.jsonl"
    o.write_text("precious\n")
    assert _gen("--prompts-file", str(f), "--output", str(o)) == 2
    err = capsys.readouterr().err
    assert err == (f"fastremask: error: --output {o} exists; pass --force to overwrite it, or --resume to "
                   "continue the run that wrote it\n")
    assert o.read_text() == "precious\n"
    assert _gen("--prompts-file", str(f), "--output", str(o), "--force") == 0
    assert len(o.read_text().splitlines()) == 7
    assert _gen("--prompts-file", str(f), "--output", str(f), "--force") == 2      # never the input itself
    assert "is the --prompts-file" in capsys.readouterr().err


def test_prompt_ids_outside_the_vocabulary(tmp_path, monkeypatch, capsys):
    """A tokenizer that does not match the model: the line and the id named, before any model call."""
    a = models.wrap(tiny_model())
    real = a.tokenize
    a.tokenize = lambda p, **kw: real(p, **kw) + ([500] if p == "The cat" else [])
    monkeypatch.setattr(gen_cmd, "_load_model", lambda args: (a, None, "mismatched"))
    seen = _spy_run(monkeypatch)
    f = _prompts_file(tmp_path, bad_line=False)
    o = tmp_path / "o.jsonl"
    assert _gen("--prompts-file", str(f), "--output", str(o)) == 1
    err = capsys.readouterr().err
    assert f"{f}:2: token id 500 (prompt token 7) is outside the model's vocabulary of 128" in err
    assert len(seen) == 1 and [json.loads(ln).get("error") is None for ln in o.read_text().splitlines()] == \
        [True, False, True, True, True, True, True]
    seen.clear()
    assert _gen("--prompt", "The cat") == 2 and seen == []
    assert "prompt 0: token id 500" in capsys.readouterr().err


def test_debug_shows_the_traceback(monkeypatch, capsys):
    assert _gen("--device", "foo") == 2
    assert "Traceback" not in capsys.readouterr().err
    assert _gen("--device", "foo", "--debug") == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("fastremask: error: --device 'foo'")
    monkeypatch.setenv("FASTREMASK_DEBUG", "1")                 # read when the error happens
    assert _gen("--device", "foo") == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("FASTREMASK_DEBUG", "0")
    assert _gen("--device", "foo") == 2
    assert "Traceback" not in capsys.readouterr().err


def test_help_imports_no_torch():
    code = ("import sys; from fastremask.tools import cli; rc = cli.main(['generate', '--help']); "
            "rc2 = cli.main(['--help']); print(rc, rc2, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.splitlines()[-1] == "0 0 False", r.stderr


def test_sigint_of_a_real_run(tmp_path):
    """Ctrl-C (SIGINT) of a running ``fastremask generate``: exit 130, the message, whole records."""
    import os
    import signal
    import time

    f = tmp_path / "in.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(200)))
    o = tmp_path / "out.jsonl"
    code = ("import sys; from fastremask.tools import cli, generate; generate._demo_dir = lambda: None; "
            "sys.exit(cli.main(sys.argv[1:]))")
    p = subprocess.Popen([sys.executable, "-c", code, "generate", "--no-progress", "--prompts-file", str(f),
                          "--output", str(o), "--batch-size", "1", "--gen-length", "32"],
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and (not o.exists() or len(o.read_text().splitlines()) < 2):
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    lines = o.read_text().splitlines()
    assert p.returncode == 130, err
    assert err.splitlines()[-1].startswith("fastremask: interrupted; stopped at line ") and "Traceback" not in err
    assert f"{len(lines)} of 200 lines are in {o} (--resume continues)" in err
    assert [json.loads(ln)["line"] for ln in lines] == list(range(1, len(lines) + 1))


# ----------------------------------------------------------------------------- docs/cli.md runs


def _shell_blocks(path):
    """The ```bash blocks of ``path``: lists of commands (continuation lines joined, comments
    and blank lines dropped)."""
    import pathlib
    import re

    text = pathlib.Path(path).read_text()
    blocks = []
    for body in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        body = body.replace("\\\n", " ")
        blocks.append([ln.strip() for ln in body.splitlines() if ln.strip() and not ln.strip().startswith("#")])
    return blocks


DOCS_CLI = __import__("pathlib").Path(__file__).resolve().parents[1] / "docs" / "cli.md"
CLI_BLOCKS = _shell_blocks(DOCS_CLI)


def _needs(argv) -> str | None:
    """Why a documented command cannot run here (a hub model, CUDA), or None."""
    import os
    import re

    if "--model" in argv:
        m = argv[argv.index("--model") + 1]
        if not os.path.exists(m) and re.fullmatch(r"[\w.-]+/[\w.-]+", m):
            return f"needs the hub model {m} (network, a GPU)"
    if any(a.startswith("cuda") for a in argv) and not torch.cuda.is_available():
        return "needs a CUDA device"
    return None


@pytest.mark.parametrize("index", range(len(CLI_BLOCKS)), ids=[f"cli.md-bash-{i}" for i in range(len(CLI_BLOCKS))])
def test_cli_md_shell_examples(index, tmp_path, monkeypatch, capsys):
    """Every command of docs/cli.md's shell blocks runs as written, in order, in a scratch folder
    (with the shipped demo model: the default a reader gets). ``fastremask`` lines run in-process;
    other lines (``printf ... > in.jsonl``) in bash. A block that needs the hub or a GPU is
    skipped with that reason, and then holds nothing else."""
    import shlex

    monkeypatch.setattr(gen_cmd, "_demo_dir", REAL_DEMO_DIR)
    monkeypatch.chdir(tmp_path)
    commands = CLI_BLOCKS[index]
    needs = [_needs(shlex.split(c)) for c in commands]
    if any(needs):
        assert all(needs), f"put the commands that need the hub or a GPU in a block of their own: {commands}"
        pytest.skip(needs[0])
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "fastremask" and not any(op in argv for op in ("|", ">", "<", "&&", ";")):
            rc = cli.main(argv[1:])
            out, err = capsys.readouterr()
            assert rc == 0, (command, err)
            assert "error" not in err, (command, err)
        else:
            r = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, (command, r.stderr)
    if any(c.startswith("fastremask generate --prompts-file in.jsonl") for c in commands):
        recs = [json.loads(ln) for ln in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert [r["line"] for r in recs] == [1, 2] and recs[0]["id"] == "a" and recs[0]["seed"] == 7


def test_cli_md_examples_are_found():
    assert sum(len(b) for b in CLI_BLOCKS) >= 6
    assert any(_needs(__import__("shlex").split(c)) for b in CLI_BLOCKS for c in b)   # the hub one
