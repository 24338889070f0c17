"""The rich progress bars the long-running commands (train, eval, demo) share."""

from __future__ import annotations

from pathlib import Path


def make_progress(console=None, *, unit: str | None = None, field: str | None = None):
    """Columns: description, bar, done/total [unit], elapsed, remaining [, the task field ``field``]."""
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
    if field is not None:
        columns.append(TextColumn(f"{{task.fields[{field}]}}"))
    return Progress(*columns, console=console)


def run_with_progress(backend, videos, labels, batch_size: int, console=None, *, score=None, lam=None, dataset=None):
    """evaluate() with one rich progress bar over every predicted frame of the test set (``score``, ``lam`` and
    ``dataset`` as evaluate takes them)."""
    from m2s2l_edge.evaluation.run import evaluate
    from m2s2l_edge.runtime.base import backend_geometry

    clip_len, _ = backend_geometry(backend)
    total = sum(max(0, len(v) - clip_len) for v in videos)
    with make_progress(console, unit="frames") as progress:
        task = progress.add_task("scoring", total=total)
        return evaluate(
            backend, videos, labels, lam, batch_size=batch_size, score=score, dataset=dataset,
            on_video=lambda i, name, n: progress.update(task, description=f"video {name} ({i + 1}/{len(videos)})"),
            on_batch=lambda n: progress.advance(task, n),
        )


class RichTrainProgress:
    """Train callbacks drawing one rich progress bar per epoch with the running loss terms."""

    def __init__(self, progress) -> None:
        self.progress = progress
        self.task = None
        self.epochs = 0
        self.means: dict[str, float] = {}
        self.n = 0

    def on_start(self, *, total_epochs: int, start_epoch: int, steps_per_epoch: int, clips: int) -> None:
        self.epochs = total_epochs
        if start_epoch:
            self.progress.console.print(f"resuming after epoch {start_epoch} of {total_epochs}")
        self.progress.console.print(f"{clips} training clips, {steps_per_epoch} steps per epoch")

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self.means, self.n = {}, 0
        desc = f"epoch {epoch}/{self.epochs}"
        if self.task is None:
            self.task = self.progress.add_task(desc, total=steps, terms="")
        else:
            self.progress.reset(self.task, total=steps, description=desc, terms="")

    def on_step(self, epoch: int, step_in_epoch: int, loss: float, terms: dict[str, float]) -> None:
        self.n += 1
        for k, v in {"loss": loss, **terms}.items():
            self.means[k] = self.means.get(k, 0.0) + (v - self.means.get(k, 0.0)) / self.n
        text = "  ".join(f"{k} {v:.4f}" for k, v in self.means.items())
        self.progress.update(self.task, completed=step_in_epoch, terms=text)

    def on_epoch_end(self, summary, checkpoint: Path) -> None:
        # The epoch's summary line comes from m2s2l_edge.training.trainer's log; only mark where the checkpoint went.
        self.progress.console.print(f"epoch {summary.epoch}/{self.epochs} saved to {checkpoint}", style="dim")
