"""fastremask: a fast, exact sampler for masked diffusion language models (LLaDA and kin).

``from fastremask import generate`` is a drop-in for LLaDA's ``generate`` (same positional
parameters and defaults) with exact, seeded sampling, more schedules and remasking rules and a
choice of backends (docs/api.md). `SamplingConfig` holds the same options as one validated
object and `run` samples with it. Importing the package does not import Triton.
"""
from fastremask.config import SamplingConfig, row_seeds
from fastremask.loop import generate, run
from fastremask.schedule import cost, pyramid, uniform
from fastremask.trace import Trace, TraceStep

__version__ = "0.1.0"

__all__ = ["generate", "run", "SamplingConfig", "row_seeds", "Trace", "TraceStep", "uniform", "pyramid",
           "cost", "__version__"]
