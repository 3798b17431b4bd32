"""console: closed months of the progress trends summed up per village

Revision ID: e4d2a9c17b30
Revises: 00ae084c2cd6
Create Date: 2026-12-03 12:20:00

"""
from alembic import op
import sqlalchemy as sa



# revision identifiers, used by Alembic.
revision = 'e4d2a9c17b30'
down_revision = '00ae084c2cd6'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('console_rollups',
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('month', name=op.f('pk_console_rollups'))
    )
    op.create_table('console_month_counts',
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('trend', sa.String(length=20), nullable=False),
    sa.Column('village_id', sa.Integer(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['month'], ['console_rollups.month'], name=op.f('fk_console_month_counts_month_console_rollups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['village_id'], ['areas.id'], name=op.f('fk_console_month_counts_village_id_areas')),
    sa.PrimaryKeyConstraint('month', 'trend', 'village_id', name=op.f('pk_console_month_counts'))
    )


def downgrade():
    op.drop_table('console_month_counts')
    op.drop_table('console_rollups')
