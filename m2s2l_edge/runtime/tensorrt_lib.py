"""TensorRT itself, for both sides of the pipeline: the import, its version and the SelectiveScan plugin library.

The engine build (``m2s2l_edge.export.engine``) and the runtime backend (``m2s2l_edge.runtime.tensorrt_backend``)
both need these; they live here, below both, so that neither imports the other. ``tensorrt`` and ``torch`` are
imported inside the functions that need them: this module imports on a machine with neither (CI), where the pure
helpers (version parsing, plugin lookup) are tested.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from m2s2l_edge.ops import spec

logger = logging.getLogger(__name__)

PLUGIN_LIB_NAME = "libm2s2l_plugins.so"
STATIC_PLUGIN_LIB_NAME = "libm2s2l_plugins_static.so"
PLUGIN_ENV = "M2S2L_PLUGIN_LIB"
INSTALL_HINT = (
    "TensorRT Python package not found: on JetPack `sudo apt install python3-libnvinfer` (and create the venv with "
    "--system-site-packages), on x86 `pip install tensorrt` (NVIDIA's index, https://pypi.nvidia.com)"
)
# The repository checkout this package runs from (editable install); plugins/build is where `plugin build` puts the
# libraries.
_REPO_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------------------------------
# TensorRT itself


def import_tensorrt():
    """``import tensorrt``, or a RuntimeError that says what to install (the CLI turns it into one line, exit 3)."""
    try:
        import tensorrt
    except ImportError as e:
        raise RuntimeError(f"{INSTALL_HINT} ({e})") from None
    return tensorrt


def parse_trt_version(version: str) -> tuple[int, int]:
    """``"10.3.0.30"`` → (10, 3). TensorRT's ``__version__`` is major.minor.patch[.build]."""
    m = re.match(r"^\s*(\d+)\.(\d+)", version)
    if not m:
        raise ValueError(f"cannot read a TensorRT version from {version!r} (expected major.minor[.patch...])")
    return int(m.group(1)), int(m.group(2))


def plugin_search_dirs(cwd: Path | None = None) -> list[Path]:
    """Where ``find_plugin_library`` looks when neither ``--plugin`` nor ``$M2S2L_PLUGIN_LIB`` names the library:
    ``plugins/build`` (what `m2s2l-edge plugin build` makes) under the working folder and under this checkout, then
    ``build/`` (the folder of the README's plain cmake commands)."""
    cwd = cwd or Path.cwd()
    dirs: list[Path] = []
    for d in (cwd / "plugins" / "build", _REPO_ROOT / "plugins" / "build", cwd / "build", _REPO_ROOT / "build"):
        if d.resolve() not in [x.resolve() for x in dirs]:
            dirs.append(d)
    return dirs


def find_plugin_library(
    explicit: str | os.PathLike | None = None,
    *,
    env: Mapping[str, str] | None = None,
    recorded: str | os.PathLike | None = None,
    search_dirs: Sequence[Path] | None = None,
) -> Path:
    """The SelectiveScan plugin library to load: ``explicit`` (``--plugin``), else ``$M2S2L_PLUGIN_LIB``, else the
    library an engine's metadata recorded (``recorded``, if it still exists), else ``libm2s2l_plugins.so`` in
    ``search_dirs``.

    A path the user named that does not exist is a FileNotFoundError; finding nothing at all is a RuntimeError that
    says how to build the library.
    """
    env = os.environ if env is None else env
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"plugin library {path} does not exist (build it with `m2s2l-edge plugin build`)")
        return path
    if env.get(PLUGIN_ENV):
        path = Path(env[PLUGIN_ENV])
        if not path.is_file():
            raise FileNotFoundError(f"{PLUGIN_ENV}={path} does not exist")
        return path
    if recorded is not None and Path(recorded).is_file():
        return Path(recorded)
    dirs = list(search_dirs) if search_dirs is not None else plugin_search_dirs()
    for d in dirs:
        if (d / PLUGIN_LIB_NAME).is_file():
            return d / PLUGIN_LIB_NAME
    looked = ", ".join(str(d) for d in dirs)
    raise RuntimeError(
        f"TensorRT plugin library {PLUGIN_LIB_NAME} not found (looked in {looked}): build it with "
        f"`m2s2l-edge plugin build`, or pass --plugin PATH, or set {PLUGIN_ENV}"
    )


def load_plugin_library(trt, path: str | os.PathLike) -> None:
    """Register the SelectiveScan creator from ``path`` with TensorRT's plugin registry, once per process.

    ``libm2s2l_plugins.so`` goes through ``registry.load_library`` (it exports getCreators); the self-registering
    ``libm2s2l_plugins_static.so`` only needs a dlopen. Loading either when the creator is already registered fails
    inside TensorRT ("already registered"), so an existing creator is kept and the load skipped: a process that built
    an engine can run it.
    """
    import ctypes

    path = Path(path)
    registry = trt.get_plugin_registry()
    ident = (spec.OP_NAME, spec.PLUGIN_VERSION, spec.PLUGIN_NAMESPACE)
    if registry.get_creator(*ident) is not None:
        logger.debug("plugin creator %s/%s/%s already registered; not loading %s", *ident, path)
        return
    if path.name == STATIC_PLUGIN_LIB_NAME:
        # RTLD_GLOBAL like trtexec --staticPlugins; the library registers itself from a static initialiser.
        ctypes.CDLL(str(path.resolve()), mode=ctypes.RTLD_GLOBAL)
    elif registry.load_library(str(path.resolve())) is None:
        raise RuntimeError(f"TensorRT could not load the plugin library {path}; its log above says why")
    if registry.get_creator(*ident) is None:
        raise RuntimeError(
            f"{path} loaded but registered no {'/'.join(ident)} plugin creator: is it this project's "
            f"{PLUGIN_LIB_NAME} (built from plugins/ of the same version)?"
        )
    logger.info("loaded TensorRT plugin library %s", path)
