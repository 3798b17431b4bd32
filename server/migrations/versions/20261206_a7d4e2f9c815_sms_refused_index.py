"""sms_messages: a partial index of failed messages by member (the open's refused numbers)

Revision ID: a7d4e2f9c815
Revises: e3b7c9a1d402
Create Date: 2026-12-06 08:00:00

"""
import sqlalchemy as sa
from alembic import op

revision = "a7d4e2f9c815"
down_revision = "e3b7c9a1d402"
branch_labels = None
depends_on = None

FAILED = sa.text("status = 'failed'")


def upgrade():
    op.create_index(
        "ix_sms_messages_failed_member",
        "sms_messages",
        ["member_id"],
        unique=False,
        postgresql_where=FAILED,
        sqlite_where=FAILED,
    )


def downgrade():
    op.drop_index("ix_sms_messages_failed_member", table_name="sms_messages")
