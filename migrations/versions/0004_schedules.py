"""The schedule table: periodic jobs and the last tick each one enqueued.

Revision ID: 0004
Revises: 0003
"""

from pgqueue.migrate import run_revision_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(__file__, "upgrade")


def downgrade() -> None:
    run_revision_sql(__file__, "downgrade")
