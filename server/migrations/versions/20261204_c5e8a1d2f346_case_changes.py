"""case changes with a maker and a checker (issue 17): case_changes; members.left_on
(a member removed by an approved change keeps their row); sms_messages.kind gains
"resend" (this month's link sent again after a phone correction)

Revision ID: c5e8a1d2f346
Revises: c4e8b1d2a7f3
Create Date: 2026-12-04 00:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c5e8a1d2f346'
down_revision = 'c4e8b1d2a7f3'
branch_labels = None
depends_on = None

SMS_KINDS = ("reminder", "follow_up")


def _sms_kinds(kinds: tuple[str, ...]) -> None:
    """Replace the enum CHECK constraint (batch mode rebuilds the table on SQLite)."""
    listed = ", ".join(f"'{k}'" for k in kinds)
    with op.batch_alter_table("sms_messages", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_sms_messages_sms_message_kind"), type_="check")
        batch_op.create_check_constraint("sms_message_kind", f"kind IN ({listed})")


def upgrade():
    op.create_table('case_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('household_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('add_member', 'remove_member', 'correct_phone', 'change_income', name='case_change_kind', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('subject', sa.String(length=80), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('maker_id', sa.Integer(), nullable=False),
    sa.Column('made_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.Enum('pending', 'approved', 'rejected', 'withdrawn', name='case_change_status', native_enum=False, create_constraint=True, length=10), nullable=False),
    sa.Column('checker_id', sa.Integer(), nullable=True),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('checker_note', sa.Text(), nullable=True),
    sa.Column('allowance_before', sa.BigInteger(), nullable=False),
    sa.Column('allowance_after', sa.BigInteger(), nullable=False),
    sa.Column('eligible_after', sa.Boolean(), nullable=False),
    sa.Column('effective_month', sa.String(length=7), nullable=True),
    sa.CheckConstraint('checker_id IS NULL OR checker_id <> maker_id', name=op.f('ck_case_changes_four_eyes')),
    sa.ForeignKeyConstraint(['checker_id'], ['users.id'], name=op.f('fk_case_changes_checker_id_users')),
    sa.ForeignKeyConstraint(['household_id'], ['households.id'], name=op.f('fk_case_changes_household_id_households')),
    sa.ForeignKeyConstraint(['maker_id'], ['users.id'], name=op.f('fk_case_changes_maker_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_changes'))
    )
    with op.batch_alter_table('case_changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_case_changes_household_id'), ['household_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_case_changes_maker_id'), ['maker_id'], unique=False)
        batch_op.create_index('ix_case_changes_status_made_at', ['status', 'made_at'], unique=False)
        batch_op.create_index('uq_case_changes_one_pending', ['household_id', 'kind', 'subject'], unique=True, postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))

    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.add_column(sa.Column('left_on', sa.Date(), nullable=True))

    _sms_kinds(SMS_KINDS + ("resend",))


def downgrade():
    op.execute("DELETE FROM sms_messages WHERE kind = 'resend'")
    _sms_kinds(SMS_KINDS)
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.drop_column('left_on')
    with op.batch_alter_table('case_changes', schema=None) as batch_op:
        batch_op.drop_index('uq_case_changes_one_pending', postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))
        batch_op.drop_index('ix_case_changes_status_made_at')
        batch_op.drop_index(batch_op.f('ix_case_changes_maker_id'))
        batch_op.drop_index(batch_op.f('ix_case_changes_household_id'))
    op.drop_table('case_changes')
