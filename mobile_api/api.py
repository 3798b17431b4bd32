"""The tablet API under /api/v1 (contract: docs/api.md and /api/openapi.json)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, cast
from uuid import UUID

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import BadRequest

from mobile_api.auth import current_caseworker, current_device, device_required
from mobile_api.conditional import none_match_fails
from mobile_api.multipart import read_upload
from mobile_api.openapi import openapi_document
from mobile_api.schemas import (
    AreaOut,
    DeviceLogin,
    DeviceOut,
    DeviceTokenOut,
    DueMemberOut,
    DueVisitOut,
    DueVisitsOut,
    FaceTemplateOut,
    FaceWarningOut,
    LimitsOut,
    LocationOut,
    MetaOut,
    RevisitOut,
    UserOut,
    VersionOut,
    parse,
)
from server import clock, safe_json
from server.cases.models import Relation
from server.cases.workflow import local_today
from server.devices.service import issue_device_token
from server.errors import ValidationFailed
from server.extensions import csrf, db
from server.rate_limits import login_limits
from server.storage import HashingFile, blob_store
from server.visits import service as visits
from server.visits.faces import enroll_member_photo, member_to_enroll
from server.visits.queries import (
    DueVisit,
    due_visits_stamp,
    plan_due_visits,
    record_names_read,
    render_due_visits,
)
from server.visits.schemas import SurveyIn, SurveyStatusOut
from server.visits.tasks import enqueue_photo_work, enqueue_upload_work
from server.wire import BINARY, Multipart, Operation, Part, operation

API_VERSION = "1"

bp = Blueprint("api", __name__, url_prefix="/api")
csrf.exempt(bp)  # token-authenticated clients, no cookies


def _json_body() -> Any:
    if not request.is_json:
        raise ValidationFailed("the request body must be JSON (Content-Type: application/json)")
    try:
        return request.get_json()
    except BadRequest as exc:
        raise ValidationFailed("the request body is not valid JSON") from exc


def _survey_upload() -> tuple[dict[str, Any], dict[str, HashingFile]]:
    """The survey JSON and the photo parts of a multipart or JSON-only upload."""
    if request.mimetype != "multipart/form-data":
        return _json_body(), {}
    body = read_upload(
        blob_store(),
        max_file_bytes=current_app.config["DIBAO_MAX_PHOTO_BYTES"],
        not_multipart="send the survey as JSON or multipart/form-data",
        max_field_bytes=current_app.config["MAX_FORM_MEMORY_SIZE"],
    )
    uploads = cast(dict[str, HashingFile], body.files)
    try:
        text = body.fields.get("survey")
        if text is None:
            raise ValidationFailed("a multipart upload needs a 'survey' part", field="survey")
        try:
            raw = safe_json.loads(text)
        except safe_json.JSONRefused:
            raise
        except ValueError as exc:
            raise ValidationFailed("the 'survey' part is not valid JSON", field="survey") from exc
        for name in body.fields:
            if name != "survey":
                raise ValidationFailed(
                    f"part {name!r} has no filename: send photos as file parts", field=name
                )
    except ValidationFailed:
        body.close()
        raise
    return raw, uploads


def _survey_response(survey: Any, status: int) -> tuple[Response, int]:
    return jsonify(visits.survey_body(survey)), status


@bp.get("/openapi.json")
@operation(Operation(summary="This document", security="none", responses={200: "OpenAPI 3.1"}))
def openapi() -> Response:
    return jsonify(openapi_document())


@bp.get("/v1/version")
@operation(
    Operation(
        summary="API version and server time (no login)",
        security="none",
        responses={200: VersionOut},
    )
)
def version() -> Response:
    return jsonify(VersionOut(api_version=API_VERSION, server_time=clock.utcnow()).dump())


@bp.post("/v1/auth/device-tokens")
@operation(
    Operation(
        summary="Log a tablet in (caseworkers only)",
        security="none",
        json_body=DeviceLogin,
        responses={201: DeviceTokenOut},
        errors={
            401: "invalid_credentials",
            403: "not_permitted: only caseworkers log tablets in",
            413: "the request is too large",
            422: "validation_failed: details.field names the field",
            429: "rate_limited: too many failed logins for this username or address",
        },
    )
)
@login_limits
def create_device_token() -> tuple[Response, int]:
    login = parse(DeviceLogin, _json_body())
    issued = issue_device_token(
        username=login.username,
        password=login.password,
        device_id=login.device_id,
        device_name=login.device_name,
    )
    db.session.commit()
    user = issued.record.user
    body = DeviceTokenOut(
        token=issued.token,
        token_prefix=issued.record.token_prefix,
        expires_at=issued.record.expires_at,
        user=UserOut(
            username=user.username,
            role=cast(Literal["caseworker"], user.role.value),  # only they log tablets in
            area=AreaOut(code=user.area.code, name=user.area.name),
        ),
    )
    return jsonify(body.dump()), 201


@bp.post("/v1/surveys")
@operation(
    Operation(
        summary="Upload one field visit (idempotent on client_uuid)",
        description=(
            "multipart/form-data with a 'survey' part (the JSON) and one file part per "
            "photo, named by its photo_id; or the JSON alone, photos sent later with PUT. "
            "201 on first receipt, 200 with the same body on an identical replay. A reply "
            "is sent only after everything is durably stored."
        ),
        json_body=SurveyIn,
        multipart=Multipart(
            parts={"survey": Part(SurveyIn, "the survey JSON", required=True)},
            other_parts=Part(BINARY, "a photo (JPEG or PNG), the part named by its photo_id"),
        ),
        responses={201: SurveyStatusOut, 200: SurveyStatusOut},
        errors={
            404: "not_found: no such household (or village) in your township",
            409: "client_uuid_conflict: the uuid was used for a different survey",
            413: "a photo over max_photo_bytes or a request over max_request_bytes",
            415: "unsupported_media_type: a photo is not a JPEG or PNG",
            422: "validation_failed, sha256_mismatch or photo_not_in_manifest",
        },
    )
)
@device_required
def create_survey() -> tuple[Response, int]:
    raw, uploads = _survey_upload()
    try:
        data = parse(SurveyIn, raw)
        received = visits.receive_survey(
            device=current_device(), data=data, raw=raw, uploads=uploads
        )
        # Built from the flushed rows before the commit expires them (saves reloading).
        body = visits.survey_body(received.survey)
        db.session.commit()
    finally:
        for upload in uploads.values():
            upload.close()  # removes a temp file that was not stored
    enqueue_upload_work(received)
    return jsonify(body), 201 if received.created else 200


@bp.put("/v1/surveys/<uuid:client_uuid>/photos/<photo_id>")
@operation(
    Operation(
        summary="Send one photo of an uploaded survey (its bytes are the body)",
        raw_body=("image/jpeg", "image/png", "application/octet-stream"),
        responses={200: SurveyStatusOut},
        errors={
            404: "not_found: no such survey from this device",
            413: "a photo over max_photo_bytes or a request over max_request_bytes",
            415: "unsupported_media_type: not a JPEG or PNG",
            422: "sha256_mismatch or photo_not_in_manifest",
        },
    )
)
@device_required
def put_survey_photo(client_uuid: UUID, photo_id: str) -> tuple[Response, int]:
    limit = current_app.config["DIBAO_MAX_PHOTO_BYTES"]
    with blob_store().new_temp(max_bytes=limit) as temp:
        while chunk := request.stream.read(256 * 1024):
            temp.write(chunk)
        received = visits.receive_photo(
            device=current_device(), client_uuid=str(client_uuid), photo_id=photo_id, temp=temp
        )
        db.session.commit()
    body = visits.survey_body(received.survey)
    enqueue_photo_work(received.new_photos)
    return jsonify(body), 200


@bp.post("/v1/members/<id:member_id>/face-templates")
@operation(
    Operation(
        summary="Enroll a member's face from one photo taken by the caseworker",
        multipart=Multipart(
            parts={"photo": Part(BINARY, "the portrait (JPEG or PNG)", required=True)}
        ),
        responses={201: FaceTemplateOut},
        errors={
            403: "not_permitted",
            404: "not_found: no such member in your township",
            413: "a photo over max_photo_bytes or a request over max_request_bytes",
            415: "unsupported_media_type: not a JPEG or PNG",
            422: "validation_failed, no_face or many_faces",
        },
    )
)
@device_required
def enroll_face(member_id: int) -> tuple[Response, int]:
    """A caseworker's explicit enrollment: multipart with one file part ``photo``."""
    member = member_to_enroll(current_caseworker(), member_id)
    body = read_upload(
        blob_store(),
        max_file_bytes=current_app.config["DIBAO_MAX_PHOTO_BYTES"],
        not_multipart="send the photo as multipart/form-data",
        details={"field": "photo"},
        max_parts=4,
    )
    try:
        photo = body.files.get("photo")
        if photo is None or set(body.files) != {"photo"} or body.fields:
            raise ValidationFailed("send exactly one file part named 'photo'", field="photo")
        template, flags = enroll_member_photo(
            member, cast(HashingFile, photo), actor=current_caseworker(), device=current_device()
        )
        result = FaceTemplateOut(
            face_template_id=template.id,
            member_id=member.id,
            model_name=template.model_name,
            model_version=template.model_version,
            warnings=[
                FaceWarningOut(
                    code=f.code, severity=f.severity, value=f.value, threshold=f.threshold
                )
                for f in flags
            ],
        ).dump()
        db.session.commit()
    finally:
        body.close()
    return jsonify(result), 201


@bp.get("/v1/surveys/<uuid:client_uuid>")
@operation(
    Operation(
        summary="A survey's state: missing photos, flags",
        responses={200: SurveyStatusOut},
        errors={404: "not_found: no such survey from this device"},
    )
)
@device_required
def get_survey(client_uuid: UUID) -> tuple[Response, int]:
    survey = visits.find_survey(current_device(), str(client_uuid))
    db.session.commit()
    return _survey_response(survey, 200)


@bp.get("/v1/meta")
@operation(
    Operation(summary="Upload limits, server time, this device's token", responses={200: MetaOut})
)
@device_required
def meta() -> Response:
    config = current_app.config
    device = current_device()
    body = MetaOut(
        api_version=API_VERSION,
        server_time=clock.utcnow(),
        limits=LimitsOut(
            max_photo_bytes=config["DIBAO_MAX_PHOTO_BYTES"],
            max_request_bytes=config["DIBAO_MAX_REQUEST_BYTES"],
            recommended_batch_bytes=min(8 * 1024 * 1024, config["DIBAO_MAX_REQUEST_BYTES"]),
        ),
        device=DeviceOut(device_id=device.device_id, token_expires_at=device.expires_at),
    )
    db.session.commit()  # last_used_at
    return jsonify(body.dump())


@bp.get("/v1/visits/due")
@operation(
    Operation(
        summary="The households of the caseworker's township to visit, soonest first",
        etag=True,
        responses={200: DueVisitsOut, 304: "unchanged since the ETag sent"},
    )
)
@device_required
def visits_due() -> Response:
    caseworker = current_caseworker()
    plan = plan_due_visits(
        caseworker,
        today=local_today(),
        window_days=current_app.config["DIBAO_DUE_WINDOW_DAYS"],
    )
    # The list's version, from the plan and a digest of the stored (encrypted) data:
    # an unchanged list answers 304 without decrypting anything.
    etag = due_visits_stamp(plan, caseworker, schema=_DUE_SCHEMA)
    if none_match_fails(request.headers.get("If-None-Match"), etag):
        db.session.commit()  # the token's last_used_at; nothing personal was read
        response = Response(status=304)
    else:
        visits = render_due_visits(plan)
        record_names_read(caseworker, visits)
        db.session.commit()
        payload = json.dumps(_due_visits_out(visits).dump(), ensure_ascii=False, sort_keys=True)
        response = Response(payload.encode("utf-8"), mimetype="application/json")
    response.set_etag(etag)
    # no-store: the list names people and must sit in no shared cache; the tablet
    # keeps its own copy and revalidates it itself (If-None-Match), which needs none.
    response.headers["Cache-Control"] = "no-store"
    response.vary.add("Authorization")
    return response


def _due_visits_out(visits: list[DueVisit]) -> DueVisitsOut:
    return DueVisitsOut(
        items=[
            DueVisitOut(
                household_id=v.household_id,
                case_code=v.case_code,
                kind=v.kind,
                due_by=v.due_by,
                village=v.village,
                village_code=v.village_code,
                address=v.address,
                location=LocationOut(lat=v.lat, lon=v.lon),
                members=[
                    DueMemberOut(member_id=m.member_id, name=m.name, relation=Relation(m.relation))
                    for m in v.members
                ],
                reasons=list(v.reasons),  # type: ignore[arg-type]  # validated by the model
                revisit=None
                if v.revisit is None
                else RevisitOut(
                    survey_id=v.revisit.survey_id,
                    client_uuid=v.revisit.client_uuid,
                    visit_kind=v.revisit.visit_kind,  # type: ignore[arg-type]  # validated
                    finished_at=v.revisit.finished_at,
                    rejected_at=v.revisit.rejected_at,
                    reason=v.revisit.reason,
                ),
            )
            for v in visits
        ]
    )


# The answer's format, in the list's stamp: a new API version or a change to the
# schema of the answer changes every ETag, so no tablet keeps a list it cannot read.
_DUE_SCHEMA = (
    f"api {API_VERSION} "
    + hashlib.sha256(
        json.dumps(DueVisitsOut.model_json_schema(), sort_keys=True).encode("utf-8")
    ).hexdigest()
)
