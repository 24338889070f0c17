"""Training under torchrun: two gloo processes on the CPU take the optimisation steps of one process with the same
global batch, rank 0 alone writes, a two-process run resumes in one process, and a bad --batch is one line.

Real processes throughout: ``python -m torch.distributed.run`` (torchrun) starting ``m2s2l_edge train`` on a tiny
generated data set. Per-step losses come from the trainer's DEBUG lines (``-v``) of rank 0, which logs the mean over
processes. Which files each rank opens is recorded by a Python audit hook (``sys.addaudithook``) that a
``sitecustomize`` on PYTHONPATH installs in every worker.

Tolerances. The two runs compute the same sums in a different order (the all-reduces of gradients and BatchNorm
statistics add the processes' partial sums), so they agree to float32 rounding, not bitwise: the first step's
loss (the same weights, only the forward's reduction order differs) to 1e-5 relative. Later steps inherit the
rounding through Adam, whose early updates are close to lr·sign(gradient) and so turn a 1e-6 relative change of a
gradient into whole-lr steps of the few weights whose gradient is mere rounding: measured at the lr used here
(2e-5), per-step losses of 4 steps agree to ~2e-5 relative; we allow 1e-4, while each step moves the loss by
far more (checked), so equal losses cannot come from a loss that does not move.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from m2s2l_edge.training.distributed import DistEnv, ShardSampler, from_env, local_batch, usable_clips
from m2s2l_edge.training.sampler import epoch_order

# tiny preset at 32×32; two 30-frame videos, a clip every 6th frame: 10 clips, 2 steps of 4 per epoch.
TRAIN = ["--dataset", "synthetic", "--preset", "tiny", "--set", "image_size=32", "--stride", "6", "--lr", "2e-5"]
STEP = re.compile(r"epoch (\d+) step (\d+): loss (\S+)")
FIRST_STEP_RTOL = 1e-5
RTOL = 1e-4
TIMEOUT = 600  # seconds per launch: generous for a loaded machine; a normal launch takes 10-40 s

SITECUSTOMIZE = '''
import os, sys
_root = os.environ.get("M2S2L_AUDIT_ROOT")
_log_dir = os.environ.get("M2S2L_AUDIT_LOG")
_rank = os.environ.get("RANK")
if _root and _log_dir and _rank is not None:
    _log = open(os.path.join(_log_dir, f"rank{_rank}.log"), "a", buffering=1)
    _events = {"open", "os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.copyfile", "shutil.move"}

    def _hook(event, args):
        if event not in _events:
            return
        for arg in args:
            if isinstance(arg, (str, bytes, os.PathLike)):
                path = os.path.abspath(os.fsdecode(arg))
                if path == _root or path.startswith(_root + os.sep):
                    mode = args[1] if event == "open" and len(args) > 1 else ""
                    _log.write(f"{event} {mode} {path}\\n")

    sys.addaudithook(_hook)
'''


# --- the data order (no processes needed) --------------------------------------------------------------------------


@pytest.mark.parametrize("num_clips,batch,world", [(14, 4, 2), (10, 4, 2), (23, 6, 3), (8, 8, 4)])
def test_shards_split_each_global_batch_of_the_single_process_epoch(num_clips, batch, world):
    for epoch in (1, 2):
        order = epoch_order(num_clips, seed=3, epoch=epoch)
        shards = []
        for rank in range(world):
            sampler = ShardSampler(num_clips, seed=3, global_batch=batch, rank=rank, world_size=world)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
            assert len(shards[-1]) == len(sampler)
        steps = usable_clips(num_clips, batch) // batch
        assert steps == num_clips // batch and all(len(s) == steps * batch // world for s in shards)
        b = batch // world
        for k in range(steps):
            # Step k's slices, gathered in rank order, are the single-process batch k, in its order.
            assert [i for s in shards for i in s[k * b:(k + 1) * b]] == order[k * batch:(k + 1) * batch]
        flat = [i for s in shards for i in s]
        assert len(set(flat)) == len(flat)  # disjoint
        assert sorted(flat) == sorted(order[:steps * batch])  # the union is the single-process epoch


def test_shards_depend_on_seed_and_epoch_only():
    def shard(seed, epoch, rank=1):
        s = ShardSampler(20, seed=seed, global_batch=4, rank=rank, world_size=2)
        s.set_epoch(epoch)
        return list(s)

    assert shard(0, 2) == shard(0, 2)
    assert shard(0, 2) != shard(0, 3) and shard(0, 2) != shard(1, 2)


def test_global_batch_and_environment_are_checked():
    assert local_batch(8, 4) == 2
    with pytest.raises(ValueError, match=r"--batch 6 is the global batch and must be divisible by the 4 processes"):
        local_batch(6, 4)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        usable_clips(3, 4)
    assert from_env({}) is None
    assert from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == DistEnv(1, 2, 1)
    with pytest.raises(ValueError, match="LOCAL_RANK missing"):
        from_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="RANK < WORLD_SIZE"):
        from_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_outside_torchrun_nothing_is_joined_and_a_bad_batch_never_reaches_the_rendezvous():
    from m2s2l_edge.training.distributed import joined_from_env

    with joined_from_env("cpu", 3, environ={}) as group:
        assert group is None
    # Three processes cannot share a global batch of 4: refused before any rendezvous is attempted (none could
    # succeed here: no MASTER_ADDR, no peers).
    with pytest.raises(ValueError, match="--batch 4 is the global batch and must be divisible by the 3 processes"):
        joined_from_env("cpu", 4, environ={"RANK": "0", "WORLD_SIZE": "3", "LOCAL_RANK": "0"})


# --- real processes ------------------------------------------------------------------------------------------------


def _env(tmp: Path, audit_root: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONUNBUFFERED="1")
    if audit_root is not None:
        hook = tmp / "audit_hook"
        hook.mkdir(exist_ok=True)
        (hook / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH", "")) if p)
        env["M2S2L_AUDIT_ROOT"] = str(audit_root.resolve())
        env["M2S2L_AUDIT_LOG"] = str(tmp)
    return env


class Launch:
    """One command started in the background, its stdout and stderr in files (no pipe can fill up)."""

    def __init__(self, cmd: list, tmp: Path, env: dict) -> None:
        self.tmp = tmp
        self.stdout, self.stderr = tmp / "stdout.txt", tmp / "stderr.txt"
        with open(self.stdout, "w") as out, open(self.stderr, "w") as err:
            self.proc = subprocess.Popen([str(c) for c in cmd], env=env, stdout=out, stderr=err)

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def text(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")

    def rank_logs(self) -> dict[int, str]:
        """Each rank's stdout + stderr (torchrun --redirects 3)."""
        logs = {}
        for rank in (0, 1):
            files = sorted((self.tmp / "torchrun_logs").rglob(f"attempt_*/{rank}/std*.log"))
            assert files, f"no logs of rank {rank}: {self.text()[-2000:]}"
            logs[rank] = "".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
        return logs


def _one_process(args: list, tmp: Path) -> Launch:
    return Launch([sys.executable, "-m", "m2s2l_edge", "-v", "train", *args], tmp, _env(tmp))


def _torchrun(command: list, args: list, tmp: Path, audit_root: Path | None = None) -> Launch:
    """``command`` in 2 processes under torchrun (a free port on localhost), each rank's output in its own files."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--redirects", "3", "--log-dir", tmp / "torchrun_logs", *command, "train", *args]
    return Launch(cmd, tmp, _env(tmp, audit_root))


def _losses(text: str) -> dict[int, float]:
    return {int(m.group(2)): float(m.group(3)) for m in STEP.finditer(text)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from m2s2l_edge.data import generate_dataset

    root = tmp_path_factory.mktemp("ddp_data")
    generate_dataset(root, n_train=2, n_test=1, frames=30, size=64, seed=0)
    return root


CONSOLE_SCRIPT = Path(sys.executable).with_name("m2s2l-edge")


@pytest.fixture(scope="module")
def launches(data, tmp_path_factory):
    """The three independent launches, started together (a loaded machine runs them in about the longest's time):
    the one-process reference (2 epochs, epoch 1's checkpoint kept), two gloo processes for epoch 1 of the same
    run with each rank's file accesses in the run folder recorded, and a --batch that 2 does not divide (through
    the console script)."""
    tmp = {name: tmp_path_factory.mktemp(f"ddp_{name}") for name in ("one", "two", "bad")}
    started = {
        "one": _one_process(["--data", data, *TRAIN, "--batch", 4, "--epochs", 2, "--keep-epochs",
                             "--out", tmp["one"] / "run"], tmp["one"]),
        "two": _torchrun(["-m", "m2s2l_edge", "-v"], ["--data", data, *TRAIN, "--batch", 4, "--epochs", 1,
                                                       "--out", tmp["two"] / "run"], tmp["two"],
                         audit_root=tmp["two"] / "run"),
    }
    if CONSOLE_SCRIPT.is_file():
        started["bad"] = _torchrun(["--no-python", CONSOLE_SCRIPT], ["--data", data, *TRAIN, "--batch", 3,
                                                                     "--epochs", 1, "--out", tmp["bad"] / "run"],
                                   tmp["bad"])
    for launch in started.values():
        launch.wait()
    return started


@pytest.fixture(scope="module")
def one(launches):
    launch = launches["one"]
    assert launch.proc.returncode == 0, launch.text()[-3000:]
    losses = _losses(launch.text())
    assert sorted(losses) == [1, 2, 3, 4], launch.text()[-3000:]
    return launch.tmp / "run", losses


@pytest.fixture(scope="module")
def two(launches):
    launch = launches["two"]
    logs = launch.rank_logs()
    assert launch.proc.returncode == 0, logs
    audit = {}
    for rank in (0, 1):
        path = launch.tmp / f"rank{rank}.log"
        assert path.is_file(), f"the audit hook did not start on rank {rank}"
        audit[rank] = path.read_text(encoding="utf-8")
    return launch.tmp / "run", logs, audit


@pytest.mark.slow
def test_two_processes_take_the_steps_of_one(one, two):
    _, ref = one
    out, logs, _ = two
    got = _losses(logs[0])
    assert sorted(got) == [1, 2], logs[0][-3000:]
    assert got[1] == pytest.approx(ref[1], rel=FIRST_STEP_RTOL)
    assert got[2] == pytest.approx(ref[2], rel=RTOL)
    assert abs(ref[2] - ref[1]) > 10 * RTOL * ref[1]  # the step changed the loss: the match is not a constant's
    # The layers that see the whole batch: the memory items moved by the global batch's queries and BatchNorm's
    # running statistics of the global batch, as in one process (state after epoch 1 in both).
    mine = torch.load(out / "last.pt", weights_only=True)["model"]
    theirs = torch.load(one[0] / "epoch_001.pt", weights_only=True)["model"]
    assert set(mine) == set(theirs)
    buffers = [k for k in mine if k.endswith(("items", "running_mean", "running_var"))]
    assert any(k.endswith("items") for k in buffers) and any(k.endswith("running_var") for k in buffers)
    for key in buffers:
        # Adam's first steps move a weight by about ±lr whatever its gradient's size, so last-digit differences
        # between one process's and two processes' gradients flip a few weights by 2·lr, and what step 2's queries
        # and batch statistics see differs with them. How much depends on the CPU's kernels: measured 2026-12-07
        # (AVX-512 EPYC) with this fixture's runs, items differ by up to 1.7e-3 and running statistics by up to
        # 4.1e-5, beyond the tolerances that held on the earlier AVX2 machine. Each tolerance is 6-12x that. A process
        # without the other's queries (SyncMemoryBank off) moves items by up to 0.59, and per-process batch
        # statistics (GlobalBatchNorm2d off) move running statistics by up to 2.2e-2 and items by up to 0.43.
        tol = {"rtol": 0.0, "atol": 1e-2} if key.endswith("items") else {"rtol": 0.0, "atol": 5e-4}
        torch.testing.assert_close(mine[key], theirs[key], **tol, msg=lambda m, k=key: f"{k}: {m}")


@pytest.mark.slow
def test_rank_0_alone_writes_and_prints(two):
    out, logs, audit = two
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "last.pt", "loss.png"]
    assert audit[1] == "", f"rank 1 touched the run folder:\n{audit[1]}"
    # The hook sees rank 0's writes (so its silence on rank 1 means something): last.pt, history and plot.
    for name in ("last.pt", "history.json", "loss.png"):
        assert any(line.startswith(("open", "os.rename")) and line.endswith(name) for line in audit[0].splitlines()), \
            audit[0]
    assert "epoch 1/1" in logs[0] and "training clips" in logs[0]
    for text in ("epoch", "training clips", "trained", "error"):
        assert text not in logs[1], logs[1]
    assert len(json.loads((out / "history.json").read_text())) == 1


@pytest.mark.slow
def test_two_process_run_resumes_in_one_process(data, two, tmp_path):
    """Epoch 1 by two processes, epoch 2 by one: epoch 2's steps are those two processes take from the same
    checkpoint. (Not those of the uninterrupted one-process run: over a whole epoch, Adam's ±lr first steps turn the
    last-digit differences between one process and two into ~1e-4 of the loss, and the next step into ~3e-3.)"""
    runs = {}
    for name in ("one", "two"):
        runs[name] = tmp_path / name / "run"
        shutil.copytree(two[0], runs[name])  # the two-process run stays as it was for the other tests
    args = ["--data", data, *TRAIN, "--batch", 4, "--epochs", 2, "--resume"]
    one = _one_process([*args, "--out", runs["one"]], tmp_path / "one")
    both = _torchrun(["-m", "m2s2l_edge", "-v"], [*args, "--out", runs["two"]], tmp_path / "two")
    assert one.wait() == 0, one.text()[-3000:]
    assert both.wait() == 0, both.rank_logs()
    got, ref = _losses(one.text()), _losses(both.rank_logs()[0])
    assert sorted(got) == sorted(ref) == [3, 4], (one.text()[-3000:], ref)
    assert got[3] == pytest.approx(ref[3], rel=FIRST_STEP_RTOL)
    assert got[4] == pytest.approx(ref[4], rel=RTOL)
    # Step 4 follows the update of step 3, which needs the optimiser's state from the checkpoint: without it step 4's
    # loss is 9e-3 away.
    assert abs(got[4] - got[3]) > 10 * RTOL * got[3]
    history = json.loads((runs["one"] / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and history[-1]["step"] == 4


@pytest.mark.slow
def test_global_batch_not_divisible_is_one_line_from_rank_0(launches):
    if "bad" not in launches:
        pytest.skip(f"the console script is not installed beside {sys.executable} (pip install -e .)")
    launch = launches["bad"]
    logs = launch.rank_logs()
    assert launch.proc.returncode != 0
    lines = [line for line in logs[0].splitlines() if line.strip() and not line.startswith(("INFO", "DEBUG"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), logs[0]
    assert "--batch 3" in lines[0] and "2 processes" in lines[0]
    assert "Traceback" not in logs[0]
    assert logs[1].strip() == "", logs[1]
    assert not (launch.tmp / "run").exists()
