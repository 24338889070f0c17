"""The progress lines of the long-running commands, rendered as an 80-column terminal shows them."""

from __future__ import annotations

from rich.console import Console

from m2s2l_edge.cli.progress import RichTrainProgress, make_train_progress


def _render(progress, width: int) -> list[str]:
    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    console.print(progress.get_renderable())
    return [line for line in console.export_text().splitlines() if line.strip()]


def test_the_training_line_keeps_epoch_step_and_eta_in_80_columns():
    now = [100.0]
    progress = make_train_progress(Console(width=80, force_terminal=False))
    hooks = RichTrainProgress(progress, clock=lambda: now[0])
    hooks.on_start(total_epochs=20, start_epoch=1, steps_per_epoch=38, clips=300)  # resumed: 19 epochs, 722 steps
    terms = {"frame": 0.01234, "gradient": 0.5, "motion": 0.04, "sep": 0.002, "compact": 0.3, "separate": 0.2}
    for epoch, steps in ((2, 38), (3, 12)):  # the second epoch reuses the bar: its fields must survive the reset
        hooks.on_epoch_start(epoch, 38)
        for step in range(1, steps + 1):
            now[0] += 2.0  # 2 s per step
            hooks.on_step(epoch, step, 0.123, terms)
    lines = _render(progress, 80)
    assert len(lines) == 1 and len(lines[0]) <= 80, lines
    line = lines[0]
    assert line.startswith("epoch 3/20") and "12/38" in line
    assert "ETA 0:22:24" in line  # 722 - 50 steps left at 2 s each
    assert "loss 0.1230" in line  # the terms follow, cut to the line


def test_the_timing_bar_names_the_row_and_counts_its_calls():
    """`profile --fps` / `table --fps`: the bar says which row is being timed and how many of its calls are done,
    and starts over for the next row."""
    from m2s2l_edge.cli.progress import TimingProgress

    bar = TimingProgress(Console(width=100, force_terminal=False))
    bar.row("MNAD")
    for done in range(1, 4):
        bar.call(done, 12)
    line = _render(bar.progress, 100)[0]
    assert line.startswith("timing MNAD") and "3/12 calls" in line
    bar.row("M²S²L")
    bar.call(1, 60)
    line = _render(bar.progress, 100)[0]
    assert line.startswith("timing M²S²L") and "1/60 calls" in line
    unnamed = TimingProgress(Console(width=100, force_terminal=False))
    unnamed.call(2, 5)  # profile --fps times one model and names no row
    assert _render(unnamed.progress, 100)[0].startswith("timing the model")
