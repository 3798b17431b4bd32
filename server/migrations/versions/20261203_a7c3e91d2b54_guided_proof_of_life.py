"""guided proof of life: steps, stored landmarks, incomplete attempts, assistance

Revision ID: a7c3e91d2b54
Revises: fcdbd6f94328
Create Date: 2026-12-03 05:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a7c3e91d2b54'
down_revision = 'fcdbd6f94328'
branch_labels = None
depends_on = None

OLD_OUTCOMES = ('passed', 'failed', 'review')
NEW_OUTCOMES = ('passed', 'failed', 'review', 'incomplete')


def _outcome(values):
    return sa.Enum(
        *values, name='pol_outcome', native_enum=False, create_constraint=True, length=10
    )


def upgrade():
    with op.batch_alter_table('pol_months', schema=None) as batch_op:
        batch_op.add_column(sa.Column('assistance_need', sa.String(length=20), nullable=True))

    with op.batch_alter_table('pol_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('guided', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('step', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('guide_state', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('stopped_step', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('stopped_why', sa.String(length=20), nullable=True))
        batch_op.alter_column(
            'outcome', existing_type=_outcome(OLD_OUTCOMES), type_=_outcome(NEW_OUTCOMES),
            existing_nullable=True,
        )
    with op.batch_alter_table('pol_attempts', schema=None) as batch_op:
        batch_op.alter_column('guided', server_default=None)

    with op.batch_alter_table('pol_frames', schema=None) as batch_op:
        batch_op.add_column(sa.Column('step', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('faces', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('landmarks', sa.LargeBinary(), nullable=True))


def downgrade():
    with op.batch_alter_table('pol_frames', schema=None) as batch_op:
        batch_op.drop_column('landmarks')
        batch_op.drop_column('faces')
        batch_op.drop_column('step')

    # An incomplete attempt had no verdict: the older schema keeps it without an outcome.
    op.execute("UPDATE pol_attempts SET outcome = NULL WHERE outcome = 'incomplete'")
    with op.batch_alter_table('pol_attempts', schema=None) as batch_op:
        batch_op.alter_column(
            'outcome', existing_type=_outcome(NEW_OUTCOMES), type_=_outcome(OLD_OUTCOMES),
            existing_nullable=True,
        )
        batch_op.drop_column('stopped_why')
        batch_op.drop_column('stopped_step')
        batch_op.drop_column('guide_state')
        batch_op.drop_column('step')
        batch_op.drop_column('guided')

    with op.batch_alter_table('pol_months', schema=None) as batch_op:
        batch_op.drop_column('assistance_need')
