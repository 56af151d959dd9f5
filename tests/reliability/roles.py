"""Least privilege: an owner that migrates, a worker that only runs jobs, a producer that only enqueues.

The suite's template database is migrated by ``OWNER`` (``pgqueue migrate``), which then
runs ``pgqueue grants --worker WORKER --producer PRODUCER --apply``. Every scenario runs
its workers as ``WORKER`` and its producers as ``PRODUCER``, so the whole suite shows
those grants are enough.
"""

from __future__ import annotations

OWNER = "pgq_owner"
WORKER = "pgq_worker"
PRODUCER = "pgq_producer"
PASSWORDS = {OWNER: "ownerPw7x", WORKER: "workerPw7x", PRODUCER: "producerPw7x"}


def create_roles() -> str:
    """Cluster-wide: the three login roles (run once, as a superuser)."""
    return "\n".join(
        f"CREATE ROLE {role} LOGIN PASSWORD '{password}';" for role, password in PASSWORDS.items()
    )


def database_grants(database: str) -> str:
    """Per database, as a superuser or the database owner: the owner may create pgqueue's schema."""
    return f'GRANT CONNECT, CREATE ON DATABASE "{database}" TO {OWNER};'


def ledger_grants(worker: str = WORKER, producer: str = PRODUCER) -> str:
    """The suite's own side tables (ledger, effects, orders), for its handlers and producers."""
    return f"""
GRANT SELECT, INSERT ON ledger, effects TO {worker};
GRANT SELECT ON orders TO {worker};
GRANT INSERT ON orders TO {producer};
"""
