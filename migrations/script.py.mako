"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""

from pgqueue.migrate import run_revision_sql

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


# The DDL is in the .upgrade.sql and .downgrade.sql files beside this one, with {schema} for the schema.
def upgrade() -> None:
    run_revision_sql(__file__, "upgrade")


def downgrade() -> None:
    run_revision_sql(__file__, "downgrade")
