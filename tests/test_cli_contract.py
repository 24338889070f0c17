"""The CLI's one vocabulary and its error contract, command by command.

Each audit case of the error contract is one test: the exit code, the single ``error:`` line, and, where the check
happens up front, that nothing was written. Unlabelled footage is scored end to end on a generated video.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from m2s2l_edge.cli.app import app
from m2s2l_edge.cli.options import VOCABULARY

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from m2s2l_edge.cli.app import main; main()"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(result, code: int, *fragments: str) -> str:
    """The single `error:` line of a failed command (logging lines aside), checked for ``fragments``."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(("INFO", "WARNING"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]


# --- the vocabulary -------------------------------------------------------------------------------------------------


def _options() -> dict[str, set[str]]:
    """{option spelling: {commands that take it}} over the whole command tree (Typer's Click commands)."""
    import typer.main

    found: dict[str, set[str]] = {}

    def walk(command, path: str) -> None:
        for param in command.params:
            for opt in (*param.opts, *param.secondary_opts):
                if opt.startswith("-"):
                    found.setdefault(opt, set()).add(path or "m2s2l-edge")
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return found


def test_every_option_is_in_the_vocabulary():
    options = _options()
    assert {"--weights", "--onnx", "--batch", "--iterations", "--json", "--overwrite"} <= set(options)
    outside = {opt: sorted(cmds) for opt, cmds in options.items() if opt not in VOCABULARY}
    assert not outside, f"options outside options.VOCABULARY (add them there and to the README's table): {outside}"
    for old in ("--backend", "--torch", "--iters", "--batch-size", "--half", "--python-scan", "--model-path"):
        assert old not in options, f"{old} is an old spelling"


def test_every_vocabulary_entry_is_an_option_in_use():
    # The vocabulary is the list of what the CLI takes, not of what it once took or might take.
    unused = sorted(set(VOCABULARY) - set(_options()) - {"--help"})  # --help is click's own
    assert not unused, f"options.VOCABULARY lists options no command takes: {unused}"


def test_every_option_in_use_is_in_the_readme_table():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Options", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(-[-\w]+)`", section, flags=re.M))
    missing = sorted(set(_options()) - documented)
    assert not missing, f"README 'Options' table lacks: {missing}"
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(-[-\w]+)`[^|]*\|[^|]*\| ([^|]+) \|$", section, re.M)}
    for opt, commands in _options().items():
        for command in commands:
            assert command.split()[-1] in rows.get(opt, ""), f"README: {opt} row does not name `{command}`"


def test_readme_documents_the_exit_codes():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Exit codes", 1)[1].split("\n## ", 1)[0]
    for code in ("0", "1", "2", "3", "130"):
        assert re.search(rf"^\| {code} \|", section, flags=re.M), f"exit code {code} missing"


def test_every_phony_make_target_has_a_recipe():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    phony = re.search(r"^\.PHONY:(.*)$", makefile, flags=re.M).group(1).split()
    lines = makefile.splitlines()
    for target in phony:
        (index,) = [i for i, line in enumerate(lines) if re.match(rf"^{re.escape(target)}:", line)]
        assert index + 1 < len(lines) and lines[index + 1].startswith("\t"), f"make {target} has no recipe"


def test_no_command_module_imports_another():
    import ast

    for module in sorted((REPO / "m2s2l_edge" / "cli").glob("*_cmd.py")):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        others = sorted(m for m in imported if m.startswith("m2s2l_edge.cli.") and m.endswith("_cmd"))
        assert not others, f"{module.name} imports {others}: shared pieces belong in a cli/ helper module"


@pytest.mark.parametrize("args", [
    ["profile", "--preset", "tiny", "--fps", "--device", "gpu"],
    ["bench", "--preset", "tiny", "--device", "cuda:x"],
    ["train", "--data", ".", "--dataset", "custom", "--device", "mps"],
    ["eval", "--data", ".", "--weights", str(REPO / "pyproject.toml"), "--device", "CUDA"],
])
def test_a_bad_device_is_one_line_not_pytorchs_list(args):
    line = one_error_line(invoke(*args), 1, "expected cpu, cuda or cuda:N")
    assert "xla" not in line and "Expected one of" not in line  # PyTorch's own list of device types


# --- shared fixtures: footage, a checkpoint, a folder nobody can write ---------------------------------------------


def _write_video(path: Path, frames: int, size: int = 64, fourcc: str = "mp4v") -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25.0, (size, size))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(frames):
        # A bright square moving right over a gradient; frame 9 gets a sudden foreign blob.
        frame = np.stack([(xx + yy) % 256, (2 * xx) % 256, (3 * yy) % 256], axis=2).astype(np.uint8)
        x = (3 * i) % (size - 12)
        frame[20:32, x:x + 12] = 250
        if i == 9:
            frame[40:60, 40:60] = (0, 0, 255)
        writer.write(np.ascontiguousarray(frame))
    writer.release()
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny checkpoint with fresh weights (seed 0): scoring needs a model, not a good one."""
    from m2s2l_edge.artifacts.checkpoint import save_checkpoint
    from m2s2l_edge.models import create_model

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, create_model("tiny", seed=0), extra={"dataset": "custom"})
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return _write_video(tmp_path_factory.mktemp("footage") / "clip.mp4", 14)


@pytest.fixture
def unwritable(tmp_path):
    """A folder the current user cannot create files in, also as root (os.access says yes to root everywhere):
    a read-only folder for a normal user; sysfs for root, where even root cannot create a file."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    folder = Path("/sys/kernel")
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        yield folder
        return
    os.close(fd)
    os.unlink(name)
    pytest.skip("this machine lets root create files in /sys/kernel, so no folder here is unwritable for root")


# --- audit cases: bad input is exit 1 and one line, checked before any work ----------------------------------------


def test_garbage_mat_labels(clip, weights, tmp_path):
    labels = tmp_path / "labels.mat"
    labels.write_bytes(b"MATLAB 5.0 MAT-file, but then garbage \x00\x01\x02" * 8)
    out = tmp_path / "eval"
    result = invoke("eval", "--data", clip, "--weights", weights, "--labels", labels, "--out", out)
    one_error_line(result, 1, str(labels), "not a readable MATLAB .mat label file")
    assert not out.exists()


def test_pickled_npy_labels_name_the_file(clip, weights, tmp_path):
    labels = tmp_path / "labels.npy"
    np.save(labels, np.array([{"frame": 1}], dtype=object), allow_pickle=True)
    out = tmp_path / "eval"
    result = invoke("eval", "--data", clip, "--weights", weights, "--labels", labels, "--out", out)
    one_error_line(result, 1, str(labels), "holds Python objects")
    assert not out.exists()


def test_profile_json_into_a_missing_folder_is_made(tmp_path):
    target = tmp_path / "new" / "deeper" / "p.json"
    result = invoke("profile", "--preset", "tiny", "--json", target)
    assert result.exit_code == 0, result.output
    assert json.loads(target.read_text())["preset"] == "tiny"


def test_profile_json_into_an_unwritable_folder(unwritable):
    target = unwritable / "m2s2l-test" / "p.json"
    result = invoke("profile", "--preset", "tiny", "--json", target)
    one_error_line(result, 1, "cannot write --json", "not writable")
    assert not target.parent.exists()
    assert "paper figures" not in result.output  # refused before the profile ran


@pytest.mark.parametrize("resolution", ["0", "-64"])
def test_non_positive_resolution_is_a_config_error(resolution):
    one_error_line(invoke("profile", "--preset", "tiny", "--resolution", resolution), 1,
                   "resolution (image_size) must be a positive integer", resolution)


def test_negative_set_value_is_a_config_error(tmp_path):
    out = tmp_path / "run"
    result = invoke("train", "--data", tmp_path, "--dataset", "custom", "--preset", "tiny", "--set", "dim=-4",
                    "--out", out)
    one_error_line(result, 1, "dim must be a positive integer, got -4")
    assert not out.exists()


@pytest.mark.parametrize("command", ["eval", "train", "export"])
def test_an_unwritable_output_is_refused_before_the_work(command, clip, weights, unwritable):
    out = unwritable / "m2s2l-test-out"
    if command == "eval":
        args = ["eval", "--data", clip, "--weights", weights, "--out", out]
    elif command == "train":
        args = ["train", "--data", clip, "--dataset", "custom", "--preset", "tiny", "--out", out]
    else:
        args = ["export", "--weights", weights, "--out", out / "m.onnx", "--no-check"]
    one_error_line(invoke(*args), 1, "cannot write --out", "not writable")
    assert not out.exists()


def test_nothing_to_score_is_one_line_not_sklearns(weights, tmp_path):
    short = _write_video(tmp_path / "short.mp4", 4)  # the tiny preset needs 4 past frames before a prediction
    out = tmp_path / "eval"
    line = one_error_line(invoke("eval", "--data", short, "--weights", weights, "--out", out), 1,
                          "no frame can be scored")
    assert "0 sample(s)" not in line
    assert not out.exists()


def test_export_refuses_to_overwrite_without_the_flag(weights, tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"an earlier export")
    one_error_line(invoke("export", "--weights", weights, "--out", target, "--no-check"), 1,
                   f"--out {target} exists; pass --overwrite")
    assert target.read_bytes() == b"an earlier export"


# --- Ctrl-C: exit 130 and one line saying what was kept ------------------------------------------------------------


def _interrupt_when(proc: subprocess.Popen, ready, what: str, limit: float = 300) -> tuple[int, str]:
    deadline = time.monotonic() + limit
    try:
        while not ready():
            assert proc.poll() is None, f"the command ended before {what}: {proc.communicate()[1]}"
            assert time.monotonic() < deadline, f"{what} did not happen in {limit:.0f} s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stderr


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(("INFO", "WARNING"))]


def _block_sigint() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


@pytest.mark.parametrize("parent", ["clean", "sigint_blocked"])
def test_ctrl_c_during_export_keeps_nothing(tmp_path, parent):
    """SIGINT to a real `m2s2l-edge export` once it is exporting (its temporary output exists): exit 130, one line,
    no model, no temporaries; never PyTorch's 'Create an issue' text. ``sigint_blocked``: the signal mask is
    inherited across exec, so a parent (thread) that blocked SIGINT starts the command with it blocked; the command
    still takes Ctrl-C (before the CLI unblocked it, this export ran to its end and exited 0 with the model
    written)."""
    out = tmp_path / "m.onnx"
    proc = subprocess.Popen([*CLI, "export", "--preset", "tiny", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=_block_sigint if parent == "sigint_blocked" else None)
    code, stderr = _interrupt_when(proc, lambda: any(tmp_path.glob(".m.onnx.*.tmp")), "the export started")
    assert code == 130, stderr
    assert _error_lines(stderr) == [f"error: interrupted; nothing was written to {out}"], stderr
    assert "Create an issue" not in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_ctrl_c_during_training_keeps_the_last_epoch(tmp_path):
    from m2s2l_edge.artifacts.checkpoint import read_checkpoint
    from m2s2l_edge.data import generate_dataset

    generate_dataset(tmp_path / "data", n_train=2, n_test=1, frames=30, size=64, seed=0)
    out = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "data"), "--dataset", "synthetic", "--preset", "tiny", "--stride", "4",
            "--batch", "4", "--epochs", "50", "--out", str(out)]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    code, stderr = _interrupt_when(proc, lambda: (out / "history.json").exists(), "epoch 1 was saved")
    assert code == 130, stderr
    epoch = read_checkpoint(out / "last.pt")["epoch"]
    assert _error_lines(stderr) == [
        f"error: interrupted; kept {out / 'last.pt'} (epoch {epoch}), the last complete epoch; continue with the "
        "same command and --resume"], stderr
    assert not list(out.glob(".*.tmp"))


# --- scoring unlabelled footage --------------------------------------------------------------------------------------


def test_eval_scores_an_unlabelled_video(clip, weights, tmp_path):
    out = tmp_path / "scored"
    # --score paper: the checks below are the published score's formula (custom footage defaults to `patch`).
    result = invoke("eval", "--data", clip, "--weights", weights, "--out", out, "--batch", "4", "--score", "paper")
    assert result.exit_code == 0, result.output
    assert "no AUC computed: the footage has no labels" in result.stdout
    data = json.loads((out / "results.json").read_text())
    assert data["labelled"] is False and data["micro_auc"] is None and data["dataset"] == "custom"
    (row,) = data["per_video"]
    assert row["scored_frames"] == 14 - 4 and row["auc"] is None
    scores = np.load(out / row["scores_file"])
    assert scores.shape == (10,) and scores.min() == 0.0 and scores.max() == 1.0  # min-max per video
    table = np.genfromtxt(out / row["frames_file"], delimiter=",", names=True)
    assert list(table["frame"]) == list(range(4, 14))
    fused = data["lambda"] * table["psnr_app"] + (1 - data["lambda"]) * table["psnr_mot"]
    np.testing.assert_allclose(table["fused_psnr"], fused, atol=2e-4)
    # The score is 1 − min-max of the fused PSNR: the lowest fused PSNR is the most anomalous frame.
    assert int(table["frame"][np.argmin(table["fused_psnr"])]) == int(table["frame"][np.argmax(scores)])
    assert (out / "scores_overview.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "plots" / "clip.png").is_file() and not (out / "roc.png").exists()


def test_eval_scores_a_folder_of_videos_and_json_to_stdout(weights, tmp_path):
    folder = tmp_path / "cams"
    _write_video(folder / "a.avi", 10, fourcc="MJPG")
    _write_video(folder / "b.avi", 12, fourcc="MJPG")
    out = tmp_path / "scored"
    result = invoke("eval", "--data", folder, "--weights", weights, "--out", out, "--no-plots", "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # stdout holds the JSON only
    assert [v["name"] for v in data["per_video"]] == ["a", "b"]
    assert [v["scored_frames"] for v in data["per_video"]] == [6, 8]
    assert "no AUC computed" in result.stderr


def test_eval_never_mixes_two_runs(clip, weights, tmp_path):
    out = tmp_path / "scored"
    assert invoke("eval", "--data", clip, "--weights", weights, "--out", out).exit_code == 0
    before = (out / "results.json").read_bytes()
    one_error_line(invoke("eval", "--data", clip, "--weights", weights, "--out", out, "--no-plots"), 1,
                   "already holds files; pass --overwrite")
    assert (out / "results.json").read_bytes() == before and (out / "plots").is_dir()
    result = invoke("eval", "--data", clip, "--weights", weights, "--out", out, "--no-plots", "--overwrite")
    assert result.exit_code == 0, result.output
    # The earlier run's plots are gone with it: the folder holds the second run's files only.
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "results.json", "scores"]
    assert not list(tmp_path.glob(".scored.*"))
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("not an evaluation")
    one_error_line(invoke("eval", "--data", clip, "--weights", weights, "--out", elsewhere, "--overwrite"), 1,
                   "not an earlier evaluation")
    assert (elsewhere / "notes.txt").read_text() == "not an evaluation"


def test_a_killed_evaluations_folder_is_removed_by_the_next_run(clip, weights, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".scored.{int(dead.stdout)}.abc123.tmp"
    (stale / "scores").mkdir(parents=True)
    (stale / "scores" / "half.npy").write_bytes(b"half")
    assert invoke("eval", "--data", clip, "--weights", weights, "--out", tmp_path / "scored",
                  "--no-plots").exit_code == 0
    assert not stale.exists()


@pytest.mark.skipif(any(__import__("importlib").util.find_spec(m) is None
                        for m in ("onnx", "onnxruntime", "onnxruntime_extensions")),
                    reason="needs onnx, onnxruntime and onnxruntime-extensions (pip install 'm2s2l-edge[onnx]')")
def test_eval_runs_the_default_plugin_export_on_the_cpu(clip, exports, tmp_path):
    from m2s2l_edge.ops import ort_library
    from m2s2l_edge.runtime.ort_session import NATIVE_SCAN_PATH

    out = tmp_path / "ort"
    result = invoke("eval", "--data", clip, "--onnx", exports["plugin"], "--out", out, "--no-plots", "--threads", 1)
    assert result.exit_code == 0, result.output
    expected = NATIVE_SCAN_PATH if ort_library.is_available() else "SelectiveScan: our CPU kernel via onnxruntime-ext"
    assert expected in result.stdout
    data = json.loads((out / "results.json").read_text())
    assert data["backend"] == "onnxruntime" and data["selective_scan"].startswith(expected)
    assert data["per_video"][0]["scored_frames"] == 10


def test_library_chatter_stays_out_of_the_console_unless_verbose(weights, tmp_path):
    # A truncated MP4: FFmpeg itself prints a line about it ("[mov,mp4,...] error reading header"); the user should see
    # our one line, and FFmpeg's only with --verbose.
    import cv2

    whole = tmp_path / "whole.mp4"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 64))
    for i in range(20):
        writer.write(np.full((64, 64, 3), 10 * i, np.uint8))
    writer.release()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(whole.read_bytes()[:-400])
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    quiet = subprocess.run([*CLI, "eval", "--data", str(broken), "--weights", str(weights), "--no-plots", "--out",
                            str(tmp_path / "e1")], capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 1
    assert quiet.stderr.strip().splitlines() == [f"error: video 'broken' cannot be opened by OpenCV (corrupt or "
                                                 f"unsupported): {broken}"]
    loud = subprocess.run([*CLI, "--verbose", "eval", "--data", str(broken), "--weights", str(weights), "--no-plots",
                           "--out", str(tmp_path / "e2")], capture_output=True, text=True, env=env, timeout=300)
    assert loud.returncode == 1 and "[mov,mp4,m4a,3gp,3g2,mj2 @ " in loud.stderr  # FFmpeg's own line
