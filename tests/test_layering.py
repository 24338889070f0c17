"""The layering the tree shows (docs/DESIGN.md §2): one rank table over every package and root module of
``m2s2l_edge``; a unit imports only units of a lower rank, never one of its own rank, and no import circle exists.

Checked on the source (every import statement, module-level or inside a function, read with ``ast``), so a lazy
import inside a function cannot hide a dependency that points the wrong way; and on a real process for the cost of
the CLI's help (which must import neither torch, onnx nor tensorrt).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import m2s2l_edge

REPO = Path(__file__).resolve().parents[1]


def _modules(package: str) -> list[str]:
    """``package`` and every module below it, each imported (so a module that does not import fails here)."""
    pkg = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        names.append(info.name)
    for name in names:
        if name not in _NOT_IMPORTED:
            importlib.import_module(name)
    return names


# Read, not imported: __main__ would start the CLI; the Triton model runs inside tritonserver's Python backend, which
# provides the triton_python_backend_utils it imports.
_NOT_IMPORTED = {"m2s2l_edge.__main__", "m2s2l_edge.serve.triton_python_model"}


def _imports(module_name: str) -> set[str]:
    """Every module name ``module_name``'s source imports, at any depth of the file; relative imports resolved."""
    origin = importlib.util.find_spec(module_name).origin
    source = Path(origin).read_text(encoding="utf-8")
    package = module_name if Path(origin).name == "__init__.py" else module_name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=origin)):
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


# The rank of every unit: a package right below m2s2l_edge, or a module at its root. Lower ranks are imported by
# higher ones; units of one rank never import each other. A new unit must be placed here (the test says so).
RANKS = {
    "m2s2l_edge": 0,  # the package's face: the version
    "m2s2l_edge.config": 0,
    "m2s2l_edge.io": 0,
    "m2s2l_edge.urls": 0,
    "m2s2l_edge.allocator": 0,  # the C allocator's settings for CPU inference (glibc mallopt)
    "m2s2l_edge.ops": 1,
    "m2s2l_edge.layers": 2,
    "m2s2l_edge.models": 3,
    "m2s2l_edge.data": 4,
    "m2s2l_edge.scoring": 5,
    "m2s2l_edge.report": 5,
    "m2s2l_edge.artifacts": 6,
    "m2s2l_edge.training": 7,
    "m2s2l_edge.efficiency": 7,
    "m2s2l_edge.runtime": 8,
    "m2s2l_edge.export": 9,
    "m2s2l_edge.evaluation": 10,
    "m2s2l_edge.watch": 10,
    "m2s2l_edge.serve": 11,
    "m2s2l_edge.formats": 11,  # bench --all: exports (export), runs (runtime) and scores (evaluation) every format
    "m2s2l_edge.ui": 11,  # the web view of a running watch: reads watch's LiveFeed, serves it (Starlette)
    "m2s2l_edge.cli": 12,
    "m2s2l_edge.__main__": 13,  # python -m m2s2l_edge: the CLI
}


def _unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def _internal_edges(modules: list[str]) -> dict[str, set[str]]:
    """module → the modules of ours it imports. ``from pkg import name`` is an edge to pkg.name where that is a module
    and to pkg otherwise (a function or class of pkg's ``__init__``)."""
    known = set(modules)
    edges: dict[str, set[str]] = {}
    for name in modules:
        origin = importlib.util.find_spec(name).origin
        package = name if Path(origin).name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(Path(origin).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    module = f"{base}.{node.module}" if node.module else base
                else:
                    module = node.module or ""
                found = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
            else:
                continue
            for imported in found:
                if imported == "m2s2l_edge" or imported.startswith("m2s2l_edge."):
                    while imported not in known and "." in imported:  # a module we do not walk: its package
                        imported = imported.rpartition(".")[0]
                    if imported != name:
                        targets.add(imported)
        edges[name] = targets
    return edges


def rank_violations(edges: dict[str, set[str]], ranks: dict[str, int] = RANKS) -> list[str]:
    """Every import that points up or sideways in ``ranks``, and every module whose unit has no rank."""
    bad = []
    for source, targets in sorted(edges.items()):
        s_unit = _unit(source)
        if s_unit not in ranks:
            bad.append(f"{source}: its unit {s_unit} has no rank in RANKS")
            continue
        for target in sorted(targets):
            t_unit = _unit(target)
            if t_unit == s_unit:
                continue
            if t_unit not in ranks:
                bad.append(f"{source} -> {target}: {t_unit} has no rank in RANKS")
            elif ranks[t_unit] >= ranks[s_unit]:
                bad.append(f"{source} (rank {ranks[s_unit]}) -> {target} (rank {ranks[t_unit]})")
    return bad


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import circles among modules (strongly connected components of more than one module, or a self-loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    # export/ is installed as m2s2l_edge.export through package-dir, so walking m2s2l_edge's folder does not find it
    modules = sorted(set(_modules("m2s2l_edge")) | set(_modules("m2s2l_edge.export")))
    assert "m2s2l_edge.export.onnx_export" in modules and "m2s2l_edge.watch.pipeline" in modules
    return _internal_edges(modules)


def test_the_import_reader_sees_function_level_imports():
    # The reader must catch what this test guards against: a lazy import inside a function body.
    found = _imports("m2s2l_edge.runtime.torch_backend")
    assert "torch" in found and "m2s2l_edge.artifacts.checkpoint" in found  # both imported inside TorchBackend.__init__


def test_every_unit_has_a_rank_and_every_import_points_down(edges):
    assert rank_violations(edges) == []


def test_no_import_circle(edges):
    assert circles(edges) == []


def test_the_checks_catch_a_planted_back_import_and_circle(edges):
    planted = {k: set(v) for k, v in edges.items()}
    planted["m2s2l_edge.ops.dispatch"].add("m2s2l_edge.cli.app")  # a kernel chooser that imports the CLI
    planted["m2s2l_edge.watch.scorer"].add("m2s2l_edge.evaluation.run")  # watch and evaluation are one rank
    planted["m2s2l_edge.newstage"] = {"m2s2l_edge.io"}  # a loose module nobody placed
    bad = rank_violations(planted)
    assert any(b.startswith("m2s2l_edge.ops.dispatch (rank 1) -> m2s2l_edge.cli.app") for b in bad)
    assert any(b.startswith("m2s2l_edge.watch.scorer (rank 10) -> m2s2l_edge.evaluation.run") for b in bad)
    assert any("m2s2l_edge.newstage has no rank" in b for b in bad)
    planted["m2s2l_edge.ops.selective_scan"].add("m2s2l_edge.ops.dispatch")  # dispatch imports selective_scan
    assert any({"m2s2l_edge.ops.dispatch", "m2s2l_edge.ops.selective_scan"} <= set(c) for c in circles(planted))


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
    m for m in ("torch", "onnx", "onnxruntime", "tensorrt", "onnxscript", "starlette", "uvicorn")
    if m in sys.modules)}))
"""


def test_help_imports_neither_torch_onnx_tensorrt_nor_the_web_server():
    r = subprocess.run([sys.executable, "-c", _HELP_PROBE], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"train", "eval", "export", "bench", "profile"} <= set(result["commands"])
    assert result["heavy"] == [], f"--help imported {result['heavy']}"


def test_import_m2s2l_edge_is_light():
    code = ("import sys, m2s2l_edge, m2s2l_edge.runtime, m2s2l_edge.export, m2s2l_edge.ui; "
            "print(sorted(m for m in ('torch', 'onnx', 'tensorrt', 'starlette', 'uvicorn') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    assert m2s2l_edge.__version__
