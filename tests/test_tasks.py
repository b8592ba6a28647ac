"""fastremask.evaluation.tasks: data generation, exact checking, disjoint splits, Wilson intervals."""
import math

import pytest
import torch

from fastremask.evaluation.tasks import (
    MASK_ID, PAD_ID, VOCAB, Addition, Sorting, decode, encode, get_task, wilson_interval,
)


def test_vocab_layout():
    assert len(VOCAB) == 16
    assert MASK_ID == len(VOCAB) - 1 and VOCAB[MASK_ID] == "<mask>"  # TinyConfig's default mask id
    assert VOCAB[PAD_ID] == "<pad>"
    assert encode("0123456789+=,>") == list(range(14))
    assert decode([1, 10, 2, 11, MASK_ID, PAD_ID, 99]) == "1+2=_.?"
    with pytest.raises(ValueError, match="not in the task vocabulary"):
        encode("1-2")


@pytest.mark.parametrize("a,b", [(0, 0), (999, 1), (47, 958), (500, 500), (123, 876)])
def test_addition_known_answers(a, b):
    task = Addition(digits=3)
    prompt = torch.tensor([encode(f"{a:03d}+{b:03d}=")])
    assert decode(task.solve(prompt)[0]) == f"{a + b:04d}"


def test_addition_matches_python_ints():
    task = Addition(digits=15)
    prompts, answers = task.test_set(300)
    assert prompts.shape == (300, task.prompt_length) == (300, 32)
    assert answers.shape == (300, task.answer_length) == (300, 16)
    for p, ans in zip(prompts, answers):
        a, b = decode(p)[:-1].split("+")
        assert decode(ans) == f"{int(a) + int(b):016d}"


def test_sorting():
    task = Sorting(length=4)
    prompt = torch.tensor([encode("3,1,3,0>")])
    assert decode(task.solve(prompt)[0]) == "0133"
    prompts, answers = task.test_set(50)
    assert torch.equal(task.solve(prompts), answers)


@pytest.mark.parametrize("spec", ["add", "add:5", "sort", "sort:7"])
def test_check_is_exact(spec):
    task = get_task(spec)
    prompts, answers = task.test_set(64)
    assert task.check(prompts, answers).all()
    for j in (0, task.answer_length - 1):  # one wrong token anywhere is wrong
        bad = answers.clone()
        bad[:, j] = (bad[:, j] + 1) % 10
        assert not task.check(prompts, bad).any()
    masked = answers.clone()
    masked[3, 0] = MASK_ID  # a leftover mask is wrong, the rest unaffected
    ok = task.check(prompts, masked)
    assert not ok[3] and ok.sum() == 63
    with pytest.raises(ValueError, match="outputs must be"):
        task.check(prompts, answers[:, 1:])


def test_test_set_fixed_and_train_disjoint():
    task = Addition(digits=2)  # 10**4 prompts only: collisions with the test set are certain
    p1, a1 = task.test_set()
    p2, a2 = Addition(digits=2).test_set()
    assert torch.equal(p1, p2) and torch.equal(a1, a2)
    keys = {tuple(r) for r in p1.tolist()}
    assert len(keys) == p1.shape[0]  # deduplicated
    g = torch.Generator().manual_seed(0)
    prompts, answers = task.train_batch(g, 2000)
    assert prompts.shape == (2000, task.prompt_length)
    assert not keys & {tuple(r) for r in prompts.tolist()}
    assert torch.equal(task.solve(prompts), answers)
    # the stream is seeded
    again = task.train_batch(torch.Generator().manual_seed(0), 2000)[0]
    assert torch.equal(prompts, again)


def test_get_task_errors():
    assert get_task("add:7") == Addition(digits=7)
    with pytest.raises(ValueError, match="unknown task"):
        get_task("mul")
    with pytest.raises(ValueError, match="must be an int"):
        get_task("add:x")
    with pytest.raises(ValueError, match="digits"):
        get_task("add:0")


def test_wilson_interval():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0 and 0.27 < hi < 0.28  # textbook: 0.2775
    lo, hi = wilson_interval(10, 10)
    assert hi == 1 and 0.72 < lo < 0.73
    lo, hi = wilson_interval(50, 100)
    assert math.isclose(lo, 0.40383, abs_tol=1e-4) and math.isclose(hi, 0.59617, abs_tol=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_permutation_accepts_any_ordering():
    task = get_task("perm:4")
    prompt = torch.tensor([encode("3,1,3,0>")] * 4)
    out = torch.tensor([encode("3013"), encode("0133"), encode("3310"), encode("3311")])
    assert task.check(prompt, out).tolist() == [True, True, True, False]
    prompts, answers = get_task("perm:12").test_set(200)
    assert get_task("perm:12").check(prompts, answers).all()
    # training answers are orderings of the prompt, not the sorted one
    assert not torch.equal(answers, get_task("sort:12").solve(prompts))
