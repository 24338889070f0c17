"""The allocator settings for CPU inference (``m2s2l_edge.allocator``), checked on glibc itself: each case runs in a
fresh process (the settings are process-wide) and asks glibc, through ``mallinfo2``, where a 16 MiB block went."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from m2s2l_edge.allocator import without_settings

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the settings are glibc's (mallopt)"
)

# A 16 MiB block, as large as the activations of the custom recipe's patch-2 encoder at batch 16: is it a mapping of
# its own while held (hblks), and does the heap keep it once freed (fordblks)? Counted against the process's
# state just before (the interpreter has mappings of its own).
PROBE = r"""
import ctypes, json, sys
from m2s2l_edge.allocator import tune_cpu_allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
tuned, said = tune_cpu_allocator() if sys.argv[1] == "tune" else (False, "")
again = tune_cpu_allocator() if sys.argv[1] == "tune" else (False, "")
before = libc.mallinfo2()
block = libc.malloc(16 << 20)
held = libc.mallinfo2()
libc.free(block)
freed = libc.mallinfo2()
print(json.dumps({"tuned": tuned, "said": said, "again": list(again), "mapped": held.hblks - before.hblks,
                  "kept": freed.fordblks - before.fordblks}))
"""


def _probe(mode: str, **env: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, mode], env={**without_settings(os.environ), **env},
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_glibc_maps_a_large_block_of_its_own_by_default():
    out = _probe("plain")
    assert out["mapped"] == 1  # a fresh mmap for the block, and an munmap when it is freed
    assert out["kept"] < 16 << 20


def test_tuned_allocator_serves_and_keeps_large_blocks_in_the_heap():
    out = _probe("tune")
    assert out["tuned"] is True and "32 MiB" in out["said"]
    assert out["again"] == [True, out["said"]]  # a second call changes nothing
    assert out["mapped"] == 0
    assert out["kept"] >= 16 << 20  # the freed block stays for the next call's tensors


@pytest.mark.parametrize("env, named", [
    ({"M2S2L_MALLOC": "system"}, "M2S2L_MALLOC=system"),
    ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "MALLOC_TRIM_THRESHOLD_"),
    ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}, "GLIBC_TUNABLES"),
])
def test_the_users_own_choice_is_left_alone(env, named):
    out = _probe("tune", **env)
    assert out["tuned"] is False and named in out["said"]
    assert out["mapped"] == 1  # glibc's own behaviour (or the user's), not ours


def test_every_command_tunes_it_and_says_so():
    for env, expected in (({}, "glibc keeps blocks under 32 MiB"),
                          ({"M2S2L_MALLOC": "system"}, "the system's defaults")):
        proc = subprocess.run([sys.executable, "-m", "m2s2l_edge", "-v", "profile", "--help"],
                              env={**without_settings(os.environ), **env},
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        assert f"allocator: {expected}" in proc.stderr, proc.stderr[-2000:]
