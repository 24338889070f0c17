"""Parameters, MACs and FLOPs of M²S²L, per component, and forward-pass timing.

Conventions (docs/DESIGN.md §3):
- ``macs``: multiply-accumulates of convolutions, linear layers and matrix products, counted from the real forward
  pass by ``torch.utils.flop_counter`` (which reports 2 FLOPs per MAC; we halve it).
- The selective scan is opaque to such counters; it is counted by formula, 9·B·L·D·N per scan (D = K·d_inner
  channels), VMamba's convention, and added as is to both columns.
- ``paper_flops`` = macs + scan: what the paper's table calls "FLOPs" (thop / ptflops / fvcore count a MAC as one
  FLOP; MNAD's published 46.6 G is exactly its MAC count).
- ``true_flops`` = 2·macs + scan.
Element-wise operations (activations, normalisation, residual additions) are not counted, as in those tools.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

# The paper's efficiency figures (Table 1) for the paper preset.
PAPER_PARAMS_M = 14.9
PAPER_GFLOPS = 20.1
PAPER_FPS = 45


def scan_flops(batch: int, channels: int, length: int, d_state: int) -> int:
    """Arithmetic of one selective scan over (B, D, L) with N states: 9·B·L·D·N (VMamba's formula)."""
    return 9 * batch * length * channels * d_state


@functools.cache
def _register_scan_formula() -> None:
    from torch.utils.flop_counter import register_flop_formula

    from m2s2l_edge.ops import custom_op  # noqa: F401  (registers the operator)

    @register_flop_formula(torch.ops.m2s2l.selective_scan)
    def _scan_formula(u_shape, delta_shape, A_shape, *args, out_shape=None, **kwargs) -> int:
        b, d, length = u_shape
        return scan_flops(b, d, length, A_shape[1])


@dataclass
class GroupCount:
    params: int = 0
    macs: int = 0  # dense MACs (conv / linear / matmul)
    scan: int = 0  # selective-scan FLOPs by formula

    @property
    def paper_flops(self) -> int:
        return self.macs + self.scan

    @property
    def true_flops(self) -> int:
        return 2 * self.macs + self.scan


@dataclass
class ProfileResult:
    preset: str
    resolution: int
    batch: int
    groups: dict[str, GroupCount] = field(default_factory=dict)

    @property
    def total(self) -> GroupCount:
        t = GroupCount()
        for g in self.groups.values():
            t.params += g.params
            t.macs += g.macs
            t.scan += g.scan
        return t

    def as_dict(self) -> dict:
        def row(g: GroupCount) -> dict:
            return {
                "params": g.params,
                "macs": g.macs,
                "scan_flops": g.scan,
                "paper_flops": g.paper_flops,
                "true_flops": g.true_flops,
            }

        return {
            "preset": self.preset,
            "resolution": self.resolution,
            "batch": self.batch,
            "groups": {k: row(v) for k, v in self.groups.items()},
            "total": row(self.total),
            "paper": {"params_m": PAPER_PARAMS_M, "gflops": PAPER_GFLOPS, "fps": PAPER_FPS},
        }

    def against_paper(self, ablation: str | None = None) -> dict[str, float] | None:
        """Our count against the paper's Table 1, in percent (``params_pct``, ``flops_pct``), where the two describe
        the same thing: the paper preset, the full model, 256×256, batch 1. None otherwise."""
        if self.preset != "paper" or self.resolution != 256 or self.batch != 1 or ablation:
            return None
        total = self.total
        return {"params_pct": 100 * (total.params / 1e6 / PAPER_PARAMS_M - 1),
                "flops_pct": 100 * (total.paper_flops / 1e9 / PAPER_GFLOPS - 1)}


def count_module(module: nn.Module, *inputs: torch.Tensor) -> tuple[int, int, dict[str, tuple[int, int]]]:
    """(params, dense MACs, {submodule path: (dense MACs, scan FLOPs)}) of one forward pass of ``module``.

    Works for any module; the M²S²L scans are counted when the model is built with ``scan_backend="op"``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    _register_scan_formula()
    counter = FlopCounterMode(display=False)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), counter:
            module(*inputs)
    finally:
        module.train(was_training)
    per_module = {}
    for path, ops in counter.get_flop_counts().items():
        scan = sum(v for op, v in ops.items() if str(op).startswith("m2s2l.selective_scan"))
        dense = sum(ops.values()) - scan
        per_module[path] = (dense // 2, scan)
    params = sum(p.numel() for p in module.parameters())
    total_dense, _ = per_module.get("Global", (0, 0))
    return params, total_dense, per_module


def _has_counted_ancestor(path: str, per_module: dict) -> bool:
    parts = path.split(".")
    return any(".".join(parts[:i]) in per_module for i in range(2, len(parts)))


def profile_model(preset: str = "paper", resolution: int | None = None, batch: int = 1, **overrides) -> ProfileResult:
    """Count parameters, MACs and scan FLOPs of a preset per component (spatial, temporal, …)."""
    from m2s2l_edge.models import create_model
    from m2s2l_edge.models.m2s2l import MODULE_GROUPS

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if resolution is not None:
        overrides["image_size"] = resolution
    model = create_model(preset, scan_backend="op", **overrides)
    cfg = model.cfg
    clip = torch.zeros(batch, cfg.clip_len, cfg.in_channels, cfg.image_size, cfg.image_size)
    _, _, per_module = count_module(model, clip)
    root = type(model).__name__
    result = ProfileResult(preset=cfg.name, resolution=cfg.image_size, batch=batch)
    for group, children in MODULE_GROUPS.items():
        g = GroupCount()
        for child in children:
            sub = getattr(model, child, None)
            if sub is None:
                continue
            g.params += sub.numel() if isinstance(sub, nn.Parameter) else sum(p.numel() for p in sub.parameters())
            # Containers (ModuleList) are never called, so sum the outermost called modules under this child.
            prefix = f"{root}.{child}"
            for path, (macs, scan) in per_module.items():
                if path == prefix or (path.startswith(prefix + ".") and not _has_counted_ancestor(path, per_module)):
                    g.macs += macs
                    g.scan += scan
        result.groups[group] = g
    counted = sum(g.macs for g in result.groups.values()), sum(g.scan for g in result.groups.values())
    total = per_module.get("Global", (0, 0))
    if total != counted:  # operations outside every group (none today): report them rather than drop them
        result.groups["other"] = GroupCount(macs=total[0] - counted[0], scan=total[1] - counted[1])
    return result


def time_forward(preset: str = "paper", *, resolution: int | None = None, batch: int = 1, device: str = "cpu",
                 warmup: int = 3, iterations: int = 10, on_call: Callable[[int, int], None] | None = None,
                 **overrides) -> dict:
    """Time the inference forward pass of a preset with fresh weights, in its deployed form (BatchNorm folded,
    multi-scale convolutions merged), on random clips; what `m2s2l-edge profile --fps` reports.

    Rows: ``fp32 eager`` on every device; on CUDA also ``fp16 eager`` and ``fp16 cuda-graph`` (one forward captured
    on static buffers and replayed, which removes the launch overhead that dominates batch 1). Each row is
    ``{"mode", "latency": LatencyStats.as_dict()}``, timed with device synchronisation; the result follows
    ``m2s2l_edge.efficiency.benchmarking``'s schema (``format_summary`` prints it). Raises RuntimeError for a CUDA
    device that PyTorch cannot see, ValueError for bad counts. ``on_call(done, total)``: see ``time_callable``.
    """
    from m2s2l_edge.efficiency.benchmarking import (
        capture_cuda_graph,
        load_average,
        machine_info,
        synchronizer,
        time_callable,
    )
    from m2s2l_edge.models import create_model
    from m2s2l_edge.models.fold import optimize_for_inference

    on_cuda = torch.device(device).type == "cuda"
    if on_cuda and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: no CUDA device is visible to PyTorch (torch.cuda.is_available() is "
                           "False)")
    if resolution is not None:
        overrides = {**overrides, "image_size": resolution}
    load_before = load_average()
    model = create_model(preset, **overrides).eval().to(device)
    optimize_for_inference(model)
    cfg = model.cfg
    clip = torch.randn(batch, cfg.clip_len, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
    sync = synchronizer(device)

    def forward(m, x):
        with torch.inference_mode():
            return m.predict(x)

    def timed(fn) -> dict:
        return time_callable(fn, warmup=warmup, iterations=iterations, batch=batch, synchronize=sync,
                             on_call=on_call).as_dict()

    rows = [{"mode": "fp32 eager", "latency": timed(lambda: forward(model, clip))}]
    if on_cuda:
        half, clip_h = model.half(), clip.half()
        rows.append({"mode": "fp16 eager", "latency": timed(lambda: forward(half, clip_h))})
        graph = capture_cuda_graph(lambda: forward(half, clip_h))
        rows.append({"mode": "fp16 cuda-graph", "latency": timed(graph.replay)})
    return {
        "device": device,
        "model": {"preset": cfg.name},
        "input": {"name": "clip", "shape": list(clip.shape), "dtype": "float32"},
        "config": {"batch": batch, "warmup": warmup, "iterations": iterations},
        "rows": rows,
        "machine": machine_info(),
        "load_average": {"before": load_before, "after": load_average()},
    }
