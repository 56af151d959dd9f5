"""Job identity and enqueue-side keys: a random uid per job, debounce keys, and the key table
of throttled (unique_for) enqueues.

Revision ID: 0005
Revises: 0004
"""

from pgqueue.migrate import run_revision_sql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(__file__, "upgrade")


def downgrade() -> None:
    run_revision_sql(__file__, "downgrade")
