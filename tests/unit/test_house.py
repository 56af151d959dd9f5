"""The package's shape, checked on every run: layers, lint, types, module sizes, typing marker."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pgqueue"
BIN = Path(sys.executable).parent

MAX_LINES = 400
LONGER = {
    "pgqueue/settings.py": "every worker setting is declared here once, with its default, bounds, "
    "environment variable, flag and help: one table is easier to read whole than split",
    "pgqueue/cli/demo.py": "a self-contained walk-through script, loaded only by `pgqueue demo`",
}
"""Modules allowed past MAX_LINES, each with its reason."""


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return found


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(120)
def test_layers_hold():
    """No import cycles, and lower layers never import higher ones (contracts in pyproject.toml)."""
    result = _run(_tool("lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(120)
def test_ruff_check_and_format_are_clean():
    check = _run(_tool("ruff"), "check", "pgqueue")
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = _run(_tool("ruff"), "format", "--check", "pgqueue")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.timeout(240)
def test_mypy_is_clean():
    result = _run(_tool("mypy"), "pgqueue")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_is_longer_than_its_limit():
    long = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = str(path.relative_to(ROOT))
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES and name not in LONGER:
            long[name] = lines
    assert not long, f"modules over {MAX_LINES} lines (split them, or give a reason in LONGER): {long}"
    for name in LONGER:
        assert (ROOT / name).is_file(), f"LONGER names {name}, which no longer exists"


def test_no_import_cycles():
    """No module imports, directly or through others, a module that imports it back (lazy imports count)."""
    import grimp

    graph = grimp.build_graph("pgqueue", exclude_type_checking_imports=True)
    modules = sorted(graph.modules)
    imports = {m: graph.find_modules_directly_imported_by(m) & graph.modules for m in modules}
    cycles = []
    for module in modules:
        for imported in imports[module]:
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain and module not in ("pgqueue",) and imported != "pgqueue":
                cycles.append(" -> ".join((module, *chain)))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles))[:20])


def test_the_package_ships_its_type_hints():
    assert (PACKAGE / "py.typed").is_file()
