"""Queue settings kept in the database: a queue can be paused.

Revision ID: 0002
Revises: 0001
"""

from pgqueue.migrate import run_revision_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(__file__, "upgrade")


def downgrade() -> None:
    run_revision_sql(__file__, "downgrade")
