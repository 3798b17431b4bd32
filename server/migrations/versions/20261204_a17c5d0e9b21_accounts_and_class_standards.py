"""accounts and the class table: one-time password links; class standards with an
effective month and their history (the current amounts become the first version)

Revision ID: a17c5d0e9b21
Revises: a9d4e17c5b20
Create Date: 2026-12-04 00:00:00

"""
import sqlalchemy as sa
from alembic import op



# revision identifiers, used by Alembic.
revision = 'a17c5d0e9b21'
down_revision = 'a9d4e17c5b20'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'password_links',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_by_id', sa.Integer(), nullable=True),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('superseded_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_password_links_created_by_id_users')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_password_links_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_password_links')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_password_links_token_hash')),
    )
    with op.batch_alter_table('password_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_password_links_user_id'), ['user_id'], unique=False)

    op.create_table(
        'class_standards',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('class_id', sa.Integer(), nullable=False),
        sa.Column('effective_month', sa.Date(), nullable=False),
        sa.Column('monthly_standard', sa.BigInteger(), nullable=False),
        sa.Column('fixed_monthly', sa.BigInteger(), nullable=False),
        sa.Column('set_by_id', sa.Integer(), nullable=True),
        sa.Column('set_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.CheckConstraint('monthly_standard >= 0', name=op.f('ck_class_standards_standard_non_negative')),
        sa.CheckConstraint('fixed_monthly >= 0', name=op.f('ck_class_standards_fixed_non_negative')),
        sa.ForeignKeyConstraint(['class_id'], ['household_classes.id'], name=op.f('fk_class_standards_class_id_household_classes')),
        sa.ForeignKeyConstraint(['set_by_id'], ['users.id'], name=op.f('fk_class_standards_set_by_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_class_standards')),
        sa.UniqueConstraint('class_id', 'effective_month', name='uq_class_standards_class_month'),
    )
    with op.batch_alter_table('class_standards', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_class_standards_class_id'), ['class_id'], unique=False)
    # The amounts in use so far become each class's first version (in effect from the
    # start: FIRST_MONTH in the class standards module).
    op.execute(
        "INSERT INTO class_standards "
        "(class_id, effective_month, monthly_standard, fixed_monthly, set_at, reason) "
        "SELECT id, DATE '2000-01-01', monthly_standard, fixed_monthly, CURRENT_TIMESTAMP, "
        "'region file' FROM household_classes"
        if op.get_context().dialect.name == "postgresql"
        else "INSERT INTO class_standards "
        "(class_id, effective_month, monthly_standard, fixed_monthly, set_at, reason) "
        "SELECT id, '2000-01-01', monthly_standard, fixed_monthly, "
        "strftime('%Y-%m-%d %H:%M:%f', 'now'), 'region file' FROM household_classes"
    )


def downgrade():
    with op.batch_alter_table('class_standards', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_class_standards_class_id'))
    op.drop_table('class_standards')
    with op.batch_alter_table('password_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_password_links_user_id'))
    op.drop_table('password_links')
