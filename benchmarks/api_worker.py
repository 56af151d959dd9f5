"""Run the benchmark app's worker through ``App.run_worker``, with settings ``pgqueue work`` does not take.

``python -m benchmarks.api_worker '{"concurrency": 100, "completed_retention": 10}'``: the
argument is a JSON object of :class:`pgqueue.WorkerConfig` fields. The database comes from
``PGQUEUE_DATABASE_URL``, as for ``pgqueue work``. Warnings and errors go to stderr.
"""

from __future__ import annotations

import json
import logging
import sys

from .tasks import app


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app.run_worker(**json.loads(argv[0] if argv else "{}"))
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
