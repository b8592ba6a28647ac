"""fastremask: a fast, exact sampler for masked diffusion language models (LLaDA and kin).

``from fastremask import generate`` is a drop-in for LLaDA's ``generate`` (same positional
parameters and defaults) with exact, seeded sampling, more schedules and remasking rules and a
choice of backends (docs/api.md). `SamplingConfig` holds the same options as one validated
object and `run` samples with it. Importing the package does not import Triton, nor torch:
the public names are loaded on first use (PEP 562), so the ``fastremask`` command starts fast.

Layout (docs/architecture.md): `fastremask.sampler` (schedules, numerics, the specification,
the backends, the loop), `fastremask.models` (loading and adapters, the tiny and demo models),
`fastremask.evaluation` (tasks, training, ``eval``, the lm-eval adapter), `fastremask.tools`
(command line, bench, profile), `fastremask.kernels` (the Triton backend).
"""
import importlib
import os

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")   # the demo checkpoint

__version__ = "0.2.0.dev0"

# public name -> the module that defines it, imported on first access
_LAZY = {
    "generate": "fastremask.sampler.loop",
    "run": "fastremask.sampler.loop",
    "SamplingConfig": "fastremask.sampler.config",
    "row_seeds": "fastremask.sampler.config",
    "cost": "fastremask.sampler.schedule",
    "pyramid": "fastremask.sampler.schedule",
    "uniform": "fastremask.sampler.schedule",
    "Trace": "fastremask.sampler.trace",
    "TraceStep": "fastremask.sampler.trace",
}
# subpackages reachable as attributes after a plain ``import fastremask``
_SUBPACKAGES = ("sampler", "models", "evaluation", "tools", "kernels")

__all__ = ["generate", "run", "SamplingConfig", "row_seeds", "Trace", "TraceStep", "uniform", "pyramid",
           "cost", "DATA_DIR", "__version__"]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value          # later lookups skip __getattr__
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY, *_SUBPACKAGES})
