"""The job table, its fetch index, and the worker registry.

Revision ID: 0001
Revises:
"""

from pgqueue.migrate import run_revision_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(__file__, "upgrade")


def downgrade() -> None:
    run_revision_sql(__file__, "downgrade")
