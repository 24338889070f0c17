"""`m2s2l-edge watch` on this machine: throughput, live latency, detection delay, false alarms and a soak run.

Sections (all on generated plaza footage, ``m2s2l_edge.data.synthetic``, fresh weights of seed 0):

1. **throughput** — per backend (torch, onnxruntime) and preset (tiny at 64 px, small at its demo resolution
   64 px), 1..N cameras replayed as fast as possible (``--replay``): frames scored per second in all, i.e. how many
   cameras at 25 fps / 10 fps the machine sustains. Baseline in the same run, timed right before each repeat: the
   bare ``backend.run`` on random clips at the same batch size (clips/s); the ratio says what the capture,
   preprocessing, scoring and event stages cost on top of the model (above 1: decoding and preprocessing overlap
   the model in the capture threads, and the baseline's 5 calls caught a busier moment).
2. **live** — N real live HTTP streams (a real ffmpeg per camera on 127.0.0.1, paced at F fps): processed fps per
   camera, dropped clips and capture-to-decision latency percentiles (p50 / p95 / p99). Skipped without ffmpeg.
3. **detection** — calibrate on normal footage, then replay test videos with labelled anomalies: per anomaly the
   detection delay (the event's first frame, where the smoothed score crossed the threshold, − the first anomalous
   frame, in seconds of stream time) and the alert delay (to the frame whose start message went out), or a miss;
   events that overlap no anomaly, per hour of normal stream; the frozen-camera stretches as faults.
4. **soak** — an hour of stream time (``--quick``: 5 minutes) of normal footage replayed through one camera:
   resident memory (VmRSS) after warm-up and at the end, and the false alarms per hour on it.

    nice -n 10 python benchmarks/bench_watch.py                  # everything (~30 min on 2 shared cores)
    nice -n 10 python benchmarks/bench_watch.py --quick          # a few minutes
    m2s2l-edge demo --out demo && python benchmarks/bench_watch.py --sections detection,soak \
        --weights demo/run/last.pt --soak-stride 5              # detection and soak with the demo's trained model

Writes benchmarks/results/watch.json (``--json``) with the machine and library versions, and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("bench_watch")

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "watch.json"
SECTIONS = ("throughput", "live", "detection", "soak")
FPS = 25.0


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def write_avi(path: Path, frames: np.ndarray, fps: float = FPS) -> Path:
    import cv2

    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


# --- models ----------------------------------------------------------------------------------------------------


def make_models(work: Path, threads: int) -> dict:
    """{(backend, preset): (backend object, model path)}: tiny, and small at the demo's 64 px, in both backends."""
    from m2s2l_edge.artifacts.checkpoint import save_checkpoint
    from m2s2l_edge.export.onnx_export import ExportConfig, export_onnx
    from m2s2l_edge.models import create_model
    from m2s2l_edge.runtime import create_backend

    out = {}
    for preset, overrides in (("tiny", {}), ("small", {"image_size": 64})):
        model = create_model(preset, seed=0, **overrides).eval()
        ckpt = save_checkpoint(work / f"{preset}.pt", model)
        onnx = export_onnx(model, work / f"{preset}.onnx", ExportConfig(scan="portable", dynamic_batch=True))
        out[("torch", preset)] = (create_backend("torch", ckpt, threads=threads), ckpt)
        out[("onnxruntime", preset)] = (create_backend("onnxruntime", onnx, threads=threads), onnx)
    return out


def bare_backend(backend, batch: int, iterations: int) -> float:
    """Clips per second of ``backend.run`` alone at ``batch`` (median of ``iterations`` after 3 warm-up calls)."""
    from m2s2l_edge.runtime.base import backend_geometry

    T, (h, w) = backend_geometry(backend)
    clips = np.random.default_rng(0).uniform(-1, 1, (batch, T, 3, h, w)).astype(np.float32)
    for _ in range(3):
        backend.run(clips)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        backend.run(clips)
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


# --- 1. throughput --------------------------------------------------------------------------------------------


def run_replay(backend, sources, *, batch: int, stride: int = 1, calibration=None, events: list | None = None,
               on_score=None, config_extra: dict | None = None, model_path=None) -> dict:
    import dataclasses

    from m2s2l_edge.watch.cameras import cameras_from_sources
    from m2s2l_edge.watch.pipeline import WatchOptions
    from m2s2l_edge.watch.service import WatchSettings, run_watch

    cameras = cameras_from_sources([str(s) for s in sources])
    if config_extra:
        cameras = tuple(dataclasses.replace(c, **config_extra) for c in cameras)
    settings = WatchSettings(cameras=cameras, options=WatchOptions(replay=True, batch=batch, stride=stride),
                             events=str(events[0]) if events else None)
    return run_watch(backend, settings, model_path=model_path or getattr(backend, "path", None),
                     calibration=calibration, on_score=on_score)


def section_throughput(models: dict, work: Path, args) -> list[dict]:
    from m2s2l_edge.data.synthetic import render_video

    frames = 60 if args.quick else 150
    videos = [write_avi(work / f"cam{i}.avi", render_video(size=128, frames=frames, seed=0, index=i).frames)
              for i in range(max(args.cameras))]
    rows = []
    for (kind, preset), (backend, _) in models.items():
        run_replay(backend, videos[:1], batch=args.batch)  # warm-up: first-call allocations, thread pools
        for n in args.cameras:
            fps, bares = [], []
            for _ in range(args.repeats):
                # The baseline right before each run: on a shared machine both then see the same load.
                bares.append(bare_backend(backend, max(args.batch, n), 5))
                s = run_replay(backend, videos[:n], batch=max(args.batch, n))
                fps.append(s["scored_frames"] / s["wall_seconds"])
            total, bare = statistics.median(fps), statistics.median(bares)
            rows.append({"backend": kind, "preset": preset, "image_size": 64, "cameras": n, "source": "128x128",
                         "frames_per_camera": frames, "scored_fps": round(total, 2),
                         "cameras_at_25fps": round(total / 25.0, 2), "cameras_at_10fps": round(total / 10.0, 2),
                         "bare_backend_clips_per_s": round(bare, 2), "pipeline_over_bare": round(total / bare, 3),
                         "load_average": os.getloadavg()[0]})
            logger.info("throughput %s", rows[-1])
    return rows


# --- 2. live latency ----------------------------------------------------------------------------------------------


def _listening(port: int) -> bool:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(r.split()[3] == "0A" and int(r.split()[1].rsplit(":", 1)[1], 16) == port for r in rows):
            return True
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def section_live(models: dict, args) -> list[dict]:
    from m2s2l_edge.watch.cameras import cameras_from_sources
    from m2s2l_edge.watch.pipeline import WatchOptions
    from m2s2l_edge.watch.service import WatchSettings, run_watch

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        logger.warning("live section skipped: no ffmpeg")
        return []
    seconds = 8.0 if args.quick else 20.0
    rows = []
    for (kind, preset), (backend, _) in models.items():
        for n, fps in args.live:
            ports = [_free_port() for _ in range(n)]
            servers = [subprocess.Popen(
                [ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi",
                 "-i", f"testsrc2=size=160x120:rate={fps}", "-c:v", "mpeg2video", "-q:v", "4", "-g", "10",
                 "-f", "mpegts", "-listen", "1",
                 f"http://127.0.0.1:{p}/live.ts"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL) for p in ports]
            try:
                deadline = time.monotonic() + 30
                while not all(_listening(p) for p in ports) and time.monotonic() < deadline:
                    time.sleep(0.05)
                stop = threading.Event()
                settings = WatchSettings(
                    cameras=cameras_from_sources([f"http://127.0.0.1:{p}/live.ts" for p in ports]),
                    options=WatchOptions(batch=max(args.batch, n), read_timeout_s=5.0))
                # The clock starts at the first scored frame: FFmpeg's probing of a fresh stream (seconds at a low
                # frame rate) is start-up, not steady state.
                timer = threading.Timer(seconds, stop.set)

                started: list[bool] = []

                def first_score(fs, timer=timer, started=started) -> None:
                    if not started:
                        started.append(True)
                        timer.start()

                s = run_watch(backend, settings, model_path=None, stop=stop, on_score=first_score)
                timer.cancel()
            finally:
                for p in servers:
                    p.kill()
                    p.wait()
            tel = s["telemetry"]["cameras"]
            lat = [c["latency_ms"] for c in tel.values()]
            rows.append({
                "backend": kind, "preset": preset, "cameras": n, "stream_fps": fps, "seconds": seconds,
                "processed_fps_per_camera": round(statistics.mean(
                    (c["processed_fps"] or 0.0) for c in tel.values()), 2),
                "capture_fps_per_camera": round(statistics.mean((c["capture_fps"] or 0.0) for c in tel.values()), 2),
                "dropped_clips": sum(c["dropped_clips"] for c in s["cameras"].values()),
                "latency_ms_p50": round(max(x["p50"] or 0 for x in lat), 1),
                "latency_ms_p95": round(max(x["p95"] or 0 for x in lat), 1),
                "latency_ms_p99": round(max(x["p99"] or 0 for x in lat), 1),
                "mean_batch": s["telemetry"]["backend"]["mean_batch"],
                "load_average": os.getloadavg()[0],
            })
            logger.info("live %s", rows[-1])
    return rows


# --- 3. detection -------------------------------------------------------------------------------------------------


def detection_model(models: dict, args):
    """(backend, model path, description): ``--weights`` (a trained checkpoint, e.g. the demo's) or tiny's fresh
    weights in ONNX Runtime."""
    if args.weights is not None:
        from m2s2l_edge.runtime import create_backend

        return (create_backend("torch", args.weights, threads=args.threads), args.weights,
                f"torch, trained checkpoint {args.weights.name}")
    backend, path = models[("onnxruntime", "tiny")]
    return backend, path, "onnxruntime, tiny (fresh weights, seed 0)"


def section_detection(models: dict, work: Path, args) -> tuple[dict, Path]:
    from m2s2l_edge.data.synthetic import AnomalyEvent, render_video
    from m2s2l_edge.watch.calibration import save
    from m2s2l_edge.watch.pipeline import calibrate_footage

    backend, path, described = detection_model(models, args)
    size = args.render_size
    n_frames = 150 if args.quick else 300
    normal = [write_avi(work / f"normal{i}.avi", render_video(size=size, frames=n_frames, seed=0, index=10 + i).frames)
              for i in range(2 if args.quick else 6)]
    cal = calibrate_footage(backend, [str(p) for p in normal], model_path=path, batch=args.batch)
    calib = work / "plaza.calib.json"
    save(cal, calib)
    kinds = ("fast_object", "foreign_object", "running")
    tests = []
    for i in range(len(kinds) * (1 if args.quick else 2)):
        kind = kinds[i % len(kinds)]
        events = (AnomalyEvent(kind, 60),) if i % 2 else (AnomalyEvent("frozen", 40, 40), AnomalyEvent(kind, 120))
        v = render_video(size=size, frames=n_frames if n_frames > 200 else 200, seed=0, index=i, split="test",
                         events=events)
        tests.append((write_avi(work / f"test{i}.avi", v.frames), v.labels, events))
    ev_file = work / "detection_events.jsonl"
    if ev_file.exists():
        ev_file.unlink()
    run_replay(backend, [t[0] for t in tests], batch=args.batch, calibration=calib, events=[ev_file],
               config_extra={"faults": (("frozen_s", 1.0),)}, model_path=path)
    msgs = [json.loads(x) for x in ev_file.read_text().splitlines()]
    starts = [m for m in msgs if m["type"] == "event" and m["state"] == "start"]
    ends = {m["id"]: m for m in msgs if m["type"] == "event" and m["state"] == "end"}
    delays, alerts, missed, false_events, frozen_found, frozen_total = [], [], 0, 0, 0, 0
    normal_frames = 0
    for cam_index, (_, labels, events) in enumerate(tests):
        cam = f"cam{cam_index}"
        mine = [ends.get(m["id"], m) for m in starts if m["camera"] == cam and m["kind"] == "anomaly"]
        spans = [(m["first"]["frame"], m["last"]["frame"]) for m in mine]
        # When each start message went out (its "last" frame): the alert, min_duration_s after the crossing.
        sent = {m["first"]["frame"]: m["last"]["frame"] for m in starts
                if m["camera"] == cam and m["kind"] == "anomaly"}
        lab = np.asarray(labels)
        normal_frames += int((lab == 0).sum())
        for ev in events:
            if ev.kind == "frozen":
                frozen_total += 1
                frozen_found += any(m["camera"] == cam and m["kind"] == "frozen" for m in starts)
                continue
            idx = np.nonzero(lab[ev.start:])[0]
            stop = ev.start + (int(np.nonzero(np.diff(idx) > 1)[0][0]) + 1 if np.any(np.diff(idx) > 1) else len(idx))
            hit = [a for a, b in spans if a <= stop and b >= ev.start]
            if hit:
                delays.append((min(hit) - ev.start) / FPS)
                alerts.append((sent[min(hit)] - ev.start) / FPS)
            else:
                missed += 1
        anomalous = set(np.nonzero(lab)[0].tolist())
        false_events += sum(1 for a, b in spans if not anomalous & set(range(a, b + 1)))
    normal_hours = normal_frames / FPS / 3600.0
    result = {
        "model": described, "render_size": size,
        "calibration": {"frames": cal.count, "seconds": cal.stream_seconds, "threshold": cal.threshold,
                        "method": cal.threshold_method},
        "anomalies": len(delays) + missed, "detected": len(delays), "missed": missed,
        "delay_s_median": statistics.median(delays) if delays else None,
        "delay_s_max": max(delays) if delays else None,
        "delays_s": delays,
        "alert_delay_s_median": statistics.median(alerts) if alerts else None,
        "alert_delays_s": alerts,
        "false_events": false_events, "normal_stream_hours": normal_hours,
        "false_events_per_hour": false_events / normal_hours if normal_hours else None,
        "frozen_stretches": frozen_total, "frozen_faults": frozen_found,
    }
    logger.info("detection %s", result)
    return result, calib


# --- 4. soak --------------------------------------------------------------------------------------------------------


def section_soak(models: dict, work: Path, calib: Path | None, args) -> dict:
    from m2s2l_edge.data.synthetic import render_video

    backend, path, described = detection_model(models, args)
    minutes = 5 if args.quick else args.soak_minutes
    minute = write_avi(work / "minute.avi",
                       render_video(size=args.render_size, frames=int(60 * FPS), seed=0, index=50).frames)
    long = work / "soak.avi"
    subprocess.run([shutil.which("ffmpeg") or "ffmpeg", "-loglevel", "error", "-y", "-stream_loop", str(minutes - 1),
                    "-i", str(minute), "-c", "copy", str(long)], check=True)
    samples: list[tuple[float, float]] = []
    warm_at = 2000  # scored frames: decoders, thread pools and allocator caches have settled by then

    next_sample = [warm_at / FPS]

    def on_score(fs) -> None:
        # One sample after warm-up, then one per minute of stream (whatever the stride).
        if fs.stream_time >= next_sample[0]:
            samples.append((fs.stream_time, rss_mib()))
            next_sample[0] = (int(fs.stream_time // 60) + 1) * 60.0

    before = rss_mib()
    tic = time.perf_counter()
    ev_file = work / "soak_events.jsonl"
    s = run_replay(backend, [long], batch=args.batch, stride=args.soak_stride, calibration=calib, events=[ev_file],
                   on_score=on_score, model_path=path)
    wall = time.perf_counter() - tic
    after = rss_mib()
    warm = next((r for t, r in samples if t * FPS >= warm_at), samples[0][1] if samples else before)
    msgs = [json.loads(x) for x in ev_file.read_text().splitlines()] if ev_file.exists() else []
    false_events = sum(1 for m in msgs if m.get("kind") == "anomaly" and m.get("state") == "start")
    stream_h = minutes / 60.0
    result = {
        "model": described, "stream_minutes": minutes, "stride": args.soak_stride,
        "scored_frames": s["scored_frames"], "wall_seconds": round(wall, 1),
        "rss_mib_start": round(before, 1), "rss_mib_after_warmup": round(warm, 1), "rss_mib_end": round(after, 1),
        "rss_growth_after_warmup_mib": round(after - warm, 1),
        "rss_samples": [(round(t, 1), round(r, 1)) for t, r in samples],
        "false_events": false_events, "false_events_per_hour": false_events / stream_h,
        "calibrated": calib is not None,
    }
    logger.info("soak %s", result)
    return result


# --- main -----------------------------------------------------------------------------------------------------------


def markdown(results: dict) -> str:
    out = []
    if results.get("throughput"):
        out += ["| backend | preset | cameras | scored fps | cameras @25 fps | bare backend clips/s | pipeline/bare |",
                "|---|---|---:|---:|---:|---:|---:|"]
        out += [f"| {r['backend']} | {r['preset']} | {r['cameras']} | {r['scored_fps']} | {r['cameras_at_25fps']} | "
                f"{r['bare_backend_clips_per_s']} | {r['pipeline_over_bare']} |" for r in results["throughput"]]
        out.append("")
    if results.get("live"):
        out += ["| backend | preset | cameras × fps | processed fps/camera | dropped | p50 ms | p95 ms | p99 ms |",
                "|---|---|---|---:|---:|---:|---:|---:|"]
        out += [f"| {r['backend']} | {r['preset']} | {r['cameras']} × {r['stream_fps']} | "
                f"{r['processed_fps_per_camera']} | {r['dropped_clips']} | {r['latency_ms_p50']} | "
                f"{r['latency_ms_p95']} | {r['latency_ms_p99']} |" for r in results["live"]]
        out.append("")
    d = results.get("detection")
    if d:
        out.append(f"detection: {d['detected']}/{d['anomalies']} anomalies, delay median {d['delay_s_median']} s "
                   f"(max {d['delay_s_max']} s), {d['false_events']} false events in {d['normal_stream_hours']:.3f} "
                   f"h of normal stream, frozen faults {d['frozen_faults']}/{d['frozen_stretches']}")
    s = results.get("soak")
    if s:
        out.append(f"soak: {s['stream_minutes']} min of stream in {s['wall_seconds']} s, "
                   f"RSS {s['rss_mib_after_warmup']}"
                   f" → {s['rss_mib_end']} MiB after warm-up, {s['false_events']} false events "
                   f"({s['false_events_per_hour']:.2f} per hour)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short runs (minutes in all)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    p.add_argument("--cameras", default="1,2,4", help="camera counts of the throughput section")
    p.add_argument("--live", default="1x10,2x10", help="live section: CAMERASxFPS,...")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--soak-stride", type=int, default=1)
    p.add_argument("--soak-minutes", type=int, default=60, help="stream minutes of the soak run")
    p.add_argument("--weights", type=Path, default=None,
                   help="trained checkpoint for detection and soak (e.g. the demo's); default: tiny, fresh weights")
    p.add_argument("--render-size", type=int, default=None,
                   help="side of the generated footage (default: 128 with --weights, the demo's; else 64)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    args.cameras = [int(x) for x in args.cameras.split(",")]
    args.live = [tuple(int(v) for v in x.split("x")) for x in args.live.split(",") if x]
    if args.quick:
        args.repeats = 1
    if args.render_size is None:
        args.render_size = 128 if args.weights is not None else 64
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {bad}; valid: {', '.join(SECTIONS)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from m2s2l_edge.allocator import tune_cpu_allocator
    from m2s2l_edge.efficiency.benchmarking import machine_info

    allocator = tune_cpu_allocator()[1]  # as every m2s2l-edge command sets it (M2S2L_MALLOC=system: glibc's defaults)
    results: dict = {"machine": machine_info(), "date": time.strftime("%Y-%m-%d"), "argv": sys.argv[1:],
                     "allocator": allocator, "load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench_watch_") as tmp:
        work = Path(tmp)
        # Models are only built when a section needs them (exports take minutes on a loaded CPU).
        needs_models = bool({"throughput", "live"} & set(sections)) or args.weights is None
        models = make_models(work, args.threads) if needs_models else {}
        if "throughput" in sections:
            results["throughput"] = section_throughput(models, work, args)
        if "live" in sections:
            results["live"] = section_live(models, args)
        calib = None
        if "detection" in sections:
            results["detection"], calib = section_detection(models, work, args)
        if "soak" in sections:
            results["soak"] = section_soak(models, work, calib, args)
    results["load_average_end"] = os.getloadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    from m2s2l_edge.io import atomic_write_text

    atomic_write_text(args.json, json.dumps(results, indent=2, default=str))
    print(markdown(results))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
