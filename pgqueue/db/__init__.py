"""pgqueue's data layer: every statement, the operations built on them, and what runs them.

- ``sql``: the named statements of ``queries.sql``, bound to a schema.
- ``operation``: what an operation yields (statements, ``CopyIn``) and gets back (rows).
- ``ops`` and ``insert``: the operations, written once for sync and async connections.
- ``driver``: ``run`` / ``arun``, the only code that sends an operation's statements.
- ``pool``: the App's own producer pools (their idle connections wait in ``stash``);
  ``adapters``: what ``conn=`` may be.
- ``notifier``: the thread that wakes workers after enqueues on the App's pool.

Nothing here imports the App, the worker or the CLI. Modules named ``_*_sync.py`` are
generated from their ``_*_async.py`` source by ``tools/async_to_sync.py``.
"""
