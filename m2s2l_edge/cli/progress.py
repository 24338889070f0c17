"""The rich progress bars the long-running commands (train, eval, demo, profile/table --fps) share."""

from __future__ import annotations

import time
from pathlib import Path


def make_progress(console=None, *, unit: str | None = None):
    """Columns: description, bar, done/total [unit], elapsed, remaining."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if unit is not None:
        columns.append(TextColumn(unit))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=console)


def make_train_progress(console=None):
    """The training bar, laid out so that an 80-column terminal keeps what matters: the epoch, the step, the time left
    for the whole run, then the running loss terms (cut with an ellipsis when the line is full)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Column

    return Progress(
        TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True, min_width=13)),  # epoch 100/100
        BarColumn(bar_width=10),
        MofNCompleteColumn(table_column=Column(no_wrap=True, min_width=9)),  # 1000/1000
        TextColumn("{task.fields[eta]}", table_column=Column(no_wrap=True, min_width=12)),  # ETA 10:00:00
        # the one column that gives way: it takes what the others leave and is cut with an ellipsis
        TextColumn("{task.fields[terms]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
        console=console,
    )


class TimingProgress:
    """A bar over the timed calls of `profile --fps` / `table --fps` (warm-up included), one row at a time, on stderr
    so that `--json -` keeps stdout for the JSON. Use as a context manager; ``row(name)`` and ``call(done, total)``
    are the library's ``progress`` and ``on_call`` hooks."""

    def __init__(self, console=None) -> None:
        from rich.console import Console

        self.progress = make_progress(console or Console(stderr=True), unit="calls")
        self.task = None

    def __enter__(self) -> TimingProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def row(self, name: str) -> None:
        if self.task is None:
            self.task = self.progress.add_task(f"timing {name}", total=None)
        else:
            self.progress.reset(self.task, total=None, description=f"timing {name}")

    def call(self, done: int, total: int) -> None:
        if self.task is None:
            self.row("the model")
        self.progress.update(self.task, completed=done, total=total)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run_with_progress(backend, videos, labels, batch_size: int, console=None, *, score=None, lam=None, dataset=None,
                      top_frames: int = 0, calibration=None, calibration_source: str | None = None):
    """evaluate() with one rich progress bar over every predicted frame of the test set (``score``, ``lam``,
    ``dataset``, ``top_frames`` and ``calibration`` as evaluate takes them)."""
    from m2s2l_edge.evaluation.run import evaluate
    from m2s2l_edge.runtime.base import backend_geometry

    clip_len, _ = backend_geometry(backend)
    total = sum(max(0, len(v) - clip_len) for v in videos)
    with make_progress(console, unit="frames") as progress:
        task = progress.add_task("scoring", total=total)
        return evaluate(
            backend, videos, labels, lam, batch_size=batch_size, score=score, dataset=dataset, top_frames=top_frames,
            calibration=calibration, calibration_source=calibration_source,
            on_video=lambda i, name, n: progress.update(task, description=f"video {name} ({i + 1}/{len(videos)})"),
            on_batch=lambda n: progress.advance(task, n),
        )


class RichTrainProgress:
    """Train callbacks drawing one rich progress bar per epoch (:func:`make_train_progress`) with the time left for
    the run, estimated from the steps done so far, and the running loss terms."""

    def __init__(self, progress, clock=time.monotonic) -> None:
        self.progress = progress
        self.clock = clock
        self.task = None
        self.epochs = 0
        self.means: dict[str, float] = {}
        self.n = 0
        self.steps_per_epoch = 0
        self.steps_left = 0  # in the whole run, before the current step
        self.steps_done = 0  # since this process started
        self.started = 0.0
        self.eta = "ETA -:--:--"

    def on_start(self, *, total_epochs: int, start_epoch: int, steps_per_epoch: int, clips: int) -> None:
        self.epochs = total_epochs
        self.steps_per_epoch = steps_per_epoch
        self.steps_left = (total_epochs - start_epoch) * steps_per_epoch
        self.started = self.clock()
        if start_epoch:
            self.progress.console.print(f"resuming after epoch {start_epoch} of {total_epochs}")
        self.progress.console.print(f"{clips} training clips, {steps_per_epoch} steps per epoch")

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self.means, self.n = {}, 0
        desc = f"epoch {epoch}/{self.epochs}"
        if self.task is None:
            self.task = self.progress.add_task(desc, total=steps, terms="", eta=self.eta)
        else:
            # reset() replaces the task's fields: give it every field the columns read
            self.progress.reset(self.task, total=steps, description=desc, terms="", eta=self.eta)

    def on_step(self, epoch: int, step_in_epoch: int, loss: float, terms: dict[str, float]) -> None:
        self.n += 1
        for k, v in {"loss": loss, **terms}.items():
            self.means[k] = self.means.get(k, 0.0) + (v - self.means.get(k, 0.0)) / self.n
        text = "  ".join(f"{k} {v:.4f}" for k, v in self.means.items())
        self.steps_done += 1
        self.steps_left = max(0, self.steps_left - 1)
        per_step = (self.clock() - self.started) / self.steps_done
        self.eta = f"ETA {_clock(per_step * self.steps_left)}"
        self.progress.update(self.task, completed=step_in_epoch, terms=text, eta=self.eta)

    def on_epoch_end(self, summary, checkpoint: Path) -> None:
        # The epoch's summary line comes from m2s2l_edge.training.trainer's log; only mark where the checkpoint went.
        self.progress.console.print(f"epoch {summary.epoch}/{self.epochs} saved to {checkpoint}", style="dim")
