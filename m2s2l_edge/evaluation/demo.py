"""The demo's pipeline on generated video: what it generates, trains, evaluates and writes, and what it reports.

generate a synthetic surveillance data set → train the `small` preset → evaluate (frame-level AUC) → plots. The
settings were tuned for a shared 2-core CPU (see benchmarks/bench_demo.py); none was chosen by looking at the test
labels of the seed the demo reports. They are the only place the demo differs from a real run. ``m2s2l-edge demo``
(:mod:`m2s2l_edge.cli.demo_cmd`) calls these steps in order and shows their progress.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DemoSettings:
    # Synthetic data (m2s2l_edge.data.synthetic): rendered at 128 px, like the small preset's native input.
    n_train: int = 8
    n_test: int = 8
    frames: int = 120
    render_size: int = 128
    # Anomaly kinds of the test videos. `frozen` (a stalled camera) is left out by default: a repeated frame is the
    # most predictable input there is, so any future-frame-prediction score (M²S²L's, as in the paper) ranks a stall
    # as the most normal footage of its video. With it the demo measured micro AUC 0.90-0.905 (2 of 8 test videos
    # hold a stall; their AUCs stay at 0.76 and 0.81 however long the model trains); `--kinds` adds it back.
    kinds: tuple[str, ...] = ("fast_object", "foreign_object", "running")
    # Model: the `small` preset with these overrides. 64 px instead of 128 px cuts the decoders' cost (most of the
    # MACs) by 4×, which is what lets a CPU train it in minutes.
    preset: str = "small"
    overrides: dict = field(default_factory=lambda: {"image_size": 64})
    # Optimisation: a higher rate than the paper's 2e-4 because the demo trains for a few hundred steps only.
    epochs: int = 3
    batch_size: int = 8
    lr: float = 1e-3
    stride: int = 1
    eval_batch: int = 16

    def overrides_text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.overrides.items()) or "as registered"


DEMO = DemoSettings()
DATASET = "synthetic"


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo writes, under its ``--out`` folder (each replaced by the next run): the generated data, the
    training run, the evaluation."""

    data: Path
    run: Path
    eval: Path

    @classmethod
    def under(cls, out: Path) -> DemoPaths:
        out = Path(out)
        return cls(out / "data", out / "run", out / "eval")


def generate(s: DemoSettings, paths: DemoPaths, *, seed: int) -> Path:
    """Render the synthetic data set; returns its folder."""
    from m2s2l_edge.data import generate_dataset

    generate_dataset(paths.data, name=DATASET, n_train=s.n_train, n_test=s.n_test, frames=s.frames,
                     size=s.render_size, seed=seed, kinds=s.kinds)
    return paths.data / DATASET


def train_model(s: DemoSettings, paths: DemoPaths, *, seed: int, device: str, callbacks=None):
    """Train the demo's model on the generated training videos and plot its loss; the trainer's result."""
    from m2s2l_edge.config import LossConfig, TrainConfig, get_preset
    from m2s2l_edge.report.plots import plot_training
    from m2s2l_edge.training.trainer import DataConfig, RunConfig, load_history, train

    model_cfg = get_preset(s.preset, **s.overrides)
    train_cfg = TrainConfig(epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, loss=LossConfig())
    result = train(model_cfg, train_cfg, DataConfig(str(paths.data), DATASET, stride=s.stride),
                   RunConfig(str(paths.run), device=device, seed=seed, overwrite=True), callbacks)
    plot_training(load_history(paths.run), paths.run / "loss.png", title=f"demo training loss ({s.preset} preset)")
    return result


def open_test(s: DemoSettings, paths: DemoPaths, checkpoint: Path, *, device: str):
    """(backend of the trained checkpoint, test videos, their labels)."""
    from m2s2l_edge.evaluation.datasets import load_test_set
    from m2s2l_edge.runtime import open_model

    videos, labels = load_test_set(paths.data, DATASET)
    return open_model("torch", str(checkpoint), device=device, expected_preset=s.preset), videos, labels


def write_evaluation(evaluation, paths: DemoPaths, checkpoint: Path) -> dict:
    """Eval's outputs (report, results, plots) of the demo's evaluation; the paths written."""
    from m2s2l_edge.evaluation.outputs import write_outputs

    return write_outputs(evaluation, paths.eval, plots=True, replace=True,
                         meta={"dataset": DATASET, "data": str(paths.data), "backend": "torch",
                               "source": str(checkpoint), "title": "(demo, synthetic)"})


def summary(s: DemoSettings, paths: DemoPaths, *, evaluation, training, files: dict, times: dict, seed: int,
            device: str) -> dict:
    """The demo's result (``--json``): the AUCs, the times, the settings, the machine and every file it wrote."""
    import torch

    from m2s2l_edge.efficiency.benchmarking import machine_info

    return {
        "micro_auc": evaluation.auc.micro,
        "macro_auc": None if math.isnan(evaluation.auc.macro) else evaluation.auc.macro,
        "videos_in_macro": evaluation.auc.videos_in_macro,
        "per_video_auc": {v.name: v.auc for v in evaluation.videos},
        **times,
        "seed": seed,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "settings": dataclasses.asdict(s),
        "final_train_loss": training.history[-1].loss if training.history else None,
        "train_steps": training.step,
        "files": {"data": str(paths.data), "checkpoint": str(training.checkpoint),
                  "loss_plot": str(paths.run / "loss.png"), **{k: str(v) for k, v in files.items()}},
        "machine": machine_info(),
    }
