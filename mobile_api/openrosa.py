"""The OpenRosa 1.0 face for ODK Collect, under /openrosa (guide: docs/odk-collect.md).

- ``GET /openrosa/formList`` and ``GET /openrosa/forms/<form_id>.xml``: the forms
  (built from ``forms/*.xlsx`` by ``scripts/build_forms.py``);
- ``HEAD /openrosa/submission``: 204 and the largest POST we take;
- ``POST /openrosa/submission``: ``xml_submission_file`` and the photos as file parts
  named by their file names; a survey of the tablet contract, received by the same
  service as ``POST /api/v1/surveys`` (idempotent on ``meta/instanceID``).

Every request must say ``X-OpenRosa-Version: 1.0`` and carry the caseworker's device
token: ``Authorization: Basic`` with the username and the token as the password (what
ODK Collect sends), or ``Authorization: Bearer <token>``. Every reply says
``X-OpenRosa-Version: 1.0``; errors are ``<OpenRosaResponse>`` messages.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from uuid import UUID
from xml.etree.ElementTree import Element, ParseError, SubElement, tostring

from defusedxml.ElementTree import fromstring
from flask import Blueprint, Response, current_app, g, request, url_for
from sqlalchemy import select
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from server.auth.permissions import require_visible
from server.cases.models import Household
from server.devices.models import DeviceToken
from server.devices.service import InvalidToken, authenticate_device
from server.errors import DomainError
from server.extensions import csrf, db
from server.faces.tasks import enqueue_photo_work
from server.storage import HashingFile, TooLarge
from server.visits import service as visits
from server.visits.models import Survey, SurveyPhoto
from server.visits.openrosa_mapping import (
    MAX_XML_BYTES,
    FileFacts,
    PendingFiles,
    Submission,
    SubmissionRejected,
    UnknownForm,
    parse_submission,
)
from server.web_errors import answer_safely

logger = logging.getLogger(__name__)

OPENROSA_VERSION = "1.0"
XFORMS_LIST_NS = "http://openrosa.org/xforms/xformsList"
RESPONSE_NS = "http://openrosa.org/http/response"
XML_MIMETYPE = "text/xml; charset=utf-8"
# ODK Collect sizes its POSTs by the files alone: leave room for the XML and the
# multipart headers (at most 100 files per POST).
MULTIPART_ALLOWANCE = 1024 * 1024 + 64 * 1024
FORMS_DIR = Path(__file__).resolve().parents[1] / "forms"
FORM_FILES = {"household_survey": "household_survey.xml"}
INCOMPLETE_FIELD = "*isIncomplete*"

bp = Blueprint("openrosa", __name__, url_prefix="/openrosa")
csrf.exempt(bp)  # credentials in every request, no cookies


class MissingVersionHeader(DomainError):
    code = "openrosa_version_required"
    http_status = 400


class MissingPhotos(DomainError):
    code = "photos_missing"
    http_status = 422


# -- replies --------------------------------------------------------------------------


def openrosa_response(message: str, status: int, nature: str | None = None) -> Response:
    root = Element("OpenRosaResponse", xmlns=RESPONSE_NS)
    element = SubElement(root, "message")
    if nature:
        element.set("nature", nature)
    element.text = message
    return _xml(root, status)


def _xml(root: Element, status: int = 200) -> Response:
    body = tostring(root, encoding="utf-8", xml_declaration=True)
    return Response(body, status=status, content_type=XML_MIMETYPE)


@bp.after_request
def _version_header(response: Response) -> Response:
    response.headers["X-OpenRosa-Version"] = OPENROSA_VERSION
    return response


def openrosa_error(status: int, message: str) -> Response:
    """An error as an OpenRosa message (also for paths under /openrosa/ that match no
    route: server.web_errors answers those)."""
    return openrosa_response(message, status)


def _minimal(status: int) -> Response:
    body = (
        f'<OpenRosaResponse xmlns="{RESPONSE_NS}">'
        f"<message>error {status}</message></OpenRosaResponse>"
    )
    return Response(body.encode("ascii"), status=status, content_type=XML_MIMETYPE)


def _safely(build: Callable[[], Response], status: int) -> Response:
    answer = answer_safely(build, lambda: _minimal(status), status)
    return answer if isinstance(answer, Response) else _minimal(status)


@bp.errorhandler(DomainError)
def _domain_error(exc: DomainError) -> Response:
    def build() -> Response:
        response = openrosa_response(exc.message, exc.http_status)
        if exc.http_status == 401:
            response.headers["WWW-Authenticate"] = 'Basic realm="dibao", charset="UTF-8"'
        return response

    return _safely(build, exc.http_status)


@bp.errorhandler(TooLarge)
def _too_large(exc: TooLarge) -> Response:
    return _safely(lambda: openrosa_response(f"a photo is too large: {exc}", 413), 413)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if (
        isinstance(exc, RequestEntityTooLarge)
        and exc.description == RequestEntityTooLarge.description
    ):
        limit = current_app.config["DIBAO_MAX_REQUEST_BYTES"]
        return _safely(
            lambda: openrosa_response(f"the request is larger than {limit} bytes", 413), 413
        )
    return _safely(lambda: openrosa_response(exc.description or exc.name, status), status)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return _safely(lambda: openrosa_response("internal server error", 500), 500)


# -- every request: protocol version, then credentials --------------------------------


@bp.before_request
def _check_request() -> None:
    if request.headers.get("X-OpenRosa-Version", "").strip() != OPENROSA_VERSION:
        raise MissingVersionHeader("send the header X-OpenRosa-Version: 1.0")
    g.device = _authenticate()


def _authenticate() -> DeviceToken:
    """The device token from ``Basic`` (username + token as the password) or ``Bearer``.
    The caseworker's own password is never accepted here: only a device token, which
    the dashboard or ``dibao devices`` can revoke.
    """
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return authenticate_device(value.strip())
    credentials = request.authorization
    if scheme.lower() == "basic" and credentials is not None and credentials.password:
        device = authenticate_device(credentials.password.strip())
        username = (credentials.username or "").strip().casefold()
        if username != device.user.username.casefold():
            raise InvalidToken("the username does not match the device token")
        return device
    raise InvalidToken("log in with your username and the tablet's device token as the password")


def _device() -> DeviceToken:
    device: DeviceToken = g.device
    return device


# -- forms ----------------------------------------------------------------------------


@dataclass(frozen=True)
class XForm:
    form_id: str
    name: str
    version: str | None
    body: bytes

    @property
    def md5(self) -> str:
        return hashlib.md5(self.body, usedforsecurity=False).hexdigest()


def _form(form_id: str) -> XForm:
    file_name = FORM_FILES.get(form_id)
    path = FORMS_DIR / file_name if file_name else None
    if path is None or not path.is_file():
        raise UnknownForm(f"no form with id {form_id!r} on this server")
    return _load_form(form_id, path, path.stat().st_mtime_ns)


@lru_cache(maxsize=16)
def _load_form(form_id: str, path: Path, mtime_ns: int) -> XForm:
    body = path.read_bytes()
    try:
        root = fromstring(body, forbid_dtd=True)
    except ParseError as exc:
        raise RuntimeError(f"{path} is not well-formed: run scripts/build_forms.py") from exc
    title = next((e.text for e in root.iter() if e.tag.endswith("}title")), None) or form_id
    version = None
    for element in root.iter():
        if element.tag.endswith("}instance") and element.get("id") is None:
            primary = next(iter(element), None)
            version = primary.get("version") if primary is not None else None
            break
    return XForm(form_id=form_id, name=title.strip(), version=version, body=body)


@bp.get("/formList")
def form_list() -> Response:
    wanted = request.args.get("formID")
    root = Element("xforms", xmlns=XFORMS_LIST_NS)
    for form_id in sorted(FORM_FILES):
        if wanted and wanted != form_id:
            continue
        form = _form(form_id)
        entry = SubElement(root, "xForm")
        SubElement(entry, "formID").text = form.form_id
        SubElement(entry, "name").text = form.name
        if form.version:
            SubElement(entry, "version").text = form.version
        SubElement(entry, "hash").text = f"md5:{form.md5}"
        SubElement(entry, "downloadUrl").text = url_for(
            "openrosa.form_download", form_id=form.form_id, _external=True
        )
    db.session.commit()  # the token's last_used_at
    return _xml(root)


@bp.get("/forms/<form_id>.xml")
def form_download(form_id: str) -> Response:
    form = _form(form_id)
    db.session.commit()
    response = Response(form.body, content_type=XML_MIMETYPE)
    response.set_etag(form.md5)
    return response


# -- submissions ----------------------------------------------------------------------


@bp.route("/submission", methods=["HEAD"])
def submission_head() -> Response:
    limit = int(current_app.config["DIBAO_MAX_REQUEST_BYTES"])
    response = Response(status=204)
    response.headers["X-OpenRosa-Accept-Content-Length"] = str(
        max(limit - MULTIPART_ALLOWANCE, limit // 2)
    )
    db.session.commit()
    return response


@bp.post("/submission")
def submission() -> Response:
    if request.mimetype != "multipart/form-data":
        raise SubmissionRejected("a submission is multipart/form-data")
    xml_part = request.files.get("xml_submission_file")
    if xml_part is None:
        raise SubmissionRejected("the submission has no xml_submission_file part")
    parsed = parse_submission(_read_xml(xml_part))
    uploads = _attachments(parsed)
    device = _device()
    incomplete = request.form.get(INCOMPLETE_FIELD, "").strip().lower() == "yes"

    existing = db.session.scalar(
        select(Survey).where(Survey.client_uuid == str(parsed.instance_id))
    )
    if existing is not None:
        return _resubmission(parsed, uploads, visits.replayed_survey(device, existing.client_uuid))

    pending = PendingFiles(visits.blob_store())
    facts = pending.load(device.user_id, parsed.instance_id)
    facts.update({name: FileFacts(t.sha256, t.size) for name, t in uploads.items()})
    missing = parsed.missing(facts)
    if missing and incomplete:
        return _keep_for_later(parsed, uploads, pending, facts, missing)
    if missing:
        raise MissingPhotos(
            "the form refers to photos that were not sent: " + ", ".join(missing),
            missing=missing,
        )
    parsed.validate(facts)  # before copying anything
    photo_ids = {a.file_name: a.photo_id for a in parsed.attachments}
    files = {photo_ids[name]: temp for name, temp in uploads.items()}
    copies = [
        (photo_ids[name], fact)
        for name, fact in facts.items()
        if name in photo_ids and name not in uploads
    ]
    limit = current_app.config["DIBAO_MAX_PHOTO_BYTES"]
    try:
        for photo_id, fact in copies:
            files[photo_id] = pending.open_copy(fact, limit)
        return _receive(parsed, facts, files)
    finally:
        for photo_id, _ in copies:
            if photo_id in files:
                files[photo_id].close()  # a no-op once stored


def _receive(
    parsed: Submission, facts: dict[str, FileFacts], files: dict[str, HashingFile]
) -> Response:
    device = _device()
    raw = parsed.survey_json(facts)
    data = parsed.validate(facts)
    received = visits.receive_survey(device=device, data=data, raw=raw, uploads=files)
    db.session.commit()
    PendingFiles(visits.blob_store()).discard(device.user_id, parsed.instance_id)
    enqueue_photo_work(received.new_photos)
    return _success(parsed.instance_id)


def _resubmission(parsed: Submission, uploads: dict[str, HashingFile], survey: Survey) -> Response:
    """The same instance again (a retry, or a later part of a split submission whose
    survey is already complete): the stored manifest supplies the photos not sent.
    """
    stored = {p.photo_id: FileFacts(p.sha256, p.bytes) for p in survey.photos}
    facts = {
        a.file_name: stored[a.photo_id]
        for a in parsed.attachments
        if a.photo_id in stored and a.file_name not in uploads
    }
    facts.update({name: FileFacts(t.sha256, t.size) for name, t in uploads.items()})
    if parsed.missing(facts):
        raise visits.ClientUuidConflict(
            "a different survey was already uploaded with this instanceID",
            client_uuid=str(parsed.instance_id),
        )
    photo_ids = {a.file_name: a.photo_id for a in parsed.attachments}
    files = {photo_ids[name]: temp for name, temp in uploads.items()}
    return _receive(parsed, facts, files)


def _keep_for_later(
    parsed: Submission,
    uploads: dict[str, HashingFile],
    pending: PendingFiles,
    facts: dict[str, FileFacts],
    missing: list[str],
) -> Response:
    """A part of a split submission: check all we can now (fields, household, each
    photo), then keep its photos until the part that completes the set.
    """
    device = _device()
    data = parsed.validate(facts)
    require_visible(
        device.user,
        db.session.get(Household, data.household_id) if data.household_id else None,
        lambda household: household.village,
        "household",
        field="household_id",
    )
    photo_ids = {a.file_name: a.photo_id for a in parsed.attachments}
    for name, temp in uploads.items():
        fact = facts[name]
        visits.check_photo(
            SurveyPhoto(photo_id=photo_ids[name], sha256=fact.sha256, bytes=fact.bytes),
            temp,
        )
    pending.add(device.user_id, parsed.instance_id, uploads)
    db.session.commit()
    received = len(parsed.attachments) - len(missing)
    message = (
        f"已收到 {received}/{len(parsed.attachments)} 张照片，其余照片随后发送 / "
        f"received {received} of {len(parsed.attachments)} photos; the rest follow"
    )
    return openrosa_response(message, 202, nature="submit_success")


def _success(instance_id: UUID) -> Response:
    message = f"走访记录已收到 / visit received: uuid:{instance_id}"
    return openrosa_response(message, 201, nature="submit_success")


def _read_xml(part: FileStorage) -> bytes:
    part.stream.seek(0)
    data = part.stream.read(MAX_XML_BYTES + 1)
    if len(data) > MAX_XML_BYTES:
        raise RequestEntityTooLarge(f"the submission XML is larger than {MAX_XML_BYTES} bytes")
    return data


def _attachments(parsed: Submission) -> dict[str, HashingFile]:
    """The photo parts of this POST by the file name the XML gives them. ODK Collect
    names each part by its file; parts the XML does not refer to (an audit log, a
    discarded photo) are ignored.
    """
    wanted = parsed.file_names
    uploads: dict[str, HashingFile] = {}
    for name, part in request.files.items(multi=True):
        if name == "xml_submission_file":
            continue
        file_name = name if name in wanted else os.path.basename(part.filename or "")
        if file_name not in wanted:
            logger.info("submission %s: ignoring part %r", parsed.instance_id, name)
            continue
        if file_name in uploads:
            raise SubmissionRejected(f"the file {file_name!r} was sent twice")
        uploads[file_name] = _hashing_file(part)
    return uploads


def _hashing_file(part: FileStorage) -> HashingFile:
    """The part's bytes in a hashing temp file: the app's UploadRequest streams them
    into one already; any other request class is copied in chunks.
    """
    if isinstance(part.stream, HashingFile):
        return part.stream
    temp = visits.blob_store().new_temp(max_bytes=current_app.config["DIBAO_MAX_PHOTO_BYTES"])
    part.stream.seek(0)
    while chunk := part.stream.read(256 * 1024):
        temp.write(chunk)
    temp.flush()
    return temp
