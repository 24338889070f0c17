"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared 2-core CI machine spinning workers slow every torch
# call several-fold. Must be set before torch is first imported (test modules import it after this file).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest

# --- data layer: real image / video files for tiny data-set trees ------------------------------------------------


def _frame(index: int, h: int = 24, w: int = 32, gray: bool = False) -> np.ndarray:
    """A frame whose content encodes its index: a level 20 + (37·index mod 200) plus a fixed horizontal ramp.

    Returned as BGR uint8 (H, W, 3) (what cv2 writes), or (H, W) when ``gray``.
    """
    ramp = np.linspace(0, 30, w, dtype=np.float32)[None, :]  # (1, W)
    level = 20 + (37 * index) % 200 + ramp  # distinct for the first 200 indices, within 20..250
    plane = np.broadcast_to(level, (h, w)).astype(np.uint8)  # (H, W)
    if gray:
        return plane.copy()
    bgr = np.stack([plane, plane // 2, 255 - plane], axis=2)  # (H, W, 3): distinct channels catch BGR/RGB swaps
    return np.ascontiguousarray(bgr)


@pytest.fixture
def make_frame():
    """``make_frame(index, h=24, w=32, gray=False)`` → the BGR (or gray) test frame for ``index``."""
    return _frame


@pytest.fixture
def write_frames():
    """``write_frames(folder, n, ext=".jpg", names=None, gray=False, h=24, w=32)`` writes frames with cv2.imwrite.

    File names default to the plain index (``0.jpg``, ``1.jpg``, ..., ``10.jpg``: natural order matters).
    Returns the folder.
    """
    import cv2

    def write(folder, n, ext=".jpg", names=None, gray=False, h=24, w=32) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = names if names is not None else [f"{i}{ext}" for i in range(n)]
        for i, name in enumerate(names):
            assert cv2.imwrite(str(folder / name), _frame(i, h, w, gray)), folder / name
        return folder

    return write


@pytest.fixture
def write_avi():
    """``write_avi(path, n, h=24, w=32)`` writes an MJPG .avi of the test frames with cv2.VideoWriter."""
    import cv2

    def write(path, n, h=24, w=32) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
        assert writer.isOpened(), "OpenCV cannot write MJPG .avi here"
        for i in range(n):
            writer.write(_frame(i, h, w))
        writer.release()
        return path

    return write


@pytest.fixture(scope="session")
def exports(tmp_path_factory):
    """The tiny preset's fp32 plugin and portable ONNX exports, built once per session by tests/test_export.py's
    ``tiny_exports`` (skips where onnx / onnxruntime / onnxruntime-extensions are missing)."""
    from test_export import tiny_exports

    return tiny_exports(tmp_path_factory, "fp32")


@pytest.fixture(scope="session")
def fp16_exports(tmp_path_factory):
    """The same in FP16."""
    from test_export import tiny_exports

    return tiny_exports(tmp_path_factory, "fp16")


def pytest_terminal_summary(terminalreporter):
    """Say where the browser tests left their screenshots (tests/browser.py), when they left any."""
    from browser import ARTIFACTS, TAKEN

    if TAKEN:
        terminalreporter.write_line(f"screenshots of the web view and report tests: {ARTIFACTS} "
                                    f"({', '.join(p.name for p in TAKEN)})")
