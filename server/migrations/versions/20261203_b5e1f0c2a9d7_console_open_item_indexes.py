"""the console's open items: partial indexes on months under review,
failed messages and open contact tasks (the exceptions inbox, the worklist)

Revision ID: b5e1f0c2a9d7
Revises: 479d479a1f11
Create Date: 2026-12-03 11:20:00

"""
import sqlalchemy as sa
from alembic import op

revision = "b5e1f0c2a9d7"
down_revision = "479d479a1f11"
branch_labels = None
depends_on = None

# name, table, columns, the rows indexed
INDEXES = (
    ("ix_pol_months_review", "pol_months", ["household_id"], "status = 'review'"),
    ("ix_sms_messages_failed", "sms_messages", ["month", "household_id"], "status = 'failed'"),
    ("ix_pol_contact_tasks_open", "pol_contact_tasks", ["month", "household_id"], "resolved_at IS NULL"),
)


def upgrade():
    for name, table, columns, where in INDEXES:
        op.create_index(
            name,
            table,
            columns,
            unique=False,
            postgresql_where=sa.text(where),
            sqlite_where=sa.text(where),
        )


def downgrade():
    for name, table, _columns, _where in reversed(INDEXES):
        op.drop_index(name, table_name=table)
