"""What the wheel installs: every package of the source tree, listed in pyproject.toml.

setuptools installs only the packages it is told about (``[tool.setuptools] packages``), and an editable install
does not notice a missing entry (it reads the source tree), so a package added without its line imports in every
test and is absent from a built wheel. Read from the file, no wheel built.
"""

from __future__ import annotations

from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def source_packages(package_dir: dict[str, str], repo: Path = REPO) -> set[str]:
    """Every importable package (a folder with __init__.py) under the folders ``package-dir`` installs, by the name
    it is installed under."""
    found = set()
    for name, folder in package_dir.items():
        root = repo / folder
        for init in root.rglob("__init__.py"):
            parts = init.parent.relative_to(root).parts
            found.add(".".join((name, *parts)))
    return found


def test_every_package_of_the_tree_is_in_the_wheel():
    cfg = _setuptools()
    listed = set(cfg["packages"])
    missing = sorted(source_packages(cfg["package-dir"]) - listed)
    assert not missing, f"packages of the source tree that the wheel would leave out (add to pyproject.toml): {missing}"


def test_every_listed_package_exists():
    cfg = _setuptools()
    folders = {name: REPO / folder for name, folder in cfg["package-dir"].items()}
    for package in cfg["packages"]:
        base = max((n for n in folders if package == n or package.startswith(n + ".")), key=len)
        path = folders[base].joinpath(*package[len(base):].split(".")[1:])
        assert path.is_dir(), f"pyproject.toml lists {package}, but {path} does not exist"


def test_the_check_sees_a_package_left_out(tmp_path):
    """The check itself: a package folder (installed under another name, as export/ is) with no line is found."""
    (tmp_path / "src" / "new").mkdir(parents=True)
    (tmp_path / "src" / "data").mkdir()  # a data folder, no __init__.py: not a package
    for init in ("src/__init__.py", "src/new/__init__.py"):
        (tmp_path / init).write_text("")
    assert source_packages({"pkg.sub": "src"}, tmp_path) == {"pkg.sub", "pkg.sub.new"}
