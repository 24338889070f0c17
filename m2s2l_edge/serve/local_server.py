"""Run the ``tritonserver`` binary that the ``nvidia-pytriton`` wheel ships, on this machine, for tests and benchmarks.

That wheel (nvidia-pytriton 0.7.0: Triton 2.51) carries a complete ``tritonserver`` with only the Python backend,
and it runs on a CPU-only machine. It lives in its own virtual environment (it needs numpy < 2; ``make triton-env``
builds ``.venv-triton``), and two details make its Python backend work outside PyTriton:

- the backend looks for ``triton_python_backend_stub`` beside ``libtriton_python.so``, but the wheel keeps one stub
  per Python version elsewhere: ``backend_directory`` assembles a backends folder with the stub of the venv's Python;
- the stub embeds the interpreter of the system's ``libpython3.X.so`` in isolated mode (``PYTHONPATH`` is ignored):
  it finds its ``sys.prefix`` from the ``python3`` first on ``PATH``, so the venv's ``bin`` goes first on ``PATH``
  (the venv's ``pyvenv.cfg`` then gives it the venv's site-packages), and ``LD_LIBRARY_PATH`` names the libpython of
  the interpreter the venv was made from, so the stub and the venv agree on the Python build.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TritonEnv:
    """A virtual environment holding nvidia-pytriton (and what the served models import)."""

    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def _query(self, code: str) -> str:
        return subprocess.run([str(self.python), "-c", code], check=True, capture_output=True, text=True,
                              timeout=120).stdout.strip()

    @property
    def site_packages(self) -> Path:
        return Path(self._query("import sysconfig; print(sysconfig.get_paths()['purelib'])"))

    @property
    def python_version(self) -> str:
        return self._query("import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')")

    @property
    def base_libdir(self) -> Path:
        """LIBDIR of the interpreter the venv was made from (where its libpython3.X.so is)."""
        return Path(self._query("import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"))

    @property
    def triton_root(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver"

    @property
    def binary(self) -> Path:
        return self.triton_root / "bin" / "tritonserver"

    def check(self) -> None:
        """RuntimeError unless the venv holds the wheel's server binary."""
        if not self.python.is_file():
            raise RuntimeError(f"no Triton environment at {self.venv}: run `make triton-env`")
        if not self.binary.is_file():
            raise RuntimeError(f"{self.venv} has no tritonserver binary ({self.binary}): pip install nvidia-pytriton")

    def backend_directory(self, where: Path) -> Path:
        """A Triton backends folder under ``where`` whose python backend has the stub of this venv's Python."""
        python_dir = where / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        source = self.triton_root / "backends" / "python"
        stub = self.triton_root / "python_backend_stubs" / self.python_version / "triton_python_backend_stub"
        if not stub.is_file():
            raise RuntimeError(f"nvidia-pytriton has no Python backend stub for Python {self.python_version}")
        for item in (source / "libtriton_python.so", source / "triton_python_backend_utils.py", stub):
            target = python_dir / item.name
            if not target.exists():
                shutil.copyfile(item, target)
                shutil.copymode(item, target)
        return where

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = [str(self.site_packages / "nvidia_pytriton.libs"), str(self.base_libdir)]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(libs)
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '')}"
        env.pop("PYTHONHOME", None)
        return env


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalTritonServer:
    """One ``tritonserver`` process on 127.0.0.1 serving ``repository`` (only ``models``, loaded explicitly, since
    the wheel's server cannot load the onnxruntime / tensorrt_plan models the repository also holds)."""

    env: TritonEnv
    repository: Path
    models: tuple[str, ...]
    workdir: Path
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "tritonserver.log"

    def command(self) -> list[str]:
        backends = self.env.backend_directory(self.workdir / "backends")
        cmd = [str(self.env.binary), f"--model-repository={self.repository}", f"--backend-directory={backends}",
               "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", f"--http-port={self.http_port}",
               f"--grpc-port={self.grpc_port}", "--allow-metrics=false", "--model-control-mode=explicit",
               "--exit-timeout-secs=5"]
        cmd += [f"--load-model={m}" for m in self.models]
        return cmd

    def start(self, timeout: float = 180.0) -> LocalTritonServer:
        """Start the server and wait (at most ``timeout`` s) until it reports ready; RuntimeError with the log's
        tail if it exits or does not become ready."""
        self.env.check()
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - stays open for the process's lifetime
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                        env=self.env.environment(), start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"tritonserver not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` s (the server's own exit timeout is 5 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the server and its Python-backend stubs (its process group): a crash, not a shutdown."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, 9)
        self.process.wait(timeout=30)

    def __enter__(self) -> LocalTritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
