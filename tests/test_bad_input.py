"""Every misuse is a ValueError or TypeError that names the argument and the value."""
import re

import pytest
import torch

from fastremask import generate
from fastremask.tiny import tiny_model

MODEL = tiny_model(vocab_size=20, d_model=16, n_heads=2, n_layers=1)
MASK = MODEL.mask_id
PROMPT = torch.tensor([[1, 2, 3], [4, 5, 6]])
OK = dict(steps=4, gen_length=8, block_length=4, mask_id=MASK, seed=0)


def _call(**over):
    kw = {**OK, **over}
    model = kw.pop("model", MODEL)
    prompt = kw.pop("prompt", PROMPT)
    return generate(model, prompt, **kw)


def test_good_call_works():
    assert _call().shape == (2, 11)


@pytest.mark.parametrize(
    "over, err, words",
    [
        (dict(gen_length=10, block_length=4), ValueError, ["gen_length=10", "block_length=4"]),
        (dict(gen_length=0), ValueError, ["gen_length", "0"]),
        (dict(block_length=-4), ValueError, ["block_length", "-4"]),
        (dict(steps=0), ValueError, ["steps", "0"]),
        (dict(steps=3), ValueError, ["steps=3", "2"]),                       # 2 blocks
        (dict(steps=2.0), TypeError, ["steps", "2.0"]),
        (dict(steps=True), TypeError, ["steps", "True"]),
        (dict(schedule="pyramid", steps=2, gen_length=16, block_length=8), ValueError, ["pyramid", "steps=1"]),
        (dict(schedule=[1, 1]), ValueError, ["schedule", "n_masked=4"]),
        (dict(schedule="cubic"), ValueError, ["schedule", "cubic"]),
        (dict(factor=2), ValueError, ["factor=2"]),
        (dict(prompt=[[1, 2]]), TypeError, ["prompt", "list"]),
        (dict(prompt=torch.tensor([1, 2, 3])), TypeError, ["prompt", "(3,)"]),
        (dict(prompt=torch.tensor([[1.0, 2.0]])), TypeError, ["prompt", "float32"]),
        (dict(prompt=torch.empty(0, 3, dtype=torch.long)), ValueError, ["prompt", "(0, 3)"]),
        (dict(prompt=torch.tensor([[1, -2]])), ValueError, ["prompt", "-2"]),
        (dict(remasking="top_p"), ValueError, ["remasking", "top_p"]),
        (dict(remasking=None), ValueError, ["remasking", "None"]),
        (dict(backend="cuda"), ValueError, ["backend", "cuda"]),
        (dict(seed=[1, 2, 3]), ValueError, ["seed", "3", "2 batch rows"]),
        (dict(seed=-1), ValueError, ["seed", "-1"]),
        (dict(seed=2**63), ValueError, ["seed", str(2**63)]),
        (dict(seed=1.5), TypeError, ["seed", "1.5"]),
        (dict(seed=[1, "a"]), TypeError, ["seed[1]", "a"]),
        (dict(temperature=-0.5), ValueError, ["temperature", "-0.5"]),
        (dict(temperature=float("nan")), ValueError, ["temperature", "nan"]),
        (dict(temperature="hot"), TypeError, ["temperature", "hot"]),
        (dict(cfg_scale=-1.0), ValueError, ["cfg_scale", "-1.0"]),
        (dict(threshold=float("inf")), ValueError, ["threshold", "inf"]),
        (dict(mask_id=-3), ValueError, ["mask_id", "-3"]),
        (dict(mask_id=126336), ValueError, ["mask_id=126336", "vocab_size=20"]),
        (dict(logits_eos_inf=1), TypeError, ["logits_eos_inf", "1"]),
        (dict(suppress_tokens=[1, -5]), ValueError, ["suppress_tokens[1]", "-5"]),
        (dict(suppress_tokens="abc"), TypeError, ["suppress_tokens", "abc"]),
        (dict(suppress_tokens=[99]), ValueError, ["suppress_tokens", "99", "20"]),
        (dict(logits_eos_inf=True), ValueError, ["126081", "20"]),
        (dict(defer_tokens=[0.5]), TypeError, ["defer_tokens[0]", "0.5"]),
        (dict(attention_mask=torch.ones(2, 4)), ValueError, ["attention_mask", "(2, 4)"]),
        (dict(attention_mask=torch.full((2, 3), 2)), ValueError, ["attention_mask", "0 and 1"]),
        (dict(return_trace="yes"), TypeError, ["return_trace", "yes"]),
        (dict(callback=5), TypeError, ["callback", "5"]),
        (dict(model=None), TypeError, ["model", "NoneType"]),
    ],
    ids=lambda v: re.sub(r"\W+", "_", str(v))[:40] if isinstance(v, dict) else None,
)
def test_bad_argument(over, err, words):
    with pytest.raises(err) as e:
        _call(**over)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_mask_inside_prompt_is_refused():
    prompt = PROMPT.clone()
    prompt[1, 2] = MASK
    with pytest.raises(ValueError, match=rf"mask_id={MASK} at batch row 1, position 2"):
        _call(prompt=prompt)


def test_triton_backend_unavailable_is_a_clear_error(monkeypatch):
    import importlib

    gen_mod = importlib.import_module("fastremask.generate")
    monkeypatch.setattr(gen_mod, "_triton_backend", lambda: None)
    with pytest.raises(RuntimeError, match="backend='triton' is not available"):
        _call(backend="triton")
    assert _call(backend="auto").shape == (2, 11)          # auto falls back to torch


class _Wrong(torch.nn.Module):
    device = torch.device("cpu")

    def __init__(self, how):
        super().__init__()
        self.how = how

    def forward(self, x, attention_mask=None):
        B, L = x.shape
        if self.how == "shape":
            return torch.zeros(B, L - 1, 20)
        if self.how == "2d":
            return torch.zeros(B, L)
        if self.how == "dtype":
            return torch.zeros(B, L, 20, dtype=torch.float64)
        return object()


@pytest.mark.parametrize("how, err, words", [
    ("shape", ValueError, ["logits", "(2, 10, 20)", "[2, 11, V]"]),
    ("2d", ValueError, ["logits", "(2, 11)"]),
    ("dtype", TypeError, ["float64"]),
    ("none", TypeError, ["logits", "object"]),
])
def test_model_output_is_checked(how, err, words):
    for backend in ("reference", "torch"):
        with pytest.raises(err) as e:
            _call(model=_Wrong(how), backend=backend)
        for w in words:
            assert w in str(e.value), (w, str(e.value))


class _Poisoned(torch.nn.Module):
    """The tiny model, with one logit replaced at one call (= step) and one position."""

    device = torch.device("cpu")

    def __init__(self, call, row, pos, value, cfg=False):
        super().__init__()
        self.inner, self.calls = MODEL, 0
        self.call, self.row, self.pos, self.value = call, row, pos, value

    def forward(self, x, attention_mask=None):
        logits = self.inner(x, attention_mask=attention_mask).logits
        if self.calls == self.call:
            if self.value == "all-inf":
                logits[self.row, self.pos] = float("-inf")
            else:
                logits[self.row, self.pos, 5] = self.value
        self.calls += 1
        return logits


@pytest.mark.parametrize("value, word", [(float("nan"), "NaN"), (float("inf"), "+inf"),
                                         ("all-inf", "no finite logit")])
@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_bad_logits_name_the_step_and_position(value, word, backend):
    # step 2 is the first step of the second block (positions 7..10 of x)
    model = _Poisoned(call=2, row=1, pos=8, value=value)
    with pytest.raises(ValueError) as e:
        _call(model=model, backend=backend, temperature=0.7)
    msg = str(e.value)
    assert word in msg and "step 2" in msg and "batch row 1" in msg and "position 8" in msg, msg


def test_bad_logits_outside_the_block_are_ignored():
    """Only the current block's masked positions are read: NaN elsewhere is not an error."""
    model = _Poisoned(call=0, row=0, pos=1, value=float("nan"))     # inside the prompt
    for backend in ("reference", "torch"):
        model.calls = 0
        assert _call(model=model, backend=backend).shape == (2, 11)


def test_nan_message_is_the_same_for_every_backend():
    msgs = []
    for backend in ("reference", "torch"):
        with pytest.raises(ValueError) as e:
            _call(model=_Poisoned(call=1, row=0, pos=4, value=float("nan")), backend=backend, cfg_scale=1.0)
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1] and "classifier-free guidance" in msgs[0]
