"""What a data-key rotation must move.

Encrypted columns are found by introspecting the mapped tables: every column typed
``EncryptedText`` / ``EncryptedBytes`` carries its context (the associated data), so a
new one is rotated without being listed anywhere.

Look-up-hash columns are plain strings to the database; they are listed here, one line
each, with how to get back at the plaintext they hash:

- ``source``: the encrypted column of the same row holding the value (decrypted, then
  normalized as when the hash was made);
- no source (``candidates``): the value is not stored anywhere in the row (the opt-out
  list keeps only the hash), so the rotation hashes every value of these encrypted
  columns, elsewhere, under every old key, and moves the rows that match one of them.
  The rows that match none are counted and reported: they cannot be moved.

Tables are named, not imported, so a feature outside ``server`` (``sms``) is listed here
without ``server`` importing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import LargeBinary, Table
from sqlalchemy import column as sql_column
from sqlalchemy import table as sql_table
from sqlalchemy.sql.expression import TableClause

from server.crypto import normalize_id_number, normalize_phone
from server.extensions import db
from server.types import EncryptedBytes, EncryptedText


@dataclass(frozen=True)
class EncryptedColumn:
    table: str
    column: str
    context: str
    primary_key: str


@dataclass(frozen=True)
class LookupHashColumn:
    """A column holding ``lookup_hash(normalize(value), context)`` of some value."""

    table: str
    column: str
    context: str
    normalize: Callable[[str], str]
    source: str | None = None  # the encrypted column of the same row holding the value
    candidates: tuple[tuple[str, str], ...] = ()  # no source: (table, encrypted column)

    def __post_init__(self) -> None:
        if (self.source is None) == (not self.candidates):
            raise ValueError(f"{self.table}.{self.column}: give either a source or candidates")


LOOKUP_HASHES: tuple[LookupHashColumn, ...] = (
    LookupHashColumn(
        "members", "id_number_hash", "members.id_number", normalize_id_number, source="id_number"
    ),
    LookupHashColumn("members", "phone_hash", "members.phone", normalize_phone, source="phone"),
    LookupHashColumn(
        "sms_opt_outs",
        "phone_hash",
        "sms.opt_out",
        normalize_phone,
        candidates=(("members", "phone"), ("sms_messages", "to_phone")),
    ),
)

# Columns named like hashes that are not look-up hashes of personal data (digests of
# random tokens or of content): a rotation leaves them alone. A new ``*_hash`` column
# must be in LOOKUP_HASHES or here (tests/test_keys.py checks).
NOT_LOOKUP_HASHES = frozenset(
    {
        "users.password_hash",
        "device_tokens.token_hash",
        "password_links.token_hash",  # a one-time password link (a random token)
        "pol_months.link_hash",
        "surveys.content_hash",
        "photo_hashes.hash",  # perceptual hashes of visit photos
        "objections.receipt_hash",  # an objection's receipt code (a random token)
        "objections.address_hash",  # HMAC of an address under a SECRET_KEY-derived key
    }
)


def table(name: str) -> Table:
    return db.metadata.tables[name]


def encrypted_columns() -> list[EncryptedColumn]:
    """Every encrypted column of every mapped table, by table and column name."""
    found = []
    for t in sorted(db.metadata.tables.values(), key=lambda t: t.name):
        for column in t.columns:
            if isinstance(column.type, EncryptedText | EncryptedBytes):
                found.append(
                    EncryptedColumn(t.name, column.name, column.type.context, _primary_key(t))
                )
    return found


def _primary_key(t: Table) -> str:
    keys = list(t.primary_key.columns)
    if len(keys) != 1:
        raise ValueError(f"{t.name}: a rotated table needs a one-column primary key")
    return keys[0].name


def context_of(table_name: str, column: str) -> str:
    column_type = table(table_name).c[column].type
    if not isinstance(column_type, EncryptedText | EncryptedBytes):
        raise ValueError(f"{table_name}.{column} is not an encrypted column")
    return column_type.context


def raw(table_name: str, *names: str) -> TableClause:
    """A light view of a table whose encrypted columns are plain bytes (no type
    conversion): the rotation reads and compares stored tokens as they are. Updates
    through it leave ``onupdate`` columns (``updated_at``) alone."""
    t = table(table_name)
    columns = []
    for name in names:
        column_type = t.c[name].type
        if isinstance(column_type, EncryptedText | EncryptedBytes):
            column_type = LargeBinary()
        columns.append(sql_column(name, column_type))
    return sql_table(table_name, *columns)
