"""Accuracy against model calls (NFE) for schedules and remasking rules: ``fastremask eval``.

    fastremask eval                                   # the shipped demo model on its task
    fastremask eval -n 300 --schedules uniform,pyramid,ramp --out benchmarks/results/eval_perm12

(the command's options live in `fastremask.tools.eval_command`; this module is the library).

For one model and one task (`fastremask.evaluation.tasks`), every schedule family is run with every
remasking rule over its settings, the answers are checked exactly, and each point reports the
measured NFE (model calls per example, counted around the model), the number of examples,
the exact-match accuracy (`Task.check`) with its 95% Wilson interval, and the per-token
accuracy against `Task.solve` (NaN, shown as n/a, for tasks with many right answers, such as
``perm``).

Schedule families (``--schedules``):

* ``uniform``: LLaDA's schedule with ``steps`` = each NFE of ``--nfe``.
* ``pyramid``: the post's pyramid, ``k_i = i // factor + 1``, for each ``--factors`` value; its
  NFE is what the pyramid needs (`fastremask.sampler.schedule.pyramid_steps`), not a free choice.
* ``ramp``: the pyramid's shape at any budget: exactly ``nfe`` steps, step 0 keeps one token
  and the rest grow linearly (an explicit list schedule, `ramp_counts`); one point per
  ``--nfe`` value, so it can be compared with ``uniform`` at equal NFE.
* ``ramp_down``: the ramp reversed (the most tokens at step 0, one at the last step): the
  opposite of the post's advice, as a control.

Each point is one `fastremask.SamplingConfig` (`Point.config`: one block covering the whole
answer, the point's schedule and rule over the options they share, validated before any model
call); its predicted NFE is `SamplingConfig.model_calls` (`fastremask.sampler.schedule.cost`'s count).
Generation is batched (every prompt of a task has the same length, so no padding) through
`fastremask.run` with the given backend (``torch`` by default). The command's temperature is 1 for the ``perm`` task (many right answers: the
model must sample) and 0 otherwise (greedy tokens; ``random`` remasking is then the only
randomness). Example ``i`` of the test set always gets seed ``--seed + i``.
"""
from __future__ import annotations

from fastremask import DATA_DIR
import csv
import json
import os
import time
from dataclasses import asdict, dataclass

import torch

from fastremask.sampler.config import SamplingConfig
from fastremask.evaluation.tasks import Task, demo_task, wilson_interval
from fastremask.models.demo import demo_dir

__all__ = [
    "Point",
    "Row",
    "ramp_counts",
    "plan",
    "evaluate",
    "format_table",
    "plot",
    "load_model",
]

FAMILIES = ("uniform", "pyramid", "ramp", "ramp_down")
DEFAULT_RULES = ("low_confidence", "random")
DEFAULT_FACTORS = (1, 2, 3, 4, 6, 8)


def ramp_counts(n: int, steps: int) -> list[int]:
    """``steps`` counts summing to ``n``: one token at step 0, then a linear ramp.

    Every step keeps at least one token; the ``n - steps`` extra tokens are spread so that
    the extra kept by step ``i`` grows linearly with ``i`` (cumulative extra after step ``i``
    is ``round((n - steps) * i (i + 1) / ((steps - 1) steps))``). ``steps == 1`` keeps all
    ``n`` at once; ``steps == n`` keeps one per step. With ``steps`` equal to a pyramid's step
    count the counts are close to that pyramid's.
    """
    if not 1 <= steps <= n:
        raise ValueError(f"ramp needs 1 <= steps <= n, got steps={steps}, n={n}")
    if steps == 1:
        return [n]
    extra = n - steps
    denom = (steps - 1) * steps
    # integer rounding (half up) of the cumulative extra: exact, no float ties
    cum = [(2 * extra * i * (i + 1) + denom) // (2 * denom) for i in range(steps)]
    return [1 + cum[i] - (cum[i - 1] if i else 0) for i in range(steps)]


@dataclass(frozen=True)
class Point:
    """One configuration: a schedule family and its setting, and a remasking rule."""

    family: str  # "uniform" | "pyramid" | "ramp"
    setting: int  # uniform/ramp: steps; pyramid: factor
    remasking: str

    @property
    def label(self) -> str:
        return f"factor={self.setting}" if self.family == "pyramid" else f"steps={self.setting}"

    def generate_kwargs(self, answer_length: int) -> dict:
        """Keywords for `fastremask.generate` (``steps``, ``schedule``, ``factor``)."""
        if self.family == "uniform":
            return dict(steps=self.setting, schedule="uniform", factor=1)
        if self.family == "pyramid":
            # steps is the pyramid's budget; it takes the fewest steps that finish the block
            return dict(steps=answer_length, schedule="pyramid", factor=self.setting)
        if self.family == "ramp":
            return dict(steps=self.setting, schedule=ramp_counts(answer_length, self.setting), factor=1)
        if self.family == "ramp_down":
            return dict(steps=self.setting, schedule=ramp_counts(answer_length, self.setting)[::-1], factor=1)
        raise ValueError(f"unknown schedule family {self.family!r}; known: {FAMILIES}")

    def config(self, answer_length: int, base: SamplingConfig | None = None,
               block_length: int | None = None) -> SamplingConfig:
        """The point's `SamplingConfig`: ``base``'s options (default: `SamplingConfig`'s) with
        blocks of ``block_length`` (default: one block of ``answer_length``), the point's
        schedule and remasking rule."""
        base = base if base is not None else SamplingConfig()
        return base.replace(gen_length=answer_length, block_length=block_length or answer_length,
                            remasking=self.remasking, **self.generate_kwargs(answer_length))

    def expected_nfe(self, answer_length: int) -> int:
        """The model calls one generate makes (`SamplingConfig.model_calls`)."""
        return self.config(answer_length).model_calls()


@dataclass
class Row:
    """One result: a `Point`, its measured NFE and its accuracy over ``n`` examples."""

    family: str
    setting: str
    remasking: str
    nfe: float
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    token_accuracy: float
    seconds: float


def plan(families, remasking, nfe_grid, factors, answer_length: int) -> list[Point]:
    """The points to run: uniform and ramp at each NFE of the grid (<= answer length),
    pyramid at each factor (whatever NFE it needs)."""
    points = []
    for fam in families:
        if fam not in FAMILIES:
            raise ValueError(f"unknown schedule family {fam!r}; known: {FAMILIES}")
        settings = factors if fam == "pyramid" else [s for s in nfe_grid if 1 <= s <= answer_length]
        if fam != "pyramid" and len(settings) != len(list(nfe_grid)):
            dropped = sorted(set(nfe_grid) - set(settings))
            raise ValueError(f"NFE values {dropped} are outside [1, answer length {answer_length}]")
        for rule in remasking:
            for s in sorted(set(settings)):
                points.append(Point(fam, int(s), rule))
    return points


@torch.no_grad()
def evaluate(
    model,
    task: Task,
    schedules=("uniform", "pyramid"),
    remasking=DEFAULT_RULES,
    nfe_grid=None,
    n_examples: int = 500,
    seed: int = 0,
    *,
    factors=DEFAULT_FACTORS,
    batch_size: int = 500,
    temperature: float = 0.0,
    backend: str = "torch",
    mask_id: int | None = None,
    config: SamplingConfig | None = None,
    block_length: int | None = None,
    progress=None,
    share=None,
) -> list[Row]:
    """Run every schedule family and remasking rule on the first ``n_examples`` test examples.

    Parameters
    ----------
    model : a masked-diffusion LM with LLaDA's call interface (``model(x).logits [B, L, V]``)
        trained on ``task``'s vocabulary.
    task : a `fastremask.evaluation.tasks.Task`.
    schedules : families among ``"uniform"``, ``"pyramid"``, ``"ramp"``, ``"ramp_down"``.
    remasking : rules `fastremask.generate` accepts (``"low_confidence"``, ``"random"``, ...).
    nfe_grid : NFE values for ``uniform`` and the ramps (default: 1, 2, 3, 4, 6, 8, 12, 16, ...
        up to and including the answer length).
    factors : pyramid factors (those needing more steps than the answer length are dropped).
    seed : ``generate``'s seed for the batch starting at example ``i`` is ``seed + i``.
    temperature, backend, mask_id : the sampling options the points share (``mask_id`` None:
        the model's, ``model.mask_id``).
    config : a `SamplingConfig` holding the shared options instead (its lengths, steps,
        schedule and remasking are each point's); not together with ``temperature``,
        ``backend`` or ``mask_id``. Its ``cache`` applies to every point.
    block_length : semi-autoregressive blocks (default: one block of the answer length); the
        NFE grid keeps the values that are multiples of the number of blocks.
    progress : optional ``callable(str)`` told about each finished point.
    share : several processes (`fastremask.evaluation.distributed.Group`: ``rank``,
        ``world_size``, ``sum``): rank ``r`` runs the examples from ``n * r // world_size`` to
        ``n * (r + 1) // world_size`` (each with its own seed, as in one process) and the counts
        are summed, so every rank returns the rows of one process (timings aside).

    Returns
    -------
    list of `Row`, in the order of `plan`. ``nfe`` is measured: model calls per batch,
    averaged over batches (every row of a batch takes the same steps here).
    """
    from fastremask.sampler.schedule import pyramid_steps

    A = task.answer_length
    for name, value in (("n_examples", n_examples), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if config is None:
        config = SamplingConfig(temperature=temperature, backend=backend, mask_id=mask_id)
    elif (temperature, backend, mask_id) != (0.0, "torch", None):
        raise ValueError("give config= or temperature=/backend=/mask_id=, not both")
    if nfe_grid is None:
        nfe_grid = default_nfe_grid(A)
    C = block_length or A
    if isinstance(C, bool) or not isinstance(C, int) or C < 1 or A % C:
        raise ValueError(f"block_length must divide the answer length {A}, got {block_length!r}")
    if C != A and {"ramp", "ramp_down"} & set(schedules):
        raise ValueError("the ramp schedules are written for one block; drop block_length or the ramps")
    nfe_grid = [n for n in nfe_grid if n % (A // C) == 0]        # uniform: the same steps per block
    factors = [f for f in factors if pyramid_steps(C, f) <= C]
    points = plan(schedules, remasking, nfe_grid, factors, A)
    configs = [pt.config(A, config, C) for pt in points]  # every option checked before any model call
    prompts, _ = task.test_set(n_examples)
    rank, world = (0, 1) if share is None else (share.rank, share.world_size)
    first, end = n_examples * rank // world, n_examples * (rank + 1) // world     # this rank's examples
    rows = []
    for pt, cfg in zip(points, configs):
        rows.append(_run_point(model, task, pt, cfg, prompts, first, end, batch_size=batch_size, seed=seed,
                               n_examples=n_examples, share=share))
        if progress is not None:
            row = rows[-1]
            progress(
                f"{pt.family:8s} {pt.label:10s} {pt.remasking:15s} NFE {row.nfe:5.1f}  "
                f"acc {row.accuracy:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]  ({row.seconds:.1f}s)"
            )
    return rows


def _run_point(model, task: Task, pt, cfg, prompts, first, end, *, batch_size, seed, n_examples, share) -> Row:
    """One point of `evaluate` (`SamplingConfig` ``cfg``) on this rank's examples ``first .. end``
    in batches of ``batch_size``; the counts summed over ``share``'s ranks."""
    from fastremask.sampler.loop import run

    A, P = task.answer_length, task.prompt_length
    t0 = time.perf_counter()
    calls = 0                      # the trace's count (`ModelCall`): the one count of model calls
    n_batches = 0
    correct, tok_ok = 0, 0
    for start in range(first, end, batch_size):
        batch = prompts[start:min(start + batch_size, end)].to(model.device)
        out, trace = run(model, batch, cfg, seed=seed + start, return_trace=True)     # example i: seed + i
        calls += trace.model_calls
        answers = out[:, P:].cpu()
        truth = task.solve(batch.cpu())
        correct += int(task.check(batch.cpu(), answers).sum())
        tok_ok += int((answers == truth).sum())
        n_batches += 1
    if share is not None:
        correct, tok_ok, calls, n_batches = share.sum([correct, tok_ok, calls, n_batches])
    lo, hi = wilson_interval(correct, n_examples)
    return Row(
        family=pt.family, setting=pt.label, remasking=pt.remasking,
        nfe=calls / n_batches, n=n_examples, correct=correct,
        accuracy=correct / n_examples, ci_low=lo, ci_high=hi,
        token_accuracy=tok_ok / (n_examples * A) if task.unique_answers else float("nan"),
        seconds=time.perf_counter() - t0,
    )


def default_nfe_grid(answer_length: int) -> list[int]:
    grid = [v for v in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128) if v < answer_length]
    return grid + [answer_length]


# ---------------------------------------------------------------------------- reporting


def _fmt(v: float) -> str:
    return "n/a" if v != v else f"{v:.3f}"  # NaN: token accuracy is undefined (many right answers)


def format_table(rows: list[Row]) -> str:
    """A Markdown table of the rows."""
    head = "| schedule | setting | remasking | NFE | n | exact match | 95% CI | token acc. |\n"
    head += "|---|---|---|---:|---:|---:|---|---:|\n"
    lines = [
        f"| {r.family} | {r.setting} | {r.remasking} | {r.nfe:g} | {r.n} | {r.accuracy:.3f} | "
        f"[{r.ci_low:.3f}, {r.ci_high:.3f}] | {_fmt(r.token_accuracy)} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


_COLORS = {"uniform": "tab:blue", "pyramid": "tab:red", "ramp": "tab:orange", "ramp_down": "tab:green"}
_STYLES = {"low_confidence": "-", "random": "--", "margin": "-.", "entropy": ":"}


def plot(rows: list[Row], path: str, title: str = "", answer_length: int | None = None) -> None:
    """Accuracy against NFE: one panel per remasking rule, one line per schedule family, 95%
    Wilson intervals as error bars, pyramid points labelled with their factor. PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = list(dict.fromkeys(r.remasking for r in rows))
    fig, axes = plt.subplots(1, len(rules), figsize=(5.2 * len(rules), 4.4), dpi=120, sharey=True, squeeze=False)
    ticks = sorted({round(r.nfe) for r in rows})
    for ax, rule in zip(axes[0], rules):
        groups = {}
        for r in rows:
            if r.remasking == rule:
                groups.setdefault(r.family, []).append(r)
        for fam, rs in groups.items():
            rs = sorted(rs, key=lambda r: r.nfe)
            ax.errorbar(
                [r.nfe for r in rs], [r.accuracy for r in rs],
                yerr=[[r.accuracy - r.ci_low for r in rs], [r.ci_high - r.accuracy for r in rs]],
                color=_COLORS.get(fam), marker={"ramp": "s", "ramp_down": "v"}.get(fam, "o"),
                markersize=4, capsize=3, label=fam,
            )
            if fam == "pyramid":
                for r in rs:
                    ax.annotate(r.setting.replace("factor=", "f"), (r.nfe, r.accuracy), textcoords="offset points",
                                xytext=(4, -10), fontsize=7, color=_COLORS[fam])
        if answer_length:
            ax.axvline(answer_length, color="grey", linestyle=":", linewidth=1)
        if max(ticks) > 16:  # long answers: log axis; short ones read better on a linear one
            ax.set_xscale("log", base=2)
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("NFE (model calls per answer)")
        ax.set_title(f"remasking = {rule}", fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    axes[0][0].set_ylabel("exact-match accuracy")
    n = sorted({r.n for r in rows})
    fig.suptitle((title + "; " if title else "") + f"n = {', '.join(map(str, n))} per point, 95% Wilson CI",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------- CLI


def write_results(rows: list[Row], out: str, meta: dict, title: str = "", answer_length: int | None = None) -> None:
    """``out.md`` (table), ``out.csv``, ``out.json`` (``meta`` plus the rows; NaN as null)
    and ``out.png`` (`plot`)."""
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out + ".md", "w") as f:
        f.write(format_table(rows))
    with open(out + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r))
    clean = [{k: (None if isinstance(v, float) and v != v else v) for k, v in asdict(r).items()} for r in rows]
    with open(out + ".json", "w") as f:
        json.dump({**meta, "rows": clean}, f, indent=2)
        f.write("\n")
    plot(rows, out + ".png", title=title, answer_length=answer_length)


def load_model(path: str | None = None, device: str | None = None):
    """A `fastremask.models.tiny.TinyMaskedLM` checkpoint folder (default: the shipped demo model,
    ``fastremask/data``) -> ``(model, task or None)``; the task comes from the folder's
    ``demo.json`` when it has one."""
    from fastremask.models.tiny import TinyMaskedLM

    path = path or demo_dir() or DATA_DIR
    cfg_path = os.path.join(path, "config.json")
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{path} is a file, not a model folder")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"the model folder {path} does not exist")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"no config.json in {path!r} (a fastremask.models.tiny checkpoint folder is expected)")
    try:
        model = TinyMaskedLM.from_pretrained(path, device=device)
    except Exception as e:  # noqa: BLE001 - json's, safetensors' and torch's errors differ
        raise ValueError(f"cannot load the tiny checkpoint {path}: {type(e).__name__}: "
                         f"{(str(e).strip().splitlines() or [''])[0]}") from e
    return model, demo_task(path)
