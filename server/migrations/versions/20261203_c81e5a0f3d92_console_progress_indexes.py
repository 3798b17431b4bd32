"""console progress: indexes for the counts by month and the open flags

Revision ID: c81e5a0f3d92
Revises: b5e1f0c2a9d7
Create Date: 2026-12-03 11:40:00

"""
import sqlalchemy as sa
from alembic import op

revision = "c81e5a0f3d92"
down_revision = "b5e1f0c2a9d7"
branch_labels = None
depends_on = None

OPEN = sa.text("cleared_at IS NULL")


def upgrade():
    op.create_index(
        "ix_surveys_finished_household", "surveys", ["finished_at", "household_id"], unique=False
    )
    op.create_index(
        "ix_survey_flags_open",
        "survey_flags",
        ["survey_id", "code"],
        unique=False,
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.create_index(
        "ix_pol_months_month_status",
        "pol_months",
        ["month", "status", "household_id"],
        unique=False,
    )
    op.create_index(
        "ix_payment_months_month_status",
        "payment_months",
        ["month", "status", "household_id"],
        unique=False,
    )


def downgrade():
    op.drop_index("ix_payment_months_month_status", table_name="payment_months")
    op.drop_index("ix_pol_months_month_status", table_name="pol_months")
    op.drop_index("ix_survey_flags_open", table_name="survey_flags")
    op.drop_index("ix_surveys_finished_household", table_name="surveys")
