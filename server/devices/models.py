from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.auth.models import User
from server.clock import utcnow
from server.extensions import Model
from server.types import EncryptedText, UTCDateTime


class DeviceToken(Model):
    """One tablet's login. Only the SHA-256 of the token is stored: the token has
    256 bits of randomness, so a fast hash is enough and a database leak reveals
    no usable token. (``digest_ha1`` is a password equivalent for OpenRosa Digest
    logins only, and is encrypted with the data key.)
    """

    __tablename__ = "device_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    device_id: Mapped[str] = mapped_column(String(100))
    device_name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the token, to name it in lists and revocations.
    token_prefix: Mapped[str] = mapped_column(String(16), index=True)
    # HTTP Digest's HA1 of the token per algorithm (JSON, server.devices.digest), for
    # ODK Collect over plain HTTP; encrypted. None: issued before Digest, or a login
    # that is not ASCII. Deferred: a bearer-token request never reads it (a tablet's
    # poll would otherwise decrypt it every time); Digest logins load it with the row.
    digest_ha1: Mapped[str | None] = mapped_column(
        EncryptedText("device_tokens.digest_ha1"), deferred=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    user: Mapped[User] = relationship(foreign_keys=[user_id], lazy="joined")

    def is_valid(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at and self.user.active

    def __repr__(self) -> str:
        return f"<DeviceToken {self.token_prefix} user={self.user_id} device={self.device_id!r}>"
