"""What a GPU measurement ran on: the GPU's name and compute capability and, on a Jetson, the L4T release, the power
mode and whether jetson_clocks pinned the clocks (a Jetson's speed depends on both as much as on the engine).

The engine build (``m2s2l_edge.export.engine``) records the GPU in an engine's metadata; the engine benchmark
(``m2s2l_edge.runtime.bench.bench_engine``) records all of it beside its timings. torch is imported only inside
``gpu_info``; the Jetson probes run the JetPack tools (``nvpmodel``, ``jetson_clocks``) and parse their text, so they
are tested on any machine with recorded outputs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path


def gpu_info(device: int = 0) -> dict:
    """Name and compute capability of the GPU, read through PyTorch when it sees one; "unknown" otherwise."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(device)
            return {"gpu": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}"}
    except ImportError:
        pass
    return {"gpu": "unknown", "compute_capability": "unknown"}


def parse_nvpmodel(text: str) -> str | None:
    """``nvpmodel -q`` → the mode's name and id, e.g. "MAXN (0)"; None when the output has no mode line."""
    name = re.search(r"NV Power Mode:\s*(\S.*?)\s*$", text, re.MULTILINE)
    if not name:
        return None
    ident = re.search(r"^\s*(\d+)\s*$", text[name.end():], re.MULTILINE)
    return f"{name.group(1)} ({ident.group(1)})" if ident else name.group(1)


def parse_jetson_clocks(text: str) -> str:
    """``jetson_clocks --show`` → "on" when the GPU clock is pinned (MinFreq = MaxFreq, what jetson_clocks sets),
    "off" when it can float, "unknown" when there is no GPU line."""
    m = re.search(r"^GPU MinFreq=(\d+) MaxFreq=(\d+)", text, re.MULTILINE)
    if not m:
        return "unknown"
    return "on" if m.group(1) == m.group(2) else "off"


def _query(cmd: list[str], run: Callable[..., subprocess.CompletedProcess]) -> str | None:
    """Output of ``cmd``, else of ``sudo -n cmd`` (never prompts), else None."""
    for argv in (cmd, ["sudo", "-n", *cmd]):
        if shutil.which(argv[0]) is None:
            continue
        try:
            out = run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout
    return None


def jetson_info(
    release_file: Path = Path("/etc/nv_tegra_release"),
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> dict | None:
    """On a Jetson: the L4T release, the power mode and whether jetson_clocks pinned the clocks ("unknown" when the
    tools cannot be run, e.g. without sudo rights). None elsewhere."""
    if not release_file.is_file():
        return None
    release = release_file.read_text(encoding="utf-8", errors="replace").splitlines()
    nvp = _query(["nvpmodel", "-q"], run)
    clocks = _query(["jetson_clocks", "--show"], run)
    return {
        "l4t_release": release[0].lstrip("# ").strip() if release else "unknown",
        "power_mode": (parse_nvpmodel(nvp) if nvp else None) or "unknown",
        "jetson_clocks": parse_jetson_clocks(clocks) if clocks else "unknown",
    }
