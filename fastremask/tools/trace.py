"""What each step kept: the text trace (as the pyramid post prints it) and a picture.

Both read a `fastremask.Trace` (``generate(..., return_trace=True)``) for one batch row and a
``token_str(id) -> str`` function (`fastremask.models.Adapter.token_str`)::

    step 0, Keeping: [' I', '.']
    step 1, Keeping: ['\\n', '.', ' years']

Steps that kept nothing are not model calls (`generate` skips them) and do not appear; nor do
the steps in which a row had nothing left to fill (threshold mode, other rows still busy).
"""
from __future__ import annotations

from typing import Callable

__all__ = ["commits", "format_trace", "kept_by_step", "plot_trace"]


def kept_by_step(trace, row: int = 0) -> list[tuple[int, list[tuple[int, int]]]]:
    """``[(step, [(position, token), ...]), ...]`` in step order, positions ascending, over
    the steps in which row ``row`` had masked positions; ``step`` is the row's own counter,
    ``position`` counts within the generated answer."""
    out = []
    for s in trace.steps:
        if not bool(s.candidate[row].any()):       # the row was done with this block
            continue
        keep = s.keep[row]
        js = keep.nonzero().flatten().tolist()
        off = s.start - trace.prompt_length
        toks = s.x0[row].tolist()
        out.append((int(s.row_step[row]), [(off + j, int(toks[j])) for j in js]))
    return out


def format_trace(trace, token_str: Callable[[int], str], row: int = 0) -> list[str]:
    """One line per step: ``step 3, Keeping: [' I', '.']`` (tokens in position order)."""
    return [f"step {step}, Keeping: {[token_str(t) for _, t in kept]!r}" for step, kept in kept_by_step(trace, row)]


def commits(trace, row: int = 0) -> tuple[list[int], list[int | None], list[int | None]]:
    """``(steps, commit_index, token)``: the row's step counter at each of its recorded steps, and for each
    answer position the index into ``steps`` at which it was kept (None: never) and its token."""
    steps = []
    when: list[int | None] = [None] * trace.gen_length
    token: list[int | None] = [None] * trace.gen_length
    for i, (step, kept) in enumerate(kept_by_step(trace, row)):
        steps.append(step)
        for pos, tok in kept:
            when[pos], token[pos] = i, tok
    return steps, when, token


def _label(s: str) -> str:
    """A token as it can be drawn: whitespace made visible, long tokens shortened."""
    s = s.replace("\n", "\u21b5").replace("\t", "\u2192").replace(" ", "\u2423")
    s = s.replace("$", r"\$")  # matplotlib would start mathtext
    return s if len(s) <= 8 else s[:7] + "\u2026"


def plot_trace(trace, token_str: Callable[[int], str], path, row: int = 0, title: str | None = None,
               max_cells: int = 40_000):
    """Save a picture of the denoising of batch row ``row`` to ``path`` (PNG, SVG, PDF, ...).

    A grid of answer positions (x) by model calls (y, first at the top). A position is grey
    while masked; at the step that keeps it, its cell takes the colour of that step and shows
    the token; afterwards it stays in a paler shade of the same colour. Needs matplotlib
    (``pip install fastremask[plot]``). Returns the path.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import Normalize
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("--trace-png needs matplotlib: pip install 'fastremask[plot]'") from e
    import numpy as np

    steps, when, token = commits(trace, row)
    S, N = max(len(steps), 1), trace.gen_length
    if S * N > max_cells:
        raise ValueError(f"the trace has {S} steps x {N} positions, more than {max_cells} cells to draw; "
                         "use a shorter --gen-length or fewer steps for the picture")
    cmap = plt.get_cmap("viridis")
    norm = Normalize(vmin=0, vmax=max(S - 1, 1))
    img = np.ones((S, N, 4))
    img[:, :, :3] = 0.88  # masked: light grey
    for pos, i in enumerate(when):
        if i is None:
            continue
        r, g, b, _ = cmap(norm(i))
        img[i, pos, :3] = (r, g, b)
        pale = 0.35 * np.array([r, g, b]) + 0.65
        img[i + 1:, pos, :3] = pale

    cell = 0.42
    fig_w = min(max(4.0, N * cell + 1.8), 60.0)
    fig_h = min(max(2.5, S * cell * 0.62 + 1.4), 60.0)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    ax.imshow(img, aspect="auto", interpolation="nearest")
    labels = {pos: _label(token_str(token[pos])) for pos, i in enumerate(when) if i is not None}
    longest = max((len(t) for t in labels.values()), default=1)
    cell_w_pt = 72 * (fig_w - 1.8) / max(N, 1)
    cell_h_pt = 72 * (fig_h - 1.4) / S
    fontsize = max(3.0, min(10.0, cell_w_pt / (0.62 * max(longest, 1)), 0.7 * cell_h_pt))
    for pos, i in enumerate(when):
        if i is None:
            continue
        r, g, b, _ = cmap(norm(i))
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
        ax.text(pos, i, labels[pos], ha="center", va="center", fontsize=fontsize,
                color="white" if dark else "black", family="monospace", clip_on=True)
    ax.set_xlabel("position in the answer")
    ax.set_ylabel("step (model call)")
    ystep = max(1, S // 25)
    ax.set_yticks(range(0, S, ystep))
    ax.set_yticklabels([str(steps[i]) for i in range(0, len(steps), ystep)] if steps else [])
    xstep = max(1, N // 32)
    ax.set_xticks(range(0, N, xstep))
    ax.set_xticks(np.arange(-0.5, N, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, S, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    if trace.block_length < N:
        for b in range(trace.block_length, N, trace.block_length):
            ax.axvline(b - 0.5, color="black", linewidth=1.2)
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
