"""visits: photo_hashes gets an integer id (the resident reuse index follows new rows
by id) and a unique (survey_photo_id, kind)

Revision ID: f1c7a9e2b358
Revises: a7d4e2f9c815
Create Date: 2026-12-06 08:00:00

"""
from alembic import op
import sqlalchemy as sa



# revision identifiers, used by Alembic.
revision = 'f1c7a9e2b358'
down_revision = 'a7d4e2f9c815'
branch_labels = None
depends_on = None


def _swap(create, columns):
    """Replace photo_hashes by a new table built by ``create`` and filled with the old
    rows' ``columns`` in one statement (SQLite cannot change a primary key in place)."""
    if op.get_bind().dialect.name == 'postgresql':
        # The old primary key's index would hold the new one's name.
        op.execute('ALTER TABLE photo_hashes RENAME CONSTRAINT pk_photo_hashes TO pk_photo_hashes_old')
    op.rename_table('photo_hashes', 'photo_hashes_old')
    create()
    op.execute(
        f'INSERT INTO photo_hashes ({columns}) '
        f'SELECT {columns} FROM photo_hashes_old ORDER BY survey_photo_id, kind'
    )
    op.drop_table('photo_hashes_old')


def upgrade():
    def create():
        op.create_table('photo_hashes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('survey_photo_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=10), nullable=False),
        sa.Column('hash', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['survey_photo_id'], ['survey_photos.id'], name=op.f('fk_photo_hashes_survey_photo_id_survey_photos'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_photo_hashes')),
        sa.UniqueConstraint('survey_photo_id', 'kind', name=op.f('uq_photo_hashes_survey_photo_id_kind'))
        )

    _swap(create, 'survey_photo_id, kind, hash')


def downgrade():
    def create():
        op.create_table('photo_hashes',
        sa.Column('survey_photo_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=10), nullable=False),
        sa.Column('hash', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['survey_photo_id'], ['survey_photos.id'], name=op.f('fk_photo_hashes_survey_photo_id_survey_photos'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('survey_photo_id', 'kind', name=op.f('pk_photo_hashes'))
        )

    _swap(create, 'survey_photo_id, kind, hash')
