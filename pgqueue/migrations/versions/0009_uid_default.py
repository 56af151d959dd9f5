"""A new job's uid comes from its column's default, not from a trigger function per row.

Revision ID: 0009
Revises: 0008
"""

from pgqueue.migrate import run_revision_sql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(__file__, "upgrade")


def downgrade() -> None:
    run_revision_sql(__file__, "downgrade")
