"""Receiving field visits from tablets: idempotent on the tablet's ``client_uuid``,
photos checked against the manifest and stored durably before the database commit.

The caller (the API view) commits; this module decides what to write.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import Integer, Table, bindparam, inspect, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.attributes import set_committed_value

from server import clock
from server.areas.models import Area
from server.audit import service as audit
from server.auth.permissions import in_area, require_visible
from server.cases.models import CaseState, Household, Relation
from server.cases.service import NewMember, apply_for_allowance, registered_elsewhere
from server.cases.workflow import next_review_after, review_rows, transition
from server.devices.models import DeviceToken
from server.errors import DomainError, ValidationFailed
from server.extensions import db, insert_as_loaded, write_as_loaded
from server.region import region
from server.storage import HashingFile, blob_store
from server.visits.checks import (
    Flag,
    GpsFix,
    PhotoEvidence,
    PreviousVisit,
    check_location,
    check_photos,
    check_times,
    check_travel,
)
from server.visits.integrity import visit as visit_integrity
from server.visits.models import (
    PhotoKind,
    ReviewStatus,
    Survey,
    SurveyFlag,
    SurveyPhoto,
    SurveyStatus,
)
from server.visits.photo_index import index_photo, integrity_flags, load_picture
from server.visits.photos import (
    PhotoFacts,
    PhotoRejected,
    check_photo_file,
    inspect_photo,
    make_thumbnail,
)
from server.visits.queries import VisitKind
from server.visits.schemas import PHOTO_ID, SurveyFlagOut, SurveyIn, SurveyStatusOut

logger = logging.getLogger(__name__)

REVIEWABLE = frozenset({CaseState.APPROVED, CaseState.SUSPENDED})


class ClientUuidConflict(DomainError):
    code = "client_uuid_conflict"
    http_status = 409


class PhotoNotInManifest(DomainError):
    code = "photo_not_in_manifest"
    http_status = 422


class Sha256Mismatch(DomainError):
    code = "sha256_mismatch"
    http_status = 422


@dataclass(frozen=True)
class ReceivedSurvey:
    survey: Survey
    created: bool
    # Photos stored by this request: thumbnails and face enrollment are queued for
    # them after the commit.
    new_photos: list[int]


def canonical_hash(payload: dict[str, Any]) -> str:
    """The identity of a survey's content: byte-for-byte key order does not matter."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_photo(photo: SurveyPhoto, temp: HashingFile) -> PhotoFacts:
    """Validate an uploaded photo against its manifest entry, its format, pixel count
    and structure (no decoding: the upload must not wait for it); returns what the
    photo's header and EXIF say. A photo described by no manifest (``sha256`` None:
    ODK Collect sends none) takes whatever bytes arrive first.
    """
    if photo.sha256 is not None and temp.sha256 != photo.sha256:
        raise Sha256Mismatch(
            f"photo {photo.photo_id}: the bytes do not match the manifest's sha256",
            photo_id=photo.photo_id,
            expected=photo.sha256,
            received=temp.sha256,
        )
    if photo.bytes is not None and temp.size != photo.bytes:
        raise ValidationFailed(
            f"photo {photo.photo_id}: {temp.size} bytes received, the manifest says {photo.bytes}",
            field=f"photos.{photo.photo_id}.bytes",
        )
    temp.flush()
    try:
        return check_photo_file(
            temp.path,
            max_pixels=current_app.config["DIBAO_MAX_PHOTO_PIXELS"],
            tz=region().timezone,
        )
    except PhotoRejected as exc:
        error = DomainError(f"photo {photo.photo_id}: {exc.message}", photo_id=photo.photo_id)
        error.code, error.http_status = exc.code, exc.http_status
        raise error from exc


_HOUSEHOLD = (
    select(Household)
    .options(joinedload(Household.village))
    .where(Household.id == bindparam("id", type_=Integer))
)


def _visible_place(device: DeviceToken, data: SurveyIn) -> tuple[Household | None, Area | None]:
    """The survey's household, or the village of the application it registers: looked
    up before anything else, and outside the caseworker's area exactly as unknown.
    """
    if data.household_id is not None:
        household = require_visible(
            device.user,
            # Its village (the area check) in the same query.
            db.session.scalars(_HOUSEHOLD, {"id": data.household_id}).one_or_none(),
            lambda h: h.village,
            "household",
            field="household_id",
        )
        return household, None
    if data.new_household is None:  # pragma: no cover - SurveyIn requires one of them
        raise ValueError("neither household_id nor new_household")
    village = require_visible(
        device.user,
        db.session.scalar(select(Area).where(Area.code == data.new_household.village_code)),
        lambda area: area,
        "village",
        field="new_household.village_code",
    )
    return None, village


def _register_household(
    device: DeviceToken, data: SurveyIn, village: Area | None
) -> tuple[Household, dict[str, int]]:
    """Register the application a caseworker took at the home, and accept it (the
    visit is its household survey). Returns the household and member ids by client_ref.
    """
    block = data.new_household
    if block is None or village is None:  # pragma: no cover - the caller checked
        raise ValueError("no new_household block")
    location = block.location or data.gps
    members = [
        NewMember(
            name=m.name or "",
            id_number=m.id_number or "",
            birth_date=m.birth_date or date.min,
            relation=Relation(m.relation or "other"),
            phone=m.phone,
            able_to_work=bool(m.able_to_work),
            monthly_income=m.monthly_income or Decimal("0.00"),
        )
        for m in data.members
    ]
    household = apply_for_allowance(
        actor=device.user,
        village=village,
        address=block.address,
        home_lat=location.lat,
        home_lon=location.lon,
        class_code=block.class_code,
        members=members,
        conflict_of_interest=block.conflict_of_interest,
        conflict_note=block.conflict_note,
        special_case=block.special_case,
    )
    transition(household, "accept", actor=device.user)
    refs = {
        m.client_ref: member.id
        for m, member in zip(data.members, household.members, strict=True)
        if m.client_ref
    }
    return household, refs


def _flag_registered_elsewhere(survey: Survey, household: Household) -> None:
    """A new applicant already registered in another open case: a critical flag. The
    office refuses such an application (cases.service.registered_elsewhere, the same
    check); a visit made in the field is evidence and stands, a reviewer decides."""
    found = registered_elsewhere([m.id_number for m in household.members], household.id)
    for other in sorted({f.household_id for f in found}):
        survey.flags.append(
            stored_flag(
                Flag(
                    code="member_registered_elsewhere",
                    severity="critical",
                    value=other,
                    threshold=None,
                    detail=f"a member's ID number is already registered in household {other}",
                )
            )
        )


def _survey_row(
    data: SurveyIn,
    content_hash: str,
    device: DeviceToken,
    household_id: int,
    new_members: dict[str, int],
    unsized: Collection[str],
) -> Survey:
    private = data.model_dump(
        mode="json", include={"members", "housing", "income", "notes", "track"}
    )
    survey = Survey(
        client_uuid=str(data.client_uuid),
        content_hash=content_hash,
        household_id=household_id,
        caseworker_id=device.user_id,
        device_token_id=device.id,
        kind=data.kind,
        status=SurveyStatus.AWAITING_PHOTOS if data.photos else SurveyStatus.COMPLETE,
        started_at=data.started_at.astimezone(UTC),
        finished_at=data.finished_at.astimezone(UTC),
        gps_lat=data.gps.lat,
        gps_lon=data.gps.lon,
        gps_accuracy_m=data.gps.accuracy_m,
        gps_altitude_m=data.gps.altitude_m,
        gps_fix_at=data.gps.fix_at.astimezone(UTC) if data.gps.fix_at else None,
        gps_provider=data.gps.provider,
        gps_is_mock=data.gps.is_mock,
        payload=json.dumps(private, ensure_ascii=False, sort_keys=True),
        completed_at=None if data.photos else clock.utcnow(),
        received_at=clock.utcnow(),
        review_status=ReviewStatus.RECEIVED,
        reviews=[],
        # A new row's collections are known to be empty: never loaded after the flush.
        photos=[],
        flags=[],
    )
    for p in data.photos:
        survey.photos.append(
            SurveyPhoto(
                photo_id=p.photo_id,
                kind=PhotoKind(p.kind),
                # A portrait of a member registered with this visit names the new id.
                member_ref=str(new_members[p.member_ref])
                if p.member_ref in new_members
                else p.member_ref,
                sha256=None if p.photo_id in unsized else p.sha256,
                bytes=None if p.photo_id in unsized else p.bytes,
                taken_at=p.taken_at.astimezone(UTC) if p.taken_at else None,
            )
        )
    return survey


def find_survey(device: DeviceToken, client_uuid: str) -> Survey:
    """The survey with this uuid, of a household within the caseworker's area (whoever
    uploaded it: the township's caseworkers share its cases); 404 otherwise."""
    survey = db.session.scalar(select(Survey).where(Survey.client_uuid == client_uuid))
    return require_visible(device.user, survey, lambda s: s.household.village, "survey")


def replayed_survey(
    device: DeviceToken, client_uuid: str, content_hash: str | None = None
) -> Survey:
    """The caseworker's own survey an upload repeats (with this content, when given).
    A client_uuid is unique over the whole service, so one already taken by other
    content, another caseworker or a household outside the area is the same conflict
    (409): never a 404 that would tell where it lies.
    """
    survey = db.session.scalar(select(Survey).where(Survey.client_uuid == client_uuid))
    if (
        survey is None
        or (content_hash is not None and survey.content_hash != content_hash)
        or survey.caseworker_id != device.user_id
        or not in_area(device.user, survey.household.village)
    ):
        raise ClientUuidConflict(
            "a different survey was already uploaded with this client_uuid",
            client_uuid=client_uuid,
        )
    return survey


def _check_parts(data: SurveyIn, uploads: dict[str, HashingFile]) -> dict[str, Any]:
    """Each photo part checked against its manifest entry, before anything is written."""
    manifest = {p.photo_id: p for p in data.photos}
    for name in uploads:
        if name not in manifest:
            raise PhotoNotInManifest(
                f"part {name!r} is not a photo_id of the survey's photos", photo_id=name
            )
    infos = {}
    for name, temp in uploads.items():
        entry = manifest[name]
        infos[name] = check_photo(
            SurveyPhoto(photo_id=name, sha256=entry.sha256, bytes=entry.bytes), temp
        )
    return infos


# The statements of every upload, built once (bound per call): building a SELECT costs
# more Python than running it.
_SURVEY_BY_UUID = select(Survey.id).where(Survey.client_uuid == bindparam("client_uuid"))
# The caseworker's visit before this one (the travel check).
_PREVIOUS_VISIT = (
    select(Survey.gps_lat, Survey.gps_lon, Survey.finished_at)
    .where(
        Survey.caseworker_id == bindparam("caseworker_id"),
        Survey.id != bindparam("id"),
        Survey.finished_at <= bindparam("at", type_=Survey.finished_at.type),
    )
    .order_by(Survey.finished_at.desc())
    .limit(1)
)
# Other visits' fixes in a box (repeated fixes). A range on (gps_lat, gps_lon):
# ix_surveys_gps answers it on SQLite and PostgreSQL.
_VISITS_NEAR = (
    select(Survey.id, Survey.gps_lat, Survey.gps_lon)
    .where(
        Survey.gps_lat.between(bindparam("lat_min"), bindparam("lat_max")),
        Survey.gps_lon.between(bindparam("lon_min"), bindparam("lon_max")),
        Survey.id != bindparam("id"),
    )
    .order_by(Survey.id)
    .limit(100)
)


def _new_or_replayed(
    device: DeviceToken,
    data: SurveyIn,
    household: Household | None,
    village: Area | None,
    content_hash: str,
    unsized: Collection[str],
) -> tuple[Survey, bool]:
    """The survey row made for this upload (True), with its household when the visit
    registers one, judged and flagged; or the one an earlier upload of the same visit
    made (False)."""
    if household is not None and not _home_pending(household, data):
        # The common upload: a visit to a registered household. One INSERT that does
        # nothing when the client_uuid is taken (an earlier upload, or another request
        # committing first): no lookup and no savepoint around it.
        survey = _survey_row(data, content_hash, device, household.id, {}, unsized)
        _review_timeliness(survey, household)
        if _insert_if_new(survey):
            _judge_and_record(survey, household, device, home_from_this_visit=False)
            return survey, True
        return replayed_survey(device, str(data.client_uuid), content_hash), False
    existing = db.session.scalar(_SURVEY_BY_UUID, {"client_uuid": str(data.client_uuid)})
    if existing is None:
        registers = household is None  # its home is then set from this visit
        try:
            with db.session.begin_nested():
                new_members: dict[str, int] = {}
                if household is None:
                    household, new_members = _register_household(device, data, village)
                elif _fixes_pending_home(household, data):
                    registers = True
                survey = _survey_row(data, content_hash, device, household.id, new_members, unsized)
                _review_timeliness(survey, household)
                db.session.add(survey)
                db.session.flush()
        except IntegrityError:
            # Another request with the same client_uuid committed first: undo this
            # savepoint only, never the caller's transaction (docs/decisions/0006).
            pass
        else:
            if new_members:
                _flag_registered_elsewhere(survey, household)
            _judge_and_record(survey, household, device, home_from_this_visit=registers)
            return survey, True
    return replayed_survey(device, str(data.client_uuid), content_hash), False


_INSERT_SURVEY: dict[str, Any] = {}


def _insert_if_new(survey: Survey) -> bool:
    """Write a new survey row unless its client_uuid is taken (an earlier upload, or
    another request committing first); True if written. One INSERT ... ON CONFLICT DO
    NOTHING RETURNING id: no lookup before it, no savepoint around it. Its photos
    follow through the session (they flush with the request).
    """
    dialect = db.session().get_bind().dialect.name
    statement = _INSERT_SURVEY.get(dialect)
    if statement is None:
        table = cast(Table, Survey.__table__)
        build = sqlite_insert if dialect == "sqlite" else pg_insert
        statement = (
            build(table)
            .on_conflict_do_nothing(index_elements=[table.c.client_uuid])
            .returning(table.c.id)
        )
        _INSERT_SURVEY[dialect] = statement
    photos = list(survey.photos)
    survey.photos = []
    if not insert_as_loaded([survey], statement):
        return False
    survey.photos.extend(photos)
    return True


def _home_pending(household: Household, data: SurveyIn) -> bool:
    """Whether this visit sets the household's home (see _fixes_pending_home)."""
    return (
        household.home_pending
        and data.kind == "initial_survey"
        and household.state is CaseState.ACCEPTED
    )


def _fixes_pending_home(household: Household, data: SurveyIn) -> bool:
    """An application taken at the office without a location had the village's centre
    as its home (``home_pending``): its initial survey's GPS fix becomes the home, as a
    tablet's own registration takes it. True when this visit set it."""
    if not _home_pending(household, data):
        return False
    household.home_lat, household.home_lon = data.gps.lat, data.gps.lon
    household.home_pending = False
    return True


def receive_survey(
    *,
    device: DeviceToken,
    data: SurveyIn,
    uploads: dict[str, HashingFile],
    raw: dict[str, Any] | None = None,
    content_hash: str | None = None,
    unsized: Collection[str] = (),
) -> ReceivedSurvey:
    """Record a visit, or recognise a replay of one, and attach the photo parts that
    came with it. Every part is checked before anything is written.

    The visit's identity is ``content_hash`` if given (OpenRosa: the XML's sha256),
    else the canonical hash of ``raw``, the JSON the tablet sent. ``unsized`` names
    photos whose manifest facts in ``data`` are placeholders: they are stored without
    sha256 and size, and take the bytes that arrive for them (now, or later).
    """
    household, village = _visible_place(device, data)

    infos = _check_parts(data, uploads)
    if content_hash is None:
        if raw is None:
            raise TypeError("receive_survey needs raw or content_hash")
        content_hash = canonical_hash(raw)
    survey, created = _new_or_replayed(device, data, household, village, content_hash, unsized)
    for photo in survey.photos:
        sent = uploads.get(photo.photo_id)
        if sent is not None and photo.received_at is not None and sent.sha256 != photo.sha256:
            raise ClientUuidConflict(
                f"photo {photo.photo_id} differs from the one already received",
                client_uuid=str(data.client_uuid),
                photo_id=photo.photo_id,
            )
    accepted = [
        photo for photo in survey.photos if photo.photo_id in uploads and photo.received_at is None
    ]
    blob_store().store_all([uploads[photo.photo_id] for photo in accepted])
    for photo in accepted:
        _size_from_upload(photo, uploads[photo.photo_id])
        _accept_photo(survey, photo, infos[photo.photo_id])
    _update_status(survey)
    db.session.flush()
    return ReceivedSurvey(survey=survey, created=created, new_photos=[p.id for p in accepted])


def receive_photo(
    *, device: DeviceToken, client_uuid: str, photo_id: str, temp: HashingFile
) -> ReceivedSurvey:
    """Attach one photo's bytes to its survey; a repeat of a stored photo is a no-op."""
    survey = find_survey(device, client_uuid)
    if not PHOTO_ID.match(photo_id):
        raise ValidationFailed("photo_id may hold only A-Z a-z 0-9 _ -", field="photo_id")
    photo = next((p for p in survey.photos if p.photo_id == photo_id), None)
    if photo is None:
        raise PhotoNotInManifest(
            f"{photo_id!r} is not a photo_id of this survey", photo_id=photo_id
        )
    info = check_photo(photo, temp)
    if photo.received_at is not None:
        return ReceivedSurvey(survey=survey, created=False, new_photos=[])
    blob_store().store(temp)
    _size_from_upload(photo, temp)
    _accept_photo(survey, photo, info)
    _update_status(survey)
    db.session.flush()
    return ReceivedSurvey(survey=survey, created=False, new_photos=[photo.id])


def _size_from_upload(photo: SurveyPhoto, temp: HashingFile) -> None:
    """A photo no manifest described is what arrived (checked by check_photo)."""
    if photo.sha256 is None:
        photo.sha256, photo.bytes = temp.sha256, temp.size


def _accept_photo(survey: Survey, photo: SurveyPhoto, info: PhotoFacts) -> None:
    """Record what a checked, durably stored photo's EXIF says, and flag what that
    contradicts (the visit's place and time). Pixel work comes later (analyse_photo).
    """
    photo.content_type = f"image/{info.format.lower()}"
    photo.width, photo.height = info.width, info.height
    photo.exif_taken_at, photo.exif_lat, photo.exif_lon = info.taken_at, info.gps_lat, info.gps_lon
    photo.camera = info.camera
    photo.received_at = clock.utcnow()

    evidence = PhotoEvidence(photo.photo_id, info.taken_at, info.gps_lat, info.gps_lon)
    fix = GpsFix(
        survey.gps_lat, survey.gps_lon, survey.gps_accuracy_m, survey.gps_fix_at, survey.gps_is_mock
    )
    for flag in check_photos(
        [evidence], fix, survey.started_at, survey.finished_at, region().visit_thresholds
    ):
        survey.flags.append(stored_flag(flag))


def _judge_and_record(
    survey: Survey, household: Household, device: DeviceToken, *, home_from_this_visit: bool = False
) -> None:
    """Raise the evidence flags a newly received visit deserves, and let the visit
    count on its case (a review done, a survey recorded). Flags never block this:
    a real visit with a doubtful GPS fix still happened, a reviewer decides.
    ``home_from_this_visit``: the household was registered by this upload, its home
    set from it (so the fix sitting on the home says nothing).
    """
    thresholds = region().visit_thresholds
    fix = GpsFix(
        lat=survey.gps_lat,
        lon=survey.gps_lon,
        accuracy_m=survey.gps_accuracy_m,
        fix_at=survey.gps_fix_at,
        is_mock=survey.gps_is_mock,
    )
    flags = check_location(fix, household.home_lat, household.home_lon, thresholds)
    flags += check_times(survey.started_at, survey.finished_at, survey.received_at, thresholds)
    previous = db.session.execute(
        _PREVIOUS_VISIT,
        {"caseworker_id": survey.caseworker_id, "id": survey.id, "at": survey.finished_at},
    ).first()
    earlier = PreviousVisit(*previous) if previous is not None else None
    flags += check_travel(fix, survey.finished_at, earlier, thresholds)
    flags += _visit_integrity_flags(survey, household, home_from_this_visit=home_from_this_visit)

    visit_day = _visit_day(survey)
    reviewed = _is_review(survey, household)
    records_survey = (
        survey.kind == VisitKind.INITIAL_SURVEY and household.state is CaseState.ACCEPTED
    )
    if not reviewed and not records_survey and survey.kind != VisitKind.ASSISTED_PROOF_OF_LIFE:
        flags.append(
            Flag(
                code="visit_kind_mismatch",
                severity="info",
                value=survey.kind,
                threshold=household.state.value,
                detail=f"a {survey.kind} visit to a case that is {household.state.value}",
            )
        )
    flags += _bunched_photo_flags(survey)
    others: list[Any] = [
        audit.entry(
            "survey.received",
            actor=device.user,
            object_type="survey",
            object_id=survey.id,
            household_id=survey.household_id,
            device_token_id=device.id,
        )
    ]
    columns: dict[str, Any] = {}
    if reviewed:
        rows = review_rows(
            household,
            next_review_after(household, visit_day),
            actor=device.user,
            action="periodic_review",
            reason=f"visit {survey.client_uuid}",
            reviewed_on=visit_day,
        )
        others += rows.new
        columns = rows.household
    _write_visit(survey, household, [stored_flag(flag) for flag in flags], others, columns)
    if records_survey:
        transition(household, "record_survey", actor=device.user, today=visit_day)


def _write_visit(
    survey: Survey,
    household: Household,
    flags: list[SurveyFlag],
    others: list[Any],
    columns: dict[str, Any],
) -> None:
    """A new visit's rows after its checks (its flags, its audit row, a review's case
    event and audit row) and the household's ``columns``: one statement, no unit of
    work (server.extensions.write_as_loaded), unless the upload registered its household
    or left flags for the flush (a registration's): then all go with the flush."""
    if inspect(survey).attrs.flags.history.has_changes() or not inspect(household).persistent:
        survey.flags.extend(flags)
        db.session.add_all(others)
        for key, value in columns.items():
            setattr(household, key, value)
        return
    for flag in flags:
        flag.survey_id = survey.id
    write_as_loaded([*flags, *others], [(household, columns)] if columns else [])
    for flag in flags:
        set_committed_value(flag, "survey", survey)
    set_committed_value(survey, "flags", [*survey.flags, *flags])


def _visit_day(survey: Survey) -> date:
    return survey.finished_at.astimezone(ZoneInfo(region().timezone)).date()


def _is_review(survey: Survey, household: Household) -> bool:
    return survey.kind == VisitKind.PERIODIC_REVIEW and household.state in REVIEWABLE


def _review_timeliness(survey: Survey, household: Household) -> None:
    """Kept for the caseworker's activity: was the review done by its due day? Set
    before the row is first written (no UPDATE after the INSERT)."""
    if _is_review(survey, household):
        survey.review_due_on = household.next_review_on
        if household.next_review_on is not None:
            survey.review_on_time = _visit_day(survey) <= household.next_review_on


def _visit_integrity_flags(
    survey: Survey, household: Household, *, home_from_this_visit: bool
) -> list[Flag]:
    """The per-visit integrity checks of a new upload (docs/field-visits.md, "Per-visit
    checks"): its duration, its fix against the home and other visits' fixes, its track.
    The home is compared as registered before this visit: one registered from this very
    fix is skipped.
    """
    rules = region().integrity.visit
    private = json.loads(survey.payload)
    flags = visit_integrity.visit_too_short(
        survey.kind,
        survey.started_at,
        survey.finished_at,
        len(private.get("members") or []),
        len(survey.photos),
        rules,
    )
    flags += visit_integrity.gps_too_precise(survey.gps_accuracy_m, rules)
    if not home_from_this_visit:
        flags += visit_integrity.gps_at_registered_point(
            survey.gps_lat, survey.gps_lon, household.home_lat, household.home_lon, rules
        )
    lat_min, lat_max, lon_min, lon_max = visit_integrity.repeat_box(
        survey.gps_lat, survey.gps_lon, rules
    )
    others = db.session.execute(
        _VISITS_NEAR,
        {
            "lat_min": lat_min,
            "lat_max": lat_max,
            "lon_min": lon_min,
            "lon_max": lon_max,
            "id": survey.id,
        },
    ).all()
    flags += visit_integrity.gps_repeated(
        survey.gps_lat, survey.gps_lon, [(i, lat, lon) for i, lat, lon in others], rules
    )
    flags += visit_integrity.gps_fix_stale(survey.gps_fix_at, survey.started_at, rules)
    track = [
        visit_integrity.TrackPoint(
            lat=float(point["lat"]),
            lon=float(point["lon"]),
            accuracy_m=None if point.get("accuracy_m") is None else float(point["accuracy_m"]),
            at=datetime.fromisoformat(point["at"]).astimezone(UTC),
        )
        for point in private.get("track") or []
    ]
    flags += visit_integrity.track_static(track, rules)
    flags += visit_integrity.track_jump(track, rules)
    return flags


def _flag_bunched_photos(survey: Survey) -> None:
    """``photos_bunched`` on the photos' times: at the upload the tablet's ``taken_at``,
    once every photo is in each one's EXIF time where it has one. Raised once. Documents
    are left out: an ID card and the household register's pages are honestly shot in a
    row, at one table.
    """
    for flag in _bunched_photo_flags(survey):
        survey.flags.append(stored_flag(flag))


def _bunched_photo_flags(survey: Survey) -> list[Flag]:
    if any(flag.code == "photos_bunched" for flag in survey.flags):
        return []
    times = [
        moment
        for photo in survey.photos
        if photo.kind is not PhotoKind.DOCUMENT
        and (moment := photo.exif_taken_at or photo.taken_at) is not None
    ]
    return visit_integrity.photos_bunched(
        times, survey.started_at, survey.finished_at, region().integrity.visit
    )


def stored_flag(flag: Flag) -> SurveyFlag:
    return SurveyFlag(
        code=flag.code,
        severity=flag.severity,
        value=None if flag.value is None else str(flag.value),
        threshold=None if flag.threshold is None else str(flag.threshold),
        detail=flag.detail,
    )


def analyse_photo(survey_photo_id: int) -> None:
    """The pixel work on a received photo, in a background job (the upload was
    acknowledged once the original was durable): decode it, hash it perceptually, index
    it and look for the same picture in other households (``photo_reused``) and for a
    near-duplicate housing photo in the caseworker's month (``photo_near_duplicate``:
    server/visits/photo_index.py), and store a reviewer's thumbnail. Running it twice
    changes nothing.
    """
    photo = db.session.get(SurveyPhoto, survey_photo_id)
    if photo is None or photo.received_at is None or photo.thumbnail_sha256 is not None:
        return
    store = blob_store()
    survey = photo.survey
    max_pixels = current_app.config["DIBAO_MAX_PHOTO_PIXELS"]
    try:
        info = inspect_photo(store.path(photo.received_sha256), max_pixels=max_pixels)
    except PhotoRejected as exc:
        # Passed the upload's structural check but does not decode: keep it as evidence.
        survey.flags.append(
            stored_flag(
                Flag(
                    code="photo_undecodable",
                    severity="warning",
                    value=exc.code,
                    threshold=None,
                    detail=f"photo {photo.photo_id} cannot be decoded",
                )
            )
        )
        photo.thumbnail_sha256 = photo.received_sha256  # nothing better to show; never retried
        db.session.flush()
        return
    photo.phash = info.phash
    picture = load_picture(photo, region().integrity.photos.verify_side)
    if picture is not None:
        index_photo(photo, picture)
        for household_id, flag in integrity_flags(photo, picture):
            _record_once(survey, flag, household_id)
    thumbnail = store.temp_path(".jpg")
    try:
        make_thumbnail(store.path(photo.received_sha256), thumbnail, max_pixels=max_pixels)
        photo.thumbnail_sha256 = store.store_file(thumbnail)
    finally:
        thumbnail.unlink(missing_ok=True)
    db.session.flush()


def _record_once(survey: Survey, flag: Flag, household_id: int) -> None:
    """Store a flag naming another household unless the visit has it already (a visit's
    several photos of one household's picture make one flag)."""
    for held in survey.flags:
        if held.code == flag.code and held.extra.get("household_id") == household_id:
            return
    stored = stored_flag(flag)
    stored.extra = {"household_id": household_id}
    survey.flags.append(stored)


def _update_status(survey: Survey) -> None:
    if survey.status is SurveyStatus.AWAITING_PHOTOS and not survey.missing_photos:
        survey.status = SurveyStatus.COMPLETE
        survey.completed_at = clock.utcnow()
        _flag_bunched_photos(survey)


def survey_body(survey: Survey) -> dict[str, Any]:
    """The reply to every survey request (the contract's fields, and the case)."""
    return SurveyStatusOut(
        survey_id=survey.id,
        household_id=survey.household_id,
        case_code=survey.household.case_code,
        client_uuid=survey.client_uuid,
        status=survey.status,
        missing_photos=survey.missing_photos,
        flags=[
            SurveyFlagOut(
                code=f.code,
                severity=f.severity,  # type: ignore[arg-type]  # stored from a Severity
                value=f.value,
                threshold=f.threshold,
                detail=f.detail,
            )
            for f in survey.flags
        ],
    ).dump()
