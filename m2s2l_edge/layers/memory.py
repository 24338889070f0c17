"""MNAD-style memory bank (Park et al., CVPR 2020): read by attention over items, update during training.

The items are a buffer, not a parameter: they move only by the update rule below, never by the optimiser.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MemoryBank(nn.Module):
    """Shapes: query (B, C, h, w) → read (B, 2C, h, w) = [normalised query, memory read-out] (MNAD), or the
    read-out alone (B, C, h, w) with ``with_query=False``."""

    def __init__(self, num_items: int, dim: int, with_query: bool = True) -> None:
        super().__init__()
        self.with_query = with_query
        self.register_buffer("items", F.normalize(torch.randn(num_items, dim), dim=1))

    def forward(self, query: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b, c, h, w = query.shape
        q = F.normalize(query, dim=1).permute(0, 2, 3, 1).reshape(-1, c)  # (B·h·w, C)
        items = self.items.to(q.dtype)
        score = q @ items.t()  # (B·h·w, M)
        read = torch.softmax(score, dim=1) @ items  # (B·h·w, C)
        if self.with_query:
            out = torch.cat([q, read], dim=1).view(b, h, w, 2 * c).permute(0, 3, 1, 2)  # (B, 2C, h, w)
        else:
            out = read.view(b, h, w, c).permute(0, 3, 1, 2)  # (B, C, h, w)
        losses: dict[str, torch.Tensor] = {}
        if self.training:
            top2 = score.topk(min(2, items.shape[0]), dim=1).indices  # (B·h·w, 2)
            nearest = items[top2[:, 0]]
            # Compactness pulls queries to their nearest item; separateness keeps the second nearest a margin away.
            losses["compactness"] = F.mse_loss(q, nearest.detach())
            if top2.shape[1] > 1:
                losses["separateness"] = F.triplet_margin_loss(q, nearest.detach(), items[top2[:, 1]].detach(), 1.0)
            self._update(q.detach(), score.detach())
        return out, losses

    @torch.no_grad()
    def _update(self, q: torch.Tensor, score: torch.Tensor) -> None:
        """Each item moves towards the queries that chose it, weighted by how strongly each query chose it."""
        nearest = score.argmax(dim=1)  # (Q,)
        weight = torch.softmax(score, dim=0)  # (Q, M): over queries, per item
        weight = weight / weight.max(dim=0, keepdim=True).values.clamp_min(1e-12)
        mask = F.one_hot(nearest, self.items.shape[0]).to(q.dtype)  # (Q, M)
        delta = (weight * mask).t() @ q  # (M, C)
        # Rebind rather than copy_: the old items are still referenced by this step's autograd graph.
        self.items = F.normalize(self.items + delta.to(self.items.dtype), dim=1)
