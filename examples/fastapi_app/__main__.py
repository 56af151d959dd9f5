"""Run the FastAPI example: migrate, then uvicorn and a pgqueue worker.

    python -m examples.fastapi_app                 # http://127.0.0.1:8000, worker included
    python -m examples.fastapi_app --port 8001 --no-worker

    curl -X POST localhost:8000/register -H 'content-type: application/json' -d '{"email": "ada@example.com"}'

The database comes from PGQUEUE_DATABASE_URL (or DATABASE_URL, or the embedded server).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

import uvicorn

from .tasks import prepare, queue


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.fastapi_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--concurrency", type=int, default=500, help="the worker's jobs at once")
    parser.add_argument("--no-worker", action="store_true", help="run the web app only")
    parser.add_argument("--log-level", default="warning", help="the worker's log level")
    args = parser.parse_args()

    url = queue.database_url
    prepare(url)
    env = {**os.environ, "PGQUEUE_DATABASE_URL": url, "PGQUEUE_SCHEMA": queue.schema}
    worker = None
    if not args.no_worker:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pgqueue", "work", "examples.fastapi_app.tasks:queue",
             "--concurrency", str(args.concurrency), "--log-level", args.log_level],
            env=env,
        )
    try:
        uvicorn.run("examples.fastapi_app.web:api", host=args.host, port=args.port, log_level="warning")
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=40)
            except subprocess.TimeoutExpired:
                worker.kill()


if __name__ == "__main__":
    main()
