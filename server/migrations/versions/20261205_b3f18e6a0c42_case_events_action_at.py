"""case_events: an index on (action, at) for the half-yearly figures' counts of
approvals, suspensions and terminations in a half year (issue 18)

Revision ID: b3f18e6a0c42
Revises: a17c5d0e9b21
Create Date: 2026-12-03 23:30:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'b3f18e6a0c42'
down_revision = 'a17c5d0e9b21'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('case_events', schema=None) as batch_op:
        batch_op.create_index('ix_case_events_action_at', ['action', 'at'], unique=False)


def downgrade():
    with op.batch_alter_table('case_events', schema=None) as batch_op:
        batch_op.drop_index('ix_case_events_action_at')
