"""Does the web view slow a watch down? `watch --replay` throughput with and without `--ui` and a browser on it.

Each run replays the same generated plaza stream (``m2s2l_edge.data.synthetic``: 128 px, frozen stretches and
moving anomalies injected, so events, snapshots and faults happen during the run) through the real CLI
(``python -m m2s2l_edge watch --replay``), fresh ``tiny`` weights, ``--snapshots`` and ``--events`` on. Throughput is
the summary's scored frames / loop seconds (``--json``: from the first frame to the last, model loading excluded).

- **without**: no ``--ui``, no browser;
- **with**: ``--ui 0`` and a headless Chromium (Debian's, through chromium-driver) already started and pointed at
  the view as soon as the watch prints its address, so the page is open — pictures every 250 ms, the stream every
  250 ms, charts redrawn — from before the first frame to the last. The browser runs on this same machine at the
  watch's priority (not above it: see :func:`browser_program`), so its own CPU use counts against the watch: the
  conservative setting;
- **with, browser niced**: the same, the browser started 9 steps nicer than the watch — what the watch pays for serving
  the view when the browser's own rendering does not compete with it for the CPU (an operator's browser runs on
  another machine; the watch still serves every picture, stream message and chart point the page asks for).

The arms rotate round by round (A B C, B C A, C A B, ...) so that a change in the shared machine's load hits all
alike; each result is the ratio of the medians, with every run's throughput, the CPU the watch process itself spent
per frame, the load average and the page's picture count kept.

    nice -n 10 python benchmarks/bench_ui.py                     # 5 rounds, --threads 1 (about 8 minutes)
    python benchmarks/bench_ui.py --rounds 3 --threads 2 --json benchmarks/results/ui_overhead_threads2.json

Writes benchmarks/results/ui_overhead.json (``--json``) with the machine and library versions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "ui_overhead.json"
sys.path.insert(0, str(REPO / "tests"))  # tests/browser.py: the system Chromium with the flags a closed network needs


def make_stream(folder: Path, frames: int) -> Path:
    """The generated stream (128 px, 25 fps MJPG) with an anomaly or a stall every ~200 frames."""
    import cv2

    from m2s2l_edge.data.synthetic import AnomalyEvent, render_video

    events = []
    for i, start in enumerate(range(150, frames - 60, 200)):
        events.append(AnomalyEvent("frozen", start, 40) if i % 2 == 0 else AnomalyEvent("fast_object", start))
    video = render_video(size=128, frames=frames, seed=0, index=0, split="test", events=tuple(events))
    path = folder / "stream.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (128, 128))
    for f in video.frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


ARMS = ("without", "with", "with_browser_niced")


def browser_program(folder: Path, niced: bool) -> str:
    """A program that starts the system Chromium at this process's niceness (the watch's), or 9 steps nicer
    (``niced``), without the power to raise its own priority.

    Started by root, Chromium does not stay where it was put: chromedriver starts it at nice 0 whatever its own
    niceness, and Chromium then sets its browser and GPU threads to nice -8 (display priority). On the watch's own
    machine it would outrank the watch, which no operator's browser does (it runs elsewhere, or as a user who cannot
    raise priorities). So the program sets the niceness itself and drops CAP_SYS_NICE before starting Chromium."""
    import browser as chromium

    target = min(19, os.getpriority(os.PRIO_PROCESS, 0) + (9 if niced else 0))
    drop = "setpriv --inh-caps=-sys_nice --bounding-set=-sys_nice " if os.geteuid() == 0 else ""
    path = folder / ("chromium-niced" if niced else "chromium-plain")
    path.write_text(f'#!/bin/sh\nexec nice -n $(({target} - $(nice))) {drop}"{chromium.CHROMIUM}" "$@"\n')
    path.chmod(0o755)
    return str(path)


def run_watch(stream: Path, work: Path, threads: int, arm: str) -> dict:
    """One `watch --replay` (with the web view and a browser on it unless ``arm`` is "without"); its throughput and
    what the page received."""
    import browser as chromium

    ui = arm != "without"
    tag = f"{arm}-{time.monotonic_ns()}"
    summary = work / f"{tag}.json"
    args = [sys.executable, "-m", "m2s2l_edge", "watch", "--preset", "tiny", "--source", str(stream), "--replay",
            "--threads", str(threads), "--snapshots", str(work / f"{tag}-snaps"), "--events",
            str(work / f"{tag}.jsonl"), "--json", str(summary)]
    load_before = os.getloadavg()[0]
    page = {}
    if not ui:
        cpu0 = _children_cpu()
        subprocess.run(args, check=True, capture_output=True, text=True)
        cpu = _children_cpu() - cpu0
    else:
        binary = browser_program(work, niced=arm == "with_browser_niced")
        # The browser starts first: its start-up is not in the measured loop.
        with chromium.chromium(1440, 1000, binary=binary) as driver:
            cpu0 = _children_cpu()  # the browser's processes are the driver's children: only the watch counts here
            proc = subprocess.Popen([*args, "--ui", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            lines: list[str] = []
            reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
            reader.start()
            url = None
            deadline = time.monotonic() + 60
            while url is None and time.monotonic() < deadline and proc.poll() is None:
                url = next((m.group(1) for ln in list(lines) if (m := re.match(r"web view: (\S+)", ln))), None)
                time.sleep(0.02)
            if url is None:
                proc.kill()
                raise RuntimeError("watch printed no web view address:\n" + "".join(lines))
            driver.get(url)
            opened = time.monotonic()
            # The page counts its own pictures (an observer on the tile's image), so that this script does not
            # poll the browser while the watch runs.
            chromium.wait_until(driver, "return document.querySelector('#tile-cam0 img.live')", 30, "the tile")
            driver.execute_script("window.pictures = 0; new MutationObserver(() => window.pictures++).observe("
                                  "document.querySelector('#tile-cam0 img.live'), {attributeFilter: ['data-seq']});")
            proc.wait()
            cpu = _children_cpu() - cpu0
            page = {"pictures_seen": driver.execute_script("return window.pictures"),
                    "page_open_s": round(time.monotonic() - opened, 2),
                    "events_listed": driver.execute_script("return document.querySelectorAll('#events li').length")}
            reader.join(timeout=5)
            if proc.returncode != 0:
                raise RuntimeError("watch failed:\n" + "".join(lines))
    s = json.loads(summary.read_text())
    return {"arm": arm, "scored_frames": s["scored_frames"], "loop_s": round(s["wall_seconds"], 3),
            "fps": round(s["scored_frames"] / s["wall_seconds"], 3), "events": s["events"], "faults": s["faults"],
            "watch_cpu_ms_per_frame": round(1e3 * cpu / s["scored_frames"], 3),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2), **page}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the three arms (their order rotating)")
    ap.add_argument("--frames", type=int, default=1500, help="frames of the generated stream")
    ap.add_argument("--threads", type=int, default=1, help="the watch's --threads")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    a = ap.parse_args()

    import browser as chromium

    if chromium.missing():
        sys.exit(f"error: {chromium.missing()}")
    from m2s2l_edge.efficiency.benchmarking import machine_info, write_json

    with tempfile.TemporaryDirectory(prefix="bench_ui-") as tmp:
        work = Path(tmp)
        stream = make_stream(work, a.frames)
        run_watch(stream, work, a.threads, "without")  # warm-up: caches, the scan kernel's build
        run_watch(stream, work, a.threads, "with")  # and the browser's first start
        runs = []
        for i in range(a.rounds):
            for arm in ARMS[i % 3:] + ARMS[:i % 3]:
                r = run_watch(stream, work, a.threads, arm)
                r["round"] = i
                runs.append(r)
                print(f"round {i + 1}/{a.rounds} {arm}: {r['fps']:.1f} frames/s ({r['scored_frames']} frames, load "
                      f"{r['load_before']:.1f}), watch CPU {r['watch_cpu_ms_per_frame']:.2f} ms/frame"
                      + (f", page showed {r['pictures_seen']} pictures" if arm != "without" else ""), flush=True)
    fps = {arm: [r["fps"] for r in runs if r["arm"] == arm] for arm in ARMS}
    cpu = {arm: statistics.median(r["watch_cpu_ms_per_frame"] for r in runs if r["arm"] == arm) for arm in ARMS}
    base = statistics.median(fps["without"])
    arms = {}
    for arm in ARMS:
        by_round = {r["round"]: r["fps"] for r in runs if r["arm"] == arm}
        base_round = {r["round"]: r["fps"] for r in runs if r["arm"] == "without"}
        round_ratios = [by_round[i] / base_round[i] for i in range(a.rounds)]
        arms[arm] = {"median_fps": statistics.median(fps[arm]),
                     "ratio_to_without": round(statistics.median(fps[arm]) / base, 4),
                     "round_ratios": [round(x, 4) for x in round_ratios],
                     "median_round_ratio": round(statistics.median(round_ratios), 4),
                     # CPU the watch process itself spent per scored frame (model load included): what serving
                     # the view costs the watch, apart from the machine's load
                     "watch_cpu_ms_per_frame": cpu[arm],
                     "cpu_ratio_to_without": round(cpu[arm] / cpu["without"], 4)}
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine_info(),
        "load_average_at_start": runs[0]["load_before"],
        "settings": {"rounds": a.rounds, "frames": a.frames, "threads": a.threads, "preset": "tiny", "size": 128},
        "arms": arms,
        "runs": runs,
    }
    write_json(a.json, result)
    print(f"\nwithout the web view: {base:.1f} frames/s (median of {a.rounds}); wrote {a.json}")
    for arm in ARMS[1:]:
        x = arms[arm]
        print(f"{arm}: {x['median_fps']:.1f} frames/s = {x['ratio_to_without']:.3f} of without (per round "
              f"{min(x['round_ratios']):.3f}-{max(x['round_ratios']):.3f}, median {x['median_round_ratio']:.3f}); "
              f"watch CPU {x['watch_cpu_ms_per_frame']:.2f} ms/frame = {x['cpu_ratio_to_without']:.3f} of without")
    print(f"pictures the page showed per run: {[r.get('pictures_seen') for r in runs if r['arm'] != 'without']} "
          f"(mean {np.mean([r['pictures_seen'] for r in runs if r['arm'] != 'without']):.0f})")


if __name__ == "__main__":
    main()
