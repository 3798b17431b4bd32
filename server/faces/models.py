from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

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

    def __repr__(self) -> str:
        return f"<FaceTemplate {self.id} member={self.member_id} {self.model_name}>"


blob_columns(FaceTemplate.source_sha256)
