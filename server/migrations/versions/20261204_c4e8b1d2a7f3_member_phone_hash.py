"""walk-in applications and case search: members.phone_hash (a keyed look-up hash of
the normalized phone, backfilled here), households.home_pending (a placeholder home
until the initial survey's fix)

Revision ID: c4e8b1d2a7f3
Revises: b7e2f4a91c05
Create Date: 2026-12-04 00:00:00

"""
import re

import sqlalchemy as sa
from alembic import op
from flask import current_app


# revision identifiers, used by Alembic.
revision = 'c4e8b1d2a7f3'
down_revision = 'b7e2f4a91c05'
branch_labels = None
depends_on = None

BATCH = 2_000


def _normalize_phone(raw):
    """The application's normalize_phone (crypto module) as of this revision (migrations import no
    application code that may change later)."""
    digits = re.sub(r"\D", "", raw)
    for prefix in ("0086", "86"):
        if digits.startswith(prefix) and len(digits) == len(prefix) + 11:
            return digits[len(prefix):]
    return digits


def _backfill_phone_hashes():
    """Every member's phone hash from their decrypted phone, in batches of ids. The
    migration runs inside the app (server/migrations/env.py), whose cipher holds the
    data key; without the key no phone could be read, so a missing app is an error."""
    cipher = current_app.extensions["dibao.cipher"]
    members = sa.table(
        'members',
        sa.column('id', sa.Integer),
        sa.column('phone', sa.LargeBinary),
        sa.column('phone_hash', sa.String),
    )
    bind = op.get_bind()
    last = 0
    while True:
        rows = bind.execute(
            sa.select(members.c.id, members.c.phone)
            .where(members.c.id > last, members.c.phone.is_not(None))
            .order_by(members.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        updates = []
        for member_id, token in rows:
            normalized = _normalize_phone(cipher.decrypt(bytes(token), 'members.phone'))
            if normalized:
                updates.append(
                    {'key': member_id, 'digest': cipher.lookup_hash(normalized, 'members.phone')}
                )
        if updates:
            bind.execute(
                members.update()
                .where(members.c.id == sa.bindparam('key'))
                .values(phone_hash=sa.bindparam('digest')),
                updates,
            )
        last = rows[-1][0]


def upgrade():
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.add_column(sa.Column('phone_hash', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_members_phone_hash'), ['phone_hash'], unique=False)
    # A plain ADD COLUMN (no batch): SQLite must not rebuild the households table,
    # which other tables refer to; the default stays in the database for the same
    # reason (dropping it would be a rebuild).
    op.add_column(
        'households',
        sa.Column('home_pending', sa.Boolean(), nullable=False, server_default=sa.text('false')),
    )
    _backfill_phone_hashes()


def downgrade():
    op.drop_column('households', 'home_pending')  # SQLite 3.35+: no table rebuild
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_members_phone_hash'))
        batch_op.drop_column('phone_hash')
