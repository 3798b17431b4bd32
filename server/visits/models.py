from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.areas.models import Area
from server.auth.models import User
from server.cases.models import Household
from server.clock import utcnow
from server.extensions import Model, db
from server.storage import blob_columns, blob_user
from server.types import EncryptedText, UTCDateTime, enum_values


class SurveyStatus(enum.StrEnum):
    AWAITING_PHOTOS = "awaiting_photos"
    COMPLETE = "complete"


class ReviewStatus(enum.StrEnum):
    """A visit's review (issue 15): received until a reviewer looks at it; has_issues
    while it has open flags or a reviewer says so; approved; rejected (it goes back to
    its caseworker as a revisit). The moves are in ``server.visits.review.REVIEW_MOVES``.
    """

    RECEIVED = "received"
    HAS_ISSUES = "has_issues"
    APPROVED = "approved"
    REJECTED = "rejected"


class BackCheckOutcome(enum.StrEnum):
    """What a supervisor found re-visiting a sampled visit."""

    CONFIRMED = "confirmed"
    NOT_AT_HOME = "not_at_home"
    DISCREPANCY = "discrepancy"
    FABRICATED = "fabricated"

    @property
    def failed(self) -> bool:
        """The visit's record did not hold up (counts against its caseworker)."""
        return self in (BackCheckOutcome.DISCREPANCY, BackCheckOutcome.FABRICATED)


class PhotoKind(enum.StrEnum):
    MEMBER_PORTRAIT = "member_portrait"
    HOUSING = "housing"
    DOCUMENT = "document"
    OTHER = "other"


class Survey(Model):
    """One field visit as uploaded by a tablet. ``client_uuid`` is the tablet's own
    id for the visit: unique, so a retried upload can never create a second one.
    """

    __tablename__ = "surveys"
    __table_args__ = (
        CheckConstraint("gps_lat BETWEEN -90 AND 90", name="gps_lat_range"),
        CheckConstraint("gps_lon BETWEEN -180 AND 180", name="gps_lon_range"),
        # One caseworker's visits of a day, in order (the caseworker-day map).
        Index("ix_surveys_caseworker_finished", "caseworker_id", "finished_at"),
        # The console's visits by month (server/console/progress.py): read from the index.
        Index("ix_surveys_finished_household", "finished_at", "household_id"),
        # Other visits at the same coordinates (gps_repeated, server/visits/service.py).
        Index("ix_surveys_gps", "gps_lat", "gps_lon"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    client_uuid: Mapped[str] = mapped_column(String(36), unique=True)
    # sha256 of the canonical survey JSON (tablet API) or of the submission XML's
    # bytes (OpenRosa): an identical replay matches it, anything else is a conflict.
    content_hash: Mapped[str] = mapped_column(String(64))
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"), index=True)
    caseworker_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    device_token_id: Mapped[int | None] = mapped_column(ForeignKey("device_tokens.id"))
    kind: Mapped[str] = mapped_column(String(30))
    status: Mapped[SurveyStatus] = mapped_column(
        Enum(
            SurveyStatus,
            native_enum=False,
            create_constraint=True,
            length=20,
            values_callable=enum_values,
        ),
    )
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    gps_lat: Mapped[float] = mapped_column(Float)
    gps_lon: Mapped[float] = mapped_column(Float)
    gps_accuracy_m: Mapped[float | None] = mapped_column(Float)
    gps_altitude_m: Mapped[float | None] = mapped_column(Float)
    gps_fix_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    gps_provider: Mapped[str | None] = mapped_column(String(20))
    gps_is_mock: Mapped[bool] = mapped_column(Boolean, default=False)
    # Members, housing, income, notes and the track: personal, so encrypted as one JSON.
    payload: Mapped[str] = mapped_column(EncryptedText("surveys.payload"), deferred=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A periodic review visit: the day the review was due before this visit moved it,
    # and whether the visit (its local day) was on or before it.
    review_due_on: Mapped[date | None] = mapped_column(Date)
    review_on_time: Mapped[bool | None] = mapped_column(Boolean)
    # The visit's review (server/visits/review.py); its history is in visit_reviews.
    review_status: Mapped[ReviewStatus] = mapped_column(
        Enum(
            ReviewStatus,
            native_enum=False,
            create_constraint=False,
            length=20,
            values_callable=enum_values,
        ),
        default=ReviewStatus.RECEIVED,
        server_default=ReviewStatus.RECEIVED.value,
        index=True,
    )
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reviewed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    review_reason: Mapped[str | None] = mapped_column(Text)

    household: Mapped[Household] = relationship()
    caseworker: Mapped[User] = relationship(foreign_keys=[caseworker_id])
    reviewed_by: Mapped[User | None] = relationship(foreign_keys=[reviewed_by_id])
    reviews: Mapped[list[VisitReview]] = relationship(
        back_populates="survey", order_by="VisitReview.id", cascade="all, delete-orphan"
    )
    photos: Mapped[list[SurveyPhoto]] = relationship(
        back_populates="survey", order_by="SurveyPhoto.id", cascade="all, delete-orphan"
    )
    flags: Mapped[list[SurveyFlag]] = relationship(
        back_populates="survey", order_by="SurveyFlag.id", cascade="all, delete-orphan"
    )

    @property
    def missing_photos(self) -> list[str]:
        return [p.photo_id for p in self.photos if p.received_at is None]

    @property
    def open_flags(self) -> list[SurveyFlag]:
        return [f for f in self.flags if f.cleared_at is None]

    @property
    def shown_review_status(self) -> ReviewStatus:
        """The review state a page shows: a received visit with open flags has issues."""
        if self.review_status is ReviewStatus.RECEIVED and self.open_flags:
            return ReviewStatus.HAS_ISSUES
        return self.review_status

    def __repr__(self) -> str:
        return f"<Survey {self.client_uuid} {self.status.value}>"


class SurveyPhoto(Model):
    """One photo of a survey's manifest; its bytes are in the blob store under
    ``sha256`` once ``received_at`` is set (and ``sha256`` is then always known).
    """

    __tablename__ = "survey_photos"
    __table_args__ = (
        UniqueConstraint("survey_id", "photo_id"),
        CheckConstraint("bytes > 0", name="bytes_positive"),
        CheckConstraint(
            "received_at IS NULL OR (sha256 IS NOT NULL AND bytes IS NOT NULL)",
            name="received_known",
        ),
        # Photos whose background work is not done (server/visits/background.py's
        # sweep): few rows, the done ones are not indexed.
        Index(
            "ix_survey_photos_pending",
            "received_at",
            postgresql_where=text("thumbnail_sha256 IS NULL AND received_at IS NOT NULL"),
            sqlite_where=text("thumbnail_sha256 IS NULL AND received_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys.id"), index=True)
    photo_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[PhotoKind] = mapped_column(
        Enum(
            PhotoKind,
            native_enum=False,
            create_constraint=True,
            length=20,
            values_callable=enum_values,
        ),
    )
    member_ref: Mapped[str | None] = mapped_column(String(64))
    # From the tablet's manifest. None until received for a photo whose client sends
    # no manifest (ODK Collect): the bytes that arrive then say what it is.
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    bytes: Mapped[int | None] = mapped_column(Integer)
    taken_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    content_type: Mapped[str | None] = mapped_column(String(20))
    # What the received file itself says (EXIF), and what we derived from it.
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    exif_taken_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exif_lat: Mapped[float | None] = mapped_column(Float)
    exif_lon: Mapped[float | None] = mapped_column(Float)
    camera: Mapped[str | None] = mapped_column(String(100))
    phash: Mapped[str | None] = mapped_column(String(16), index=True)
    thumbnail_sha256: Mapped[str | None] = mapped_column(String(64))

    survey: Mapped[Survey] = relationship(back_populates="photos")

    @property
    def received_sha256(self) -> str:
        """The received file's key in the blob store."""
        if self.received_at is None or self.sha256 is None:
            raise ValueError(f"{self!r} has not been received")
        return self.sha256

    def __repr__(self) -> str:
        return f"<SurveyPhoto {self.photo_id} of survey {self.survey_id}>"


blob_columns(SurveyPhoto.sha256, SurveyPhoto.thumbnail_sha256)


class PhotoHash(Model):
    """One perceptual hash of a received photo, for the reuse index
    (server/visits/integrity/photo_match.py): ``full`` (the whole picture) and
    ``centre`` (its centre window), 64 bits stored as a signed integer."""

    __tablename__ = "photo_hashes"
    __table_args__ = (UniqueConstraint("survey_photo_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    """Ascending: the resident index (server/visits/photo_hash_index.py) reads the rows
    added since it last looked by id."""
    survey_photo_id: Mapped[int] = mapped_column(ForeignKey("survey_photos.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(10))
    hash: Mapped[int] = mapped_column(BigInteger)

    def __repr__(self) -> str:
        return f"<PhotoHash {self.kind} of photo {self.survey_photo_id}>"


class SurveyFlag(Model):
    """A reason to doubt a visit. Never a rejection: a reviewer clears it."""

    __tablename__ = "survey_flags"
    __table_args__ = (
        # Open flags: the console's exceptions inbox and progress counts (few rows: the
        # cleared ones are not indexed).
        Index(
            "ix_survey_flags_open",
            "survey_id",
            "code",
            postgresql_where=text("cleared_at IS NULL"),
            sqlite_where=text("cleared_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys.id"), index=True)
    code: Mapped[str] = mapped_column(String(40), index=True)
    severity: Mapped[str] = mapped_column(String(10))
    value: Mapped[str | None] = mapped_column(String(100))
    threshold: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[str] = mapped_column(Text, default="")
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cleared_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    clear_reason: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)

    survey: Mapped[Survey] = relationship(back_populates="flags")

    def __repr__(self) -> str:
        return f"<SurveyFlag {self.code} on survey {self.survey_id}>"


class VisitReview(Model):
    """One move of a visit's review: who, when, from which state to which, why."""

    __tablename__ = "visit_reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys.id"), index=True)
    actor_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    from_status: Mapped[str] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)

    survey: Mapped[Survey] = relationship(back_populates="reviews")
    actor: Mapped[User] = relationship()

    def __repr__(self) -> str:
        return f"<VisitReview {self.from_status}->{self.to_status} of survey {self.survey_id}>"


class BackCheckDraw(Model):
    """One month's back-check sample for one area (server/visits/backchecks.py): drawn
    once, so drawing again finds it instead of drawing twice."""

    __tablename__ = "back_check_draws"
    __table_args__ = (UniqueConstraint("area_id", "month"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    area_id: Mapped[int] = mapped_column(ForeignKey("areas.id"))
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM
    drawn_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    drawn_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    seed: Mapped[str] = mapped_column(String(64))
    population: Mapped[int] = mapped_column(Integer)

    area: Mapped[Area] = relationship()
    checks: Mapped[list[BackCheck]] = relationship(
        back_populates="draw", order_by="BackCheck.id", cascade="all, delete-orphan"
    )

    def __repr__(self) -> str:
        return f"<BackCheckDraw {self.month} area {self.area_id}>"


class BackCheck(Model):
    """A sampled visit to re-visit, and what the re-visit found."""

    __tablename__ = "back_checks"
    __table_args__ = (
        UniqueConstraint("draw_id", "survey_id"),
        CheckConstraint(
            "outcome IS NULL OR outcome IN "
            "('confirmed', 'not_at_home', 'discrepancy', 'fabricated')",
            name="outcome_known",
        ),
        CheckConstraint(
            "(outcome IS NULL) = (recorded_at IS NULL)", name="outcome_recorded_together"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    draw_id: Mapped[int] = mapped_column(ForeignKey("back_check_draws.id"), index=True)
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys.id"), index=True)
    weight: Mapped[float] = mapped_column(Float)
    sampled_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    assigned_to_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    outcome: Mapped[str | None] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text)
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    draw: Mapped[BackCheckDraw] = relationship(back_populates="checks")
    survey: Mapped[Survey] = relationship()
    assigned_to: Mapped[User | None] = relationship(foreign_keys=[assigned_to_id])
    recorded_by: Mapped[User | None] = relationship(foreign_keys=[recorded_by_id])

    def __repr__(self) -> str:
        return f"<BackCheck survey {self.survey_id} ({self.outcome or 'open'})>"


@blob_user
def _photo_keeps(sha256: str) -> bool:
    """A received visit photo keeps its blob (server/storage.py's ``blob_in_use``)."""
    return bool(
        db.session.scalar(select(func.count(SurveyPhoto.id)).where(SurveyPhoto.sha256 == sha256))
    )
