from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, String, event, insert, select, update
from sqlalchemy.orm import Mapped, Session, SessionTransaction, mapped_column

from server.clock import utcnow
from server.extensions import Model
from server.storage import blob_columns
from server.types import EncryptedBytes, UTCDateTime


class FaceTemplate(Model):
    """A member's face encoding (128 float64), encrypted at rest, with the model that
    made it: encodings of different models must never be compared.
    """

    __tablename__ = "face_templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    # Denormalised from the member: the 1:N search excludes the member's own household.
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"), index=True)
    survey_photo_id: Mapped[int | None] = mapped_column(ForeignKey("survey_photos.id"))
    # An explicit enrollment's photo (in the blob store) and the caseworker who took it.
    source_sha256: Mapped[str | None] = mapped_column(String(64))
    enrolled_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    encoding: Mapped[bytes] = mapped_column(EncryptedBytes("face_templates.encoding"))
    model_name: Mapped[str] = mapped_column(String(60))
    model_version: Mapped[str] = mapped_column(String(120))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The face template clock's value when the row was last written, and that write's
    # random token (see FaceTemplateClock): the resident index (server.faces.index)
    # pulls the rows written since it last looked.
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0", index=True)
    version_token: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    def __repr__(self) -> str:
        return f"<FaceTemplate {self.id} member={self.member_id} {self.model_name}>"


blob_columns(FaceTemplate.source_sha256)


class FaceTemplateClock(Model):
    """One row: the version of the last flush that wrote face templates, and its random
    token. Every flush that inserts or changes a template takes the next version (the
    row lock is held until the transaction ends, so versions commit in order) and a
    new token; a history that forked (a restore, a rolled-back write) shows as a token
    the index has not seen at that version."""

    __tablename__ = "face_template_clock"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    token: Mapped[int] = mapped_column(BigInteger)


class FaceTemplateVersion(Model):
    """Every version the clock took, with its token (16 bytes a flush that wrote
    templates): the index checks that the last version it applied is still in the
    database's history before pulling what came after it."""

    __tablename__ = "face_template_versions"

    version: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    token: Mapped[int] = mapped_column(BigInteger)


# The lowest version this session's open transaction took: its rows are not committed
# and must not enter the resident index (they are searched on the side).
OWN_FIRST_VERSION = "dibao.face_clock_first"


@event.listens_for(Session, "before_flush")
def _stamp_face_templates(session: Session, flush_context: object, instances: object) -> None:
    written = [
        obj
        for obj in (*session.new, *session.dirty)
        if isinstance(obj, FaceTemplate) and (obj in session.new or session.is_modified(obj))
    ]
    if not written:
        return
    clock = FaceTemplateClock
    token = secrets.randbits(62)
    connection = session.connection()
    connection.execute(
        update(clock).where(clock.id == 1).values(version=clock.version + 1, token=token)
    )
    version = connection.execute(select(clock.version).where(clock.id == 1)).scalar_one()
    connection.execute(insert(FaceTemplateVersion).values(version=version, token=token))
    session.info.setdefault(OWN_FIRST_VERSION, version)
    for template in written:
        template.version = version
        template.version_token = token


@event.listens_for(Session, "after_transaction_end")
def _forget_own_version(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(OWN_FIRST_VERSION, None)
