"""`SamplingConfig`: every sampling option, declared once, validated once, shared by every entry point.

Each field of `SamplingConfig` carries its `Option` metadata (help text, command-line flag,
parser from a string, whether it changes the sampling step and whether it changes the
tokens). Everything else is derived from that one declaration (docs/architecture.md, "Where
options are declared"): the command-line flags of ``fastremask generate`` and ``eval``
(`fastremask.tools.options`), the lm-eval adapter's keyword arguments (`SamplingConfig.from_strings`),
the CUDA-graph key (`SamplingConfig.step_key`) and the record kept beside results
(`SamplingConfig.to_dict` / `SamplingConfig.from_dict`). `fastremask.generate` keeps LLaDA's
explicit signature; a test holds its keywords equal to the fields.

The token ids that depend on the model (mask, EOS, EoT) are resolved in one place,
`SpecialIds.of`: from the model adapter when it knows them, LLaDA's otherwise.

The module imports no torch at import time (``fastremask generate --help`` reads the fields).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import operator
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional

from fastremask.sampler.names import (BACKENDS, CACHE_MODES, MAX_LENGTH, REMASKING, SEED_LIMIT, THRESHOLD_FLOORS,
                                     THRESHOLD_RULES, TRUNCATION_ORDERS, CONFIDENCE_KINDS)
from fastremask.sampler.names import LLADA_EOS, LLADA_EOT, LLADA_MASK

__all__ = ["SamplingConfig", "SpecialIds", "Option", "option", "options", "check_options", "BACKENDS",
           "row_seeds", "SEED_LIMIT"]


def _tensor_type():
    """``torch.Tensor`` when torch is imported (a value cannot be a tensor otherwise)."""
    torch = sys.modules.get("torch")
    return torch.Tensor if torch is not None else ()


# ------------------------------------------------------------------ checks that name the argument

def check_int(name: str, value, minimum: int, maximum: Optional[int] = None) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})") from None
    if v < minimum or (maximum is not None and v >= maximum):
        bound = f"in [{minimum}, {maximum})" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}, got {v}")
    return v


def check_real(name: str, value, minimum: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, _tensor_type()) and value.numel() == 1 and value.dtype.is_floating_point:
            value = float(value)
        else:
            raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v) or (minimum is not None and v < minimum):
        bound = f"a finite number >= {minimum}" if minimum is not None else "a finite number"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return v


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False (expected a boolean), got {value!r}")
    return value


def check_token_ids(name: str, value) -> tuple:
    """None, an int, a sequence of ints or a 1-D integer tensor -> sorted unique ids."""
    if value is None:
        return ()
    if isinstance(value, _tensor_type()):
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == sys.modules["torch"].bool or value.dim() > 1:
            raise TypeError(f"{name} must be token ids (ints), got a {value.dtype} tensor of shape {tuple(value.shape)}")
        ids = value.reshape(-1).tolist()
    elif isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be token ids (ints), got {value!r}")
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        ids = [value]
    else:
        try:
            ids = list(value)
        except TypeError:
            raise TypeError(f"{name} must be token ids (ints), got {value!r}") from None
    return tuple(sorted({check_int(f"{name}[{i}]", v, 0, SEED_LIMIT) for i, v in enumerate(ids)}))


def row_seeds(seed, batch: int) -> list:
    """The per-row seeds `generate` uses: one int in ``[0, 2**63)`` per batch row.

    * an int ``s``: row ``b`` gets ``(s + b) % 2**63``, so row ``b`` alone with ``seed=s + b``
      reproduces it, and equal prompts in one batch still get different samples;
    * a sequence (or 1-D tensor) of ``batch`` ints: one per row, as given;
    * None: ``s`` drawn from torch's default generator (so ``torch.manual_seed`` controls it),
      then as an int.
    """
    import torch

    batch = check_int("batch", batch, 1)
    if seed is None:
        seed = int(torch.randint(0, SEED_LIMIT - 1, (), dtype=torch.int64))
    if isinstance(seed, torch.Tensor) and seed.dim() == 0:
        if seed.dtype.is_floating_point or seed.dtype == torch.bool:
            raise TypeError(f"seed must be an int or one int per batch row, got {seed!r}")
        seed = int(seed)
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        s = check_int("seed", seed, 0, SEED_LIMIT)
        return [(s + b) % SEED_LIMIT for b in range(batch)]
    if isinstance(seed, (str, bytes, bool, float)):
        raise TypeError(f"seed must be an int or one int per batch row, got {seed!r}")
    if isinstance(seed, torch.Tensor):
        if seed.dtype.is_floating_point or seed.dtype == torch.bool or seed.dim() != 1:
            raise TypeError(f"seed must be an int or one int per batch row, got a {seed.dtype} tensor of shape {tuple(seed.shape)}")
        seed = seed.tolist()
    try:
        seeds = list(seed)
    except TypeError:
        raise TypeError(f"seed must be an int or one int per batch row, got {seed!r}") from None
    if len(seeds) != batch:
        raise ValueError(f"seed has {len(seeds)} values but the prompt has {batch} batch rows")
    return [check_int(f"seed[{i}]", s, 0, SEED_LIMIT) for i, s in enumerate(seeds)]


# What each rule's confidence can be (numerics.md §6); a threshold outside it is a mistake: it
# is never reached (one token per step) or always reached (the whole block in one step).
THRESHOLD_RANGES = {
    "low_confidence": (0.0, 1.0, "(0, 1]: the probability of the sampled token"),
    "margin": (0.0, 1.0, "(0, 1]: top-1 minus top-2 probability"),
    "random": (0.0, 1.0, "(0, 1): a uniform draw"),
    "entropy": (None, 0.0, "(-inf, 0]: minus the entropy in nats, e.g. -1.5"),
}


# What each non-fixed rule's parameter and confidence must be (docs/decoding.md).
# 'factor' bounds (n + 1) * (1 - c) < f: c must be a probability-like confidence in [0, 1].
# 'eb' bounds sums of entropies: it reads the entropy from remasking='entropy' (c = -H), the
# only rule whose confidence is one; gamma below EB_GAMMA_LIMIT (32 nats) keeps its int64 sums exact.
RULE_REMASKING = {
    "factor": ("low_confidence", "margin", "random"),
    "eb": ("entropy",),
}


def _check_threshold(t: float, remasking: str, rule: str = "fixed") -> float:
    if rule == "factor":
        if remasking not in RULE_REMASKING["factor"]:
            raise ValueError(
                f"threshold_rule='factor' bounds (n + 1) * (1 - confidence) by f, for a confidence in [0, 1] "
                f"(remasking one of {list(RULE_REMASKING['factor'])}); remasking={remasking!r} gives minus "
                "the entropy: use threshold_rule='eb' with it")
        if t <= 0:
            raise ValueError(f"threshold={t} with threshold_rule='factor' must be > 0 (Fast-dLLM's f, e.g. 1.0)")
        return t
    if rule == "eb":
        from fastremask.sampler.reference import EB_GAMMA_LIMIT
        if remasking not in RULE_REMASKING["eb"]:
            raise ValueError(
                "threshold_rule='eb' bounds sums of the candidates' entropies, which only "
                f"remasking='entropy' gives (its confidence is minus the entropy); got remasking={remasking!r}")
        if not 0 <= t < EB_GAMMA_LIMIT:
            raise ValueError(f"threshold={t} with threshold_rule='eb' must be in [0, {EB_GAMMA_LIMIT:g}) nats "
                             "(the EB-sampler's gamma, e.g. 0.1)")
        return t
    lo, hi, what = THRESHOLD_RANGES[remasking]
    bad = (lo is not None and t <= lo) or t > hi or (remasking == "random" and t >= hi)
    if bad:
        raise ValueError(f"threshold={t} is outside what remasking={remasking!r} gives: {what}")
    return t


# ----------------------------------------------------------------- options: metadata and parsers
# A parser turns lm-eval's or the command line's string into the field's value. One that cannot
# read its string returns it unchanged, so that `SamplingConfig` rejects it with the message
# `generate` gives for the same value: every entry point says the same thing about a bad value.

def _parse_int(s: str):
    try:
        return int(s)
    except ValueError:
        return s


def _parse_real(s: str):
    try:
        return float(s)
    except ValueError:
        return s


def _none_or(parse: Callable) -> Callable:
    def parse_optional(s: str):
        return None if s.strip().lower() in ("none", "") else parse(s)
    parse_optional.__name__ = f"optional_{parse.__name__}"
    return parse_optional


def _parse_bool(s: str):
    v = s.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    return s


def _parse_name(s: str):
    return s.strip()


def _parse_ids(s: str):
    """Comma-separated token ids (``"5,7"``) -> a list of ints."""
    parts = [v for v in s.replace(" ", "").split(",") if v]
    try:
        return [int(v) for v in parts]
    except ValueError:
        return s


def _parse_schedule(s: str):
    """A schedule name (``uniform``, ``pyramid``) or comma-separated per-step counts (``1,2,3``)."""
    v = s.replace(" ", "")
    if v and all(c.isdigit() or c == "," for c in v) and any(c.isdigit() for c in v):
        return [int(c) for c in v.split(",") if c]
    return s.strip()


@dataclass(frozen=True)
class Option:
    """What a `SamplingConfig` field is, for everything derived from it.

    ``help``: one line for ``--help`` and the docs; ``parse``: a string (the command line,
    lm-eval's ``--model_args``) -> the field's value; ``step``: the field changes what the
    sampling step computes (so it is part of `SamplingConfig.step_key`, the CUDA-graph key);
    ``tokens``: it can change the tokens (a run resumed with another value is another run);
    ``flag``: the command-line flag (default ``--`` + the name with dashes; a bool that
    defaults to True gets ``--no-...``); ``choices``: the accepted names, shown in ``--help``
    (the config checks them, with generate's message); ``metavar``: shown in ``--help``.
    """

    help: str
    parse: Callable
    step: bool = False
    tokens: bool = True
    flag: Optional[str] = None
    choices: Optional[tuple] = None
    metavar: Optional[str] = None


def option(default, help: str, parse: Callable, **meta):
    """A `SamplingConfig` field with its `Option` (``meta``: `Option`'s other fields)."""
    return field(default=default, metadata={"option": Option(help, parse, **meta)})


def options(cls=None) -> dict:
    """``{name: (dataclasses.Field, Option)}`` of the options of ``cls`` (default
    `SamplingConfig`), in declaration order."""
    cls = SamplingConfig if cls is None else cls
    return {f.name: (f, f.metadata["option"]) for f in dataclasses.fields(cls) if "option" in f.metadata}


def check_options(names, cls=None, where: str = "") -> None:
    """An unknown option name is a ValueError naming it (and the closest known one); the same
    message from `SamplingConfig.from_dict`/`from_strings`, the lm-eval adapter and the CLI."""
    known = options(cls)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(str(name), list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown sampling option {name!r}{where}{hint} (known: {', '.join(known)})")


# ------------------------------------------------------------------------------- the config

@dataclass(frozen=True)
class SamplingConfig:
    """What to sample and how; the fields are `fastremask.generate`'s keywords (docs/api.md).

    Validated on construction (every bad value is a ValueError or TypeError naming the field);
    token-id fields are normalised to sorted tuples, ``threshold`` to a float, ``schedule`` is
    kept as given and resolved into `plan` (a `fastremask.sampler.schedule.Schedule`). ``mask_id``
    None means the model's (`SpecialIds.of`). Build variants with `replace`; record one with
    `to_dict` and rebuild it with `from_dict`; `from_strings` reads string values (lm-eval's).

    Each field is declared once, here, with its `Option` (help, flag, parser, whether it
    changes the step and the tokens): a new option is one field.
    """

    steps: int = option(128, "model-call budget: per block steps // num_blocks (unused with a threshold)",
                        _parse_int)
    gen_length: int = option(128, "tokens to generate", _parse_int)
    block_length: int = option(128, "semi-autoregressive block length", _parse_int)
    temperature: float = option(0.0, "sampling temperature: 0 is greedy, T > 0 draws from softmax(logits / T)",
                                _parse_real, step=True)
    cfg_scale: float = option(0.0, "classifier-free guidance scale (0: off)", _parse_real, step=True)
    top_k: Optional[int] = option(None, "at T > 0, draw only from the top_k most likely tokens (None: off); "
                                        "numerics.md §4a", _none_or(_parse_int), step=True, metavar="K")
    top_p: float = option(1.0, "at T > 0, draw only from the smallest most-likely set whose mass exceeds "
                               "top_p, in (0, 1] (1: off)", _parse_real, step=True, metavar="P")
    min_p: float = option(0.0, "at T > 0, draw only from tokens with p >= min_p * p_max, in [0, 1) (0: off)",
                          _parse_real, step=True, metavar="P")
    alg_temp: float = option(0.0, "Dream's position choice: > 0 draws each step's positions without replacement "
                                  "from softmax(confidence / alg_temp) instead of the top ones (schedule mode; 0: off)",
                             _parse_real, step=True, metavar="T")
    truncation_order: str = option("top_k_first", "top_k_first (LLaDA2's and HF's order) | top_p_first "
                                                  "(Dream's): which of top-k and top-p cuts first",
                                   _parse_name, step=True, choices=TRUNCATION_ORDERS)
    remasking: str = option("low_confidence", "the confidence that ranks the candidates", _parse_name,
                            step=True, choices=REMASKING)
    confidence: str = option(
        "llada", "whose confidence the rule takes: llada (the untempered full softmax) | dream (Dream's "
                 "sample_tokens: the tempered softmax after top-p/top-k, truncated at T = 0 too) | llada2 "
                 "(LLaDA2's: the tempered, truncated softmax at T > 0, llada's at T = 0); numerics.md §6a",
        _parse_name, step=True, choices=CONFIDENCE_KINDS)
    mask_id: Optional[int] = option(None, "mask token id (default: the model's)", _none_or(_parse_int),
                                    step=True, metavar="ID")
    logits_eos_inf: bool = option(False, "never generate the model's EOS", _parse_bool, step=True)
    confidence_eos_eot_inf: bool = option(
        False, "keep EOS/EoT predictions only after every other position of the block", _parse_bool, step=True)
    schedule: object = option("uniform", "uniform | pyramid | dream | origin (Dream's alg='origin': each position "
                                         "unmasked by its own draw) | comma-separated per-step counts",
                              _parse_schedule, metavar="SCHEDULE")
    factor: int = option(1, "pyramid dilation: step i keeps i // factor + 1", _parse_int)
    threshold: Optional[float] = option(
        None, "keep every candidate with confidence >= this each step (at least one); with "
              "--threshold-rule factor|eb, that rule's parameter", _none_or(_parse_real), step=True)
    threshold_rule: str = option(
        "fixed", "fixed (confidence >= threshold) | factor (Fast-dLLM's, threshold = f) | eb "
                 "(EB-sampler's, threshold = gamma); docs/decoding.md", _parse_name, step=True,
        choices=THRESHOLD_RULES)
    suppress_tokens: tuple = option((), "token ids never generated", _parse_ids, step=True, metavar="IDS")
    defer_tokens: tuple = option((), "token ids kept only after every other position of the block",
                                 _parse_ids, step=True, metavar="IDS")
    backend: str = option("auto", "the sampling backend (the same tokens on every one)", _parse_name,
                          step=True, tokens=False, choices=BACKENDS)
    logits_window: bool = option(
        False, "run the output head on the current block only (less memory; not in the bit-equality promise)",
        _parse_bool)
    cuda_graph: bool = option(True, "capture the sampling step in a CUDA graph on CUDA (the same bits)",
                              _parse_bool, tokens=False)
    cache: Optional[str] = option(None, "block KV cache: prefix | dual (faster, approximate), block (block-causal "
                                        "models: exact); docs/cache.md (default: none)", _none_or(_parse_name),
                                  choices=CACHE_MODES)
    stop_at_eos: bool = option(False, "fill a row with EOS once its finished blocks end in EOS; stop when "
                                      "all rows are done", _parse_bool)
    threshold_floor: str = option(
        "one", "the fewest a threshold step keeps: one (confidence >= threshold, at least one) | schedule "
               "(LLaDA2's and SDAR's dynamic rule: confidence > threshold, at least the schedule's count)",
        _parse_name, choices=THRESHOLD_FLOORS)      # (steps with it run eagerly: no CUDA graph)
    minimal_topk: int = option(1, "LLaDA2's cap: at most gen_length // minimal_topk steps per block", _parse_int)
    eos_early_stop: bool = option(False, "block-causal models: a row whose answer holds an EOS with no mask "
                                         "before it is done, EOS after it (LLaDA2's rule)", _parse_bool)
    edit_threshold: Optional[float] = option(
        None, "token editing (LLaDA2.1): a decoded token of the current block takes the sampled one when its "
              "probability is > this, in [0, 1) (default: off)", _none_or(_parse_real))
    max_post_edit_steps: int = option(16, "token editing: steps of a block after its last mask", _parse_int)
    penalty_lambda: float = option(0.0, "token editing: lower the logit of the previous position's token by "
                                        "this (SGLang's penalty_lambda)", _parse_real)
    force_editing: bool = option(False, "allow edit_threshold on a family not trained for token editing",
                                 _parse_bool)
    plan: object = field(init=False, repr=False, compare=False)   # a schedule.Schedule

    def __post_init__(self):
        from fastremask.sampler import schedule as _schedule
        from fastremask.sampler.numerics import tempered_scales

        put = lambda name, v: object.__setattr__(self, name, v)   # noqa: E731 (frozen)
        gen_length = check_int("gen_length", self.gen_length, 1)
        block_length = check_int("block_length", self.block_length, 1)
        steps = check_int("steps", self.steps, 1)
        for name, v in (("gen_length", gen_length), ("steps", steps)):
            if v > MAX_LENGTH:
                raise ValueError(
                    f"{name}={v} is more than the sampler supports ({MAX_LENGTH:,}; positions and step "
                    f"counters are 32-bit counter words, and {v:,} answer positions would need "
                    f"{v * 8 / 2**30:,.0f} GiB for the tokens alone, before any logits)")
        if gen_length % block_length:
            raise ValueError(f"gen_length={gen_length} must be a multiple of block_length={block_length}")
        put("steps", steps), put("gen_length", gen_length), put("block_length", block_length)
        put("temperature", check_real("temperature", self.temperature, 0.0))
        if self.temperature > 0:
            tempered_scales(float(self.temperature))   # 1/T must be a finite fp32 (§4)
        put("cfg_scale", check_real("cfg_scale", self.cfg_scale, 0.0))
        from fastremask.sampler.contract import check_truncation   # top-k / top-p / min-p (§4a)
        t = check_truncation(self.top_k, self.top_p, self.min_p, self.truncation_order)
        put("top_k", t.top_k), put("top_p", t.top_p), put("min_p", t.min_p)
        put("alg_temp", check_real("alg_temp", self.alg_temp, 0.0))
        if self.alg_temp > 0:
            if self.threshold is not None:
                raise ValueError(f"alg_temp={self.alg_temp} draws a schedule's count of positions; it has no "
                                 "threshold mode (use threshold=None, or alg_temp=0)")
            if self.remasking == "random":
                raise ValueError(f"alg_temp={self.alg_temp} samples positions by confidence; remasking='random' "
                                 "has no confidence to sample by (use alg_temp=0)")
            if self.alg_temp < 1e-30:                # confidence / alg_temp must stay finite in fp32
                raise ValueError(f"alg_temp={self.alg_temp!r} is too small: use 0 (off) or at least 1e-30")
        from fastremask.sampler.contract import check_confidence    # whose confidence (§6a)
        if not isinstance(self.remasking, str) or self.remasking not in REMASKING:
            raise ValueError(f"unknown remasking {self.remasking!r}; expected one of {list(REMASKING)}")
        check_confidence(self.confidence, self.remasking)
        if t.active and self.temperature == 0 and self.confidence != "dream":
            on = ", ".join(f"{n}={v!r}" for n, v in (("top_k", t.top_k), ("top_p", t.top_p), ("min_p", t.min_p))
                           if v != {"top_k": None, "top_p": 1.0, "min_p": 0.0}[n])
            raise ValueError(f"{on} needs temperature > 0: at temperature=0 the token is the argmax, which "
                             "every truncation keeps, so it would change nothing (numerics.md §4a); only "
                             "confidence='dream' truncates at temperature=0 (Dream's sample_tokens)")
        if self.mask_id is not None:
            put("mask_id", check_int("mask_id", self.mask_id, 0, SEED_LIMIT))
        for name in ("logits_eos_inf", "confidence_eos_eot_inf", "logits_window", "cuda_graph", "stop_at_eos",
                     "eos_early_stop", "force_editing"):
            check_bool(name, getattr(self, name))
        put("suppress_tokens", check_token_ids("suppress_tokens", self.suppress_tokens))
        put("defer_tokens", check_token_ids("defer_tokens", self.defer_tokens))
        if not isinstance(self.backend, str) or self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; expected one of {list(BACKENDS)}")
        if self.cache is not None and self.cache not in CACHE_MODES:
            raise ValueError(f"unknown cache {self.cache!r}; expected None or one of {list(CACHE_MODES)}")
        if not isinstance(self.threshold_rule, str) or self.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"unknown threshold_rule {self.threshold_rule!r}; expected one of {list(THRESHOLD_RULES)}")
        if self.threshold_rule != "fixed" and self.threshold is None:
            raise ValueError(f"threshold_rule={self.threshold_rule!r} needs a threshold (its parameter)")
        self._check_block_options()
        plan = _schedule.resolve(self.schedule, self.factor)
        put("plan", plan)
        if self.origin:
            self._check_origin()
        if self.threshold is not None:
            put("threshold", _check_threshold(check_real("threshold", self.threshold), self.remasking,
                                                    self.threshold_rule))
        if self.threshold is None or self.threshold_floor == "schedule":
            if steps % self.num_blocks:
                raise ValueError(
                    f"steps={steps} must be a multiple of the number of blocks "
                    f"(gen_length / block_length = {self.num_blocks})")
            if not self.origin:
                plan(block_length, self.steps_per_block)  # raises now if the schedule cannot use steps

    def _check_origin(self) -> None:
        """``schedule='origin'`` (Dream's ``alg='origin'``): each masked position is unmasked by its
        own draw, so the options that rank positions or pick them by confidence do not apply."""
        if self.threshold is not None:
            raise ValueError(f"schedule='origin' (Dream's alg='origin') unmasks each position by its own draw; "
                             f"it has no threshold mode: use threshold=None, got threshold={self.threshold!r}")
        if self.alg_temp > 0:
            raise ValueError(f"alg_temp={self.alg_temp} draws positions by confidence; schedule='origin' unmasks "
                             "each position by its own draw (Dream ignores alg_temp with alg='origin'): use alg_temp=0")
        if self.remasking != "low_confidence":
            raise ValueError(f"remasking={self.remasking!r} ranks the positions; schedule='origin' keeps every "
                             "position its draw transfers, so no ranking applies: use remasking='low_confidence' "
                             "(the default)")
        if self.defer_tokens or self.confidence_eos_eot_inf:
            raise ValueError("defer_tokens / confidence_eos_eot_inf order the positions a step keeps; "
                             "schedule='origin' keeps every position its draw transfers: nothing can be deferred")

    @property
    def origin(self) -> bool:
        """``schedule='origin'``: Dream's ``alg='origin'`` (`fastremask.sampler.schedule.Origin`)."""
        return getattr(self.plan, "random_counts", False)

    def transfer_probabilities(self) -> Optional[list]:
        """``schedule='origin'``: each step's transfer probability ``p_i`` (fp32 values; 1.0 at a
        block's last step), the same for every block; otherwise None."""
        return self.plan.probabilities(self.steps_per_block) if self.origin else None

    def _check_block_options(self) -> None:
        """The block-diffusion options (docs/decoding.md, "Block diffusion")."""
        put = lambda name, v: object.__setattr__(self, name, v)   # noqa: E731 (frozen)
        if not isinstance(self.threshold_floor, str) or self.threshold_floor not in THRESHOLD_FLOORS:
            raise ValueError(f"unknown threshold_floor {self.threshold_floor!r}; expected one of {list(THRESHOLD_FLOORS)}")
        if self.threshold_floor == "schedule" and (self.threshold is None or self.threshold_rule != "fixed"):
            raise ValueError("threshold_floor='schedule' (LLaDA2's and SDAR's dynamic rule) needs a threshold "
                             f"with threshold_rule='fixed', got threshold={self.threshold!r}, "
                             f"threshold_rule={self.threshold_rule!r}")
        put("minimal_topk", check_int("minimal_topk", self.minimal_topk, 1))
        put("max_post_edit_steps", check_int("max_post_edit_steps", self.max_post_edit_steps, 0))
        put("penalty_lambda", check_real("penalty_lambda", self.penalty_lambda, 0.0))
        if self.edit_threshold is not None:
            t = check_real("edit_threshold", self.edit_threshold)
            if not 0.0 <= t < 1.0:
                raise ValueError(f"edit_threshold={self.edit_threshold!r} is outside [0, 1): it compares the "
                                 "probability of the sampled token (1 or more would never edit)")
            put("edit_threshold", t)
            if self.threshold is None:
                raise ValueError("edit_threshold (token editing) needs threshold decoding: set threshold, "
                                 "e.g. threshold=0.7 (LLaDA2.1's Q mode)")
            if self.remasking != "low_confidence":
                raise ValueError(f"edit_threshold compares the sampled token's probability: it needs "
                                 f"remasking='low_confidence', got {self.remasking!r}")
        elif self.penalty_lambda:
            raise ValueError(f"penalty_lambda={self.penalty_lambda} is part of token editing: set edit_threshold")

    @property
    def editing(self) -> bool:
        """Token editing (LLaDA2.1) is on."""
        return self.edit_threshold is not None

    @property
    def truncation(self):
        """The `fastremask.sampler.contract.Truncation` of ``top_k``, ``top_p``, ``min_p`` and
        ``truncation_order`` (numerics.md §4a), as the backends take it."""
        from fastremask.sampler.contract import Truncation
        return Truncation(self.top_k, self.top_p, self.min_p, self.truncation_order)

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def block_logits(self) -> bool:
        """The model returns logits for the current block only (``logits_window`` or a cache)."""
        return self.logits_window or self.cache is not None

    @property
    def steps_per_block(self) -> int:
        """The per-block budget: ``steps // num_blocks`` (threshold mode: unused unless
        ``threshold_floor='schedule'``), at most ``gen_length // minimal_topk`` (LLaDA2's cap)."""
        spb = self.steps // self.num_blocks
        return spb if self.minimal_topk == 1 else max(1, min(spb, self.gen_length // self.minimal_topk))

    def replace(self, **changes) -> "SamplingConfig":
        """A copy with ``changes`` applied, validated again."""
        return dataclasses.replace(self, **changes)

    # --- what is derived from the declaration ------------------------------------------------
    def step_key(self) -> tuple:
        """``((name, value), ...)`` of every option that changes the sampling step (its
        `Option` says ``step=True``): the part of the CUDA-graph key that comes from the config
        (`fastremask.sampler.graphs`). A new field declared with ``step=True`` is in it."""
        return tuple((name, _hashable(getattr(self, name)))
                     for name, (_, opt) in options(type(self)).items() if opt.step)

    def to_dict(self) -> dict:
        """The exact configuration as JSON-ready values (``from_dict(to_dict())`` equals it).

        Names, numbers, None and lists as given (token ids as sorted lists). A schedule given as
        a callable or a `Schedule` object is recorded as the per-block counts it gives for this
        configuration (the run is the same); in threshold mode, where no schedule is used, as
        ``"uniform"``.
        """
        out = {}
        for name in options(type(self)):
            v = getattr(self, name)
            out[name] = list(v) if isinstance(v, tuple) else v
        sched = self.schedule
        if isinstance(sched, _tensor_type()):
            out["schedule"] = sched.tolist()
        elif self.origin:
            from fastremask.sampler.schedule import Origin
            if self.plan != Origin():
                raise ValueError(f"schedule={sched!r} cannot be recorded: only origin's default eps=1e-3 has a "
                                 "name ('origin')")
            out["schedule"] = "origin"
        elif not isinstance(sched, (str, list, tuple)):
            counts = self.block_counts()
            out["schedule"], out["factor"] = ("uniform", 1) if counts is None else (list(counts), 1)
        return out

    @classmethod
    def from_dict(cls, record: dict) -> "SamplingConfig":
        """The config `to_dict` recorded (a missing option takes its default); an unknown name
        is a ValueError naming it."""
        if not isinstance(record, dict):
            raise TypeError(f"a sampling config record must be a dict, got {type(record).__name__}")
        check_options(record, cls)
        return cls(**record)

    @classmethod
    def parse_strings(cls, values: dict) -> dict:
        """``values`` with each string read by its option's parser (``"0.5"`` -> 0.5, ``"true"``
        -> True, ``"none"`` -> None, ``"1,2"`` -> [1, 2]) and, for a flag, the ints 0 and 1 as
        False and True (lm-eval reads ``"1"`` as 1); other values as given, for `SamplingConfig`
        to check. An unknown name is a ValueError (`check_options`)."""
        check_options(values, cls)
        known = options(cls)

        def read(name, v):
            f, opt = known[name]
            if isinstance(v, str):
                return opt.parse(v)
            if isinstance(f.default, bool) and type(v) is int and v in (0, 1):
                return bool(v)
            return v

        return {k: read(k, v) for k, v in values.items()}

    @classmethod
    def from_strings(cls, **values) -> "SamplingConfig":
        """The config of ``values`` given as strings (lm-eval's ``--model_args``), each read by
        its option's parser (`parse_strings`) and then checked as `generate` checks it."""
        return cls(**cls.parse_strings(values))

    def changes(self, other: "SamplingConfig", tokens_only: bool = True) -> list:
        """``[(name, self's value, other's value)]`` of the options that differ (by default only
        those that can change the tokens), as `to_dict` records them."""
        a, b = self.to_dict(), other.to_dict()
        known = options(type(self))
        return [(k, a[k], b.get(k)) for k in a if a[k] != b.get(k) and (known[k][1].tokens or not tokens_only)]

    def block_counts(self) -> Optional[list]:
        """Schedule mode: the per-step counts of one block (every row's block starts fully
        masked, so all rows share them); threshold mode and ``schedule='origin'`` (random
        counts, `transfer_probabilities`): None."""
        if self.threshold is not None or self.origin:
            return None
        return self.plan(self.block_length, self.steps_per_block)

    def floor_counts(self) -> Optional[list]:
        """``threshold_floor='schedule'``: the schedule's per-step counts, the fewest each
        threshold step keeps (LLaDA2, SDAR's ``low_confidence_dynamic``); otherwise None."""
        if self.threshold is None or self.threshold_floor != "schedule":
            return None
        return self.plan(self.block_length, self.steps_per_block)

    def model_calls(self) -> int:
        """Schedule mode: the model calls `run` makes (`fastremask.sampler.schedule.cost`: steps that
        keep 0 are skipped; ``schedule='origin'``: every step); threshold mode: the most it can
        make (each step keeps at least one per unfinished row)."""
        from fastremask.sampler import schedule as _schedule

        if self.threshold is not None:
            return self.gen_length
        return _schedule.cost(self.gen_length, self.block_length, self.steps, self.plan).model_calls


@dataclass(frozen=True)
class SpecialIds:
    """The token ids a call depends on: mask, and what the LLaDA flags suppress and defer."""

    mask_id: int
    suppress: tuple
    defer: tuple
    eos: Optional[int] = None

    @staticmethod
    def of(model, config: SamplingConfig) -> "SpecialIds":
        """Resolve against ``model``: ``mask_id``/``eos_id``/``eot_id`` attributes (a
        `fastremask.models.Adapter`, the tiny model; the mask id also from ``model.config.mask_id``)
        when it has them, LLaDA's otherwise."""
        mask_id = config.mask_id
        if mask_id is None:
            mask_id = getattr(model, "mask_id", None)
        if mask_id is None:
            mask_id = getattr(getattr(model, "config", None), "mask_id", LLADA_MASK)
        mask_id = check_int("mask_id", mask_id, 0, SEED_LIMIT)
        eos = getattr(model, "eos_id", LLADA_EOS)
        eot = getattr(model, "eot_id", LLADA_EOT)
        suppress, defer = set(config.suppress_tokens), set(config.defer_tokens)
        if config.logits_eos_inf:
            if eos is None:
                raise ValueError("logits_eos_inf=True: the model has no EOS token id; pass suppress_tokens=")
            suppress.add(eos)
        if config.confidence_eos_eot_inf:
            ids = [t for t in (eos, eot) if t is not None]
            if not ids:
                raise ValueError("confidence_eos_eot_inf=True: the model has no EOS/EoT token ids; pass defer_tokens=")
            defer.update(ids)
        if config.stop_at_eos and eos is None:
            raise ValueError("stop_at_eos=True: the model has no EOS token id (model.eos_id)")
        return SpecialIds(mask_id, tuple(sorted(suppress)), tuple(sorted(defer)), eos)


def _hashable(v):
    """A field's value as a hashable key part (lists -> tuples; a schedule object as itself)."""
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    return v
