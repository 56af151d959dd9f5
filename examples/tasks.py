"""An example pgqueue app: the worker service of docker-compose.yml runs it.

    pgqueue work examples.tasks:app              # run its jobs
    python -m examples.tasks 100                 # enqueue 100 example registrations

The database comes from PGQUEUE_DATABASE_URL (or DATABASE_URL, or the embedded server).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
import time

import pgqueue

app = pgqueue.App()
log = logging.getLogger(__name__)


@app.task("send-welcome-email", queue="emails", max_attempts=5, timeout=30)
def send_welcome_email(user_id: int, email: str) -> dict[str, str]:
    """A sync handler: runs in one of the worker's threads."""
    time.sleep(0.05)  # talking to the mail server
    log.info("welcome email sent to %s", email)
    return {"to": email}


@app.task("notify-slack", queue="notifications", retry_delay=2)
async def notify_slack(user_id: int) -> None:
    """An async handler: runs on the worker's event loop."""
    await asyncio.sleep(0.02)


@app.task("make-avatar", queue="cpu", executor="process", timeout=60)
def make_avatar(user_id: int, rounds: int = 20_000) -> str:
    """A CPU-bound handler: runs in a pool of processes, off the event loop."""
    digest = str(user_id).encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:16]


def enqueue_registrations(count: int) -> list[int | None]:
    """What a web application does on sign-up, here without the user table."""
    ids: list[int | None] = []
    for user_id in range(1, count + 1):
        ids.append(send_welcome_email.enqueue(user_id=user_id, email=f"user{user_id}@example.com"))
        ids.append(notify_slack.enqueue(user_id=user_id))
        ids.append(make_avatar.enqueue(user_id=user_id))
    return ids


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    with app:
        print(f"enqueued {len(enqueue_registrations(count))} jobs")
