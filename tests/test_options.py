"""Every sampling option declared once (`SamplingConfig`'s fields and their `Option`), and what
is derived from it: generate's keywords, the command-line flags, the lm-eval keywords
(`SamplingConfig.from_strings`), the CUDA-graph key (`step_key`) and the record
(`to_dict`/`from_dict`). Issue 18 item 1."""
import argparse
import dataclasses
import inspect
import json

import pytest
import torch

from fastremask import SamplingConfig, generate, run
from fastremask.evaluation import lm_eval_adapter as la
from fastremask.models.tiny import tiny_model
from fastremask.sampler import graphs
from fastremask.sampler.backends import get_backend
from fastremask.sampler.config import check_options, option, options
from fastremask.sampler.loop import step
from fastremask.tools import cli
from fastremask.tools.options import add_config_arguments, config_kwargs, flag_of

MODEL = tiny_model(vocab_size=20, d_model=16, n_heads=2, n_layers=1)
PROMPT = torch.tensor([[1, 2, 3], [4, 5, 6]])
NOT_OPTIONS = {"model", "prompt", "attention_mask", "seed", "return_trace", "callback"}


def test_generate_keywords_are_exactly_the_config_fields():
    params = inspect.signature(generate).parameters
    assert set(params) - NOT_OPTIONS == set(options())
    assert set(options()) == {f.name for f in dataclasses.fields(SamplingConfig) if f.init}
    doc = inspect.getdoc(generate)
    for name in options():                      # each documented in generate's Parameters
        assert f"\n{name} :" in doc or f"\n{name}," in doc or f", {name} :" in doc, name


def test_every_option_has_its_metadata():
    for name, (f, opt) in options().items():
        assert opt.help and callable(opt.parse), name
        assert isinstance(opt.step, bool) and isinstance(opt.tokens, bool), name
    # what the sampling step reads is in the key; what only the loop reads is not
    step_options = {n for n, (_, o) in options().items() if o.step}
    assert {"temperature", "cfg_scale", "remasking", "threshold", "threshold_rule", "backend"} <= step_options
    assert not {"steps", "gen_length", "schedule", "factor", "cache", "stop_at_eos"} & step_options
    assert {n for n, (_, o) in options().items() if not o.tokens} == {"backend", "cuda_graph"}


CONFIGS = [
    SamplingConfig(),
    SamplingConfig(steps=16, gen_length=16, block_length=8, schedule="pyramid", factor=2, temperature=0.7),
    SamplingConfig(steps=8, gen_length=8, block_length=4, schedule=[1, 3, 0, 0], suppress_tokens=[9, 2, 9],
                   defer_tokens=(5,), cfg_scale=0.25, remasking="margin", mask_id=19, logits_eos_inf=True),
    SamplingConfig(gen_length=8, block_length=4, threshold=0.1, threshold_rule="eb", remasking="entropy",
                   cache="dual", stop_at_eos=True, backend="reference", cuda_graph=False, logits_window=True),
    SamplingConfig(temperature=1 / 3, threshold=2.0, threshold_rule="factor", confidence_eos_eot_inf=True),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_to_dict_from_dict_round_trip_is_exact(config):
    record = json.loads(json.dumps(config.to_dict()))          # as a results file keeps it
    back = SamplingConfig.from_dict(record)
    assert back == config and back.to_dict() == config.to_dict()
    assert back.step_key() == config.step_key() and back.changes(config, tokens_only=False) == []
    assert set(record) == set(options())


def test_a_callable_schedule_is_recorded_as_its_counts():
    def front(n, steps):
        return [n] + [0] * (steps - 1)

    config = SamplingConfig(steps=8, gen_length=8, block_length=4, schedule=front)
    back = SamplingConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert back.schedule == [4, 0, 0, 0] and back.block_counts() == config.block_counts()
    assert torch.equal(run(MODEL, PROMPT, config, seed=1), run(MODEL, PROMPT, back, seed=1))


def test_unknown_option_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"unknown sampling option 'thresold'; did you mean 'threshold'\?"):
        SamplingConfig.from_dict({"thresold": 0.5})
    with pytest.raises(ValueError, match=r"unknown sampling option 'thresold'"):
        SamplingConfig.from_strings(thresold="0.5")
    with pytest.raises(ValueError, match=r"unknown sampling option 'top_q'"):
        check_options(["top_q"])


def test_changes_names_what_changes_the_tokens():
    a = SamplingConfig(temperature=1.0)
    b = a.replace(temperature=0.5, backend="torch", cuda_graph=False)
    assert a.changes(b) == [("temperature", 1.0, 0.5)]
    assert [c[0] for c in a.changes(b, tokens_only=False)] == ["temperature", "backend", "cuda_graph"]


def test_from_strings_reads_every_option():
    c = SamplingConfig.from_strings(steps="4", gen_length="8", block_length="4", temperature="0.5",
                                    cfg_scale="0", remasking="margin", mask_id="7", logits_eos_inf="true",
                                    confidence_eos_eot_inf="0", schedule="1,3", factor="1", threshold="none",
                                    threshold_rule="fixed", suppress_tokens="3,1", defer_tokens="", backend="torch",
                                    logits_window="false", cuda_graph="no", cache="None", stop_at_eos="1")
    assert c == SamplingConfig(steps=4, gen_length=8, block_length=4, temperature=0.5, remasking="margin",
                               mask_id=7, logits_eos_inf=True, schedule=[1, 3], suppress_tokens=(1, 3),
                               backend="torch", cuda_graph=False, stop_at_eos=True)


# ----------------------------------------------------------------------------- the graph key


@dataclasses.dataclass(frozen=True)
class _WithDummy(SamplingConfig):
    """A config with one more option that changes the step, and one that does not."""

    dummy: float = option(0.0, "a new option the step reads", float, step=True)
    other: int = option(0, "a new option only the loop reads", int)


def test_step_key_has_every_step_option():
    base = _WithDummy()
    assert ("dummy", 0.0) in base.step_key()
    assert base.replace(dummy=1.0).step_key() != base.step_key()
    assert base.replace(other=3).step_key() == base.step_key()
    for name, (f, opt) in options().items():      # each step option, changed alone, changes the key
        if opt.step:
            changed = {"temperature": 0.5, "cfg_scale": 1.0, "remasking": "random", "mask_id": 3,
                       "logits_eos_inf": True, "confidence_eos_eot_inf": True, "threshold": 0.5,
                       "suppress_tokens": [1], "defer_tokens": [1], "backend": "torch",
                       "top_k": 5, "top_p": 0.9, "min_p": 0.1, "truncation_order": "top_p_first",
                       "alg_temp": 0.5, "confidence": "dream"}.get(name)
            if name == "threshold_rule":
                a, b = SamplingConfig(threshold=0.5), SamplingConfig(threshold=0.5, threshold_rule="factor")
            elif name in ("top_k", "top_p", "min_p", "truncation_order"):   # truncation needs T > 0
                a, b = SamplingConfig(temperature=1.0), SamplingConfig(temperature=1.0, **{name: changed})
            else:
                a, b = SamplingConfig(), SamplingConfig(**{name: changed})
            assert a.step_key() != b.step_key(), name


def test_graph_cache_key_follows_step_key():
    """`graphs.graphed_step` keys on `step_key`: a config that differs in a new step option
    gets its own graph (a stale one would be replayed otherwise)."""
    graphs.clear_cache()
    backend = get_backend("torch", torch.device("cpu"))
    logits = torch.zeros(2 * 4, 20)

    def graph(config):
        return graphs.graphed_step(step, backend, logits, None, config=config, suppress=None, defer=None,
                                   mask_id=19, prompt_length=3, B=2, C=4)

    try:
        a = graph(_WithDummy(gen_length=8, block_length=4))
        assert graph(_WithDummy(gen_length=8, block_length=4)) is a
        assert graph(_WithDummy(gen_length=8, block_length=4, other=5)) is a
        assert graph(_WithDummy(gen_length=8, block_length=4, dummy=1.0)) is not a
    finally:
        graphs.clear_cache()


# ----------------------------------------------------------------------------- the command line


def test_cli_flags_are_the_fields():
    p = argparse.ArgumentParser()
    cli.add_generate_arguments(p)
    flags = {a.dest: a.option_strings for a in p._actions}
    for name in options():
        assert flags[name] == [flag_of(name)], name
    assert flag_of("cuda_graph") == "--no-cuda-graph" and flag_of("stop_at_eos") == "--stop-at-eos"
    args = p.parse_args(["--temperature", "0.5", "--schedule", "1,3", "--suppress-tokens", "4,2",
                         "--no-cuda-graph", "--gen-length", "4", "--threshold-rule", "fixed"])
    config = cli.config_from_args(args)
    assert config == SamplingConfig(steps=4, gen_length=4, block_length=4, temperature=0.5, schedule=[1, 3],
                                    suppress_tokens=[2, 4], cuda_graph=False)


def test_eval_flags_are_derived():
    from fastremask.tools import eval_command

    p = argparse.ArgumentParser()
    eval_command.add_arguments(p)
    args = p.parse_args(["--temperature", "0.5", "--cache", "dual", "--backend", "reference"])
    assert config_kwargs(args, ["temperature", "cache", "backend"]) == dict(temperature=0.5, cache="dual",
                                                                          backend="reference")
    assert p.parse_args([]).backend == "torch" and p.parse_args([]).temperature is None


def test_a_new_field_gets_a_flag():
    p = argparse.ArgumentParser()
    add_config_arguments(p, ["dummy", "other"], cls=_WithDummy)
    args = p.parse_args(["--dummy", "2.5"])
    assert config_kwargs(args, cls=_WithDummy) == dict(dummy=2.5, other=0)


# ----------------------------------------------------------------------------- one message everywhere


BAD = [   # (the options as strings, as the command line and lm-eval give them)
    dict(temperature="-1"),
    dict(temperature="warm"),
    dict(remasking="top_p"),
    dict(schedule="cubic"),
    dict(schedule="pyramid", factor="0"),
    dict(factor="2"),
    dict(threshold="nan"),
    dict(threshold="1.5"),
    dict(threshold="1.0", threshold_rule="factor", remasking="entropy"),
    dict(threshold_rule="eb"),
    dict(backend="cuda"),
    dict(cache="full"),
    dict(steps="0"),
    dict(steps="3"),
    dict(block_length="3"),
    dict(suppress_tokens="1,-5"),
    dict(defer_tokens="a,b"),
    dict(stop_at_eos="maybe"),
]


def _cli_message(options, capsys):
    argv = ["generate"]
    for k, v in options.items():
        argv += [flag_of(k), v]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastremask: error: ") and "\n" not in err
    return err[len("fastremask: error: "):]


@pytest.mark.parametrize("bad", BAD, ids=lambda b: ",".join(f"{k}={v}" for k, v in b.items()))
def test_same_bad_option_same_message_from_cli_lm_eval_and_generate(bad, capsys):
    given = {**dict(steps="4", gen_length="8", block_length="4"), **bad}
    with pytest.raises((ValueError, TypeError)) as api:
        generate(MODEL, PROMPT, mask_id=None, **SamplingConfig.parse_strings(given))
    with pytest.raises(type(api.value)) as lm:
        la.FastRemaskLM(model=MODEL, **given)
    assert str(lm.value) == str(api.value)
    if not any(isinstance(options()[k][0].default, bool) for k in bad):   # a CLI switch holds no value
        assert _cli_message(given, capsys) == str(api.value)
