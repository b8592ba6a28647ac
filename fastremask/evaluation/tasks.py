"""Tasks with exactly checkable answers, for training and evaluating the demo model.

Tasks: `Addition` (``add:N``), `Sorting` (``sort:N``) and `Permutation` (``perm:N``, any
ordering of N digits: many right answers, the shipped demo model's task).

A task turns a seeded random draw into ``(prompt, answer)`` token tensors of fixed lengths
(every prompt of a task has the same length, so a batch needs no padding) and checks a
generated answer exactly. The tokens of an answer depend on each other: in multi-digit
addition a sum digit depends on the carry coming from every lower digit, so a model that
fills in all digits at once must resolve carry chains in one pass, while a model that fills
in the low digits first only ever needs the digit pair and the sum digit just below.

Vocabulary (`VOCAB`, 16 ids, shared by every task here): digits ``0``-``9`` are ids 0-9,
``+`` 10, ``=`` 11, ``,`` 12, ``>`` 13, ``<pad>`` 14 and ``<mask>`` 15 (the mask id, which is
``vocab_size - 1`` as `fastremask.models.tiny.TinyConfig` assumes).

Splits: the ``test`` split is a fixed list drawn from ``TEST_SEED``; the ``train`` split is an
endless stream that drops any example whose prompt is in the test set, so the two are
disjoint by construction (and ``check_disjoint`` verifies it).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from fastremask.models.tokenizer import TASK_VOCAB

__all__ = [
    "VOCAB",
    "MASK_ID",
    "PAD_ID",
    "encode",
    "decode",
    "Task",
    "Addition",
    "Sorting",
    "Permutation",
    "get_task",
    "demo_task",
    "TASKS",
    "wilson_interval",
]

VOCAB: tuple[str, ...] = TASK_VOCAB       # defined beside the demo model's tokenizer
_ID = {tok: i for i, tok in enumerate(VOCAB)}
PAD_ID = _ID["<pad>"]
MASK_ID = _ID["<mask>"]
TEST_SEED = 20250101
TEST_SIZE = 4096


def encode(text: str) -> list[int]:
    """Characters to ids (``<mask>``/``<pad>`` are not written as text here)."""
    try:
        return [_ID[c] for c in text]
    except KeyError as e:
        raise ValueError(f"character {e.args[0]!r} is not in the task vocabulary {VOCAB}") from None


def decode(ids) -> str:
    """Ids to text; the mask shows as ``_`` and padding as ``.``, anything else as ``?``."""
    out = []
    for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
        if i == MASK_ID:
            out.append("_")
        elif i == PAD_ID:
            out.append(".")
        elif 0 <= i < len(VOCAB):
            out.append(VOCAB[i])
        else:
            out.append("?")
    return "".join(out)


@dataclass(frozen=True)
class Task:
    """A task: fixed prompt and answer lengths, a seeded sampler and an exact checker.

    Subclasses implement ``_draw(generator, n) -> (prompts [n, P], answers [n, A])`` (int64).
    """

    name: str = "task"
    unique_answers = True  # class attribute (not a field): False where many answers are right

    @property
    def prompt_length(self) -> int:
        raise NotImplementedError

    @property
    def answer_length(self) -> int:
        raise NotImplementedError

    def _draw(self, g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    # -- splits ---------------------------------------------------------------------------
    def test_set(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed held-out set (the first ``n`` of ``TEST_SIZE`` examples, deduplicated)."""
        prompts, answers = self._test_full()
        if n is not None:
            if n > prompts.shape[0]:
                raise ValueError(f"the {self.name} test set has {prompts.shape[0]} examples, asked for {n}")
            prompts, answers = prompts[:n], answers[:n]
        return prompts.clone(), answers.clone()

    def _test_full(self) -> tuple[torch.Tensor, torch.Tensor]:
        cache = self.__dict__.get("_test_cache")
        if cache is None:
            g = torch.Generator().manual_seed(TEST_SEED)
            prompts, answers = self._draw(g, TEST_SIZE)
            # drop duplicate prompts (first occurrence kept), so the set is a set
            seen, keep = set(), []
            for i, row in enumerate(prompts.tolist()):
                key = tuple(row)
                if key not in seen:
                    seen.add(key)
                    keep.append(i)
            keep_t = torch.tensor(keep)
            cache = (prompts[keep_t], answers[keep_t], frozenset(seen))
            object.__setattr__(self, "_test_cache", cache)  # frozen dataclass: a private cache
        return cache[0], cache[1]

    def _test_keys(self) -> frozenset:
        self._test_full()
        return self.__dict__["_test_cache"][2]

    def train_batch(self, g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` training examples from ``g``, none of them with a prompt in the test set."""
        keys = self._test_keys()
        prompts, answers = [], []
        have = 0
        while have < n:
            p, a = self._draw(g, n - have)
            ok = torch.tensor([tuple(r) not in keys for r in p.tolist()], dtype=torch.bool)
            prompts.append(p[ok])
            answers.append(a[ok])
            have += int(ok.sum())
        return torch.cat(prompts), torch.cat(answers)

    # -- checking -------------------------------------------------------------------------
    def check(self, prompts: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """Exact check: ``outputs`` ``[n, A]`` (generated answer ids) against the true answers
        of ``prompts`` ``[n, P]``; returns ``[n]`` bool. Any mask or stray id is wrong."""
        if outputs.dim() != 2 or outputs.shape[1] != self.answer_length:
            raise ValueError(f"outputs must be [n, {self.answer_length}], got {tuple(outputs.shape)}")
        return (outputs.to(torch.long) == self.solve(prompts)).all(dim=1)

    def solve(self, prompts: torch.Tensor) -> torch.Tensor:
        """The true answers ``[n, A]`` of ``prompts`` ``[n, P]``, computed from the prompt alone."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name}: prompt {self.prompt_length} tokens, answer {self.answer_length} tokens"


@dataclass(frozen=True)
class Addition(Task):
    """``a+b=`` with ``digits``-digit operands (leading zeros kept, uniform digits), answer the
    ``digits + 1``-digit sum, most significant digit first, zero-padded.

    Example (digits 3): prompt ``"047+958="``, answer ``"1005"``.
    """

    name: str = "add"
    digits: int = 15

    def __post_init__(self):
        if not 1 <= self.digits <= 30:
            raise ValueError(f"the add task's digits must be in [1, 30], got {self.digits}")

    @property
    def prompt_length(self) -> int:
        return 2 * self.digits + 2

    @property
    def answer_length(self) -> int:
        return self.digits + 1

    def _draw(self, g, n):
        a = torch.randint(0, 10, (n, self.digits), generator=g)
        b = torch.randint(0, 10, (n, self.digits), generator=g)
        plus = torch.full((n, 1), _ID["+"])
        eq = torch.full((n, 1), _ID["="])
        prompts = torch.cat([a, plus, b, eq], dim=1)
        return prompts, self._sum(a, b)

    @staticmethod
    def _sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # schoolbook addition on digit tensors, least significant digit last
        n, d = a.shape
        out = torch.empty(n, d + 1, dtype=torch.long)
        carry = torch.zeros(n, dtype=torch.long)
        for i in range(d - 1, -1, -1):
            s = a[:, i] + b[:, i] + carry
            out[:, i + 1] = s % 10
            carry = s // 10
        out[:, 0] = carry
        return out

    def solve(self, prompts):
        d = self.digits
        if prompts.dim() != 2 or prompts.shape[1] != self.prompt_length:
            raise ValueError(f"prompts must be [n, {self.prompt_length}], got {tuple(prompts.shape)}")
        a, b = prompts[:, :d], prompts[:, d + 1 : 2 * d + 1]
        if (a > 9).any() or (b > 9).any():
            raise ValueError("operands must be digits")
        return self._sum(a.to(torch.long), b.to(torch.long))


@dataclass(frozen=True)
class Sorting(Task):
    """``d,d,...,d>`` with ``length`` digits, answer the same digits sorted ascending.

    Example (length 4): prompt ``"3,1,3,0>"``, answer ``"0133"``.
    """

    name: str = "sort"
    length: int = 12

    def __post_init__(self):
        if not 1 <= self.length <= 64:
            raise ValueError(f"the {self.name} task's length must be in [1, 64], got {self.length}")

    @property
    def prompt_length(self) -> int:
        return 2 * self.length

    @property
    def answer_length(self) -> int:
        return self.length

    def _draw(self, g, n):
        x = torch.randint(0, 10, (n, self.length), generator=g)
        prompts = torch.full((n, 2 * self.length), _ID[","])
        prompts[:, 0::2] = x
        prompts[:, -1] = _ID[">"]
        return prompts, x.sort(dim=1).values

    def solve(self, prompts):
        if prompts.dim() != 2 or prompts.shape[1] != self.prompt_length:
            raise ValueError(f"prompts must be [n, {self.prompt_length}], got {tuple(prompts.shape)}")
        x = prompts[:, 0::2].to(torch.long)
        if (x > 9).any():
            raise ValueError("sort items must be digits")
        return x.sort(dim=1).values


@dataclass(frozen=True)
class Permutation(Sorting):
    """``d,d,...,d>`` with ``length`` digits, answer *any* ordering of the same digits.

    Many answers are right, and they constrain each other: every position's marginal is the
    digit histogram, so drawing several positions at once from their marginals tends to repeat
    the frequent digits, which is the failure the pyramid post describes (a model keeping many
    ``.`` and ``I`` at its first step). Training answers are uniformly random orderings; the
    check is that the answer's digits are the prompt's digits, as a multiset. Sample with
    ``temperature > 0``: greedy decoding writes one digit everywhere.

    Example (length 4): prompt ``"3,1,3,0>"``; ``"3013"`` and ``"0133"`` are both right.
    """

    name: str = "perm"
    unique_answers = False

    def _draw(self, g, n):
        prompts, ordered = super()._draw(g, n)
        order = torch.rand(n, self.length, generator=g).argsort(dim=1)
        return prompts, prompts[:, 0::2].gather(1, order)

    def solve(self, prompts):
        """One right answer (the sorted digits); `check` accepts every ordering."""
        return super().solve(prompts)

    def check(self, prompts, outputs):
        if outputs.dim() != 2 or outputs.shape[1] != self.answer_length:
            raise ValueError(f"outputs must be [n, {self.answer_length}], got {tuple(outputs.shape)}")
        return (outputs.to(torch.long).sort(dim=1).values == self.solve(prompts)).all(dim=1)


TASKS = {"add": Addition, "sort": Sorting, "perm": Permutation}


def get_task(spec: str) -> Task:
    """``"add"``, ``"add:15"`` (operand digits), ``"sort"``, ``"sort:12"``, ``"perm:12"`` (list length)."""
    name, _, arg = spec.partition(":")
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    if not arg:
        return TASKS[name]()
    try:
        n = int(arg)
    except ValueError:
        raise ValueError(f"task size must be an int, got {arg!r} in {spec!r}") from None
    return Addition(digits=n) if name == "add" else TASKS[name](length=n)


def demo_task(folder) -> Task | None:
    """The task a checkpoint folder's ``demo.json`` names (`fastremask.models.demo.read_demo`,
    which checks the file), or None when it has none. A name `get_task` does not know is a
    ValueError naming the file."""
    from fastremask.models.demo import DEMO_FILE, read_demo

    meta = read_demo(folder)
    if meta is None or meta.get("task") is None:
        return None
    try:
        return get_task(meta["task"])
    except ValueError as e:
        raise ValueError(f"{os.path.join(os.fspath(folder), DEMO_FILE)}: field 'task': {e}") from None


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (95% by default); ``(0, 1)`` if n=0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi
