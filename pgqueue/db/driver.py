"""The statement driver: the only code that sends an operation's statements.

:func:`run` drives an operation on a ``psycopg.Connection``, :func:`arun` on an
``AsyncConnection``. Statements with named parameters (a dict, or None) give their rows as
dicts; those with positional parameters (a tuple) give tuples, which cost less on the hot
enqueue path. A connection of the App's pool keeps its cursor between operations.
"""

from __future__ import annotations

from ._driver_async import arun
from ._driver_sync import run
from .operation import CopyIn, Operation, Rows

__all__ = ["CopyIn", "Operation", "Rows", "arun", "run"]
