"""Job lifecycle: dead letters, dependencies, pub/sub subscriptions, per-queue retention.

Revision ID: 0007
Revises: 0006
"""

from pgqueue.migrate import run_revision_sql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(__file__, "upgrade")


def downgrade() -> None:
    run_revision_sql(__file__, "downgrade")
