"""The floors: every import between the project's packages runs down (import-linter's `layers`
contract in pyproject.toml), and every package the distribution ships sits on a floor."""

from __future__ import annotations

from pathlib import Path

import tomllib
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_import_runs_down():
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml")) == 0


def test_every_shipped_package_is_on_a_floor():
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = {pattern.rstrip("*") for pattern in include}
    config = PYPROJECT["tool"]["importlinter"]
    (contract,) = config["contracts"]
    floors = {name.strip() for layer in contract["layers"] for name in layer.split("|")}
    assert shipped == set(config["root_packages"]) == floors
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert on_disk - {"tests", "benchmarks"} == shipped  # benchmarks: scripts, not shipped
