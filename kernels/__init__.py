"""The `triton` backend: `sample_rows` and `select` as fused Triton kernels.

Importing this package imports triton (and nothing else heavy). The function `select` shadows
the submodule of the same name on purpose: `fastremask.kernels.select` is the function, the
kernel module stays reachable as `fastremask.kernels.select` in `sys.modules` / via `from
fastremask.kernels.select import _select_kernel`.

This folder is installed as `fastremask.kernels` only. When Python runs from the repository
root (`python -m pytest`, `python -c`, a script there), the root is on `sys.path`, and a plain
`import kernels` (transformers imports the PyPI distribution of that name) would find this
folder. It then hands the name over: it loads the distribution from the rest of `sys.path`
into `sys.modules["kernels"]`, or, where none is installed, an empty namespace package (what
Python gives for a folder without `__init__.py`), so the folder never stands in for another
package (docs/architecture.md, "Why the kernels/ folder is
safe at the root").
"""
if __name__ != "fastremask.kernels":
    import importlib.machinery as _machinery
    import importlib.util as _util
    import os as _os
    import sys as _sys

    def _is_checkout(entry):
        # a fastremask checkout (this one, or a copy also on the path): fastremask/ beside kernels/
        entry = entry or _os.curdir  # '' is the working folder
        return (_os.path.isfile(_os.path.join(entry, "kernels", "__init__.py"))
                and _os.path.isdir(_os.path.join(entry, "fastremask")))

    _spec = _machinery.PathFinder.find_spec(__name__, [e for e in _sys.path if not _is_checkout(e)])
    if _spec is None or _spec.loader is None:
        # None elsewhere: what Python gives for a folder without __init__.py, an empty namespace
        # package (no __file__, no __version__: transformers reads that as "not installed").
        _spec = _machinery.ModuleSpec(__name__, None, is_package=True)
        _spec.submodule_search_locations = []
    # The import system returns sys.modules[name] once this file has run: the other package.
    _other = _util.module_from_spec(_spec)
    _sys.modules[__name__] = _other
    if _spec.loader is not None:
        try:
            _spec.loader.exec_module(_other)
        except BaseException:
            _sys.modules.pop(__name__, None)
            raise
else:
    from fastremask.sampler.contract import Backend as _Backend

    from .sample import RowSample, _sample_rows, sample_rows
    from .select import _select_rules, select

    # the backend object the loop is handed (`fastremask.sampler.backends`): the launchers,
    # unchecked; no host sync in a step, so a CUDA graph can hold it
    BACKEND = _Backend("triton", _sample_rows, _select_rules, capturable=True)

    __all__ = ["sample_rows", "select", "RowSample", "BACKEND"]
