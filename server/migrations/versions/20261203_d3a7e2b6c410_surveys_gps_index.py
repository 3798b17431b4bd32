"""visits: an index on the fix's coordinates (gps_repeated: other visits at the same
coordinates)

Revision ID: d3a7e2b6c410
Revises: a9d3c6e1f047
Create Date: 2026-12-03 15:10:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'd3a7e2b6c410'
down_revision = 'a9d3c6e1f047'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('surveys', schema=None) as batch_op:
        batch_op.create_index('ix_surveys_gps', ['gps_lat', 'gps_lon'], unique=False)


def downgrade():
    with op.batch_alter_table('surveys', schema=None) as batch_op:
        batch_op.drop_index('ix_surveys_gps')
