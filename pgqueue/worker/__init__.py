"""The worker: claim jobs into free slots, run them, record outcomes, keep leases alive, shut down cleanly.

- :mod:`.core`: the lifecycle and the claim loop (:class:`Worker`).
- :mod:`.completer`: outcomes recorded in batches, with the next claim.
- :mod:`.maintenance`: heartbeat, rescuer, pruner, xmin watch; :mod:`.listener`: LISTEN wake-ups.
- :mod:`.executors`: where handlers run (event loop, threads, child processes).
- :mod:`.database`: the worker's connections; :mod:`.runtime`: what it takes from the App.
"""

from ..settings import WorkerConfig
from .aio import run_blocking
from .core import Worker
from .runtime import Runtime

__all__ = ["Runtime", "Worker", "WorkerConfig", "run_blocking"]
