"""public_dirty and public_census: the public snapshot absorbs changes in place (issue 19)

Revision ID: a7d2f5c9e134
Revises: f4c2a8e1b937
Create Date: 2026-12-06 00:00:00

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = 'a7d2f5c9e134'
down_revision = 'f4c2a8e1b937'
branch_labels = None
depends_on = None


def upgrade():
    op.drop_table('public_changes')
    op.create_table('public_dirty',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('household_id', sa.Integer(), nullable=True),
    sa.Column('village_id', sa.Integer(), nullable=True),
    sa.Column('case_code', sa.String(length=16), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_public_dirty'))
    )
    op.create_table('public_census',
    sa.Column('village_id', sa.Integer(), nullable=False),
    sa.Column('class_code', sa.String(length=8), nullable=False),
    sa.Column('size_band', sa.String(length=8), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('cases', sa.Integer(), nullable=False),
    sa.Column('persons', sa.Integer(), nullable=False),
    sa.Column('fen', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('village_id', 'class_code', 'size_band', 'status', name=op.f('pk_public_census'))
    )
    op.add_column('public_snapshots', sa.Column('fingerprint', sa.String(length=64), nullable=True))
    op.add_column('public_snapshots', sa.Column('absorbed_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('public_snapshots') as batch_op:
        batch_op.drop_column('absorbed_at')
        batch_op.drop_column('fingerprint')
    op.drop_table('public_census')
    op.drop_table('public_dirty')
    op.create_table('public_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_public_changes'))
    )
