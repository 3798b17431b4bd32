"""console progress: the proof-of-life funnel from indexes (members reached by a
month's messages; a month's records with the columns the funnel reads)

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
    with op.batch_alter_table('pol_months', schema=None) as batch_op:
        batch_op.create_index('ix_pol_months_month_funnel', ['month'], unique=False, postgresql_include=['household_id', 'member_id', 'status', 'window_closes_at', 'id'])


def downgrade():
    with op.batch_alter_table('pol_months', schema=None) as batch_op:
        batch_op.drop_index('ix_pol_months_month_funnel')
    with op.batch_alter_table('sms_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_sms_messages_month_reach')
