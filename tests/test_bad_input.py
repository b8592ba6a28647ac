"""Every misuse is a ValueError or TypeError that names the argument and the value."""
import re

import pytest
import torch
from toy_models import Poisoned

from fastremask import generate
from fastremask.models.tiny import tiny_model

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
        (dict(gen_length=10**12, block_length=10**12, steps=1), ValueError, ["gen_length=1000000000000", "GiB"]),
        (dict(steps=2**30), ValueError, ["steps=1073741824", "supports"]),
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
        (dict(threshold=-1.0), ValueError, ["threshold=-1.0", "low_confidence", "(0, 1]"]),
        (dict(threshold=0.0), ValueError, ["threshold=0.0", "(0, 1]"]),
        (dict(threshold=1.5, remasking="margin"), ValueError, ["threshold=1.5", "margin"]),
        (dict(threshold=1.0, remasking="random"), ValueError, ["threshold=1.0", "(0, 1)"]),
        (dict(threshold=0.3, remasking="entropy"), ValueError, ["threshold=0.3", "entropy", "(-inf, 0]"]),
        (dict(attention_mask=torch.tensor([[1, 1, 1], [0, 0, 0]])), ValueError, ["attention_mask row 1", "all zeros"]),
        (dict(attention_mask=torch.tensor([[1, 1, 0], [1, 1, 1]])), ValueError, ["attention_mask row 0", "left-padded"]),
        (dict(prompt=torch.zeros(2, 3, dtype=torch.long, device="meta")), ValueError, ["prompt", "meta"]),
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
    from fastremask.sampler import backends

    monkeypatch.setattr(backends, "triton_backend", lambda: None)
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


def _poisoned(call, row, pos, value, cfg=False):
    """The tiny model, with one logit replaced at one call (= step) and one position."""

    def edit(logits):
        if value == "all-inf":
            logits[row, pos] = float("-inf")
        else:
            logits[row, pos, 5] = value

    return Poisoned(MODEL, {call: edit})


@pytest.mark.parametrize("value, word", [(float("nan"), "NaN"), (float("inf"), "+inf"),
                                         ("all-inf", "no finite logit")])
@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_bad_logits_name_the_step_and_position(value, word, backend):
    # step 2 is the first step of the second block (positions 7..10 of x)
    model = _poisoned(call=2, row=1, pos=8, value=value)
    with pytest.raises(ValueError) as e:
        _call(model=model, backend=backend, temperature=0.7)
    msg = str(e.value)
    assert word in msg and "step 2" in msg and "batch row 1" in msg and "position 8" in msg, msg


def test_bad_logits_outside_the_block_are_ignored():
    """Only the current block's masked positions are read: NaN elsewhere is not an error."""
    model = _poisoned(call=0, row=0, pos=1, value=float("nan"))     # inside the prompt
    for backend in ("reference", "torch"):
        model.calls = 0
        assert _call(model=model, backend=backend).shape == (2, 11)


def test_nan_message_is_the_same_for_every_backend():
    msgs = []
    for backend in ("reference", "torch"):
        with pytest.raises(ValueError) as e:
            _call(model=_poisoned(call=1, row=0, pos=4, value=float("nan")), backend=backend, cfg_scale=1.0)
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1] and "classifier-free guidance" in msgs[0]


# ----------------------------------------------------------------------------- the lazy check
# On an accelerator the loop does not sync per step: it keeps the first invalid row of a block
# on the device (`errors.FirstInvalid`) and raises at the end of the block (schedule mode) or at
# the next step's sync (threshold mode). The error must still name the step it happened in, and
# the steps run in between must never write the invalid rows' x0 = -1 into x. On a CPU the loop
# checks at the step itself (`errors.ImmediateCheck`, a sync costs nothing there); the `lazy`
# fixture makes the CPU loop use the accelerator's check so both are tested here.


@pytest.fixture
def lazy(monkeypatch):
    from fastremask.sampler import errors

    monkeypatch.setattr(errors, "checker_for", lambda device: errors.FirstInvalid)


def _poison_steps(poison):
    """The tiny model; at the listed calls ``{call: (row, positions)}``, NaN at token 5 of every
    position of row ``row``. Every call checks that the model is only ever given valid token ids."""

    def nan_at(row, positions):
        def edit(logits):
            logits[row, positions, 5] = float("nan")
        return edit

    return Poisoned(MODEL, {c: nan_at(*rp) for c, rp in poison.items()}, vocab=20)


LAZY = dict(steps=8, gen_length=16, block_length=8, mask_id=MASK, seed=3, temperature=0.9)


def _message(model, **kw):
    with pytest.raises(ValueError) as e:
        _call(model=model, **{**LAZY, **kw})
    return str(e.value)


@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
def test_early_bad_step_is_reported_with_its_step(cfg_scale, lazy):
    """NaN at step 1 of a 4-step block: the torch loop notices it at the block's end, after 2
    more model calls, and still names step 1, the first still-masked position of row 1 and how
    many more there were, in the reference's words."""
    _, trace = _call(**LAZY, return_trace=True, cfg_scale=cfg_scale)
    masked = torch.nonzero(trace.steps[1].candidate[1]).flatten().tolist()   # row 1 at step 1
    first = 3 + masked[0]
    poison = {1: (1, list(range(3, 11)))}           # the whole first block of row 1
    ref = _message(_poison_steps(poison), backend="reference", cfg_scale=cfg_scale)
    model = _poison_steps(poison)
    fast = _message(model, backend="torch", cfg_scale=cfg_scale)
    assert fast == ref, (fast, ref)
    assert f"at step 1, batch row 1, position {first} " in fast
    assert f"({len(masked) - 1} more position(s) in this step)" in fast
    assert model.calls == 4                          # the rest of block 0, then the check


def test_first_bad_step_of_the_block_wins(lazy):
    """Two bad steps in one block: the earlier one is reported, not the later one."""
    poison = {0: (0, [5]), 2: (1, [3, 4, 5, 6, 7, 8, 9, 10])}
    fast = _message(_poison_steps(poison), backend="torch")
    assert fast == _message(_poison_steps(poison), backend="reference")
    assert "at step 0, batch row 0, position 5 " in fast and "more position" not in fast


def test_bad_step_in_a_later_block(lazy):
    """The check of block 0 passes; block 1's first step goes bad and is reported at its end."""
    model = _poison_steps({4: (0, [12])})
    fast = _message(model, backend="torch")
    assert fast == _message(_poison_steps({4: (0, [12])}), backend="reference")
    assert "at step 4, batch row 0, position 12 " in fast and model.calls == 8


def test_invalid_rows_are_never_kept(lazy):
    """Between the bad step and the check, the bad row stays masked (it is never kept), and
    only valid tokens are kept elsewhere; the error names the first bad step."""
    seen = []
    poison = {c: (1, [4]) for c in range(4)}        # position 4 of row 1 bad at every step
    with pytest.raises(ValueError, match="at step 0, batch row 1, position 4 "):
        _call(model=_poison_steps(poison), backend="torch", callback=seen.append, **LAZY)
    assert len(seen) == 4                            # every step of block 0 ran
    for s in seen:
        assert s.candidate[1, 1] and not s.keep[1, 1]     # index 1 of the block = position 4
        assert torch.isnan(s.confidence[1, 1]) and int(s.x0[1, 1]) == -1
        assert bool((s.x0[s.keep] >= 0).all())


def test_threshold_mode_raises_at_the_next_step(lazy):
    """Threshold mode syncs every step anyway: the error comes at the very next step's check."""
    kw = dict(threshold=0.9, remasking="low_confidence")
    model = _poison_steps({0: (0, [3, 4])})
    fast = _message(model, backend="torch", **kw)
    assert fast == _message(_poison_steps({0: (0, [3, 4])}), backend="reference", **kw)
    assert "at step 0, batch row 0, position 3 " in fast and "(1 more position(s) in this step)" in fast
    assert model.calls == 1


@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
def test_cpu_loop_raises_at_the_bad_step(cfg_scale):
    """Without the lazy check (a CPU): the same message, raised before any further model call."""
    poison = {1: (1, list(range(3, 11)))}
    model = _poison_steps(poison)
    msg = _message(model, backend="torch", cfg_scale=cfg_scale)
    assert "at step 1, batch row 1, position " in msg and model.calls == 2
    lazy_model = _poison_steps(poison)
    with pytest.MonkeyPatch.context() as mp:
        from fastremask.sampler import errors
        mp.setattr(errors, "checker_for", lambda device: errors.FirstInvalid)
        assert _message(lazy_model, backend="torch", cfg_scale=cfg_scale) == msg
    assert lazy_model.calls == 4


def test_thresholds_inside_each_rules_range_work():
    """The edges that a rule's confidence can reach are accepted."""
    for remasking, t in (("low_confidence", 1.0), ("margin", 1e-3), ("random", 0.999), ("entropy", 0.0),
                         ("entropy", -5.0)):
        assert _call(threshold=t, remasking=remasking).shape == (2, 11)


def test_out_of_vocab_suppress_message_mentions_eos_only_with_the_flag():
    with pytest.raises(ValueError) as e:
        _call(suppress_tokens=[99])
    assert "99" in str(e.value) and "logits_eos_inf" not in str(e.value)
    with pytest.raises(ValueError, match="logits_eos_inf suppresses the model's EOS"):
        _call(logits_eos_inf=True)


# ----------------------------------------------------------------------------- prompt ids (issue 17 item 4)


class _Embedding(torch.nn.Module):
    """A model that states its vocabulary only through its input embedding's rows."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def get_input_embeddings(self):
        return self.inner.embed

    def forward(self, x, attention_mask=None):
        return self.inner(x, attention_mask=attention_mask)


class _Plain:
    """A callable that states no vocabulary: the prompt's ids are its business."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, x, attention_mask=None):
        return self.inner(torch.where(x < 20, x, 0), attention_mask=attention_mask)


@pytest.mark.parametrize("model, where", [
    (MODEL, "config.vocab_size"),
    (_Embedding(MODEL), "the input embedding's rows"),
])
def test_prompt_id_outside_the_vocabulary_is_named(model, where):
    prompt = torch.tensor([[1, 2, 3], [4, 600, 20]])
    with pytest.raises(ValueError) as e:
        _call(model=model, prompt=prompt)
    msg = str(e.value)
    assert msg == (f"prompt holds token id 600 at batch row 1, position 1, outside the model's vocabulary "
                   f"of 20 ({where}; 2 such ids in all)")
    assert _call(model=model, prompt=prompt.clamp(max=18)).shape == (2, 11)       # inside (19: the mask)


def test_prompt_ids_in_the_adapter_and_an_unstated_vocabulary():
    from fastremask import models

    adapter = models.wrap(MODEL)
    with pytest.raises(ValueError, match=r"token id 20 at batch row 0, position 2, .* vocabulary of 20 "
                                         r"\(config.vocab_size; 1 such ids in all\)"):
        _call(model=adapter, prompt=torch.tensor([[1, 2, 20]]))
    # a model that states no vocabulary is not second-guessed
    assert _call(model=_Plain(MODEL), prompt=torch.tensor([[1, 2, 600]])).shape == (1, 11)
