"""Every SQL statement pgqueue runs lives in ``queries.sql``; this module loads and binds them."""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

from psycopg import sql

from .version import VERSION_TABLE

CLAIM_MOST = 1000
"""The most jobs one claim takes. The one-queue claim walks the fetch index under this constant
limit and takes the first ``limit`` rows of it (the rows past them are never locked): with the
limit a parameter there, PostgreSQL costs its generic plan for a tenth of the table and plans
every claim anew (a third of a claim's time on a busy connection); with a constant it keeps one plan."""

_BLOCK = re.compile(r"^-- name: (\w+)\n", re.MULTILINE)
_PART = re.compile(r"\{(\w+)\}")


@functools.cache
def _raw() -> dict[str, str]:
    text = (Path(__file__).parent / "queries.sql").read_text(encoding="utf-8")
    parts = _BLOCK.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";")

    # {name} of another block takes that block's text in (a part two statements share), and
    # so on for the parts a part names.
    def expand(text: str) -> str:
        return _PART.sub(lambda m: expand(queries[m.group(1)]) if m.group(1) in queries else m.group(0), text)

    return {name: expand(text) for name, text in queries.items()}


def channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel of a schema's workers; payloads are queue names, or
    ``" cancel <id> <lease>"`` for a running job that was cancelled."""
    return f"{schema}_jobs"


def done_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel of waiters for results; payloads are finished jobs' ids."""
    return f"{schema}_done"


def waiters_key(schema: str) -> int:
    """The first key of the advisory locks by which waiters for a schema's results make themselves
    known (``wait_register`` and ``waiters_absent`` in ``queries.sql``): a stable signed 32-bit
    number drawn from the schema's name."""
    digest = hashlib.sha256(f"pgqueue waiters {schema}".encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


class Queries:
    """The named statements with ``{schema}`` (and ``{channel}``, its LISTEN channel) bound.

    ``{jobs_channel}`` and ``{done_channel}`` are the two channels as literals (for ``pg_notify``),
    ``{done_listen}`` the second as an identifier (for ``LISTEN``), ``{waiters_key}`` the
    schema's :func:`waiters_key`.

    ``{version_table}`` is the alembic version table, ``{version_table_name}`` its name as a literal.

    The schema is quoted once here, so executing a statement costs no composition.
    """

    def __init__(self, schema: str) -> None:

        self.schema = schema
        self._names = {
            "schema": sql.Identifier(schema),
            "channel": sql.Identifier(channel(schema)),
            "jobs_channel": sql.Literal(channel(schema)),
            "done_channel": sql.Literal(done_channel(schema)),
            "done_listen": sql.Identifier(done_channel(schema)),
            "waiters_key": sql.Literal(waiters_key(schema)),
            "version_table": sql.Identifier(VERSION_TABLE),
            "version_table_name": sql.Literal(VERSION_TABLE),
            "claim_most": sql.Literal(CLAIM_MOST),
        }
        self._statements: dict[str, sql.SQL] = {}

    def __getattr__(self, name: str) -> sql.SQL:
        statement = self._statements.get(name)
        if statement is None:
            try:
                text = _raw()[name]
            except KeyError:
                raise AttributeError(name) from None
            rendered = sql.SQL(text).format(**self._names).as_string(None)
            statement = self._statements[name] = sql.SQL(rendered)
            setattr(self, name, statement)  # later look-ups find it without calling __getattr__
        return statement


@functools.cache
def queries(schema: str) -> Queries:
    return Queries(schema)


def grants(schema: str, worker: str, producer: str) -> str:
    """The least-privilege GRANTs for a worker role and a producer role, as SQL text."""

    names = {
        "schema": sql.Identifier(schema),
        "worker": sql.Identifier(worker),
        "producer": sql.Identifier(producer),
        "version_table": sql.Identifier(VERSION_TABLE),
    }
    return sql.SQL(_raw()["grants"]).format(**names).as_string(None) + ";\n"
