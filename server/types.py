"""Column types shared by the models: UTC timestamps, exact money, encrypted text."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flask import current_app
from sqlalchemy import BigInteger, DateTime, Dialect, LargeBinary
from sqlalchemy.types import TypeDecorator

from server.crypto import FieldCipher

CENT = Decimal("0.01")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """Yuan as an exact Decimal with two places, stored as whole fen (BIGINT).

    Storing integers keeps amounts exact on SQLite too, whose NUMERIC goes
    through floating point.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be a Decimal, got {type(value).__name__}")
        if value != value.quantize(CENT):
            raise ValueError(f"money has more than two decimal places: {value}")
        return int(value * 100)

    def process_result_value(self, value: int | None, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return (Decimal(value) / 100).quantize(CENT)


def field_cipher() -> FieldCipher:
    cipher: FieldCipher = current_app.extensions["dibao.cipher"]
    return cipher


class EncryptedBytes(TypeDecorator[bytes]):
    """Binary data (face templates) encrypted at rest like EncryptedText."""

    impl = LargeBinary
    cache_ok = True

    def __init__(self, context: str) -> None:
        super().__init__()
        self.context = context

    def process_bind_param(self, value: bytes | None, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        return field_cipher().encrypt_bytes(value, self.context)

    def process_result_value(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        return field_cipher().decrypt_bytes(bytes(value), self.context)


class EncryptedText(TypeDecorator[str]):
    """Text encrypted at rest with AES-GCM; ``context`` is bound as associated data."""

    impl = LargeBinary
    cache_ok = True

    def __init__(self, context: str) -> None:
        super().__init__()
        self.context = context

    def process_bind_param(self, value: str | None, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        return field_cipher().encrypt(value, self.context)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return field_cipher().decrypt(bytes(value), self.context)


def enum_values(e: type[enum.Enum]) -> list[str]:
    """Store a str enum by its values (``values_callable`` of SQLAlchemy's ``Enum``)."""
    return [str(member.value) for member in e]
