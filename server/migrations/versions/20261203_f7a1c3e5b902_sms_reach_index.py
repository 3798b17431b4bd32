"""console progress: members reached by a month's messages, from one index

Revision ID: f7a1c3e5b902
Revises: e4d2a9c17b30
Create Date: 2026-12-03 12:25:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'f7a1c3e5b902'
down_revision = 'e4d2a9c17b30'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('sms_messages', schema=None) as batch_op:
        batch_op.create_index('ix_sms_messages_month_reach', ['month', 'status', 'member_id', 'sent_at'], unique=False)


def downgrade():
    with op.batch_alter_table('sms_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_sms_messages_month_reach')
