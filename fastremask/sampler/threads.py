"""``calling_thread``: torch's CPU ops on the calling thread only, around a sampling step.

A leaf module (it imports only torch): the loop, the backend registry and the ``torch`` backend
(`fastremask.sampler.fast`) all use it, and none of them imports another for it.
"""
from __future__ import annotations

import torch

__all__ = ["calling_thread"]


class calling_thread:
    """``with calling_thread(device):`` runs torch's CPU ops on the calling thread only.

    The sampler's CPU work is many small ops: an intra-op parallel region per op costs more
    than the op, and far more on a busy machine (benchmarks/results/threads-probe-2vcpu.md:
    a step 10x slower at torch's default 2 threads beside one busy process). The loop wraps
    each step (not the model call, which keeps the user's threads) in this; off the CPU, or
    at one thread already, it does nothing. Setting and restoring costs under 1 us.
    """

    def __init__(self, device):
        self.on = torch.device(device).type == "cpu"

    def __enter__(self):
        if self.on:
            self.threads = torch.get_num_threads()
            self.on = self.threads > 1
            if self.on:
                torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        if self.on:
            torch.set_num_threads(self.threads)
        return False
