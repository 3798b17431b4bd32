"""console: the progress home's numbers of the current period, per area

Revision ID: a9d3c6e1f047
Revises: f7a1c3e5b902
Create Date: 2026-12-03 15:00:00

"""
from alembic import op
import sqlalchemy as sa



# revision identifiers, used by Alembic.
revision = 'a9d3c6e1f047'
down_revision = 'f7a1c3e5b902'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('console_current',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('today', sa.String(length=10), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('pol_month', sa.String(length=7), nullable=False),
    sa.Column('payroll_month', sa.String(length=7), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_console_current'))
    )
    op.create_table('console_current_counts',
    sa.Column('area_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=80), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('earliest', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['area_id'], ['areas.id'], name=op.f('fk_console_current_counts_area_id_areas'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('area_id', 'key', name=op.f('pk_console_current_counts'))
    )


def downgrade():
    op.drop_table('console_current_counts')
    op.drop_table('console_current')
