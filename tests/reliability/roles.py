"""Least privilege: an owner that migrates, a worker that only runs jobs, a producer that only enqueues.

The whole reliability suite runs its workers as ``WORKER`` and its producers as ``PRODUCER``,
so every scenario shows these grants are enough. ``grants`` is the SQL an operator runs
once after ``pgqueue migrate`` (as the owner), and again after a migration that adds tables.
"""

from __future__ import annotations

OWNER = "pgq_owner"
WORKER = "pgq_worker"
PRODUCER = "pgq_producer"
PASSWORDS = {OWNER: "ownerPw7x", WORKER: "workerPw7x", PRODUCER: "producerPw7x"}


def create_roles(schema: str = "pgqueue") -> str:
    """Cluster-wide: the three login roles (run once, as a superuser)."""
    return "\n".join(
        f"CREATE ROLE {role} LOGIN PASSWORD '{password}';" for role, password in PASSWORDS.items()
    )


def database_grants(database: str) -> str:
    """Per database, as a superuser or the database owner: the owner may create pgqueue's schema."""
    return f'GRANT CONNECT, CREATE ON DATABASE "{database}" TO {OWNER};'


def grants(schema: str = "pgqueue", worker: str = WORKER, producer: str = PRODUCER) -> str:
    """After ``pgqueue migrate``, as the owner: DML for workers, insert for producers, nothing else.

    - The worker claims, completes, fails, releases, rescues and prunes jobs (SELECT, UPDATE,
      DELETE on job), registers itself (worker table) and checks the schema version.
    - The producer inserts jobs. ``INSERT ... RETURNING`` needs SELECT on the returned
      columns, and ``ON CONFLICT (unique_key) WHERE ... state < 'completed'`` on the columns
      of the conflict target and its predicate, so it gets exactly those four (not the data,
      output or errors of any job); bulk enqueues reserve ids from the sequence (USAGE).
    """
    s = f'"{schema}"'
    return f"""
REVOKE ALL ON SCHEMA {s} FROM PUBLIC;
GRANT USAGE ON SCHEMA {s} TO {worker}, {producer};
GRANT SELECT ON {s}.pgqueue_alembic_version TO {worker}, {producer};
GRANT SELECT, UPDATE, DELETE ON {s}.job TO {worker};
GRANT SELECT, INSERT, UPDATE, DELETE ON {s}.worker TO {worker};
GRANT INSERT ON {s}.job TO {producer};
GRANT SELECT (id, queue, unique_key, state) ON {s}.job TO {producer};
GRANT USAGE ON SEQUENCE {s}.job_id_seq TO {producer};
"""


def ledger_grants(worker: str = WORKER, producer: str = PRODUCER) -> str:
    """The suite's own side tables (ledger, effects, orders), for its handlers and producers."""
    return f"""
GRANT SELECT, INSERT ON ledger, effects TO {worker};
GRANT SELECT ON orders TO {worker};
GRANT INSERT ON orders TO {producer};
"""
