"""objections raised during a case's public notice (issue 18)

Revision ID: e3b7c9a1d402
Revises: b3f18e6a0c42
Create Date: 2026-12-05 00:00:00

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = 'e3b7c9a1d402'
down_revision = 'b3f18e6a0c42'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('objections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('household_id', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.LargeBinary(), nullable=False),
    sa.Column('contact', sa.LargeBinary(), nullable=True),
    sa.Column('receipt_hash', sa.String(length=64), nullable=False),
    sa.Column('form_nonce', sa.String(length=32), nullable=False),
    sa.Column('address_hash', sa.String(length=64), nullable=True),
    sa.Column('deadline', sa.Date(), nullable=False),
    sa.Column('status', sa.Enum('open', 'unfounded', 'resurvey', name='objection_status', native_enum=False, create_constraint=True, length=10), nullable=False),
    sa.Column('decided_by_id', sa.Integer(), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('note', sa.LargeBinary(), nullable=True),
    sa.ForeignKeyConstraint(['decided_by_id'], ['users.id'], name=op.f('fk_objections_decided_by_id_users')),
    sa.ForeignKeyConstraint(['household_id'], ['households.id'], name=op.f('fk_objections_household_id_households')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_objections')),
    sa.UniqueConstraint('form_nonce', name=op.f('uq_objections_form_nonce')),
    sa.UniqueConstraint('receipt_hash', name=op.f('uq_objections_receipt_hash'))
    )
    with op.batch_alter_table('objections', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_objections_household_id'), ['household_id'], unique=False)
        batch_op.create_index('ix_objections_status_deadline', ['status', 'deadline'], unique=False)


def downgrade():
    with op.batch_alter_table('objections', schema=None) as batch_op:
        batch_op.drop_index('ix_objections_status_deadline')
        batch_op.drop_index(batch_op.f('ix_objections_household_id'))
    op.drop_table('objections')
