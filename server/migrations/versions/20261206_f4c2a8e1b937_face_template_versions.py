"""face_templates.version and the face template clock: the resident 1:N face index
(server/faces/index.py) pulls only the rows written since it last looked (issue 19)

Revision ID: f4c2a8e1b937
Revises: f1c7a9e2b358
Create Date: 2026-12-06 00:00:00

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = 'f4c2a8e1b937'
down_revision = 'f1c7a9e2b358'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('face_templates', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('version', sa.BigInteger(), nullable=False, server_default='0')
        )
        batch_op.add_column(
            sa.Column('version_token', sa.BigInteger(), nullable=False, server_default='0')
        )
        batch_op.create_index(batch_op.f('ix_face_templates_version'), ['version'], unique=False)
    clock = op.create_table('face_template_clock',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('token', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_face_template_clock'))
    )
    op.bulk_insert(clock, [{'id': 1, 'version': 0, 'token': 0}])
    op.create_table('face_template_versions',
    sa.Column('version', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('token', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_face_template_versions'))
    )


def downgrade():
    op.drop_table('face_template_versions')
    op.drop_table('face_template_clock')
    with op.batch_alter_table('face_templates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_face_templates_version'))
        batch_op.drop_column('version_token')
        batch_op.drop_column('version')
