"""`m2s2l-edge table`: every row present with our params, MACs and a measured FPS; the outputs; bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from m2s2l_edge.efficiency.table import ROWS, build_table, to_markdown


def _run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "m2s2l_edge", "table", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_table_json_has_every_row_with_params_macs_and_fps(tmp_path):
    md, png = tmp_path / "table.md", tmp_path / "table.png"
    r = _run("--fps", "--warmup", "0", "--iterations", "1", "--json", "-", "--markdown", str(md), "--out", str(png))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)  # stdout holds the JSON alone; the table went to stderr
    assert "MNAD" in r.stderr
    rows = {row["key"]: row for row in data["rows"]}
    assert list(rows) == [spec.key for spec in ROWS]
    for spec in ROWS:
        row = rows[spec.key]
        if not spec.counted:
            assert row["ours"] is None and row["fps"] is None and spec.kind == "paper-only"
            continue
        assert row["ours"]["params"] > 0 and row["ours"]["macs"] > 0
        if spec.timed:
            assert row["fps"]["fps"] > 0 and row["fps"]["eager"]["iterations"] == 1
        if row["paper"]["params_m"] is not None:
            assert row["ratio"]["params"] == pytest.approx(row["ours"]["params_m"] / row["paper"]["params_m"])
    assert rows["stnmamba"]["status"].startswith("paper figures only")
    assert data["timing"]["device"] == "cpu" and data["timing"]["precision"] == "fp32"
    text = md.read_text()
    assert all(spec.method in text for spec in ROWS) and "FPS (ours): cpu" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_markdown_of_a_count_only_table():
    result = build_table(rows=["mnad", "stnmamba"])
    text = to_markdown(result)
    mnad = next(line for line in text.splitlines() if line.startswith("| MNAD "))
    assert "| 15.6 | 15.65 | 1.00× | 46.6 | 46.48 | 1.00× |" in mnad
    assert "FPS (ours): " not in text  # no timing paragraph without --fps
    assert "| STNMamba | 98.0 / 89.0 / 74.9 | 7.2 | – |" in text


def test_unknown_row_is_a_value_error():
    with pytest.raises(ValueError, match="unknown table row"):
        build_table(rows=["nope"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "plot.jpg"], "the plot is a PNG file"),
        (["--fps", "--fp16"], "--fp16 timing needs --device cuda"),
        (["--device", "gpu"], "expected cpu, cuda or cuda:N"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, args, message):
    args = [str(tmp_path / a) if a.endswith(".jpg") else a for a in args]
    r = _run(*args, timeout=300)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and message in r.stderr
    assert "Traceback" not in r.stderr


def test_timing_and_plot_rules_hold_for_library_callers_too():
    from m2s2l_edge.efficiency.table import TimingConfig, check_plot_path

    with pytest.raises(ValueError, match="--fp16 timing needs --device cuda"):
        TimingConfig(device="cpu", half=True)
    assert TimingConfig(device="cuda:1", half=True).half and not TimingConfig().half
    for name in ("plot.jpg", "plot", ".png", "plot.png.txt"):
        with pytest.raises(ValueError, match="the plot is a PNG file"):
            check_plot_path(name)
    check_plot_path("plot.png")
    check_plot_path("PLOT.PNG")


def test_existing_plot_is_refused_without_overwrite(tmp_path):
    png = tmp_path / "t.png"
    png.write_bytes(b"keep")
    r = _run("--out", str(png), timeout=300)
    assert r.returncode == 1 and "pass --overwrite" in r.stderr
    assert png.read_bytes() == b"keep"
