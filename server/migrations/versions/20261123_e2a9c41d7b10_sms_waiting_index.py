"""sms_messages: a partial index on the waiting rows (queued, uncertain) for the sender

Revision ID: e2a9c41d7b10
Revises: b1fbf1a0de9f
Create Date: 2026-11-23 11:00:00

"""
import sqlalchemy as sa
from alembic import op

revision = "e2a9c41d7b10"
down_revision = "b1fbf1a0de9f"
branch_labels = None
depends_on = None

WAITING = sa.text("status IN ('queued', 'uncertain')")


def upgrade():
    op.create_index(
        "ix_sms_messages_waiting",
        "sms_messages",
        ["id"],
        unique=False,
        postgresql_where=WAITING,
        sqlite_where=WAITING,
    )


def downgrade():
    op.drop_index("ix_sms_messages_waiting", table_name="sms_messages")
