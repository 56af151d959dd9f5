"""The lower layers (codec, db, errors, job) never import the App, the worker or the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pgqueue"
LOWER = [PACKAGE / "codec.py", PACKAGE / "errors.py", PACKAGE / "job.py",
         *sorted((PACKAGE / "db").glob("*.py"))]
UPPER = ("app", "worker", "cli", "executors", "supervisor", "demo")


def _imported(path: Path) -> set[str]:
    """The pgqueue modules a file imports, as names relative to the package (``db.ops``, ``app``)."""
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0 for pgqueue/x.py, 1 for pgqueue/db/x.py
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                module = node.module or ""
                if module == "pgqueue" or module.startswith("pgqueue."):
                    base = module.removeprefix("pgqueue").lstrip(".")
                    names.update(f"{base}.{a.name}".lstrip(".") for a in node.names)
                continue
            parts = list(path.relative_to(PACKAGE).parts[:-1])[: max(depth - (node.level - 1), 0)]
            base = ".".join([*parts, *([node.module] if node.module else [])])
            names.update(f"{base}.{a.name}".lstrip(".") if not node.module else base for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name.removeprefix("pgqueue.") for a in node.names if a.name.startswith("pgqueue"))
    return names


def test_lower_layers_do_not_import_upper_ones() -> None:
    assert len(LOWER) > 10
    found = {
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in LOWER
        for name in _imported(path)
        if name.split(".")[0] in UPPER
    }
    assert not found, sorted(found)


def test_the_check_sees_relative_imports() -> None:
    assert "db.ops" in _imported(PACKAGE / "context.py")
    assert "migrate" in _imported(PACKAGE / "db" / "ops.py")
