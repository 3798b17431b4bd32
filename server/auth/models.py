from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.areas.models import Area, AreaLevel
from server.clock import utcnow
from server.extensions import Model
from server.types import UTCDateTime


class Role(enum.StrEnum):
    CASEWORKER = "caseworker"
    TOWNSHIP_REVIEWER = "township_reviewer"
    COUNTY_APPROVER = "county_approver"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


# The area level each role is scoped to.
ROLE_AREA_LEVELS: dict[Role, tuple[AreaLevel, ...]] = {
    Role.CASEWORKER: (AreaLevel.TOWNSHIP,),
    Role.TOWNSHIP_REVIEWER: (AreaLevel.TOWNSHIP,),
    Role.COUNTY_APPROVER: (AreaLevel.COUNTY,),
    Role.SUPERVISOR: (AreaLevel.COUNTY, AreaLevel.LEAGUE),
    Role.ADMIN: (AreaLevel.LEAGUE, AreaLevel.COUNTY),
}


class User(Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The login: ASCII only (server.auth.service.check_login), because tablets send it
    # in HTTP headers (ODK Collect: ISO-8859-1 Basic, Digest). The person's name,
    # Chinese or not, is the display name.
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(
        Enum(
            Role,
            native_enum=False,
            create_constraint=True,
            length=20,
            values_callable=lambda e: [m.value for m in e],
        )
    )
    area_id: Mapped[int] = mapped_column(ForeignKey("areas.id"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    area: Mapped[Area] = relationship(lazy="joined")

    @property
    def label(self) -> str:
        """How pages name the user: the display name, else the login."""
        return self.display_name or self.username

    # Flask-Login protocol
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return str(self.id)

    def __repr__(self) -> str:
        return f"<User {self.username} {self.role.value}>"


class PasswordLink(Model):
    """A one-time link to set a password (a new account's first, or a reset), handed
    over by an administrator. Only the SHA-256 of the signed token is stored; a link
    works once, until ``expires_at``, and only while it is the user's newest one."""

    __tablename__ = "password_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set when a newer link for the same user is issued: this one no longer works.
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(foreign_keys=[user_id], lazy="joined")

    def __repr__(self) -> str:
        return f"<PasswordLink {self.id} user={self.user_id}>"
