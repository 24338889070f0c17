"""One process of a data-parallel run, started by torchrun in tests/test_distributed.py.

``train DATA_ROOT OUT EPOCHS [--resume]``: the training run of that test (tiny preset, global batch 4, stride 4).
``step OUT``: one forward/backward of ``step_batch()`` through ``DistContext.wrap``, each rank on its slice; rank 0
saves the gradients and the buffers to OUT (a .pt file) for comparison with one process on the whole batch."""

from __future__ import annotations

import logging
import sys

import torch

from m2s2l_edge import distributed
from m2s2l_edge.config import LossConfig, TrainConfig, get_preset
from m2s2l_edge.train import DataConfig, RunConfig, seed_everything, train

MODEL = get_preset("tiny")
BATCH = 4
STRIDE = 4


def step_batch() -> torch.Tensor:
    """(4, T+1, 3, 64, 64) clips in [-1, 1]: smooth images moving a little from frame to frame."""
    g = torch.Generator().manual_seed(7)
    base = torch.rand(4, 1, 3, 16, 16, generator=g)
    frames = torch.cat([torch.roll(base, shifts=s, dims=-1) for s in range(MODEL.clip_len + 1)], dim=1)
    frames = torch.nn.functional.interpolate(frames.flatten(0, 1), size=(64, 64), mode="bilinear")
    return frames.view(4, MODEL.clip_len + 1, 3, 64, 64) * 2 - 1


def step_state(model, net, batch: torch.Tensor) -> dict:
    """Gradients of one step on ``batch`` and the buffers after it (BatchNorm statistics, memory items)."""
    from m2s2l_edge.losses import total_loss

    model.train()
    outputs = net(batch[:, :-1])
    loss, _ = total_loss({k: v.float() for k, v in outputs.items()}, batch[:, :-1], batch[:, -1], LossConfig())
    loss.backward()
    return {"loss": float(loss.detach()), "grads": {k: p.grad.clone() for k, p in model.named_parameters()
                                                    if p.grad is not None},
            "buffers": {k: b.clone() for k, b in model.named_buffers()}}


def one_step(out: str) -> None:
    from m2s2l_edge.models import M2S2L

    ctx = distributed.setup("cpu")
    seed_everything(0)
    model = M2S2L(MODEL)
    net = ctx.wrap(model)
    local = BATCH // ctx.world_size
    state = step_state(model, net, step_batch()[ctx.rank * local:(ctx.rank + 1) * local])
    state["loss"], _ = ctx.average(state["loss"], {})
    if ctx.is_main:
        torch.save(state, out)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv[0] == "step":
        one_step(argv[1])
        return 0
    root, out, epochs = argv[1], argv[2], int(argv[3])
    train(MODEL, TrainConfig(epochs=epochs, batch_size=BATCH, lr=2e-3), DataConfig(root, "synthetic", stride=STRIDE),
          RunConfig(out, resume="--resume" in argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
