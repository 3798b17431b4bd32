"""visit review (states, history), periodic review timeliness, back-check samples

Revision ID: 479d479a1f11
Revises: a7c3e91d2b54
Create Date: 2026-12-03 10:59:45.025736

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '479d479a1f11'
down_revision = 'a7c3e91d2b54'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('back_check_draws',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('area_id', sa.Integer(), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('drawn_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('drawn_by_id', sa.Integer(), nullable=True),
    sa.Column('seed', sa.String(length=64), nullable=False),
    sa.Column('population', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['area_id'], ['areas.id'], name=op.f('fk_back_check_draws_area_id_areas')),
    sa.ForeignKeyConstraint(['drawn_by_id'], ['users.id'], name=op.f('fk_back_check_draws_drawn_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_back_check_draws')),
    sa.UniqueConstraint('area_id', 'month', name=op.f('uq_back_check_draws_area_id_month'))
    )
    op.create_table('back_checks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('draw_id', sa.Integer(), nullable=False),
    sa.Column('survey_id', sa.Integer(), nullable=False),
    sa.Column('weight', sa.Float(), nullable=False),
    sa.Column('sampled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('assigned_to_id', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(length=20), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('recorded_by_id', sa.Integer(), nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("outcome IS NULL OR outcome IN ('confirmed', 'not_at_home', 'discrepancy', 'fabricated')", name=op.f('ck_back_checks_outcome_known')),
    sa.CheckConstraint('(outcome IS NULL) = (recorded_at IS NULL)', name=op.f('ck_back_checks_outcome_recorded_together')),
    sa.ForeignKeyConstraint(['assigned_to_id'], ['users.id'], name=op.f('fk_back_checks_assigned_to_id_users')),
    sa.ForeignKeyConstraint(['draw_id'], ['back_check_draws.id'], name=op.f('fk_back_checks_draw_id_back_check_draws')),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['users.id'], name=op.f('fk_back_checks_recorded_by_id_users')),
    sa.ForeignKeyConstraint(['survey_id'], ['surveys.id'], name=op.f('fk_back_checks_survey_id_surveys')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_back_checks')),
    sa.UniqueConstraint('draw_id', 'survey_id', name=op.f('uq_back_checks_draw_id_survey_id'))
    )
    with op.batch_alter_table('back_checks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_back_checks_draw_id'), ['draw_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_back_checks_survey_id'), ['survey_id'], unique=False)

    op.create_table('visit_reviews',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('survey_id', sa.Integer(), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('from_status', sa.String(length=20), nullable=False),
    sa.Column('to_status', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_visit_reviews_actor_id_users')),
    sa.ForeignKeyConstraint(['survey_id'], ['surveys.id'], name=op.f('fk_visit_reviews_survey_id_surveys')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_visit_reviews'))
    )
    with op.batch_alter_table('visit_reviews', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_visit_reviews_survey_id'), ['survey_id'], unique=False)

    with op.batch_alter_table('surveys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('review_due_on', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('review_on_time', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('review_status', sa.Enum('received', 'has_issues', 'approved', 'rejected', name='reviewstatus', native_enum=False, length=20), server_default='received', nullable=False))
        batch_op.add_column(sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('reviewed_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('review_reason', sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f('ix_surveys_review_status'), ['review_status'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_surveys_reviewed_by_id_users'), 'users', ['reviewed_by_id'], ['id'])



def downgrade():
    with op.batch_alter_table('surveys', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_surveys_reviewed_by_id_users'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_surveys_review_status'))
        batch_op.drop_column('review_reason')
        batch_op.drop_column('reviewed_by_id')
        batch_op.drop_column('reviewed_at')
        batch_op.drop_column('review_status')
        batch_op.drop_column('review_on_time')
        batch_op.drop_column('review_due_on')

    with op.batch_alter_table('visit_reviews', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_visit_reviews_survey_id'))

    op.drop_table('visit_reviews')
    with op.batch_alter_table('back_checks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_back_checks_survey_id'))
        batch_op.drop_index(batch_op.f('ix_back_checks_draw_id'))

    op.drop_table('back_checks')
    op.drop_table('back_check_draws')
