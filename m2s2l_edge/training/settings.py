"""The settings a training run starts from: the recipe validated for the kind of data, the model config with the
user's overrides, and the batch and learning rate, where any value the user gave wins over the recipe's."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from m2s2l_edge.config import ModelConfig, Recipe, get_preset, training_recipe


@dataclass(frozen=True)
class TrainingSettings:
    model: ModelConfig
    batch: int
    lr: float
    foreground_weight: float  # LossConfig.foreground_weight
    note: str  # the recipe filled in where no option was given ("": the plain defaults)


def parse_overrides(items: list[str] | None) -> dict:
    """``["dim=32", "patch_sizes=8,16,32"]`` → ModelConfig overrides, typed after the preset's fields."""
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields or key == "name":
            valid = ", ".join(k for k in fields if k != "name")
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of: {valid}")
        kind = str(fields[key].type)
        try:
            if "tuple" in kind:
                elem = float if "float" in kind else int
                out[key] = tuple(elem(v) for v in value.split(",") if v.strip())
            elif "bool" in kind:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1", "yes")
            elif "int" in kind:
                out[key] = int(value)
            elif "float" in kind:
                out[key] = float(value)
            else:
                out[key] = value
        except ValueError:
            raise ValueError(f"--set {item!r}: {value!r} is not a valid {kind} for {key}") from None
    return out


def build_model_config(preset: str, ablation: str | None, overrides: dict) -> ModelConfig:
    cfg = get_preset(preset, **overrides)
    return cfg.with_ablation(ablation) if ablation else cfg


def training_settings(dataset: str, preset: str, *, arch: str = "m2s2l", ablation: str | None = None,
                      overrides: list[str] | None = None, batch: int | None = None,
                      lr: float | None = None, foreground_weight: float | None = None) -> TrainingSettings:
    """The run's model config, batch, learning rate and foreground weight. The recipe for the kind of data
    (config.training_recipe) applies to M²S²L only: the peers were not validated with it and keep the plain
    defaults, and they train with their own objective, which has no foreground weight."""
    if arch != "m2s2l" and foreground_weight:
        raise ValueError(f"--foreground-weight weighs M²S²L's frame loss; {arch} trains with its own objective")
    recipe = training_recipe(dataset, preset) if arch == "m2s2l" else Recipe()
    model = build_model_config(preset, ablation, {**recipe.model, **parse_overrides(overrides)})
    return TrainingSettings(model=model, batch=recipe.batch_size if batch is None else batch,
                            lr=recipe.lr if lr is None else lr,
                            foreground_weight=recipe.foreground_weight if foreground_weight is None
                            else foreground_weight, note=recipe.note)
