"""Run the ``tritonserver`` binary that the ``nvidia-pytriton`` wheel ships, on this machine: `m2s2l-edge serve
local` (a server to try ``watch --server`` against), the Triton tests and benchmarks/bench_serving.py.

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
import errno
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

TRITON_VENV_ENV = "M2S2L_TRITON_VENV"
TRITON_VENV_NAME = ".venv-triton"  # what `make triton-env` builds
GET_TRITON = "`make triton-env` builds one from the nvidia-pytriton wheel (a CPU tritonserver with the Python backend)"
# The repository checkout this package runs from (editable install), where `make triton-env` puts the venv.
_REPO_ROOT = Path(__file__).resolve().parents[2]


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
            raise RuntimeError(f"tritonserver not found: no Triton environment at {self.venv}; {GET_TRITON}")
        try:
            binary = self.binary
        except (OSError, subprocess.SubprocessError) as e:
            raise RuntimeError(f"tritonserver not found: the Python of {self.venv} does not run ({e}); "
                               f"{GET_TRITON}") from None
        if not binary.is_file():
            raise RuntimeError(f"tritonserver not found: {self.venv} has no tritonserver binary ({binary}); "
                               f"pip install nvidia-pytriton into it, or {GET_TRITON}")

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


def find_triton_env(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> TritonEnv:
    """The nvidia-pytriton venv to run: ``$M2S2L_TRITON_VENV``, else ``.venv-triton`` in the working folder, else in
    this checkout. RuntimeError naming where it looked and how to get one when none holds a ``tritonserver``."""
    env = os.environ if env is None else env
    if env.get(TRITON_VENV_ENV):
        found = TritonEnv(Path(env[TRITON_VENV_ENV]))
        found.check()
        return found
    places = []
    for folder in ((cwd or Path.cwd()) / TRITON_VENV_NAME, _REPO_ROOT / TRITON_VENV_NAME):
        if folder.resolve() in [p.resolve() for p in places]:
            continue
        places.append(folder)
        if (folder / "bin" / "python").is_file():
            found = TritonEnv(folder)
            found.check()
            return found
    raise RuntimeError(f"tritonserver not found: no Triton environment in {' or '.join(str(p) for p in places)}; "
                       f"{GET_TRITON}, or set {TRITON_VENV_ENV}=VENV")


def served_models(repository: Path) -> list[str]:
    """The models of a model repository: its folders holding a ``config.pbtxt``."""
    return sorted(p.parent.name for p in Path(repository).glob("*/config.pbtxt"))


def models_to_load(repository: Path, model: str | None, default: str) -> tuple[str, ...]:
    """The model to load from ``repository`` (``model``, else ``default``), checked to be there; FileNotFoundError
    for a repository that is missing, ValueError for a model it does not hold (naming the ones it does)."""
    repository = Path(repository)
    if not repository.is_dir():
        raise FileNotFoundError(f"--repo {repository} is not a folder (write one with m2s2l-edge serve triton-repo)")
    present = served_models(repository)
    if not present:
        raise ValueError(f"--repo {repository} holds no model (no */config.pbtxt): write one with m2s2l-edge serve "
                         "triton-repo")
    wanted = model or default
    if wanted not in present:
        raise ValueError(f"--repo {repository} has no model {wanted!r} (it has: {', '.join(present)})")
    return (wanted,)


def check_port_free(port: int, flag: str) -> int:
    """``port`` when nothing listens on it at 127.0.0.1; ValueError naming ``flag`` otherwise (another server
    there, or a port below 1024 without root, would make tritonserver fail after its slow start)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                raise ValueError(f"{flag} {port}: cannot listen on 127.0.0.1:{port} ({e.strerror}); choose another "
                                 "port") from None
            raise
    return port


def local_server(repository: Path, model: str | None, *, default_model: str, http_port: int, grpc_port: int,
                 workdir: Path | None = None) -> LocalTritonServer:
    """A :class:`LocalTritonServer` for `serve local`, everything checked before the slow start: the model is in the
    repository, the two ports differ and are free, a tritonserver is installed. ``workdir`` None: a new temporary
    folder (the server's log and backends)."""
    import tempfile

    models = models_to_load(repository, model, default_model)
    if http_port == grpc_port:
        raise ValueError(f"--http-port and --grpc-port are both {http_port}; give each its own port")
    check_port_free(http_port, "--http-port")
    check_port_free(grpc_port, "--grpc-port")
    env = find_triton_env()
    workdir = Path(tempfile.mkdtemp(prefix="m2s2l-tritonserver-")) if workdir is None else workdir
    return LocalTritonServer(env, Path(repository).resolve(), models, workdir, http_port=http_port,
                             grpc_port=grpc_port)


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
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"tritonserver exited with {self.process.returncode} (log: {self.log_path}):"
                                       f"\n{self.log_tail()}")
                if self.ready():
                    return self
                time.sleep(0.5)
            raise RuntimeError(f"tritonserver not ready after {timeout:.0f} s (log: {self.log_path}):\n"
                               f"{self.log_tail()}")
        except BaseException:
            # Its own session: a server left behind would outlive us and hold the ports (a signal, too, lands here).
            self.stop()
            raise

    def wait(self, stop: threading.Event, poll_s: float = 0.5) -> None:
        """Serve until ``stop`` is set, then stop the server; RuntimeError (naming the log) when the server exits by
        itself first."""
        while not stop.wait(poll_s):
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"tritonserver exited with {code} (log: {self.log_path}):\n{self.log_tail()}")
        self.stop()

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
