"""The house's rules: the import contracts hold (layers, no cycles), modules stay small, every
package says its role, and the product never reaches back into benchmarks, tests or deploy/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("core", "ingest", "store", "stream", "recovery", "tagtrail")
MAX_MODULE_LINES = 500


def _modules(*roots: str) -> list[Path]:
    return sorted(p for r in roots for p in (REPO / r).rglob("*.py"))


def test_import_contracts_hold() -> None:
    """`lint-imports` reads the contracts in pyproject.toml; a back-up import or a cycle fails."""
    lint = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "4 kept, 0 broken" in r.stdout, r.stdout[-2000:]


def test_contracts_catch_a_back_up_import(tmp_path: Path) -> None:
    """The linter really fails on a new import against the flow (store importing stream)."""
    probe = REPO / "store" / "_layout_probe.py"
    probe.write_text('"""Probe."""\n\nimport stream.worker.worker  # noqa: F401\n')
    try:
        lint = Path(sys.executable).with_name("lint-imports")
        r = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        probe.unlink()
    assert r.returncode != 0
    assert "store._layout_probe -> stream.worker.worker" in r.stdout


@pytest.mark.parametrize("root", [*PRODUCT, "benchmarks", "tools"])
def test_no_module_over_the_limit(root: str) -> None:
    long = {
        str(p.relative_to(REPO)): n
        for p in _modules(root)
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_every_module_and_package_says_its_role() -> None:
    missing = [
        str(p.relative_to(REPO))
        for p in _modules(*PRODUCT)
        if p.stat().st_size and not ast.get_docstring(ast.parse(p.read_text()))
    ]
    missing += [
        str(p.relative_to(REPO))
        for p in _modules(*PRODUCT)
        if p.name == "__init__.py" and not ast.get_docstring(ast.parse(p.read_text()))
    ]
    assert not missing, f"no docstring: {sorted(set(missing))}"


def test_the_product_wheel_ships_only_product_packages() -> None:
    import tomllib

    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = cfg["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(i.rstrip("*") for i in include) == sorted(PRODUCT)
