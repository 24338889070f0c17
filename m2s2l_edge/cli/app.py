"""The `m2s2l-edge` command line.

Each command group lives in its own module with a ``register(app)`` function; registration must stay cheap, so
command modules import torch, onnx or tensorrt inside the command functions, never at module level.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer

app = typer.Typer(
    name="m2s2l-edge",
    help="M²S²L video anomaly detection: train, evaluate, export to ONNX / TensorRT and benchmark on edge GPUs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Command modules, registered in this order (shown in --help in the order each registers).
_COMMAND_MODULES = (
    "m2s2l_edge.cli.profile_cmd",
    "m2s2l_edge.cli.table_cmd",
    "m2s2l_edge.cli.export_cmd",
    "m2s2l_edge.cli.bench_cmd",
    "m2s2l_edge.cli.train_cmd",
    "m2s2l_edge.cli.eval_cmd",
    "m2s2l_edge.cli.demo_cmd",
    "m2s2l_edge.cli.build_cmd",
    "m2s2l_edge.cli.plugin_cmd",
    "m2s2l_edge.cli.calibrate_cmd",
    "m2s2l_edge.cli.watch_cmd",
    "m2s2l_edge.cli.serve_cmd",
)


def _version(value: bool) -> None:
    if value:
        from m2s2l_edge import __version__

        typer.echo(f"m2s2l-edge {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    _quiet_libraries(verbose)
    _redact_logs()
    from m2s2l_edge.allocator import tune_cpu_allocator

    logging.getLogger(__name__).debug(tune_cpu_allocator()[1])  # before any command allocates tensors


class _RedactURLs(logging.Filter):
    """Every log line, ours or a library's (paho, urllib3, tritonclient), with the URLs in it redacted: a password
    or token never reaches the console or a journal, whoever formatted the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        from m2s2l_edge.urls import redact_text

        message = record.getMessage()
        shown = redact_text(message)
        if shown != message:
            record.msg, record.args = shown, ()
        return True


def _redact_logs() -> None:
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _RedactURLs) for f in handler.filters):
            handler.addFilter(_RedactURLs())


def _quiet_libraries(verbose: bool) -> None:
    """Keep the libraries' own console chatter (FFmpeg's "moov atom not found", OpenCV's [ WARN ] lines, PyTorch's
    UserWarnings) out of the console unless --verbose: a command reports what went wrong in its own words. The
    variables are read when OpenCV loads, which every command does lazily, after this runs; a value the user set is
    kept."""
    import os

    if not verbose:
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    logging.captureWarnings(True)  # Python warnings become log records of "py.warnings"
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if verbose else logging.ERROR)


for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit, never a traceback."""
    from m2s2l_edge.cli.environment import prefer_passive_openmp
    from m2s2l_edge.cli.errors import run_app

    prefer_passive_openmp()  # before any command imports torch (see its docstring)
    code = run_app(app)
    _exit_past_native_threads(code)
    sys.exit(code)


def _exit_past_native_threads(code: int) -> None:
    """End the process now when a stopped watch left a camera connection inside OpenCV (an open that has not timed
    out): finalising the interpreter while such a thread comes back from C++ aborts the process, and waiting for it
    would make a SIGTERM take an open timeout. Everything was written, flushed and closed before this point."""
    capture = sys.modules.get("m2s2l_edge.watch.capture")
    if capture is None or not capture.abandoned_connections():
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
