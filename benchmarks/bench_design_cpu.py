"""CPU time per clip of `small` at the custom-footage recipe: this tree's design against another tree's, same run.

    git worktree add /tmp/baseline <commit>      # e.g. the last commit of the earlier design
    python benchmarks/bench_design_cpu.py --baseline-tree /tmp/baseline --json benchmarks/results/design_cpu.json

Each tree's own `training_recipe("custom", "small")` builds its model (so each design is timed at the geometry its
users train), in the form PyTorch inference runs it (`optimize_for_inference`: BatchNorm folded, SS2D convolutions
merged), scan backend auto, one thread. The two designs run in separate processes (each imports its own tree),
alternating round by round so that a shared machine's load falls on both alike; a round is one process timing
``--iterations`` calls after ``--warmup``; the figure is the median over rounds of each round's median, per clip
(batch 1, and batch 8 divided by 8). The ratio is this tree's time over the baseline's.

``--set KEY=VALUE`` (repeatable, as `train --set`) adds a third contestant in the same rounds: this tree's recipe
with those model-config overrides (``variant``), with its own ratio to the baseline and to this tree's recipe.

``--allocator`` says how the C allocator is set in each process (``m2s2l_edge.allocator``): ``shipped`` (default)
as each tree's CLI sets it (a tree that has ``tune_cpu_allocator`` applies it, an older one runs on glibc's
defaults); ``system`` glibc's defaults in both; ``tuned`` the same raised thresholds in both, through the
environment, so the ratio compares the designs alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

# Run inside each tree's process: build the recipe's model and time it (prints one JSON line).
_WORKER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
import os
# Looked up in the tree itself: an editable install of this tree would otherwise supply a module the other lacks.
if os.path.isfile(os.path.join(sys.argv[1], "m2s2l_edge", "allocator.py")):
    from m2s2l_edge.allocator import tune_cpu_allocator
    allocator = tune_cpu_allocator()[1]
else:  # a tree from before the allocator settings: its CLI ran on glibc's defaults
    allocator = ("allocator: as the environment sets it (MALLOC_*)" if any(k.startswith("MALLOC_") for k in os.environ)
                 else "allocator: glibc's defaults (the tree has no allocator settings)")
from m2s2l_edge.config import get_preset, training_recipe
from m2s2l_edge.models import M2S2L
from m2s2l_edge.models.fold import optimize_for_inference
import m2s2l_edge
assert m2s2l_edge.__file__.startswith(sys.argv[1]), m2s2l_edge.__file__
recipe = training_recipe("custom", "small")
cfg = get_preset("small", **{**recipe.model, **json.loads(sys.argv[4])})
torch.manual_seed(0)
model = M2S2L(cfg).eval()
optimize_for_inference(model)
warmup, iterations = int(sys.argv[2]), int(sys.argv[3])
out = {"allocator": allocator, "image_size": cfg.image_size, "patch_sizes": list(cfg.patch_sizes),
       "params": sum(p.numel() for p in M2S2L(cfg).parameters())}
for batch in (1, 8):
    clip = torch.rand(batch, cfg.clip_len, 3, cfg.image_size, cfg.image_size) * 2 - 1
    with torch.inference_mode():
        for _ in range(warmup):
            model.predict(clip)
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            model.predict(clip)
            times.append((time.perf_counter() - t0) * 1000 / batch)
    out[f"batch{batch}_ms_per_clip"] = sorted(times)[len(times) // 2]
print(json.dumps(out))
"""


ALLOCATOR_MODES = ("shipped", "system", "tuned")


def allocator_env(mode: str) -> dict[str, str]:
    """The environment variables that give both processes the allocator of ``mode`` (see the module docstring)."""
    from m2s2l_edge import allocator

    return {"shipped": {}, "system": {allocator.OPT_OUT: "system"},
            "tuned": {"MALLOC_MMAP_THRESHOLD_": str(allocator.MMAP_THRESHOLD),
                      "MALLOC_TRIM_THRESHOLD_": str(allocator.TRIM_THRESHOLD)}}[mode]


def run_round(tree: Path, warmup: int, iterations: int, overrides: dict | None = None,
              allocator_mode: str = "shipped") -> dict:
    from m2s2l_edge.allocator import without_settings

    env = without_settings(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(tree), **allocator_env(allocator_mode))
    proc = subprocess.run([sys.executable, "-c", _WORKER, str(tree), str(warmup), str(iterations),
                           json.dumps(overrides or {})], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"timing {tree} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr else ''}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline-tree", type=Path, required=True, help="a checkout of the design to compare with")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--allocator", choices=ALLOCATOR_MODES, default="shipped",
                   help="the C allocator's settings in both processes (see above)")
    p.add_argument("--set", dest="overrides", action="append", default=None, metavar="KEY=VALUE",
                   help="also time this tree's recipe with these model-config overrides (repeatable)")
    args = p.parse_args(argv)
    if not (args.baseline_tree / "m2s2l_edge" / "__init__.py").is_file():
        print(f"error: {args.baseline_tree} is not a checkout of this repository (no m2s2l_edge/)", file=sys.stderr)
        return 2
    from m2s2l_edge.efficiency.benchmarking import load_average, machine_info, write_json
    from m2s2l_edge.training.settings import parse_overrides

    try:
        overrides = parse_overrides(args.overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trees = {"this": (HERE, {}), "baseline": (args.baseline_tree.resolve(), {})}
    if overrides:
        trees["variant"] = (HERE, overrides)
    rounds: dict[str, list[dict]] = {k: [] for k in trees}
    load_before = load_average()
    try:
        for _ in range(args.rounds):
            for name, (tree, changes) in trees.items():
                rounds[name].append(run_round(tree, args.warmup, args.iterations, changes, args.allocator))
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    summary = {}
    for name, rs in rounds.items():
        summary[name] = {k: rs[0].get(k) for k in ("allocator", "image_size", "patch_sizes", "params")}
        for key in ("batch1_ms_per_clip", "batch8_ms_per_clip"):
            summary[name][key] = statistics.median(r[key] for r in rs)
    keys = ("batch1_ms_per_clip", "batch8_ms_per_clip")
    ratio = {key: summary["this"][key] / summary["baseline"][key] for key in keys}
    if overrides:
        ratio["variant"] = {key: summary["variant"][key] / summary["baseline"][key] for key in keys}
        ratio["variant_to_this"] = {key: summary["variant"][key] / summary["this"][key] for key in keys}
    for name in trees:
        s = summary[name]
        print(f"{name:8s} {s['image_size']} px, patches {s['patch_sizes']}, {s['params'] / 1e6:.2f} M params: "
              f"{s['batch1_ms_per_clip']:.1f} ms per clip at batch 1, {s['batch8_ms_per_clip']:.1f} at batch 8; "
              f"{s['allocator']}")
    print(f"ratio this / baseline: batch 1 {ratio['batch1_ms_per_clip']:.2f}, "
          f"batch 8 {ratio['batch8_ms_per_clip']:.2f}")
    if overrides:
        for name, r in (("variant / baseline", ratio["variant"]), ("variant / this", ratio["variant_to_this"])):
            print(f"ratio {name}: batch 1 {r['batch1_ms_per_clip']:.2f}, batch 8 {r['batch8_ms_per_clip']:.2f}")
    result = {"benchmark": "design_cpu_per_clip", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "summary": summary, "ratio": ratio,
              "rounds": rounds, "variant_overrides": overrides, "allocator": args.allocator,
              "baseline_tree": str(args.baseline_tree), "warmup": args.warmup, "iterations": args.iterations,
              "loadavg_before": load_before, "loadavg_after": load_average(), "machine": machine_info()}
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
