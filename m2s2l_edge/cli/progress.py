"""The rich progress bar the long-running commands (train, eval, demo) share."""

from __future__ import annotations


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
