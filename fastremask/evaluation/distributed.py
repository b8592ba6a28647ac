"""Several processes, one result: the launcher's environment read, and the process group
that ``fastremask generate`` and ``fastremask eval`` use under ``torchrun`` or
``accelerate launch`` (docs/scale.md).

A launcher starts one process per rank and tells each where it stands through the
environment: ``WORLD_SIZE`` (how many), ``RANK`` (which, from 0), ``LOCAL_RANK`` (which on this
machine: its GPU), ``MASTER_ADDR``/``MASTER_PORT`` (where rank 0 listens). `launch_from_env`
reads them (None: one process, the default: nothing of ``torch.distributed`` is imported);
`Group` is the process group (``gloo``: the ranks only exchange small Python objects, the
options and counts, never tensors of the model), every collective bounded by the timeout of
``FASTREMASK_DIST_TIMEOUT`` (seconds, default 1800) so that no rank waits forever.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Launch", "launch_from_env", "timeout_seconds", "Group", "TIMEOUT_ENV", "DEFAULT_TIMEOUT"]

TIMEOUT_ENV = "FASTREMASK_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 1800.0
_NEEDED = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Launch:
    """Where this process stands among ``world_size`` processes."""

    rank: int
    world_size: int
    local_rank: int

    def device(self, device: str | None) -> str | None:
        """``device`` for this rank: a bare ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per
        process on each machine); anything else is kept."""
        return f"cuda:{self.local_rank}" if device == "cuda" else device


def _env_int(name: str, env) -> int:
    value = env[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"the launcher's {name}={value!r} is not a whole number") from None


def launch_from_env(env=None) -> Launch | None:
    """The launcher's `Launch` (``torchrun``, ``accelerate launch`` and others set the same
    variables), or None for one process (no ``WORLD_SIZE``, or ``WORLD_SIZE=1``). A
    ``WORLD_SIZE`` above 1 without the other variables, or with values out of range, is a
    ValueError naming them."""
    env = os.environ if env is None else env
    if env.get("WORLD_SIZE", "").strip() == "":
        return None
    world = _env_int("WORLD_SIZE", env)
    if world < 1:
        raise ValueError(f"the launcher's WORLD_SIZE={world} must be >= 1")
    if world == 1:
        return None
    missing = [n for n in _NEEDED if env.get(n, "").strip() == ""]
    if missing:
        raise ValueError(f"WORLD_SIZE={world} is set but {', '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not: start the processes with torchrun "
                         "or accelerate launch (they set RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT), "
                         "or unset WORLD_SIZE for one process")
    rank, local = _env_int("RANK", env), _env_int("LOCAL_RANK", env)
    if not 0 <= rank < world:
        raise ValueError(f"the launcher's RANK={rank} is outside [0, WORLD_SIZE={world})")
    if local < 0:
        raise ValueError(f"the launcher's LOCAL_RANK={local} must be >= 0")
    return Launch(rank=rank, world_size=world, local_rank=local)


def timeout_seconds(env=None) -> float:
    """How long a rank waits for the others (``FASTREMASK_DIST_TIMEOUT``, seconds; default
    1800): at a collective, and for results that stop coming."""
    env = os.environ if env is None else env
    raw = env.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{TIMEOUT_ENV}={raw!r} must be a number of seconds > 0")
    return value


class Group:
    """The ``gloo`` process group of a `Launch` (joined here unless the program, e.g.
    ``accelerate``, already did), for small Python objects: `gather` and `sum`."""

    def __init__(self, launch: Launch, timeout: float | None = None):
        import datetime

        import torch.distributed as dist

        self.launch, self.rank, self.world_size = launch, launch.rank, launch.world_size
        self.timeout = timeout_seconds() if timeout is None else timeout
        self._dist = dist
        self._own = not dist.is_initialized()
        if self._own:
            dist.init_process_group("gloo", rank=launch.rank, world_size=launch.world_size,
                                    timeout=datetime.timedelta(seconds=self.timeout))
            self.pg = None
        else:               # someone else's group (maybe NCCL): objects go through a gloo one
            self.pg = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=self.timeout))

    def gather(self, obj) -> list:
        """``obj`` of every rank, in rank order, on every rank (a collective: every rank calls it)."""
        out = [None] * self.world_size
        try:
            self._dist.all_gather_object(out, obj, group=self.pg)
        except RuntimeError as e:
            raise RuntimeError(f"rank {self.rank}: the other ranks did not answer within {self.timeout:g} s "
                               f"({TIMEOUT_ENV}) or left: {str(e).splitlines()[0] if str(e) else e}") from None
        return out

    def sum(self, values: list[int]) -> list[int]:
        """Element-wise sum of every rank's ``values`` (ints; the same length on every rank)."""
        return [sum(col) for col in zip(*self.gather(list(values)))]

    def close(self) -> None:
        if self._own and self._dist.is_initialized():
            self._dist.destroy_process_group()
