"""Count the ATen operations one forward pass dispatches, before and after ``optimize_for_inference``.

    PYTHONPATH=. python benchmarks/count_ops.py [--preset paper] [--batch 1] [--json out.json]

On a GPU at batch 1 each computing op is at least one kernel launch, and a CUDA-graph replay of the forward is bound
by their number rather than by FLOPs; this counts them on the CPU (no GPU needed). Views and allocations launch
nothing and are left out; the selective scans run through the C++ CPU kernel (outside ATen) and are counted
separately. Also checks that the rewritten model gives the original's outputs (BatchNorm statistics randomised, as
after training, so that folding is not a no-op).
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from m2s2l_edge.models import create_model  # noqa: E402
from m2s2l_edge.models.fold import optimize_for_inference  # noqa: E402

# Ops that only reinterpret or allocate memory: no kernel.
NON_COMPUTING = frozenset(
    "aten." + name
    for name in (
        "view _unsafe_view permute transpose t expand unsqueeze squeeze reshape slice select split split_with_sizes "
        "unbind as_strided alias chunk detach unflatten flatten empty new_empty empty_like"
    ).split()
)


class OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count(model: torch.nn.Module, clip: torch.Tensor) -> tuple[collections.Counter, tuple[torch.Tensor, ...]]:
    with torch.no_grad(), OpCounter() as counter:
        out = model.predict(clip)
    return counter.counts, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = create_model(args.preset, scan_backend="cpu")
    g = torch.Generator().manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0.0, 0.5, generator=g)
            mod.running_var.uniform_(0.3, 3.0, generator=g)
            mod.weight.data.normal_(1.0, 0.3, generator=g)
            mod.bias.data.normal_(0.0, 0.3, generator=g)
    model.eval()
    optimized = copy.deepcopy(model)
    rewrites = optimize_for_inference(optimized)
    cfg = model.cfg
    clip = torch.rand(args.batch, cfg.clip_len, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g) * 2 - 1

    rows = {}
    outputs = {}
    for label, m in (("as built", model), ("optimize_for_inference", optimized)):
        counts, outputs[label] = count(m, clip)
        computing = {k: v for k, v in counts.items() if k not in NON_COMPUTING}
        rows[label] = {"computing_ops": sum(computing.values()), "by_op": dict(sorted(computing.items()))}
    errors = [
        float((b - a).abs().max() / a.abs().max())
        for a, b in zip(outputs["as built"], outputs["optimize_for_inference"], strict=True)
    ]
    print(f"{args.preset} preset, batch {args.batch}; rewrites: {rewrites}")
    for label, row in rows.items():
        by_op = row["by_op"]
        print(
            f"  {label:<24} {row['computing_ops']:4d} computing ATen ops  (batch_norm "
            f"{by_op.get('aten.native_batch_norm', 0)}, convolution {by_op.get('aten.convolution', 0)}, "
            f"add {by_op.get('aten.add', 0)})"
        )
    print(f"  max relative output difference: {max(errors):.2e}")
    if args.json is not None:
        from m2s2l_edge.io import atomic_write_text

        result = {"preset": args.preset, "batch": args.batch, "rewrites": rewrites, "rows": rows, "rel_err": errors}
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0 if max(errors) <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
