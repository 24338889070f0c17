"""Process settings the long-running commands (train, eval, demo) share; set before torch is first imported."""

from __future__ import annotations

import os


def prefer_passive_openmp() -> None:
    """Let idle OpenMP threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE), unless the user chose a policy.

    On a busy CPU, PyTorch's spinning OpenMP workers wait for each other at every parallel region: a training step
    of the demo model took 5-25 s instead of 0.6-1.2 s on a shared 2-core machine (load 6-7). On an idle machine
    passive waiting costs little. libgomp reads the variable when it is loaded, so this must run before the first
    ``import torch`` of the process (our commands import torch lazily; elsewhere it is a no-op).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
