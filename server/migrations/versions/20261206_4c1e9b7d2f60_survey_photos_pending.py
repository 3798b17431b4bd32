"""survey_photos: a partial index on the photos whose background work is not done
(no thumbnail yet), for the embedded default's sweep (issue 19)

Revision ID: 4c1e9b7d2f60
Revises: a7d2f5c9e134
Create Date: 2026-12-04 08:05:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '4c1e9b7d2f60'
down_revision = 'a7d2f5c9e134'
branch_labels = None
depends_on = None

PENDING = "thumbnail_sha256 IS NULL AND received_at IS NOT NULL"


def upgrade():
    with op.batch_alter_table('survey_photos', schema=None) as batch_op:
        batch_op.create_index(
            'ix_survey_photos_pending',
            ['received_at'],
            unique=False,
            postgresql_where=sa.text(PENDING),
            sqlite_where=sa.text(PENDING),
        )


def downgrade():
    with op.batch_alter_table('survey_photos', schema=None) as batch_op:
        batch_op.drop_index(
            'ix_survey_photos_pending',
            postgresql_where=sa.text(PENDING),
            sqlite_where=sa.text(PENDING),
        )
