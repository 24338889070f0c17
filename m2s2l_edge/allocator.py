"""The C allocator's settings for CPU inference: keep large tensors' memory in the process instead of mapping it anew.

glibc serves a request above its *mmap threshold* (128 KiB, adapting upwards to the largest block freed) with a
fresh ``mmap`` and returns it with ``munmap`` when it is freed, and gives the top of the heap back to the system once
more than its *trim threshold* is free. PyTorch's CPU tensors come straight from ``malloc``, so a forward pass that
makes and drops activations of a few MB each (the custom recipe's patch-2 encoder: 2-8 MB per tensor at batch 8)
pays page faults for those tensors' memory at every call. Raising both thresholds keeps the blocks in the heap and
reuses them. Measured on machine C (``benchmarks/RESULTS.md``, "Issue 20", budget): the custom recipe's `small`
at one thread 0.79x the time per clip at batch 1 and 0.77x at batch 8, ``bench --preset paper`` at two threads
0.75x. The cost is memory kept by the process: freed blocks under :data:`MMAP_THRESHOLD` stay for reuse, and up
to :data:`TRIM_THRESHOLD` of free heap is not returned (the same peak in ``bench``; 51 MiB more resident in a
``watch``, 428 against 377 MiB, flat over 20 minutes of stream). A smaller trim threshold gives back the batch-8 gain
(16 MiB: 11.4 against 9.2 ms per clip), so it stays at 64 MiB.

:func:`tune_cpu_allocator` applies it (``mallopt``, glibc only; the CLI does so for every command). It leaves the
allocator alone where the user chose its settings (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_TOP_PAD_`` or ``glibc.malloc`` tunables in ``GLIBC_TUNABLES``), or asked for the system's defaults with
``M2S2L_MALLOC=system``. Elsewhere (musl, macOS, Windows) it does nothing and says why.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

MMAP_THRESHOLD = 32 << 20  # the largest value every glibc accepts (older ones refuse above HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 64 << 20
_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3
OPT_OUT = "M2S2L_MALLOC"
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_applied: str | None = None


def without_settings(env: dict[str, str]) -> dict[str, str]:
    """``env`` without every variable that decides the allocator (glibc's ``MALLOC_*`` and ``GLIBC_TUNABLES``, and
    :data:`OPT_OUT`): a child started with it gets what :func:`tune_cpu_allocator` chooses by itself."""
    return {k: v for k, v in env.items() if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", OPT_OUT)}


def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_cpu_allocator() -> tuple[bool, str]:
    """Raise glibc's mmap and trim thresholds for this process (see the module docstring). Returns whether the
    settings are in force and a one-line account of what was done; calling it again changes nothing."""
    global _applied
    if _applied is not None:
        return True, _applied
    if os.environ.get(OPT_OUT, "").strip().lower() == "system":
        return False, f"allocator: the system's defaults ({OPT_OUT}=system)"
    chosen = [name for name in _USER_SETTINGS if name in os.environ]
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        chosen.append("GLIBC_TUNABLES")
    if chosen:
        return False, f"allocator: left as the environment sets it ({', '.join(chosen)})"
    libc = _libc()
    if libc is None:
        return False, "allocator: not glibc, left alone"
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return False, "allocator: glibc refused mallopt, left alone"
    _applied = (f"allocator: glibc keeps blocks under {MMAP_THRESHOLD >> 20} MiB in the heap and up to "
                f"{TRIM_THRESHOLD >> 20} MiB free ({OPT_OUT}=system for the defaults)")
    return True, _applied
