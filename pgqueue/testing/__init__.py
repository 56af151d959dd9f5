"""Testing your handlers with pytest: a throwaway migrated database per test, drain, assertions, time.

The plugin (:mod:`pgqueue.testing.plugin`) is registered automatically when pgqueue is
installed (``pip install 'pgqueue[testing]'``); see its fixtures ``pgqueue_app``,
``pgqueue_database_url`` and ``pgqueue_clock``.

>>> def test_welcome(pgqueue_app):
...     register("ada@example.com")
...     assert_enqueued(send_welcome_email, email="ada@example.com")
...     pgqueue_app.drain()
...     assert_not_enqueued(send_welcome_email)
"""

from .assertions import assert_enqueued, assert_not_enqueued, enqueued
from .clock import Clock
from .database import bound

__all__ = ["Clock", "assert_enqueued", "assert_not_enqueued", "bound", "enqueued"]
