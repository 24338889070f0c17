"""Against a real Triton Inference Server: the ``tritonserver`` 2.51 binary of the nvidia-pytriton wheel, on
127.0.0.1, serving the python model of a repository written by ``serve triton-repo`` (our ONNX Runtime runner).

The wheel lives in its own venv (``make triton-env``; the fixture builds it when missing). Tests skip, with the
reason, only where that venv cannot be built (no wheel for this platform, no network to PyPI)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import typer

pytest.importorskip("tritonclient", reason="tritonclient not installed (pip install 'm2s2l-edge[serve]')")

from m2s2l_edge.serve import triton_repo as tr  # noqa: E402
from m2s2l_edge.serve.local_server import LocalTritonServer, TritonEnv, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def triton_env() -> TritonEnv:
    """The nvidia-pytriton venv (``$M2S2L_TRITON_VENV``, else .venv-triton), built with ``make triton-env`` once."""
    if not sys.platform.startswith("linux"):
        pytest.skip("nvidia-pytriton's tritonserver is built for Linux only")
    venv = Path(os.environ.get("M2S2L_TRITON_VENV", ROOT / ".venv-triton"))
    if not (venv / ".installed").is_file():
        try:
            proc = subprocess.run(["make", "-s", "-C", str(ROOT), "triton-env", f"TRITON_VENV={venv}"],
                                  capture_output=True, text=True, timeout=1500)
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"the Triton venv could not be built ({e})")
        if proc.returncode != 0:
            pytest.skip("nvidia-pytriton could not be installed (make triton-env): "
                        + " ".join((proc.stderr or proc.stdout).split()[-40:]))
    env = TritonEnv(venv)
    env.check()
    return env


@pytest.fixture(scope="session")
def served_calibration(exports, tmp_path_factory) -> Path:
    """A calibration of the portable export (the stream score) on generated normal footage, to serve with it."""
    import cv2

    from m2s2l_edge.data.synthetic import render_video
    from m2s2l_edge.runtime import create_backend
    from m2s2l_edge.watch.calibration import save
    from m2s2l_edge.watch.pipeline import calibrate_footage

    root = tmp_path_factory.mktemp("served_calibration")
    frames = render_video(size=64, frames=80, seed=0, index=0, split="train").frames
    writer = cv2.VideoWriter(str(root / "normal.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 64))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    backend = create_backend("onnxruntime", exports["portable"], threads=1)
    save(calibrate_footage(backend, [str(root / "normal.avi")], model_path=str(exports["portable"])),
         root / "cam.calib.json")
    return root / "cam.calib.json"


@pytest.fixture(scope="session")
def served_repo(exports, served_calibration, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("triton") / "repo"
    tr.write_repository(repo, exports["portable"], config=tr.RepoConfig(max_batch=8, threads=1),
                        calibration=served_calibration)
    return repo


@pytest.fixture(scope="session")
def server(triton_env, served_repo, tmp_path_factory):
    srv = LocalTritonServer(triton_env, served_repo, (tr.PYTHON_MODEL,), tmp_path_factory.mktemp("tritonserver"))
    srv.start(timeout=240)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def local(exports):
    from m2s2l_edge.runtime import create_backend

    return create_backend("onnxruntime", exports["portable"], threads=1)


def _clips(n: int, seed: int, t: int = 4, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, t, 3, size, size)).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_psnrs_match_the_local_backend_on_a_video(protocol, server, local, exports, write_avi, tmp_path):
    from m2s2l_edge.artifacts.metadata import read_metadata
    from m2s2l_edge.data.sources import VideoFileSource
    from m2s2l_edge.evaluation.run import frame_terms
    from m2s2l_edge.runtime import create_backend
    from m2s2l_edge.runtime.base import backend_geometry

    url = server.grpc_url if protocol == "grpc" else server.http_url
    served = create_backend("triton", url, model=tr.PYTHON_MODEL)
    meta = read_metadata(exports["portable"])
    # Everything the client needs comes from the server, not from the file.
    assert backend_geometry(served) == backend_geometry(local) == (meta.clip_len, (meta.image_size, meta.image_size))
    assert served.metadata["lambda"] == meta.lam and served.metadata["config"] == meta.config
    video = VideoFileSource(write_avi(tmp_path / "cam.avi", 15, h=48, w=64))
    t, size = backend_geometry(local)
    local_terms = frame_terms(local, video, t, size, batch_size=4)
    served_terms = frame_terms(served, video, t, size, batch_size=3)  # other batches: other server batches
    idx_l, app_l, mot_l = (local_terms[k] for k in ("targets", "psnr_app", "psnr_mot"))
    idx_s, app_s, mot_s = (served_terms[k] for k in ("targets", "psnr_app", "psnr_mot"))
    assert len(app_l) == 15 - t
    np.testing.assert_array_equal(idx_s, idx_l)
    # Same runner, same ONNX; only ONNX Runtime's batch-dependent kernels may differ, far below a PSNR's precision.
    np.testing.assert_allclose(app_s, app_l, rtol=0, atol=1e-4)
    np.testing.assert_allclose(mot_s, mot_l, rtol=0, atol=1e-4)
    assert np.ptp(app_l) > 0.01  # the frames differ, so equal scores are not a constant


@pytest.mark.slow
def test_dynamic_batching_merges_concurrent_cameras(server, local):
    from m2s2l_edge.runtime import create_backend

    served = create_backend("triton", server.grpc_url, model=tr.PYTHON_MODEL)
    before = served.statistics()
    cameras, per_camera = 6, 5
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def camera(i: int) -> None:
        try:
            results[i] = [served.run(_clips(1, 100 * i + k)) for k in range(per_camera)]
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=camera, args=(i,)) for i in range(cameras)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=600)
    assert not errors, errors
    # The statistics can lag the replies (once 28 of 30 counted just after every reply was in): wait for them.
    deadline = time.monotonic() + 30
    while True:
        after = served.statistics()
        inferences = int(after["inference_count"]) - int(before["inference_count"])
        executions = int(after["execution_count"]) - int(before["execution_count"])
        if inferences >= cameras * per_camera or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert inferences == cameras * per_camera
    assert executions < inferences, f"{executions} executions for {inferences} requests: nothing was batched"
    # Batched together or not, each camera gets its own clip's predictions back.
    for i in (0, cameras - 1):
        want = local.run(_clips(1, 100 * i + per_camera - 1))
        np.testing.assert_allclose(results[i][-1]["frame_pred"], want["frame_pred"], atol=1e-5)


@pytest.mark.slow
def test_client_reconnects_when_the_server_is_killed_and_restarted(triton_env, served_repo, local, tmp_path):
    from m2s2l_edge.runtime import create_backend

    srv = LocalTritonServer(triton_env, served_repo, (tr.PYTHON_MODEL,), tmp_path / "srv")
    srv.start(timeout=240)
    try:
        served = create_backend("triton", srv.grpc_url, model=tr.PYTHON_MODEL, retries=1, run_retries=400,
                                retry_wait=0.5, timeout=60)
        done: list[int] = []
        outputs: list[dict] = []
        errors: list[BaseException] = []

        def camera() -> None:
            try:
                for k in range(12):
                    outputs.append(served.run(_clips(2, k)))
                    done.append(k)
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        worker = threading.Thread(target=camera)
        worker.start()
        deadline = time.monotonic() + 300
        while len(done) < 3 and worker.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(done) >= 3, errors
        srv.kill()  # a crash mid-run: requests in flight fail, the client keeps retrying
        time.sleep(1.0)
        srv.start(timeout=240)  # the same ports
        worker.join(timeout=600)
        assert not errors, errors
        assert done == list(range(12))
        assert served.reconnects >= 1
        for k in (0, 11):
            np.testing.assert_allclose(outputs[k]["motion_pred"], local.run(_clips(2, k))["motion_pred"], atol=1e-5)
    finally:
        srv.stop()


def _cli_error(capsys, server: str, model: str) -> tuple[int, str]:
    """What a command that opens ``--server`` / ``--model`` (through the shared CLI helpers) prints and exits with."""
    from m2s2l_edge.cli.errors import user_errors
    from m2s2l_edge.cli.options import model_source, open_backend

    capsys.readouterr()
    with pytest.raises(typer.Exit) as exit_info:
        with user_errors():
            open_backend(model_source(server=server, model=model), retries=1, retry_wait=0.1, timeout=10)
    return exit_info.value.exit_code, capsys.readouterr().err


def test_unreachable_server_is_one_line(capsys):
    for url in (f"grpc://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"):
        code, err = _cli_error(capsys, url, tr.PYTHON_MODEL)
        assert code == 3 and err.startswith(f"error: Triton server {url} is unreachable") and err.count("\n") == 1
    code, err = _cli_error(capsys, "ftp://127.0.0.1:8001", tr.PYTHON_MODEL)
    assert code == 1 and "expected grpc://HOST:PORT" in err and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_unknown_model_is_one_line_naming_the_served_ones(protocol, server, capsys):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    code, err = _cli_error(capsys, url, "m2s2l_nope")
    assert code == 1 and err.count("\n") == 1
    assert f"has no ready model 'm2s2l_nope' (ready: {tr.PYTHON_MODEL})" in err


@pytest.mark.slow
def test_watch_replay_through_the_server_gives_the_local_psnrs(server, local, write_avi, tmp_path):
    """``watch`` with the Triton backend (what ``watch --server URL --model NAME`` opens) on a replayed video: the
    same frames scored with the same raw PSNRs as with the local ONNX Runtime backend."""
    pytest.importorskip("m2s2l_edge.watch.service", reason="m2s2l_edge.watch (the watch command) is not in this tree")
    from m2s2l_edge.runtime import create_backend
    from m2s2l_edge.watch.cameras import cameras_from_sources
    from m2s2l_edge.watch.pipeline import WatchOptions
    from m2s2l_edge.watch.service import WatchSettings, run_watch

    video = write_avi(tmp_path / "cam.avi", 16, h=48, w=64)

    def watch_scores(backend) -> list:
        scores: list = []
        settings = WatchSettings(cameras=cameras_from_sources([str(video)]), options=WatchOptions(replay=True, batch=3))
        summary = run_watch(backend, settings, model_path=getattr(backend, "path", None),
                            on_score=scores.append)
        assert summary["stopped_by"] == "end of input"
        return scores

    served = create_backend("triton", server.http_url, model=tr.PYTHON_MODEL)
    want, got = watch_scores(local), watch_scores(served)
    assert len(want) == 16 - local.inputs[0].shape[1]
    assert [s.frame_index for s in got] == [s.frame_index for s in want]
    np.testing.assert_allclose([s.psnr_app for s in got], [s.psnr_app for s in want], rtol=0, atol=1e-4)
    np.testing.assert_allclose([s.psnr_mot for s in got], [s.psnr_mot for s in want], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_calibrate_and_watch_commands_through_the_server(server, exports, write_avi, tmp_path):
    """The commands themselves with ``--server URL --model NAME``: ``calibrate`` through the server stores the same
    fused-PSNR distribution as ``calibrate --onnx`` on the same footage, and ``watch --replay`` scores every frame."""
    import json

    pytest.importorskip("m2s2l_edge.watch.service", reason="m2s2l_edge.watch (the watch command) is not in this tree")
    from typer.testing import CliRunner

    from m2s2l_edge.cli.app import app

    video = write_avi(tmp_path / "cam.avi", 40, h=48, w=64)
    runner = CliRunner()
    served = ["--server", server.grpc_url, "--model", tr.PYTHON_MODEL]
    local = runner.invoke(app, ["calibrate", "--onnx", str(exports["portable"]), "--source", str(video),
                                "--out", str(tmp_path / "local.calib.json")])
    assert local.exit_code == 0, local.output
    remote = runner.invoke(app, ["calibrate", *served, "--source", str(video),
                                 "--out", str(tmp_path / "srv.calib.json")])
    assert remote.exit_code == 0, remote.output
    want, got = (json.loads((tmp_path / f"{n}.calib.json").read_text()) for n in ("local", "srv"))
    assert got["count"] == want["count"] > 0
    for key, value in want["stats"].items():
        assert got["stats"][key] == pytest.approx(value, abs=1e-4), key
    for q, value in want["quantiles"].items():
        assert got["quantiles"][q] == pytest.approx(value, abs=1e-4), q
    # One calibration for both: the served copy is the same weights as the local file.
    assert got["model"]["weights_sha256"] == want["model"]["weights_sha256"]
    assert got["threshold"] == pytest.approx(want["threshold"], abs=1e-3)
    result = runner.invoke(app, ["watch", *served, "--source", str(video), "--replay",
                                 "--calibration", str(tmp_path / "srv.calib.json"), "--json", str(tmp_path / "w.json")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "w.json").read_text())
    assert summary["scored_frames"] == want["count"] and summary["backend"]["name"] == "triton"


@pytest.mark.slow
def test_watch_server_uses_the_calibration_served_with_the_model(server, served_calibration, write_avi, tmp_path):
    """`serve triton-repo --calibration` put a calibration into the repository: `watch --server` without
    --calibration uses it (the summary says so), and a calibration file given on the command line wins."""
    import json

    from typer.testing import CliRunner

    from m2s2l_edge.cli.app import app

    video = write_avi(tmp_path / "cam.avi", 30, h=48, w=64)
    served = ["--server", server.grpc_url, "--model", tr.PYTHON_MODEL, "--source", str(video), "--replay"]
    result = CliRunner().invoke(app, ["watch", *served, "--json", str(tmp_path / "w.json")])
    assert result.exit_code == 0, result.output
    cam = json.loads((tmp_path / "w.json").read_text())["cameras"]["cam0"]
    cal = json.loads(served_calibration.read_text())
    assert cam["threshold"] == pytest.approx(cal["threshold"])
    assert cam["threshold_source"] == f"the calibration served with model {tr.PYTHON_MODEL}"
    assert f"(the calibration served with model {tr.PYTHON_MODEL})" in result.output
    result = CliRunner().invoke(app, ["watch", *served, "--calibration", str(served_calibration), "--json",
                                      str(tmp_path / "w2.json")])
    assert result.exit_code == 0, result.output
    cam = json.loads((tmp_path / "w2.json").read_text())["cameras"]["cam0"]
    assert cam["threshold_source"] == f"calibration file {served_calibration}"


# --------------------------------------------------------------------------------------------------------------------
# `m2s2l-edge serve local`: the same server started from the CLI


def _serve_local(venv: Path, repo: Path, http_port: int, grpc_port: int) -> tuple[subprocess.Popen, list[str]]:
    """`m2s2l-edge serve local` as a process, once it says it serves (its stdout lines so far)."""
    import queue

    proc = subprocess.Popen(
        [sys.executable, "-m", "m2s2l_edge", "serve", "local", "--repo", str(repo), "--http-port", str(http_port),
         "--grpc-port", str(grpc_port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "M2S2L_TRITON_VENV": str(venv)})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.rstrip("\n")) for line in proc.stdout], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 300
    while not any(line.startswith("serving ") for line in seen):
        try:
            seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            _stop(proc)
            pytest.fail(f"serve local did not come up: {seen} {proc.stderr.read()}")
    return proc, seen


def _stop(proc: subprocess.Popen) -> None:
    """End `serve local` when a test fails first: SIGTERM, so that it stops its tritonserver (a server in its own
    session, which a SIGKILL of the CLI would leave holding the ports); SIGKILL only when that does not work."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
@pytest.mark.parametrize("stop, code, last_line", [
    (15, 0, "stopped by SIGTERM; tritonserver stopped"),
    (2, 130, "error: interrupted; tritonserver stopped"),
])
def test_serve_local_serves_the_repository_until_stopped(stop, code, last_line, triton_env, served_repo, local):
    """`serve local --repo` starts the real tritonserver, prints the URLs `watch --server` takes (they answer with
    the local backend's predictions), and SIGTERM / Ctrl-C stop the server with it: its ports close, its folder goes."""
    from m2s2l_edge.runtime import create_backend

    http_port, grpc_port = free_port(), free_port()
    proc, out = _serve_local(triton_env.venv, served_repo, http_port, grpc_port)
    try:
        grpc_url, http_url = f"grpc://127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}"
        assert out[-1] == f"serving {tr.PYTHON_MODEL}: {grpc_url} and {http_url}"
        workdir = Path(out[0].rpartition("(log: ")[2].rstrip(")")).parent
        assert workdir.is_dir()
        for url in (grpc_url, http_url):
            got = create_backend("triton", url, model=tr.PYTHON_MODEL).run(_clips(2, 7))
            np.testing.assert_allclose(got["frame_pred"], local.run(_clips(2, 7))["frame_pred"], atol=1e-5)
        proc.send_signal(stop)
        assert proc.wait(timeout=120) == code
    finally:
        _stop(proc)
    assert proc.stderr.read().strip().splitlines()[-1] == last_line
    probe = LocalTritonServer(triton_env, served_repo, (), workdir, http_port=http_port, grpc_port=grpc_port)
    assert not probe.ready() and not workdir.exists()


def test_serve_local_bad_input_is_one_line(tmp_path, monkeypatch):
    """Checked before the slow start, each in one line: no tritonserver (and how to get one), no repository, a model
    the repository lacks, a port in use, one port twice."""
    import socket

    from typer.testing import CliRunner

    from m2s2l_edge.cli.app import app

    repo = tmp_path / "repo"
    (repo / tr.PYTHON_MODEL).mkdir(parents=True)
    (repo / tr.PYTHON_MODEL / "config.pbtxt").write_text(f'name: "{tr.PYTHON_MODEL}"\n')

    def run(*args: str) -> tuple[int, str]:
        r = CliRunner().invoke(app, ["serve", "local", *args])
        lines = r.output.strip().splitlines()
        assert len(lines) == 1, r.output
        return r.exit_code, lines[0]

    monkeypatch.setenv("M2S2L_TRITON_VENV", str(tmp_path / "nowhere"))
    code, line = run("--repo", str(repo), "--http-port", str(free_port()), "--grpc-port", str(free_port()))
    assert code == 3 and line.startswith(f"error: tritonserver not found: no Triton environment at {tmp_path}")
    assert "`make triton-env` builds one from the nvidia-pytriton wheel" in line
    assert run("--repo", str(tmp_path / "none")) == (
        1, f"error: --repo {tmp_path / 'none'} is not a folder (write one with m2s2l-edge serve triton-repo)")
    assert run("--repo", str(repo), "--model", "m2s2l_nope") == (
        1, f"error: --repo {repo} has no model 'm2s2l_nope' (it has: {tr.PYTHON_MODEL})")
    port = free_port()
    assert run("--repo", str(repo), "--http-port", str(port), "--grpc-port", str(port)) == (
        1, f"error: --http-port and --grpc-port are both {port}; give each its own port")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        code, line = run("--repo", str(repo), "--http-port", str(free_port()), "--grpc-port", str(busy))
    assert code == 1 and line.startswith(f"error: --grpc-port {busy}: cannot listen on 127.0.0.1:{busy}")


def test_triton_env_is_looked_for_in_the_working_folder_first(tmp_path):
    """Without $M2S2L_TRITON_VENV the working folder's .venv-triton comes before this checkout's: one without the
    server binary is named in the error, not skipped for another."""
    from m2s2l_edge.serve.local_server import find_triton_env

    (tmp_path / ".venv-triton" / "bin").mkdir(parents=True)
    (tmp_path / ".venv-triton" / "bin" / "python").symlink_to(sys.executable)
    with pytest.raises(RuntimeError, match=f"tritonserver not found: {tmp_path / '.venv-triton'} has no "
                                           "tritonserver binary"):
        find_triton_env(env={}, cwd=tmp_path)
