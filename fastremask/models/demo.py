"""The demo checkpoint's side file, ``demo.json``, read in one place.

A folder written by ``python -m fastremask.evaluation.train --out DIR`` holds a tiny model
(``config.json``, ``model.safetensors``) and ``demo.json``: the task it was trained on
(``"task"``, e.g. ``"perm:12"``), its vocabulary (``"vocab"``, one string per id), its mask and
pad ids and the training record. `fastremask.models.load` builds the model's tokenizer from
it; the command line and ``eval`` take the default task from it (`fastremask.evaluation.tasks`).
The shipped demo is ``fastremask/data`` (`demo_dir`).
"""
from __future__ import annotations

import os
from typing import Optional

__all__ = ["DEMO_FILE", "demo_dir", "read_demo"]

DEMO_FILE = "demo.json"


def demo_dir() -> Optional[str]:
    """The shipped demo checkpoint folder (``fastremask/data``) when it holds a model
    (``config.json``), else None."""
    from fastremask import DATA_DIR

    return DATA_DIR if os.path.isfile(os.path.join(DATA_DIR, "config.json")) else None


def read_demo(folder) -> Optional[dict]:
    """``folder/demo.json`` as a dict, or None when the folder has none.

    Checked: a JSON object; ``"task"`` a string and ``"vocab"`` a list of distinct strings where
    present; ``"mask_id"`` / ``"pad_id"`` ids inside ``"vocab"`` where both are present. A
    `fastremask.models.ModelLoadError` naming the file and the field otherwise.
    """
    from fastremask.models.checks import read_json_object
    from fastremask.sampler.protocol import ModelLoadError

    path = os.path.join(os.fspath(folder), DEMO_FILE)
    if not os.path.isfile(path):
        return None
    meta = read_json_object(path)
    task = meta.get("task")
    if task is not None and not isinstance(task, str):
        raise ModelLoadError(f"{path}: field 'task' must be a task name such as 'perm:12', got {task!r}")
    vocab = meta.get("vocab")
    if vocab is not None:
        if (not isinstance(vocab, list) or not vocab or not all(isinstance(t, str) and t for t in vocab)
                or len(set(vocab)) != len(vocab)):
            raise ModelLoadError(f"{path}: field 'vocab' must be a list of distinct non-empty token strings "
                                 f"(one per id), got {vocab!r}")
        for name in ("mask_id", "pad_id"):
            v = meta.get(name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < len(vocab)):
                raise ModelLoadError(f"{path}: field {name!r} must be an id inside 'vocab' "
                                     f"(0..{len(vocab) - 1}), got {v!r}")
    return meta
