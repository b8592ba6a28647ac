"""Test tiers (docs/architecture.md, README "Tests"): reference-only and interpreter tests always run; `gpu` tests need CUDA.

Without a CUDA device the Triton kernels run under the interpreter. TRITON_INTERPRET must be
set before triton is first imported, so it is set here, in the test process only.
"""
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (none here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
