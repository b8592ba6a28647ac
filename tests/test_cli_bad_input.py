"""``fastremask`` over generated bad arguments and bad files (hypothesis): every run ends in
one line ``fastremask: error: ...`` on stderr (the last line; any other line also starts
``fastremask: ``), exit status 1 or 2, and no traceback. The CLI runs in-process
(`fastremask.tools.cli.main`), with the built-in tiny model unless a bad model folder is
the point."""
import json
import os
import shutil
import string
import tempfile

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fastremask.models.tiny import tiny_model
from fastremask.tools import cli
from fastremask.tools import generate as gen_cmd

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                derandomize=True)
BASE = ["generate", "--no-progress", "--gen-length", "2", "--temperature", "1"]


@pytest.fixture(autouse=True)
def builtin_default(monkeypatch):
    """No demo model: the default is the built-in tiny model (same for every example)."""
    monkeypatch.setattr(gen_cmd, "_demo_dir", lambda: None)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    tiny_model(n_layers=1, d_model=16, n_heads=2, max_len=32).save_pretrained(root / "tiny")
    return root


def assert_one_error(argv, capsys):
    rc = cli.main(argv)
    _, err = capsys.readouterr()
    lines = err.splitlines()
    assert rc in (1, 2), (argv, rc, err)
    assert "Traceback" not in err, (argv, err)
    errors = [ln for ln in lines if ln.startswith("fastremask: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], (argv, err)
    assert all(ln.startswith("fastremask: ") for ln in lines), (argv, err)
    return rc, errors[0]


# ----------------------------------------------------------------------------- bad arguments

_word = st.text(alphabet=string.ascii_letters + string.digits + "_.:/ -", min_size=1, max_size=12)
_nonint = _word.filter(lambda s: not s.strip().lstrip("+-").isdigit())
_nonfloat = _word.filter(lambda s: not _is_float(s))


def _is_float(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


def _not_a_device(s):
    s = s.strip().lower()
    return not s.startswith(("cpu", "cuda", "mps")) or s.startswith("cuda") and not _cuda()


def _cuda():
    import torch

    return torch.cuda.is_available()


def _missing_dir(name):
    return os.path.join("no-such-dir-fastremask", name or "x", "f.out")


BAD_ARGUMENTS = st.one_of(
    st.tuples(st.sampled_from(["--steps", "--gen-length", "--block-length", "--batch-size"]),
              st.integers(max_value=0).map(str)),
    st.tuples(st.sampled_from(["--steps", "--gen-length", "--block-length", "--batch-size", "--seed", "--factor",
                               "--mask-id", "--pad-id"]), _nonint),
    st.tuples(st.just("--seed"), st.one_of(st.integers(max_value=-1), st.integers(min_value=2**63)).map(str)),
    st.tuples(st.sampled_from(["--mask-id", "--pad-id", "--eos-id", "--eot-id"]), st.integers(max_value=-1).map(str)),
    st.tuples(st.sampled_from(["--temperature", "--cfg-scale"]),
              st.one_of(st.floats(max_value=-1e-6, allow_nan=False).map(repr), st.sampled_from(["nan", "inf", "-inf"]),
                        _nonfloat)),
    st.tuples(st.just("--threshold"), st.one_of(st.sampled_from(["nan", "inf"]), _nonfloat,
                                                # the default rule's confidence is in (0, 1]
                                                st.floats(max_value=0.0, allow_nan=False).map(repr),
                                                st.floats(min_value=1.0, exclude_min=True).map(repr))),
    st.tuples(st.just("--device"), _word.filter(_not_a_device)),
    st.tuples(st.just("--schedule"), _word.filter(lambda s: s not in ("uniform", "pyramid")
                                                  and not s.replace(",", "").replace(" ", "").isdigit())),
    st.tuples(st.sampled_from(["--remasking", "--backend", "--dtype", "--family"]), _word),
    st.tuples(st.sampled_from(["--suppress-tokens", "--defer-tokens"]),
              st.tuples(st.integers(-10, -1), st.lists(st.integers(0, 5), max_size=2), st.booleans())
              .map(lambda t: ",".join(map(str, [*t[1], t[0]] if t[2] else [t[0], *t[1]])))),
    st.tuples(st.sampled_from(["--output", "--trace-png"]), _word.map(_missing_dir)),
    st.tuples(st.just("--prompts-file"), _word.map(lambda w: os.path.join("no-such-dir-fastremask", w))),
    st.tuples(st.just("--model"), _word.map(lambda w: "./no-such-model-" + w.replace("/", "_"))),
)

BAD_COMBINATIONS = st.sampled_from([
    ["--system", "be brief"],
    ["--prompt", "a", "--prompts-file", "x.jsonl"],
    ["--resume"],
    ["--force", "--resume", "--output", "o.jsonl"],
    ["--gen-length", "6", "--block-length", "4"],
    ["--gen-length", "8", "--block-length", "4", "--steps", "3"],
    ["--gen-length", "4", "--schedule", "1,2"],
    ["--schedule", "pyramid", "--factor", "0"],
    ["--prompt", ""],
    ["--prompt", "hi <|mdm_mask|>"],
    ["--logits-window", "--no-such-flag"],
    ["frobnicate"],
    ["--suppress-tokens", "128"],          # the built-in model's vocabulary is 128
    ["--defer-tokens", "3,999"],
    ["--pad-id", "128", "--prompt", "a", "--prompt", "bc"],
    ["--eos-id", "500", "--logits-eos-inf"],
])


@settings(max_examples=150, **SETTINGS)
@given(bad=BAD_ARGUMENTS, equals=st.booleans(), before=st.sampled_from([[], ["--prompt", "Hi"], ["--seed", "3"]]))
def test_bad_argument(capsys, bad, equals, before):
    option, value = bad
    argv = [*BASE, *before, f"{option}={value}"] if equals else [*BASE, *before, option, value]
    assume(equals or not value.startswith("-") or option in ("--seed", "--steps", "--gen-length", "--block-length",
                                                             "--batch-size", "--mask-id", "--pad-id", "--eos-id",
                                                             "--eot-id", "--temperature", "--cfg-scale",
                                                             "--suppress-tokens", "--defer-tokens"))
    rc, line = assert_one_error(argv, capsys)
    assert rc == 2, line


@settings(max_examples=30, **SETTINGS)
@given(combo=BAD_COMBINATIONS)
def test_bad_combination(capsys, combo):
    argv = combo if combo == ["frobnicate"] else [*BASE, *combo]
    assert assert_one_error(argv, capsys)[0] == 2


@pytest.mark.parametrize("argv,words", [
    (["profile", "--out", "no-such-dir-fastremask/t.json"], ["--out", "does not exist"]),
    (["profile", "--gen-length", "0"], ["gen_length"]),
    (["profile", "--steps", "0"], ["steps"]),
    (["profile", "--batch", "0"], ["--batch"]),
    (["profile", "--device", "foo"], ["--device"]),
    (["profile", "--size", "tiny"], ["--size tiny is for --model sdar or llada2, not tiny"]),
    (["profile", "--model", "llada2", "--size", "tiny", "--gen-length", "8"],
     ["gen_length=8 must be a multiple of block_length=32"]),
    (["eval", "-n", "0"], ["--examples"]),
    (["eval", "--batch-size", "0"], ["--batch-size"]),
    (["eval", "--model", "./no-such-model"], ["does not exist"]),
    (["eval", "--device", "cuda:99"], ["--device"]),
    (["bench", "--rounds", "0"], ["--rounds"]),
    (["bench", "--suites", "nope"], ["nope"]),
])
def test_other_commands(capsys, argv, words):
    _, line = assert_one_error(argv, capsys)
    assert all(w in line for w in words), line


# ----------------------------------------------------------------------------- bad files

_json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                           max_leaves=6)
_bad_line = st.one_of(
    st.binary(min_size=1, max_size=30).filter(lambda b: b"\n" not in b and b"\r" not in b and not _valid_line(b)),
    _json_value.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
    _json_value.filter(lambda v: not isinstance(v, str)).map(lambda v: json.dumps({"prompt": v}).encode()),
    st.one_of(st.integers(max_value=-1), st.integers(min_value=2**63), st.text(max_size=3), st.floats(),
              st.booleans(), st.none())
    .map(lambda s: json.dumps({"prompt": "Hi", "seed": s}).encode()),
    st.just(b'{"prompt": "Hi"'),
    st.just(b'{"prompt": "\xff\xfe"}'),
)


def _valid_line(b: bytes) -> bool:
    try:
        rec = json.loads(b.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return not b.strip()          # a blank line is skipped, not bad
    return isinstance(rec, dict) and isinstance(rec.get("prompt"), str)


@settings(max_examples=60, **SETTINGS)
@given(lines=st.lists(_bad_line, max_size=5), good=st.booleans(), output=st.booleans())
def test_bad_prompts_file(capsys, lines, good, output):
    lines = [ln for ln in lines if not _valid_line(ln)]
    assume(lines or not good)
    d = tempfile.mkdtemp()
    try:
        f = os.path.join(d, "in.jsonl")
        with open(f, "wb") as fh:
            fh.write(b"\n".join(([b'{"prompt": "Hi"}'] if good else []) + lines) + b"\n")
        argv = [*BASE, "--prompts-file", f] + (["--output", os.path.join(d, "out.jsonl")] if output else [])
        rc, line = assert_one_error(argv, capsys)
        if not lines and not good:
            assert rc == 2 and "has no prompts" in line
        else:
            assert rc == 1 and f"{len(lines)} of {len(lines) + good} lines of {f} had errors" in line, line
    finally:
        shutil.rmtree(d)


@settings(max_examples=40, **SETTINGS)
@given(which=st.sampled_from(["config.json", "model.safetensors"]),
       content=st.one_of(st.binary(max_size=64),
                         _json_value.map(lambda v: json.dumps(v).encode()),
                         st.dictionaries(st.sampled_from(["vocab_size", "d_model", "n_layers", "n_heads", "max_len",
                                                          "mask_id", "colour"]),
                                         st.one_of(st.integers(-3, 0), st.text(max_size=3), st.none(),
                                                   st.floats(0.5, 1.5)), min_size=1, max_size=3)
                         .map(lambda d: json.dumps({"model_type": "fastremask-tiny", **d}).encode())),
       truncate=st.booleans())
def test_bad_model_folder(capsys, work, which, content, truncate):
    d = tempfile.mkdtemp()
    try:
        folder = os.path.join(d, "m")
        shutil.copytree(work / "tiny", folder)
        path = os.path.join(folder, which)
        if which == "model.safetensors" and truncate:
            data = open(path, "rb").read()
            content = data[:len(data) // 2]
        with open(path, "wb") as fh:
            fh.write(content)
        if which == "config.json":
            try:
                raw = json.loads(content.decode("utf-8"))
                # a config the tiny model accepts as it stands (only the extra "colour") is not bad
                assume(not (isinstance(raw, dict) and raw.get("model_type") == "fastremask-tiny"
                            and set(raw) <= {"model_type", "colour"}))
            except (UnicodeDecodeError, ValueError):
                pass
        rc, line = assert_one_error([*BASE, "--model", folder, "--prompt", "Hi"], capsys)
        assert rc == 2 and (folder in line), line
    finally:
        shutil.rmtree(d)


def test_bench_compare_one_file_twice(capsys, tmp_path):
    f = tmp_path / "a.json"
    f.write_text("{}")
    _, line = assert_one_error(["bench", "--compare", str(f), str(f)], capsys)
    assert "twice" in line


def test_answer_longer_than_the_config_allows(capsys, tmp_path):
    # a Hugging Face checkpoint's max_sequence_length is checked like the tiny model's max_len
    from fastremask.models import testing

    path = testing.save_llada_checkpoint(tmp_path / "llada", max_sequence_length=40)
    _, line = assert_one_error(["generate", "--model", str(path), "--prompt", "Hi", "--gen-length", "64",
                                "--device", "cpu"], capsys)
    assert "max_sequence_length of 40" in line
    _, line = assert_one_error(["generate", "--model", str(path), "--cache", "prefix", "--prompt", "Hi",
                                "--gen-length", "8", "--threshold-rule", "eb", "--threshold", "1",
                                "--device", "cpu"], capsys)
    assert "threshold_rule" in line or "remasking" in line
