"""The `triton` backend: `sample_rows` and `select` as fused Triton kernels.

Importing this package imports triton (and nothing else heavy). The function `select` shadows
the submodule of the same name on purpose: `fastremask.kernels.select` is the function, the
kernel module stays reachable as `fastremask.kernels.select` in `sys.modules` / via `from
fastremask.kernels.select import _select_kernel`.
"""
from .sample import RowSample, sample_rows
from .select import select

__all__ = ["sample_rows", "select", "RowSample"]
