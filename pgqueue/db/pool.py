"""The App's own producer pools: where enqueues and look-ups without ``conn=`` run.

:class:`ProducerPool` and :class:`AsyncProducerPool` run an operation on the caller's
connection or on one of theirs, behind the App's :class:`SchemaGate`; their connections
(:class:`PooledConnection`, :class:`AsyncPooledConnection`) keep a cursor, and wait between
operations in a :class:`Stash`, checked with :func:`alive` before each use. The sync pool is
generated from the async one (``tools/async_to_sync.py``).
"""

from __future__ import annotations

from ._driver_async import AsyncPooledConnection
from ._driver_sync import PooledConnection
from ._pool_async import AsyncProducerPool
from ._pool_sync import ProducerPool
from .ops import SchemaGate
from .stash import Stash, alive

__all__ = [
    "AsyncPooledConnection",
    "AsyncProducerPool",
    "PooledConnection",
    "ProducerPool",
    "SchemaGate",
    "Stash",
    "alive",
]
