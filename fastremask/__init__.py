"""fastremask: a fast, exact sampler for masked diffusion language models (LLaDA and kin).

``from fastremask import generate`` is a drop-in for LLaDA's ``generate`` (same positional
parameters and defaults) with exact, seeded sampling, more schedules and remasking rules and a
choice of backends (docs/api.md). `SamplingConfig` holds the same options as one validated
object and `run` samples with it. Importing the package does not import Triton.

Layout (docs/architecture.md): `fastremask.sampler` (schedules, numerics, the specification,
the backends, the loop), `fastremask.models` (loading and adapters, the tiny and demo models),
`fastremask.evaluation` (tasks, training, ``eval``, the lm-eval adapter), `fastremask.tools`
(command line, bench, profile), `fastremask.kernels` (the Triton backend).
"""
import os

from fastremask.sampler.config import SamplingConfig, row_seeds
from fastremask.sampler.loop import generate, run
from fastremask.sampler.schedule import cost, pyramid, uniform
from fastremask.sampler.trace import Trace, TraceStep

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")   # the demo checkpoint

__version__ = "0.1.0"

__all__ = ["generate", "run", "SamplingConfig", "row_seeds", "Trace", "TraceStep", "uniform", "pyramid",
           "cost", "DATA_DIR", "__version__"]
