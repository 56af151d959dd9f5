"""Generate pgqueue's sync modules from their async source.

The async module is the only one written by hand; its sync twin is a word-for-word rewrite:

- ``async def`` / ``async with`` / ``async for`` lose ``async``; ``await`` is dropped;
- names in ``NAMES`` are swapped for their sync counterparts, at word boundaries;
- a line ending in ``# async only`` is left out;
- a comment line ``# sync: CODE`` becomes ``CODE`` (same indentation);
- an ``if True:  # async`` block with an ``else:  # sync`` block keeps only the else
  block's body, dedented to the ``if``'s level;
- the module docstring is replaced by one naming the source, and the first line says
  that the file is generated.

    python tools/async_to_sync.py           # rewrite the sync modules
    python tools/async_to_sync.py --check   # exit 1 if any is not what its source gives
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MODULES = {
    "pgqueue/db/_driver_async.py": "pgqueue/db/_driver_sync.py",
    "pgqueue/db/_pool_async.py": "pgqueue/db/_pool_sync.py",
}
"""Each async source and the sync module generated from it."""

NAMES = {
    "AsyncConnection": "Connection",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncPromptPool": "PromptPool",
    "AsyncCursor": "Cursor",
    "AsyncPooledConnection": "PooledConnection",
    "AsyncProducerPool": "ProducerPool",
    "arun": "run",
    "async_connection": "sync_connection",
    "_driver_async": "_driver_sync",
    "_pool_async": "_pool_sync",
}
"""Async names and the sync names that replace them."""

_NAME = re.compile(r"\b(" + "|".join(sorted(NAMES, key=len, reverse=True)) + r")\b")
_ASYNC = re.compile(r"\basync (def|with|for)\b")
_AWAIT = re.compile(r"\bawait ")
_SYNC_ONLY = re.compile(r"^(\s*)# sync: (.*)$")
_IF_ASYNC = re.compile(r"^(\s*)if True:\s*# async$")
_ELSE_SYNC = re.compile(r"^(\s*)else:\s*# sync$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _branches(lines: list[str]) -> list[str]:
    """Keep the sync side of each ``if True:  # async`` / ``else:  # sync`` pair."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _IF_ASYNC.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        level = len(match.group(1))
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > level):
            i += 1  # the async body
        if i < len(lines) and _ELSE_SYNC.match(lines[i]) and _indent(lines[i]) == level:
            i += 1
            body: list[str] = []
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > level):
                body.append(lines[i])
                i += 1
            while body and not body[-1].strip():
                body.pop()
                i -= 1
            step = min(_indent(line) for line in body if line.strip()) - level
            out.extend(line[step:] if line.strip() else line for line in _branches(body))
    return out


def _without_docstring(text: str) -> str:
    tree = ast.parse(text)
    first = tree.body[0] if tree.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value,
                                                                                          str):
        lines = text.splitlines(keepends=True)
        return "".join(lines[first.end_lineno or 0:]).lstrip("\n")
    return text


def convert(source: str, text: str) -> str:
    """The sync module generated from the async module ``text`` (found at ``source``)."""
    lines: list[str] = []
    for line in _branches(_without_docstring(text).splitlines()):
        if line.rstrip().endswith("# async only"):
            continue
        sync_only = _SYNC_ONLY.match(line)
        if sync_only:
            line = sync_only.group(1) + sync_only.group(2)
        line = _ASYNC.sub(r"\1", line)
        line = _AWAIT.sub("", line)
        line = _NAME.sub(lambda m: NAMES[m.group(1)], line)
        lines.append(line)
    header = [
        f"# generated from {source} by tools/async_to_sync.py; do not edit",
        f'"""The sync twin of ``{Path(source).name}``: see there."""',
        "",
    ]
    # A dropped line may leave three blank lines in a row where the source had two.
    return re.sub(r"\n{4,}", "\n\n\n", "\n".join(header + lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="report drift instead of rewriting")
    args = parser.parse_args(argv)
    drifted = 0
    for source, target in MODULES.items():
        wanted = convert(source, (ROOT / source).read_text(encoding="utf-8"))
        path = ROOT / target
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == wanted:
            continue
        if args.check:
            drifted += 1
            diff = difflib.unified_diff(current.splitlines(keepends=True), wanted.splitlines(keepends=True),
                                        target, f"{target} (generated)")
            sys.stdout.writelines(diff)
        else:
            path.write_text(wanted, encoding="utf-8")
            print(f"wrote {target}")
    if drifted:
        print(f"{drifted} generated module(s) differ from their source: run python tools/async_to_sync.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
