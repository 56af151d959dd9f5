"""Flow control: queue concurrency and rate limits, a job's concurrency key, the log of recent
starts that rate limits count, and the round-robin cursor of fair tasks.

Revision ID: 0006
Revises: 0005
"""

from pgqueue.migrate import run_revision_sql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(__file__, "upgrade")


def downgrade() -> None:
    run_revision_sql(__file__, "downgrade")
