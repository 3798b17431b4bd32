"""visits: the photo reuse index (photo_hashes: full and centre perceptual hashes)

Revision ID: b7e2f4a91c05
Revises: 88fa9573094a
Create Date: 2026-12-03 15:00:00

"""
from alembic import op
import sqlalchemy as sa



# revision identifiers, used by Alembic.
revision = 'b7e2f4a91c05'
down_revision = '88fa9573094a'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('photo_hashes',
    sa.Column('survey_photo_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('hash', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['survey_photo_id'], ['survey_photos.id'], name=op.f('fk_photo_hashes_survey_photo_id_survey_photos'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('survey_photo_id', 'kind', name=op.f('pk_photo_hashes'))
    )


def downgrade():
    op.drop_table('photo_hashes')
