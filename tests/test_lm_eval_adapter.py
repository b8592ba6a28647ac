"""fastremask.evaluation.lm_eval_adapter: request handling on local models (lm_eval not needed).

The adapter derives from a stand-in when lm_eval is missing, so everything here runs in CI;
`test_harness_local_task` runs the real harness on a local task where lm_eval is installed.
"""
from fastremask import DATA_DIR
import json
import os
import random
from types import SimpleNamespace

import pytest
import torch

from fastremask.evaluation import lm_eval_adapter as la
from fastremask import SamplingConfig, generate, models
from fastremask.sampler import loop
from fastremask.models.testing import save_tiny_dream, save_tiny_llada

DEMO = DATA_DIR
HAS_DEMO = os.path.exists(os.path.join(DEMO, "model.safetensors"))


def _req(context, until=(), task="local", doc_id=0, **gen):
    """An object with what lm_eval's Instance offers the model: args, task_name, doc_id."""
    return SimpleNamespace(args=(context, {"until": list(until), **gen}), task_name=task, doc_id=doc_id)


def test_helpers():
    assert la.truncate("a b. c\n\nd", ["\n\n", "."]) == "a b"
    assert la.truncate("abc", []) == "abc" and la.truncate("abc", [""]) == "abc"
    assert la.shard(list(range(7)), 1, 3) == [1, 4]
    assert sorted(sum((la.shard(list(range(7)), r, 3) for r in range(3)), [])) == list(range(7))
    with pytest.raises(ValueError):
        la.shard([1], 3, 3)
    s = la.request_seed(0, "gsm8k", 5, 0)
    assert s == la.request_seed(0, "gsm8k", 5, 0) and 0 <= s < 2**63
    assert len({s, la.request_seed(0, "gsm8k", 5, 1), la.request_seed(0, "gsm8k", 6, 0),
                la.request_seed(1, "gsm8k", 5, 0)}) == 4


@pytest.fixture(scope="module")
def llada_dir(tmp_path_factory):
    return save_tiny_llada(tmp_path_factory.mktemp("tiny_llada"))


@pytest.mark.parametrize("schedule,factor,remasking", [("uniform", 1, "low_confidence"), ("pyramid", 2, "random")])
def test_generate_until_tiny_llada(llada_dir, schedule, factor, remasking):
    lm = la.FastRemaskLM(pretrained=llada_dir, device="cpu", trust_remote_code=True, gen_length=8, steps=8, schedule=schedule,
                         factor=factor, remasking=remasking, temperature=1.0, batch_size=2, seed=3)
    reqs = [_req("hi i am", doc_id=0), _req("the cat sat on the", until=["mat"], doc_id=1),
            _req("what", doc_id=2)]
    out = lm.generate_until(reqs)
    assert len(out) == 3 and all(isinstance(o, str) for o in out)
    assert "mat" not in out[1]
    # the same request alone, by hand: identical text (seeds follow the request, not the batch)
    a = lm.adapter
    ids, mask = a.pad([a.tokenize("hi i am")])
    x = generate(a, ids, mask, steps=8, gen_length=8, block_length=8, temperature=1.0, remasking=remasking,
                 mask_id=a.mask_id, schedule=schedule, factor=factor, seed=la.request_seed(3, "local", 0, 0))
    assert out[0] == lm._decode(x[0, ids.shape[1]:].tolist(), [])


def test_generate_until_independent_of_batching_and_order(llada_dir):
    kw = dict(pretrained=llada_dir, device="cpu", trust_remote_code=True, gen_length=6, steps=3, temperature=1.0, seed=0)
    words = "hi i am a the cat dog sat".split()
    rng = random.Random(0)
    reqs = [_req(" ".join(rng.choice(words) for _ in range(4)), doc_id=i) for i in range(6)]  # equal lengths
    one = la.FastRemaskLM(batch_size=1, **kw).generate_until(reqs)
    perm = list(range(6))
    rng.shuffle(perm)
    many = la.FastRemaskLM(batch_size=4, **kw).generate_until([reqs[i] for i in perm])
    assert [many[perm.index(i)] for i in range(6)] == one
    # repeats of one document (lm_eval clones the Instance) get different seeds
    rep = la.FastRemaskLM(batch_size=3, **kw).generate_until([reqs[0]] * 3)
    assert rep[0] == one[0]


def test_generate_until_dream_and_chat(tmp_path):
    d = save_tiny_dream(tmp_path / "dream")
    lm = la.FastRemaskLM(pretrained=d, device="cpu", trust_remote_code=True, gen_length=4, chat=True, block_length=2, steps=4)
    out = lm.generate_until([_req("hello world", doc_id=0), _req("who are you ?", doc_id=1, max_gen_toks=99)])
    assert len(out) == 2
    assert "assistant" in lm.apply_chat_template([{"role": "user", "content": "hi"}])


def test_gen_length_from_request(llada_dir):
    lm = la.FastRemaskLM(pretrained=llada_dir, device="cpu", trust_remote_code=True, steps=None)
    seen = []
    lm.sampling_config = (lambda f: (lambda g: seen.append(g) or f(g)))(lm.sampling_config)
    lm.generate_until([_req("hi", max_gen_toks=5), _req("hi", doc_id=1, max_gen_toks=7)])
    assert sorted(seen) == [5, 7]


def test_loglikelihood_and_rolling(llada_dir):
    lm = la.FastRemaskLM(pretrained=llada_dir, device="cpu", trust_remote_code=True, mc_num=6, batch_size=4)
    reqs = [SimpleNamespace(args=("hi i am", " a cat"), task_name="t", doc_id=0),
            SimpleNamespace(args=("hi i am", ""), task_name="t", doc_id=1)]
    (ll, greedy), (ll0, _) = lm.loglikelihood(reqs)
    assert ll < 0 and greedy is False and ll0 == 0.0
    assert lm.loglikelihood(reqs[:1])[0][0] == ll  # seeded
    with pytest.raises(NotImplementedError, match="loglikelihood_rolling"):
        lm.loglikelihood_rolling(reqs)


def test_bad_arguments(llada_dir):
    with pytest.raises(ValueError, match="exactly one"):
        la.FastRemaskLM()
    lm = la.FastRemaskLM(pretrained=llada_dir, device="cpu", trust_remote_code=True, block_length=3)
    with pytest.raises(ValueError, match="multiple of block_length"):
        lm.generate_until([_req("hi", max_gen_toks=8)])


@pytest.mark.skipif(not HAS_DEMO, reason="no demo checkpoint in fastremask/data")
def test_demo_model_answers_through_the_adapter():
    from fastremask.evaluation.tasks import decode, encode, get_task

    task = get_task(json.load(open(os.path.join(DEMO, "demo.json")))["task"])
    prompts, answers = task.test_set(8)
    A = task.answer_length
    lm = la.FastRemaskLM(pretrained=DEMO, device="cpu", gen_length=A, steps=A, temperature=1.0, batch_size=8)
    out = lm.generate_until([_req(decode(p), doc_id=i) for i, p in enumerate(prompts)])
    assert all(len(o) == A for o in out)
    right = task.check(prompts, torch.tensor([encode(o) for o in out]))
    assert int(right.sum()) >= 6, out
    # the ELBO prefers a right answer to a wrong one (every digit shifted by one)
    ctx = decode(prompts[0])
    good, bad = decode(answers[0]), decode((answers[0] + 1) % 10)
    ll = lm.loglikelihood([SimpleNamespace(args=(ctx, c), task_name="t", doc_id=0) for c in (good, bad)])
    assert ll[0][0] > ll[1][0]


TASK_YAML = """task: fastremask_local_demo
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: []
  max_gen_toks: {gen}
process_results: !function check.process_results
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""

CHECK_PY = """
from fastremask.evaluation.tasks import encode, get_task
import torch

TASK = get_task({spec!r})


def process_results(doc, results):
    ok = TASK.check(torch.tensor([encode(doc["prompt"])]), torch.tensor([encode(results[0])]))
    return {{"acc": float(ok[0])}}
"""


@pytest.mark.skipif(not la.HAVE_LM_EVAL, reason="lm_eval not installed (pip install lm_eval)")
@pytest.mark.skipif(not HAS_DEMO, reason="no demo checkpoint in fastremask/data")
def test_harness_local_task(tmp_path):
    """The real harness: a local generate_until task (a JSON file and a task YAML)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from fastremask.evaluation.tasks import decode, get_task

    spec = json.load(open(os.path.join(DEMO, "demo.json")))["task"]
    task = get_task(spec)
    prompts, answers = task.test_set(6)
    data = tmp_path / "demo.jsonl"
    data.write_text("".join(json.dumps({"prompt": decode(p), "answer": decode(a)}) + "\n"
                            for p, a in zip(prompts, answers)))
    (tmp_path / "demo.yaml").write_text(TASK_YAML.format(data=data, gen=task.answer_length))
    (tmp_path / "check.py").write_text(CHECK_PY.format(spec=spec))
    res = lm_eval.simple_evaluate(
        model="fastremask",
        model_args=f"pretrained={DEMO},device=cpu,steps={task.answer_length},temperature=1.0",
        tasks=["fastremask_local_demo"], task_manager=TaskManager(include_path=str(tmp_path)), batch_size=6,
    )
    acc = res["results"]["fastremask_local_demo"]["acc,none"]
    assert 0.5 <= acc <= 1.0


# ----------------------------------------------------------------------------- one SamplingConfig


def _spy_run(monkeypatch):
    seen, real = [], loop.run

    def spy(model, prompt, config, **kw):
        seen.append(config)
        return real(model, prompt, config, **kw)

    monkeypatch.setattr(loop, "run", spy)
    return seen


OPTIONS = dict(steps=6, block_length=4, temperature=1.0, cfg_scale=0.5, remasking="margin", schedule="pyramid",
               factor=2, backend="reference", logits_eos_inf=True, confidence_eos_eot_inf=True)


def test_config_is_generates_config(llada_dir, monkeypatch):
    """The adapter samples with the `SamplingConfig` generate builds from the same options
    (mask, EOS and EoT ids left to the model, as generate with ``mask_id=None`` does)."""
    lm = la.FastRemaskLM(pretrained=llada_dir, device="cpu", trust_remote_code=True, gen_length=8, **OPTIONS)
    assert lm.config == SamplingConfig(gen_length=8, **OPTIONS)
    seen = _spy_run(monkeypatch)
    out = lm.generate_until([_req("hi i am", doc_id=0)])
    a = lm.adapter
    ids, mask = a.pad([a.tokenize("hi i am")])
    x = generate(a, ids, mask, gen_length=8, mask_id=None, seed=la.request_seed(0, "local", 0, 0), **OPTIONS)
    assert seen[0] == seen[1] == lm.config
    assert out[0] == lm._decode(x[0, ids.shape[1]:].tolist(), [])


def test_eos_flags_use_the_models_ids(llada_dir):
    """``logits_eos_inf``/``confidence_eos_eot_inf`` suppress/defer the loaded model's EOS/EoT
    (not LLaDA's constants, which are outside the tiny model's vocabulary): the same tokens as
    naming those ids by hand."""
    lm = la.FastRemaskLM(pretrained=llada_dir, device="cpu", trust_remote_code=True, gen_length=6, steps=6,
                         temperature=1.0, logits_eos_inf="true", confidence_eos_eot_inf=1, seed=5)
    a = lm.adapter
    assert lm.config.logits_eos_inf is True and lm.config.confidence_eos_eot_inf is True
    out = lm.generate_until([_req("the cat", doc_id=3)])
    ids, mask = a.pad([a.tokenize("the cat")])
    x = generate(a, ids, mask, steps=6, gen_length=6, block_length=6, temperature=1.0, mask_id=a.mask_id,
                 suppress_tokens=[a.eos_id], defer_tokens=[a.eos_id, a.eot_id], seed=la.request_seed(5, "local", 3, 0))
    assert out[0] == lm._decode(x[0, ids.shape[1]:].tolist(), [])
    assert a.eos_id not in x[0, ids.shape[1]:].tolist()


def test_model_without_eos_fails_at_construction(llada_dir, monkeypatch):
    real = models.load

    def no_eos(*a, **kw):
        adapter = real(*a, **kw)
        adapter.eos_id = adapter.eot_id = None
        return adapter

    monkeypatch.setattr(models, "load", no_eos)
    with pytest.raises(ValueError, match="has no EOS"):
        la.FastRemaskLM(pretrained=llada_dir, device="cpu", trust_remote_code=True, logits_eos_inf=True)
    la.FastRemaskLM(pretrained=llada_dir, device="cpu", trust_remote_code=True)     # without the flag: fine


@pytest.mark.parametrize("bad,api", [
    (dict(remasking="lowest"), None),
    (dict(temperature="-1"), dict(temperature=-1.0)),
    (dict(temperature="warm"), None),
    (dict(cfg_scale=-2.0), None),
    (dict(schedule="cosine"), None),
    (dict(schedule="pyramid", factor="0"), dict(schedule="pyramid", factor=0)),
    (dict(factor=2), None),
    (dict(threshold="nan"), dict(threshold=float("nan"))),
    (dict(backend="cuda"), None),
    (dict(gen_length=6, block_length=4), None),
    (dict(gen_length=8, block_length=4, steps=3), None),
    (dict(steps=0), None),
    (dict(logits_eos_inf="maybe"), None),
    (dict(logits_eos_inf=2), None),
])
def test_bad_option_rejected_at_construction_with_generates_message(llada_dir, bad, api):
    """A bad sampling option fails when the model is built (not at the first request), with
    the message `generate` gives for the same value."""
    with pytest.raises((ValueError, TypeError)) as e:
        la.FastRemaskLM(pretrained=llada_dir, device="cpu", trust_remote_code=True, **bad)
    if "maybe" in str(bad):
        assert "expected a boolean" in str(e.value)
        return
    kw = dict(steps=8, gen_length=8, block_length=8)
    kw.update(api if api is not None else bad)
    with pytest.raises(type(e.value)) as g:
        generate(lambda x: None, torch.zeros(1, 2, dtype=torch.long), **kw)
    assert str(e.value) == str(g.value)


def test_sampling_config_per_request_length(llada_dir):
    lm = la.FastRemaskLM(pretrained=llada_dir, device="cpu", trust_remote_code=True, block_length=2, steps=None,
                         schedule="pyramid")
    assert lm.sampling_config(6) == SamplingConfig(gen_length=6, block_length=2, steps=6, schedule="pyramid")
    lm = la.FastRemaskLM(pretrained=llada_dir, device="cpu", trust_remote_code=True, gen_length=4, threshold="0.5")
    assert lm.sampling_config(4) == lm.config == SamplingConfig(gen_length=4, block_length=4, steps=4, threshold=0.5)


def test_every_sampling_option_is_taken_never_ignored(tmp_path, capsys):
    """Issue 18: ``threshold_rule``, ``cache`` and ``stop_at_eos`` used to be "ignored" with a
    warning, running a fixed threshold without a cache instead. Now they are the config's, and
    the text is what `generate` gives with the same options; an unknown name is an error."""
    from fastremask.models.testing import save_llada_checkpoint

    m = models.load(save_llada_checkpoint(tmp_path / "llada"), device="cpu")      # native: has a cache
    opts = dict(threshold=1.0, threshold_rule="factor", cache="dual", stop_at_eos=True)
    lm = la.FastRemaskLM(model=m, gen_length=8, block_length=4, **opts)
    assert lm.config == SamplingConfig(steps=8, gen_length=8, block_length=4, **opts)
    out = lm.generate_until([_req("hi i am", doc_id=0)])
    assert "ignoring" not in capsys.readouterr().err
    ids, mask = m.pad([m.tokenize("hi i am")])
    x = generate(m, ids, mask, steps=8, gen_length=8, block_length=4, mask_id=None,
                 seed=la.request_seed(0, "local", 0, 0), **opts)
    assert out[0] == lm._decode(x[0, ids.shape[1]:].tolist(), [])
    with pytest.raises(ValueError, match=r"unknown sampling option 'threshold_rul'; did you mean 'threshold_rule'"):
        la.FastRemaskLM(model=m, threshold=1.0, threshold_rul="factor")


def test_generate_until_block_diffusion_with_the_exact_cache(tmp_path):
    """A block-causal checkpoint (SDAR's layout) through the adapter, cache='block': the same text
    as generate by hand and as the full-window recompute (the cache is exact)."""
    from fastremask.models.testing import save_sdar_checkpoint

    path = save_sdar_checkpoint(tmp_path / "sdar")
    kw = dict(pretrained=path, device="cpu", gen_length=8, steps=8, block_length=4, batch_size=2, seed=3,
              threshold=0.9, threshold_floor="schedule")
    reqs = [_req("hi i am", doc_id=0), _req("what", doc_id=1)]
    lm = la.FastRemaskLM(cache="block", **kw)
    out = lm.generate_until(reqs)
    assert out == la.FastRemaskLM(**kw).generate_until(reqs)          # full-window recompute
    a = lm.adapter
    assert a.attention == "block_causal"
    ids, mask = a.pad([a.tokenize("what")])
    x = generate(a, ids, mask, steps=8, gen_length=8, block_length=4, mask_id=a.mask_id, cache="block",
                 threshold=0.9, threshold_floor="schedule", seed=la.request_seed(3, "local", 1, 0))
    assert out[1] == lm._decode(x[0, ids.shape[1]:].tolist(), [])
