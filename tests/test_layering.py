"""The layering the tree shows: ops ← layers ← models ← … ← runtime ← export ← … ← CLI (docs/DESIGN.md §2).

Checked on the source (every import statement, module-level or inside a function, read with ``ast``), so a lazy
import inside a function cannot hide a dependency that points the wrong way; and on a real process for the cost of
the CLI's help (which must import neither torch, onnx nor tensorrt).
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import m2s2l_edge

REPO = Path(__file__).resolve().parents[1]


def _modules(package: str) -> list[str]:
    """``package`` and every module below it, each imported (so a module that does not import fails here)."""
    pkg = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        names.append(info.name)
    for name in names:
        importlib.import_module(name)
    return names


def _imports(module_name: str) -> set[str]:
    """Every module name ``module_name``'s source imports, at any depth of the file; relative imports resolved."""
    module = importlib.import_module(module_name)
    source = Path(module.__file__).read_text(encoding="utf-8")
    package = module_name if Path(module.__file__).name == "__init__.py" else module_name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=module.__file__)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            # ``from m2s2l_edge import export`` imports the package through its parent.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _offenders(package: str, forbidden: str) -> dict[str, list[str]]:
    bad = {}
    for name in _modules(package):
        hits = sorted(i for i in _imports(name) if i == forbidden or i.startswith(forbidden + "."))
        if hits:
            bad[name] = hits
    return bad


def test_the_import_reader_sees_function_level_imports():
    # The reader must catch what this test guards against: a lazy import inside a function body.
    found = _imports("m2s2l_edge.runtime.torch_backend")
    assert "torch" in found and "m2s2l_edge.artifacts.checkpoint" in found  # both imported inside TorchBackend.__init__


def test_runtime_does_not_import_export():
    assert len(_modules("m2s2l_edge.runtime")) >= 6
    assert _offenders("m2s2l_edge.runtime", "m2s2l_edge.export") == {}


def test_no_command_module_imports_another():
    commands = [n for n in _modules("m2s2l_edge.cli") if n.endswith("_cmd")]
    assert len(commands) >= 8
    bad = {name: sorted(i for i in _imports(name) if i in commands and i != name) for name in commands}
    assert {k: v for k, v in bad.items() if v} == {}


_HELP_PROBE = r"""
import json, sys
import typer
from m2s2l_edge.cli.app import app

command = typer.main.get_command(app)
for args in [["--help"]] + [[name, "--help"] for name in sorted(command.commands)]:
    try:
        command.main(args, prog_name="m2s2l-edge")
    except SystemExit as e:
        if e.code not in (0, None):
            raise
print("\n" + json.dumps({"commands": sorted(command.commands), "heavy": sorted(
    m for m in ("torch", "onnx", "onnxruntime", "tensorrt", "onnxscript") if m in sys.modules)}))
"""


def test_help_imports_neither_torch_onnx_nor_tensorrt():
    r = subprocess.run([sys.executable, "-c", _HELP_PROBE], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"train", "eval", "export", "bench", "profile"} <= set(result["commands"])
    assert result["heavy"] == [], f"--help imported {result['heavy']}"


def test_import_m2s2l_edge_is_light():
    code = ("import sys, m2s2l_edge, m2s2l_edge.runtime, m2s2l_edge.export; "
            "print(sorted(m for m in ('torch', 'onnx', 'tensorrt') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    assert m2s2l_edge.__version__
