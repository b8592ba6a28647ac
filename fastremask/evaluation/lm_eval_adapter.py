"""An lm-evaluation-harness model that samples with fastremask: ``--model fastremask``.

    pip install lm_eval
    python -m fastremask.evaluation.lm_eval_adapter --model_args pretrained=GSAI-ML/LLaDA-8B-Instruct,\\
        trust_remote_code=True,dtype=bf16,gen_length=256,steps=256,block_length=32,schedule=pyramid,factor=2,chat=True \\
        --tasks gsm8k --batch_size 8
    accelerate launch -m fastremask.evaluation.lm_eval_adapter --model_args ... --tasks humaneval   # data parallel

``python -m fastremask.evaluation.lm_eval_adapter`` is lm_eval's own command line with this module
imported first (importing it registers the model name ``"fastremask"``). Model arguments
(``--model_args k=v,...``): ``pretrained`` (a folder or hub id, loaded by
`fastremask.models.load`), ``dtype``, ``trust_remote_code``, ``device``, ``seed``, ``mc_num``,
``chat`` (wrap each prompt in the tokenizer's chat template, what LLaDA-Instruct and
Dream-Instruct expect; lm_eval's ``--apply_chat_template`` works too), and every sampling
option of `fastremask.generate`: the fields of `fastremask.SamplingConfig`, read from lm-eval's
strings by their declared parsers (`SamplingConfig.parse_strings`) and held as one config
(``config``, built and checked when the model is built, with generate's messages).
``gen_length`` defaults to the task's ``max_gen_toks``, ``steps`` and ``block_length`` to
``gen_length``; ``logits_eos_inf`` and ``confidence_eos_eot_inf`` apply to the loaded model's
EOS/EoT ids (`fastremask.sampler.config.SpecialIds`, as `generate` resolves them). An unknown
argument is an error naming it (never ignored: a misspelt option would run another algorithm).

What is implemented:

* ``generate_until``: prompts of one ``gen_length`` are batched (``--batch_size``) and
  left-padded, generated with `fastremask.run` and `sampling_config` (``config`` with that
  ``gen_length``; ``steps`` and ``block_length`` default to it), cut at the first EOS/EoT token and then
  at the first of the request's ``until`` strings. Each request's seed is derived from
  ``seed``, the task name, the document id and the repeat index, so results do not depend on
  the batch size, the order or the number of processes.
* ``loglikelihood``: LLaDA's Monte Carlo estimate (``mc_num`` samples, default 32): mask
  ``l ~ U{1..L}`` of the ``L`` continuation tokens at random, score the masked tokens, weight
  by ``L / l``; a lower bound on the log-likelihood (the ELBO), with the estimator's variance;
  ``is_greedy`` is always False. Good enough to rank choices, not an exact likelihood.
* ``loglikelihood_rolling``: raises `NotImplementedError` (perplexity tasks need an exact
  likelihood a masked diffusion model does not give).

Data parallel: under ``accelerate launch`` or ``torchrun`` (more than one process; docs/scale.md)
the model goes to the process's device and reports ``rank``/``world_size`` (with
``accelerate`` installed, through its ``accelerator``, lm_eval's convention; else through
``torch.distributed``); lm_eval's evaluator then gives each
rank every ``world_size``-th document and gathers the results, so ``generate_until`` only sees
its own share. `shard` does the same split for callers that drive the model directly.

The module imports without lm_eval (the class then derives from a small stand-in), so its
request handling is tested in CI without installing the harness.
"""
from __future__ import annotations

import hashlib
import sys
from typing import Any, Sequence

import torch

from fastremask.sampler.config import SEED_LIMIT, SamplingConfig, SpecialIds, check_bool, check_int

try:  # lm_eval is optional: only needed to run the harness itself
    from lm_eval.api.model import LM as _LMBase
    from lm_eval.api.registry import register_model as _register_model

    HAVE_LM_EVAL = True
except ImportError:  # pragma: no cover - exercised where lm_eval is missing
    HAVE_LM_EVAL = False

    class _LMBase:  # the part of lm_eval.api.model.LM this adapter relies on
        def __init__(self) -> None:
            self._rank = 0
            self._world_size = 1
            self.cache_hook = None

        @property
        def rank(self) -> int:
            return self._rank

        @property
        def world_size(self) -> int:
            return self._world_size

    def _register_model(*names):
        return lambda cls: cls


__all__ = ["FastRemaskLM", "HAVE_LM_EVAL", "shard", "request_seed", "truncate"]


def shard(requests: Sequence, rank: int, world_size: int) -> list:
    """Every ``world_size``-th request starting at ``rank`` (lm_eval's own document split)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    return list(requests[rank::world_size])


def request_seed(seed: int, task: str | None, doc_id: Any, repeat: int) -> int:
    """A 63-bit seed from the run seed, the task name, the document id and the repeat index."""
    key = f"{seed}\x00{task}\x00{doc_id}\x00{repeat}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") % SEED_LIMIT


def truncate(text: str, until: Sequence[str]) -> str:
    """``text`` cut before the earliest occurrence of any stop string in ``until``."""
    cut = len(text)
    for stop in until:
        if stop:
            i = text.find(stop)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def _bool(v):
    """A flag as lm_eval passes it: ``"true"``/``"false"``/``"1"``/... strings and the ints 0/1
    become bools; anything else is returned as given (for the checks that name the option)."""
    if isinstance(v, str):
        if v.lower() in ("true", "1", "yes"):
            return True
        if v.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"expected a boolean, got {v!r}")
    if isinstance(v, int) and not isinstance(v, bool) and v in (0, 1):
        return bool(v)
    return v


def _num(v, kind, optional: bool = False):
    """A number as lm_eval passes it (a string from ``--model_args``, or already parsed):
    a string is converted with ``kind`` when it can be; everything else is left for
    `SamplingConfig` to check, so a bad value gets the message `generate` gives it."""
    if isinstance(v, str):
        if optional and v.lower() == "none":
            return None
        try:
            return kind(v)
        except ValueError:
            return v
    return v


def _instance_parts(req) -> tuple[tuple, str | None, Any]:
    """``(args, task_name, doc_id)`` of an lm_eval ``Instance`` (or a bare args tuple)."""
    if isinstance(req, tuple):
        return req, None, None
    args = req.args
    return args, getattr(req, "task_name", None), getattr(req, "doc_id", None)


@_register_model("fastremask")
class FastRemaskLM(_LMBase):
    """An lm_eval ``LM`` backed by `fastremask.run` (see the module docstring).

    Build it from a checkpoint (``pretrained=``) or from an already loaded model (``model=``,
    anything `fastremask.models.wrap` accepts, with its tokenizer).
    """

    def __init__(
        self,
        pretrained: str | None = None,
        *,
        model=None,
        tokenizer=None,
        device: str | None = None,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        batch_size: int | str = 1,
        max_batch_size: int | str | None = None,     # lm_eval passes it to every model; unused
        seed: int = 0,
        chat: bool = False,
        mc_num: int = 32,
        **options,
    ):
        """The adapter's own arguments above; every other keyword is a `SamplingConfig` option
        (``gen_length``, ``steps``, ``block_length``: None = the request's ``max_gen_toks``),
        read from lm-eval's strings by `SamplingConfig.parse_strings`. An unknown keyword is a
        ValueError naming it, never ignored."""
        super().__init__()
        from fastremask import models

        options = SamplingConfig.parse_strings(options)    # an unknown name: ValueError here
        device = self._join_ranks(device)
        if (pretrained is None) == (model is None):
            raise ValueError("give exactly one of pretrained= (a checkpoint) and model= (a loaded model)")
        mask_id = options.get("mask_id")
        if pretrained is not None:
            self.adapter = models.load(pretrained, dtype=dtype, device=device,
                                       trust_remote_code=_bool(trust_remote_code), mask_id=mask_id)
        else:
            self.adapter = models.wrap(model, tokenizer, mask_id=mask_id, device=device)
        self.batch_size = 1 if str(batch_size) == "auto" else int(str(batch_size).split(":")[0])
        # the lengths may come per request (max_gen_toks): None = that request's gen_length
        lengths = {}
        for name in ("gen_length", "steps", "block_length"):
            v = options.pop(name, None)
            lengths[name] = None if v is None else check_int(name, v, 1)
        self.gen_length, self.steps, self.block_length = lengths["gen_length"], lengths["steps"], lengths["block_length"]
        self.seed = check_int("seed", _num(seed, int), 0, SEED_LIMIT)
        self.chat = check_bool("chat", _bool(chat))
        self.mc_num = check_int("mc_num", _num(mc_num, int), 1)
        # checked now, with generate's messages; without gen_length, a stand-in length (one
        # block) checks the rest, and each request length is checked again (`sampling_config`)
        n = self.gen_length or self.block_length or self.steps or 1
        self.config = SamplingConfig(steps=self.steps or n, gen_length=n, block_length=self.block_length or n,
                                     **options)
        SpecialIds.of(self.adapter, self.config)   # the model's EOS/EoT, if the flags need them

    # --- what lm_eval reads -------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.adapter.device

    def _join_ranks(self, device: str | None) -> str | None:
        """Under a launcher (``WORLD_SIZE`` > 1) join the other processes, as lm-eval's own
        models do: through ``accelerate`` when it is installed (``accelerator``; lm-eval's
        convention), else through ``torch.distributed`` (a ``gloo`` group,
        `fastremask.evaluation.distributed`); ``rank``/``world_size`` from it, and the device
        this rank's (``cuda`` -> ``cuda:LOCAL_RANK``). One process: nothing is imported.
        The device to load the model on."""
        import os

        self.accelerator, self._group = None, None
        if os.environ.get("WORLD_SIZE", "").strip() in ("", "1"):
            return device
        from fastremask.evaluation.distributed import Group, launch_from_env

        launch = launch_from_env()                       # a launcher without its variables: ValueError
        try:
            import accelerate
        except ImportError:
            accelerate = None
        if accelerate is not None:
            self.accelerator = accelerate.Accelerator(cpu=device == "cpu")
            self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
            if device is None or device == "cuda":
                device = str(self.accelerator.device)
        else:
            self._rank, self._world_size = launch.rank, launch.world_size
            if device is None and torch.cuda.is_available():
                device = "cuda"
            device = launch.device(device)
        self._group = Group(launch)                       # objects and counts go through gloo
        return device

    # lm_eval's evaluator synchronises ranks through these (no-ops in one process)
    def all_gather(self, tensor):
        """Every rank's ``tensor`` concatenated along dim 0, in rank order, on this rank's device."""
        if self.world_size <= 1:
            return tensor
        if self.accelerator is not None:
            return self.accelerator.gather(tensor)
        # a 0-dim tensor (lm-eval gathers its request counts) as one element, as accelerate does
        local = torch.atleast_1d(tensor.detach().cpu()).contiguous()
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, local, group=self._group.pg)
        return torch.cat(parts).to(tensor.device)

    def gather_object(self, obj, dst: int = 0):
        if self.world_size <= 1:
            return [obj]
        result = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj, result, dst=dst, group=self._group.pg)
        return result

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier(group=self._group.pg)

    @property
    def tokenizer_name(self) -> str:
        return str(self.adapter.name).replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        tok = self.adapter._need_tokenizer()
        return tok.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt, tokenize=False)

    # --- generation ---------------------------------------------------------------------
    def sampling_config(self, gen_length: int) -> SamplingConfig:
        """The `SamplingConfig` of the requests that generate ``gen_length`` tokens: ``config``
        with that length (``steps`` and ``block_length``: the given ones, else ``gen_length``)."""
        return self.config.replace(gen_length=gen_length, block_length=self.block_length or gen_length,
                                   steps=self.steps or gen_length)

    def _prompt_ids(self, context: str) -> list[int]:
        return self.adapter.tokenize(context, chat=self.chat)

    def _stop_ids(self) -> set[int]:
        return {t for t in (self.adapter.eos_id, self.adapter.eot_id) if t is not None}

    def _decode(self, ids: list[int], until: Sequence[str]) -> str:
        stops = self._stop_ids()
        for j, t in enumerate(ids):  # the answer ends at the first EOS/EoT (LLaDA pads with EOS)
            if t in stops:
                ids = ids[:j]
                break
        text = self.adapter.decode(ids, skip_special_tokens=True)
        return truncate(text, until)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """One string per request: ``requests`` are lm_eval ``Instance``s (or
        ``(context, gen_kwargs)`` tuples) with ``gen_kwargs`` holding ``until`` and
        optionally ``max_gen_toks``."""
        from fastremask.sampler.loop import run

        jobs, repeats = [], {}
        for i, req in enumerate(requests):
            (context, gen_kwargs), task, doc_id = _instance_parts(req)
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            gen_length = self.gen_length or int(gen_kwargs.get("max_gen_toks", 256))
            key = (task, doc_id if doc_id is not None else i)
            r = repeats[key] = repeats.get(key, -1) + 1
            k = getattr(req, "repeats", None)
            if isinstance(k, int) and k >= 1:
                r %= k      # lm_eval pads a rank's share with copies of its last request: the same answers
            seed = request_seed(self.seed, task, key[1], r)
            jobs.append((i, context, until, gen_length, seed))
        out: list[str | None] = [None] * len(jobs)
        # batch requests of equal gen_length, longest prompts first (less padding per batch)
        by_len: dict[int, list] = {}
        for job in jobs:
            by_len.setdefault(job[3], []).append(job)
        for gen_length, group in by_len.items():
            config = self.sampling_config(gen_length)
            encoded = [(job, self._prompt_ids(job[1])) for job in group]
            encoded.sort(key=lambda e: -len(e[1]))
            for s in range(0, len(encoded), self.batch_size):
                chunk = encoded[s:s + self.batch_size]
                ids, mask = self.adapter.pad([e[1] for e in chunk])
                x = run(self.adapter, ids, config, attention_mask=mask, seed=[e[0][4] for e in chunk])
                P = ids.shape[1]
                for (job, _), row in zip(chunk, x[:, P:].tolist()):
                    text = self._decode(row, job[2])
                    out[job[0]] = text
                    if self.cache_hook is not None and hasattr(self.cache_hook, "add_partial"):
                        self.cache_hook.add_partial("generate_until", (job[1], {"until": job[2]}), text)
        return out  # type: ignore[return-value]

    # --- likelihoods --------------------------------------------------------------------
    @torch.no_grad()
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """LLaDA's Monte Carlo ELBO of each continuation given its context (module docstring)."""
        results = []
        for i, req in enumerate(requests):
            (context, continuation), task, doc_id = _instance_parts(req)
            ctx = self._prompt_ids(context)
            cont = self.adapter.tokenize(continuation) if continuation else []
            if not cont:
                results.append((0.0, False))
                continue
            seed = request_seed(self.seed, task, doc_id if doc_id is not None else i, 0)
            results.append((self._elbo(ctx, cont, seed), False))
        return results

    def _elbo(self, ctx: list[int], cont: list[int], seed: int) -> float:
        L, P = len(cont), len(ctx)
        g = torch.Generator().manual_seed(seed)
        dev = self.device
        total = 0.0
        target = torch.tensor(cont, dtype=torch.long)
        for s in range(0, self.mc_num, max(1, self.batch_size)):
            n = min(self.batch_size, self.mc_num - s)
            l = torch.randint(1, L + 1, (n,), generator=g)  # masked count per sample
            order = torch.rand(n, L, generator=g).argsort(dim=1)
            masked = order < l[:, None]  # [n, L]: l random positions per row
            x = torch.tensor(ctx + cont, dtype=torch.long).repeat(n, 1)
            x[:, P:][masked] = self.adapter.mask_id
            logits = self.adapter(x.to(dev)).logits[:, P:].float().cpu()  # [n, L, V]
            logp = torch.log_softmax(logits, -1).gather(-1, target.expand(n, L)[..., None])[..., 0]
            total += float(((logp * masked).sum(1) * L / l).sum())
        return total / self.mc_num

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "fastremask: loglikelihood_rolling (perplexity tasks) needs an exact likelihood, which a "
            "masked diffusion model does not give; use generate_until tasks, or loglikelihood tasks "
            "(Monte Carlo ELBO) for multiple choice"
        )


def main(argv=None) -> int:
    """lm_eval's command line with the ``fastremask`` model registered."""
    if not HAVE_LM_EVAL:
        raise SystemExit("lm_eval is not installed: pip install lm_eval")
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    if "--model" not in sys.argv:
        at = 2 if len(sys.argv) > 1 and sys.argv[1] == "run" else 1
        sys.argv[at:at] = ["--model", "fastremask"]
    cli_evaluate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
