"""The profiler's counts: a hand-countable module, the scan formula, and the paper preset's totals."""

from __future__ import annotations

import torch
from torch import nn

from m2s2l_edge.efficiency.profile import PAPER_GFLOPS, PAPER_PARAMS_M, count_module, profile_model, scan_flops
from m2s2l_edge.ops import selective_scan


class HandCounted(nn.Module):
    """conv 3→8 k3 on 10×10 (pad 1), linear 8→4 per position, one scan (B=1, KD=8, K=2, N=3, L=100)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)
        self.A = nn.Parameter(-torch.ones(8, 3))

    def forward(self, x):
        f = self.conv(x)  # (1, 8, 10, 10)
        u = f.flatten(2)  # (1, 8, 100)
        bc = torch.ones(1, 2, 3, 100)
        y = selective_scan(u, u, self.A, bc, bc, backend="op")
        return self.fc(y.transpose(1, 2))


def test_hand_countable_module():
    params, macs, per_module = count_module(HandCounted(), torch.zeros(1, 3, 10, 10))
    conv_macs = 10 * 10 * 8 * 3 * 3 * 3  # output positions × out channels × (in × k × k)
    fc_macs = 100 * 8 * 4
    assert params == (8 * 3 * 9 + 8) + (8 * 4 + 4) + 8 * 3
    assert macs == conv_macs + fc_macs
    assert per_module["HandCounted.conv"][0] == conv_macs
    assert per_module["Global"][1] == scan_flops(1, 8, 100, 3) == 9 * 100 * 8 * 3


def test_paper_preset_matches_paper_efficiency():
    result = profile_model("paper")
    total = result.total
    assert abs(total.params / 1e6 / PAPER_PARAMS_M - 1) <= 0.03, total.params
    assert abs(total.paper_flops / 1e9 / PAPER_GFLOPS - 1) <= 0.05, total.paper_flops
    assert total.true_flops == 2 * total.macs + total.scan
    assert set(result.groups) == {"spatial", "temporal", "decomposition", "memory", "decoders"}
    # Six scans: three SS2D (K=4, d_inner=512, L=1024/256/64) and three TMB (K=1, L=768/512/256).
    expected_scan = sum(scan_flops(1, 2048, L, 16) for L in (1024, 256, 64)) + sum(
        scan_flops(1, 512, L, 16) for L in (768, 512, 256)
    )
    assert total.scan == expected_scan
    assert result.groups["spatial"].scan + result.groups["temporal"].scan == expected_scan
    # The comparison `profile` prints: only where our count and Table 1 describe the same model and input.
    against = result.against_paper()
    assert against == {"params_pct": 100 * (total.params / 1e6 / PAPER_PARAMS_M - 1),
                       "flops_pct": 100 * (total.paper_flops / 1e9 / PAPER_GFLOPS - 1)}
    assert abs(against["params_pct"]) <= 3 and result.against_paper("M2") is None


def test_no_comparison_with_the_paper_for_another_model_or_input():
    assert profile_model("tiny").against_paper() is None
    assert profile_model("paper", batch=2).against_paper() is None
    assert profile_model("paper", resolution=128).against_paper() is None


def test_macs_scale_with_batch_and_params_do_not():
    one, two = profile_model("tiny", batch=1).total, profile_model("tiny", batch=2).total
    assert two.macs == 2 * one.macs and two.scan == 2 * one.scan and two.params == one.params
