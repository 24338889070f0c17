"""`m2s2l-edge watch`: score live cameras (or replay footage) and report calibrated events, faults and telemetry.

The pipeline lives in :mod:`m2s2l_edge.watch`; this module turns options into ``WatchSettings`` and the outcome
into exit codes (README, "Watch a camera").
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from m2s2l_edge.cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, fail, user_errors
from m2s2l_edge.cli.options import (
    Device,
    Engine,
    JsonOut,
    Onnx,
    Preset,
    Seed,
    ServedModel,
    Server,
    StreamScore,
    Threads,
    Weights,
    check_distinct_paths,
    check_json_target,
    emit_json,
    json_to_stdout,
    model_source,
    open_backend,
)

Sources = Annotated[list[str] | None, typer.Option(
    "--source", help="Camera or footage: video file, frames folder, /dev/videoN or index, rtsp:// / http(s):// URL, "
                     "csi://N or a GStreamer pipeline. Repeat for several cameras (cam0, cam1, ...).")]
Config = Annotated[Path | None, typer.Option(
    "--config", help="YAML file of cameras (id → source, calibration, roi, thresholds, events); see docs/WATCH.md.")]
Calibration = Annotated[Path | None, typer.Option(
    "--calibration", help="Calibration of the camera(s) (m2s2l-edge calibrate); it must be of this very model.")]
Replay = Annotated[bool, typer.Option(
    "--replay", help="Read files as fast as possible (deterministic), instead of paced at their frame rate.")]
Stride = Annotated[int, typer.Option("--stride", min=1, help="Score every K-th frame of each camera.")]


def _threshold(value: float | None) -> float | None:
    import math

    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} is not above typical normal: give a finite number > 0 (robust σ)")
    return value


Threshold = Annotated[float | None, typer.Option(
    "--threshold", callback=_threshold,
    help="Event threshold in calibrated-score units (robust σ of the normal footage) for every camera, over the "
         "calibration's and any camera's YAML threshold.")]
Scores = Annotated[str | None, typer.Option(
    "--scores", help="Write one CSV row per scored frame (eval's per-frame columns plus camera, stream time, "
                     "threshold, event open) to FILE, or '-' for stdout.")]
UI = Annotated[str | None, typer.Option(
    "--ui", metavar="[HOST:]PORT",
    help="Serve a web view while watching: live cameras with the error map, score timelines, events, health, the "
         "threshold and the regions (host 127.0.0.1 unless given; any other host needs --ui-token). Needs "
         "pip install 'm2s2l-edge[ui]'.")]
UIToken = Annotated[str | None, typer.Option(
    "--ui-token", help="The token the web view asks for (at least 16 characters); required to listen beyond "
                       "loopback. Prefer the M2S2L_UI_TOKEN environment variable (a command line is visible to "
                       "every user).")]
Report = Annotated[Path | None, typer.Option(
    "--report", help="At the end of the run, write a self-contained HTML report to FILE: each camera's score over "
                     "the run with its threshold and events, event snapshots, the most anomalous frames with their "
                     "error maps, health.")]
ReadTimeout = Annotated[float, typer.Option(
    "--read-timeout", min=0.1, help="Seconds a live camera may deliver no frame before it counts as offline "
                                   "(open: twice that).")]


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)


def watch(
    weights: Weights = None,
    onnx: Onnx = None,
    engine: Engine = None,
    server: Server = None,
    model: ServedModel = None,
    preset: Preset = None,
    seed: Seed = 0,
    source: Sources = None,
    config: Config = None,
    calibration: Calibration = None,
    score: StreamScore = "stream",
    threshold: Threshold = None,
    scores: Scores = None,
    events: Annotated[str | None, typer.Option(
        "--events", help="Append one JSON line per event change to FILE, or '-' for stdout.")] = None,
    webhook: Annotated[str | None, typer.Option("--webhook", help="POST each event as JSON to this URL.")] = None,
    mqtt: Annotated[str | None, typer.Option(
        "--mqtt", help="Publish events to mqtt://HOST:PORT/PREFIX (topics PREFIX/CAMERA/events and /status).")] = None,
    snapshots: Annotated[Path | None, typer.Option(
        "--snapshots", help="Folder for a JPEG per event (error heat map over the frame at the peak).")] = None,
    video_out: Annotated[Path | None, typer.Option(
        "--video-out", help="Annotated video (heat map, score strip) of the camera.")] = None,
    keep_mb: Annotated[float | None, typer.Option(
        "--keep-mb", min=0.001, help="Snapshots and clips kept in --snapshots: at most this many MB in total, oldest "
                                     "deleted first (default: 1024, or a quarter of the free space if less).")] = None,
    keep_hours: Annotated[float | None, typer.Option(
        "--keep-hours", min=0.001, help="Delete snapshots and clips older than this many hours (default: kept "
                                        "until the size limit needs the room).")] = None,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", min=1, max=65535, help="Serve Prometheus metrics on this port (1-65535).")] = None,
    ui: UI = None,
    ui_token: UIToken = None,
    report: Report = None,
    json_out: JsonOut = None,
    replay: Replay = False,
    stride: Stride = 1,
    batch: Annotated[int | None, typer.Option(
        "--batch", min=1, help="Clips per model call, over all cameras (default: 4 or the number of cameras, "
        "whichever is larger).")] = None,
    read_timeout: ReadTimeout = 5.0,
    device: Device = None,
    threads: Threads = None,
) -> None:
    """Watch cameras: every frame scored by the model, calibrated, turned into events and camera faults."""
    from m2s2l_edge.cli.environment import prefer_passive_openmp

    prefer_passive_openmp()
    state: dict = {}

    def kept() -> str:
        return "events were flushed as they happened" + (f" to {events}" if events else "")

    try:
        with user_errors(kept=kept):
            summary, signals = _run(state, weights=weights, onnx=onnx, engine=engine, server=server, model=model,
                                    preset=preset, seed=seed, source=source, config=config, calibration=calibration,
                                    score=score, threshold=threshold, scores=scores, events=events,
                                    webhook=webhook, mqtt=mqtt, snapshots=snapshots,
                                    video_out=video_out, metrics_port=metrics_port, ui=ui, ui_token=ui_token,
                                    report=report, keep_mb=keep_mb,
                                    keep_hours=keep_hours, json_out=json_out, replay=replay,
                                    stride=stride, batch=batch, read_timeout=read_timeout, device=device,
                                    threads=threads)
    except BaseException as e:
        from m2s2l_edge.watch.service import StoppedDuringStartup

        if not isinstance(e, StoppedDuringStartup):
            raise
        # Stopped before the loop ran: whatever was open is closed; a service manager's stop is not an error.
        if e.signal_name == "SIGINT":
            raise fail("interrupted during start-up; nothing was scored", EXIT_INTERRUPTED) from None
        typer.echo(f"stopped by {e.signal_name} during start-up; nothing was scored", err=True)
        return
    summary["signal"] = signals[0] if signals else None
    emit_json(summary, json_out)
    _print_summary(summary, to_stderr=json_to_stdout(json_out) or "-" in (events, scores))
    if signals and signals[0] == "SIGINT":
        raise fail(f"interrupted; {kept()}, summary {'written' if json_out else 'printed'}", EXIT_INTERRUPTED)


def _ui_address(ui: str | None, ui_token: str | None):
    """The web view's address and token, checked before any work: a bad address or a non-loopback one without a
    token is a usage error (one line, exit 2)."""
    if ui is None:
        if ui_token is not None:
            raise fail("--ui-token goes with --ui", EXIT_USAGE)
        return None, None
    from m2s2l_edge.ui.bind import parse_address, resolve_token

    try:
        address = parse_address(ui)
        return address, resolve_token(address, ui_token)
    except ValueError as e:
        raise fail(str(e), EXIT_USAGE) from None


@contextlib.contextmanager
def _web_view(live, address, token: str | None, *, config: Path | None, media_dir: Path | None):
    """The web view (``--ui``) for the duration of the block; up before the model loads, so that the page shows the
    cameras starting. Nothing without an address."""
    if address is None:
        yield
        return
    from m2s2l_edge.ui.server import UIServer

    view = UIServer(live, address, token=token, config_path=config, media_dir=media_dir)
    view.start()
    try:
        typer.echo(f"web view: {view.shown_url}" + (" (the token: --ui-token or $M2S2L_UI_TOKEN)" if token else ""),
                   err=True)
        yield
    finally:
        view.stop()


def _run(state: dict, *, weights, onnx, engine, server, model, preset, seed, source, config, calibration, score,
         threshold, scores, events, webhook, mqtt, snapshots, video_out, metrics_port, ui, ui_token, report, keep_mb,
         keep_hours, json_out, replay, stride, batch, read_timeout, device, threads) -> tuple[dict, list[str]]:
    from m2s2l_edge.watch.service import stop_on_signals

    address, token = _ui_address(ui, ui_token)
    if address is not None:
        from m2s2l_edge.ui.server import check_installed

        check_installed()  # RuntimeError naming the extra to install (exit 3), before any work

    # From here on SIGTERM / SIGINT stop the watch cleanly, also while the model loads or a camera opens.
    with stop_on_signals(interrupt_startup=True) as stops:
        from m2s2l_edge.watch.cameras import cameras_of
        from m2s2l_edge.watch.pipeline import WatchOptions, default_batch
        from m2s2l_edge.watch.service import (
            WatchSettings,
            backend_options,
            check_before_model,
            check_one_stdout,
            live_feed,
            outputs_and_inputs,
            run_watch,
        )

        cameras = cameras_of(source, config)
        settings = WatchSettings(
            cameras=cameras,
            options=WatchOptions(stride=stride, replay=replay, batch=batch or default_batch(len(cameras)),
                                 read_timeout_s=read_timeout, score=score, threshold=threshold),
            events=events, webhook=webhook, mqtt=mqtt, snapshots=snapshots, video_out=video_out,
            metrics_port=metrics_port, keep_mb=keep_mb, keep_hours=keep_hours, scores=scores, report=report,
        )
        check_one_stdout(settings, json_out=json_out)
        check_json_target(json_out)
        models = {"--weights": weights, "--onnx": onnx, "--engine": engine}
        check_distinct_paths(*outputs_and_inputs(settings, json_out=json_out, config=config, calibration=calibration,
                                                 models=models))
        check_before_model(settings, calibration)
        src = model_source(weights=weights, onnx=onnx, engine=engine, preset=preset, seed=seed, server=server,
                           model=model)
        live = live_feed(settings, ui=address is not None)
        with _web_view(live, address, token, config=config, media_dir=snapshots):
            backend = open_backend(src, device=device, threads=threads, **backend_options(src.kind))
            summary = run_watch(backend, settings, model_path=src.path, calibration=calibration,
                                stop=stops.event, running=stops.running, live=live)
        if report is not None:
            from m2s2l_edge.watch.run_report import write_watch_report

            summary["report"] = str(write_watch_report(report, live, summary))
        state["summary"] = summary
    return summary, stops.seen


def _print_summary(summary: dict, *, to_stderr: bool) -> None:
    lines = []
    for name, cam in summary["cameras"].items():
        lines.append(f"{name}: {cam['scored_frames']} frames scored of {cam['captured_frames']} captured, "
                     f"{cam['dropped_clips']} clips dropped, {cam['gaps']} gaps, {cam['events']} events, "
                     f"{cam['faults']} faults ({cam['source']})")
        lines.append(f"  {_threshold_line(cam, summary['model']['score'])}")
    for name, sink in summary.get("sinks", {}).items():
        lost = sink.get("failed", 0) + sink.get("dropped", 0) if isinstance(sink, dict) else 0
        if lost:
            lines.append(f"{name}: {lost} message(s) not delivered ({sink.get('last_error') or 'see the log'})")
    table = summary.get("scores")
    if table and table.get("error"):
        lines.append(f"--scores {table['path']}: {table['rows']} rows written, then {table['error']}")
    media = summary.get("media")
    if media:
        lines.append(f"snapshots and clips: {media['files']} files, {media['bytes'] / 2**20:.1f} of "
                     f"{media['max_bytes'] / 2**20:.1f} MB kept in {media['folder']}; {media['deleted_files']} "
                     f"deleted by the limits, {media['skipped']} not written for lack of room")
    b = summary["backend"]
    lines.append(f"{summary['scored_frames']} frames in {summary['wall_seconds']:.1f} s; backend {b['name']}: "
                 f"{b['calls']} calls, {b['seconds']:.1f} s; stopped by {summary['stopped_by']}")
    if summary.get("report"):
        lines.append(f"report: {summary['report']} (open in a browser)")
    typer.echo("\n".join(lines), err=to_stderr)


def _threshold_line(cam: dict, score: str) -> str:
    """Why a camera raised the events it raised: the threshold in force and its source, the peak, frames above."""
    peak = cam.get("peak_score")
    peak_text = "no score yet" if peak is None else f"peak score {peak:.2f} at frame {cam['peak_frame']}"
    if cam["threshold"] is None:
        return f"score {score}: no threshold yet, {cam['calibration']}; {peak_text}"
    above = cam.get("frames_above_threshold") or 0
    line = (f"score {score}: threshold {cam['threshold']:.2f} ({cam['threshold_source']}), {peak_text}, "
            f"{above} frames at or above the threshold")
    if cam.get("calibration_warning"):
        line += f"; calibration warning: {cam['calibration_warning']}"
    return line
