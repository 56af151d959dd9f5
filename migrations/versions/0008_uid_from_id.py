"""A job's uid carries its id: looked up by the primary key, no index of its own.

Revision ID: 0008
Revises: 0007
"""

from pgqueue.migrate import run_revision_sql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(__file__, "upgrade")


def downgrade() -> None:
    run_revision_sql(__file__, "downgrade")
