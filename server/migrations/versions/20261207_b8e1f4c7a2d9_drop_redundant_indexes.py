"""Drop single-column indexes that a composite index leading with the same column
already serves (pol_months, sms_messages, payment_months, pol_contact_tasks): they
only cost every insert, a million of each at a month's open (issue 19, item 5)

Revision ID: b8e1f4c7a2d9
Revises: 4c1e9b7d2f60
Create Date: 2026-12-07 12:30:00

"""
from alembic import op

revision = "b8e1f4c7a2d9"
down_revision = "4c1e9b7d2f60"
branch_labels = None
depends_on = None

# (index, table, column): each column leads a composite index that stays.
REDUNDANT = (
    ("ix_pol_months_member_id", "pol_months", "member_id"),  # uq_pol_months_member_month
    ("ix_pol_months_month", "pol_months", "month"),  # ix_pol_months_month_status
    ("ix_sms_messages_member_id", "sms_messages", "member_id"),  # uq_..._member_month_kind
    ("ix_sms_messages_month", "sms_messages", "month"),  # ix_sms_messages_month_reach
    ("ix_payment_months_household_id", "payment_months", "household_id"),  # uq_..._month
    ("ix_payment_months_month", "payment_months", "month"),  # ix_payment_months_month_status
    ("ix_pol_contact_tasks_member_id", "pol_contact_tasks", "member_id"),  # uq_..._month
)


def upgrade():
    for name, table, _ in REDUNDANT:
        op.drop_index(name, table_name=table)


def downgrade():
    for name, table, column in REDUNDANT:
        op.create_index(name, table, [column], unique=False)
