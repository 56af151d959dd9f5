"""A running job's progress, as its handler reports it.

Revision ID: 0003
Revises: 0002
"""

from pgqueue.migrate import run_revision_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(__file__, "upgrade")


def downgrade() -> None:
    run_revision_sql(__file__, "downgrade")
