"""The OpenRosa 1.0 face for ODK Collect, under /openrosa (guide: docs/odk-collect.md).

- ``GET /openrosa/formList`` and ``GET /openrosa/forms/<form_id>.xml``: the forms
  (built from ``forms/*.xlsx`` by ``scripts/build_forms.py``);
- ``HEAD /openrosa/submission``: 204 and the largest POST we take;
- ``POST /openrosa/submission``: ``xml_submission_file`` and the photos as file parts
  named by their file names; a survey of the tablet contract, received by the same
  service as ``POST /api/v1/surveys`` (idempotent on ``meta/instanceID``).

Every request must say ``X-OpenRosa-Version: 1.0`` and log in with the caseworker's
login and a device token as the password: Digest (any scheme) or Basic (HTTPS), as
ODK Collect does (mobile_api/openrosa_auth.py), or ``Authorization: Bearer <token>``.
Every reply says ``X-OpenRosa-Version: 1.0``; every 201, 202 and the HEAD's 204 say
``X-OpenRosa-Accept-Content-Length``; errors are ``<OpenRosaResponse>`` messages of
nature ``error``, in Chinese then English.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, ParseError, SubElement, tostring

from defusedxml.ElementTree import fromstring
from flask import Blueprint, Response, current_app, g, request, url_for
from flask_babel import force_locale, gettext
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from mobile_api.multipart import FileSink, Multipart, read_upload
from mobile_api.openrosa_auth import StaleNonce, authenticate, challenges
from server.cases.workflow import local_today
from server.devices.models import DeviceToken
from server.errors import DomainError
from server.extensions import csrf, db
from server.labels import VISIT_KIND_LABELS
from server.storage import HashingFile, TooLarge, blob_store
from server.visits import service as visits
from server.visits.openrosa_mapping import (
    MAX_XML_BYTES,
    FileFacts,
    Submission,
    SubmissionRejected,
    UnknownForm,
    parse_submission,
)
from server.visits.queries import due_visits
from server.visits.tasks import enqueue_upload_work
from server.web_errors import answer_safely

logger = logging.getLogger(__name__)

OPENROSA_VERSION = "1.0"
XFORMS_LIST_NS = "http://openrosa.org/xforms/xformsList"
MANIFEST_NS = "http://openrosa.org/xforms/xformsManifest"
RESPONSE_NS = "http://openrosa.org/http/response"
XML_MIMETYPE = "text/xml; charset=utf-8"
# ODK Collect sizes its POSTs by the files alone: leave room for the XML and the
# multipart headers (at most 100 files per POST).
MULTIPART_ALLOWANCE = 1024 * 1024 + 64 * 1024
FORMS_DIR = Path(__file__).resolve().parents[1] / "forms"
FORM_FILES = {"household_survey": "household_survey.xml"}
INCOMPLETE_FIELD = "*isIncomplete*"
# The XML, up to 100 files (what Collect sends at most) and the incomplete flag.
MAX_PARTS = 102
ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE"]

bp = Blueprint("openrosa", __name__, url_prefix="/openrosa")
csrf.exempt(bp)  # credentials in every request, no cookies


class MissingVersionHeader(DomainError):
    code = "openrosa_version_required"
    http_status = 400


# -- replies --------------------------------------------------------------------------

# What a caseworker reads on the tablet, by error code (the English detail follows).
ERROR_SENTENCES: dict[str, LazyString] = {
    "openrosa_version_required": _l("This is not an OpenRosa request."),
    "invalid_token": _l(
        "Login failed: check the username and the device token (it may have expired "
        "or been revoked)."
    ),
    "stale_nonce": _l("The login has expired; try again."),
    "ascii_login_required": _l(
        "Tablets need an ASCII login (letters, digits, . _ - @), not a Chinese name; "
        "ask an administrator for one."
    ),
    "digest_uri_mismatch": _l("The login does not match this address."),
    "invalid_submission": _l("The form cannot be read."),
    "unknown_form": _l("This form is not on the server: get the blank form again."),
    "not_found": _l("No such household or visit in your area."),
    "client_uuid_conflict": _l("A different form with the same instanceID was already received."),
    "unsupported_media_type": _l("A photo is not a JPEG or PNG image."),
    "corrupt_image": _l("A photo is damaged."),
}
STATUS_SENTENCES: dict[int, LazyString] = {
    400: _l("The request is not valid."),
    401: _l("Login required."),
    403: _l("Not permitted."),
    404: _l("Not found."),
    405: _l("This address does not take that method."),
    409: _l("Conflicts with what was already received."),
    413: _l("Too large for the server."),
    415: _l("A photo is not a JPEG or PNG image."),
    422: _l("The form's data is not valid."),
    500: _l("Server error; try again later."),
}


def bilingual(sentence: LazyString) -> str:
    """Chinese first, then English: the tablet shows the message as it is."""
    # A sentence without variables (lazy_gettext's parts, read defensively): the same
    # words on every reply, translated once.
    args: tuple[Any, ...] = getattr(sentence, "_args", ())
    kwargs = getattr(sentence, "_kwargs", None)
    if getattr(sentence, "_func", None) is gettext and len(args) == 1 and kwargs == {}:
        return _fixed_bilingual(args[0])
    with force_locale("zh_CN"):
        chinese = str(sentence)
    with force_locale("en"):
        english = str(sentence)
    return f"{chinese} / {english}"


@lru_cache(maxsize=64)
def _fixed_bilingual(message: str) -> str:
    """A sentence without variables in both languages, translated once per process."""
    with force_locale("zh_CN"):
        chinese = gettext(message)
    with force_locale("en"):
        english = gettext(message)
    return f"{chinese} / {english}"


def _error_text(code: str, status: int, detail: str, field: str | None = None) -> str:
    with force_locale("zh_CN"):
        if code == "validation_failed":
            chinese = gettext("A field of the form is not valid: %(field)s.", field=field or "?")
        else:
            sentence = ERROR_SENTENCES.get(code) or STATUS_SENTENCES.get(status)
            chinese = str(sentence or STATUS_SENTENCES[400])
    return f"{chinese} / {detail}"


def openrosa_response(message: str, status: int, nature: str | None = None) -> Response:
    root = Element("OpenRosaResponse", xmlns=RESPONSE_NS)
    element = SubElement(root, "message")
    if nature:
        element.set("nature", nature)
    element.text = message
    return _xml(root, status)


def _reply(sentence: LazyString, detail: str, status: int, nature: str) -> Response:
    return openrosa_response(f"{bilingual(sentence)} ({detail})", status, nature)


def _error(code: str, status: int, detail: str, field: str | None = None) -> Response:
    return openrosa_response(_error_text(code, status, detail, field), status, "error")


def _xml(root: Element, status: int = 200) -> Response:
    body = tostring(root, encoding="utf-8", xml_declaration=True)
    return Response(body, status=status, content_type=XML_MIMETYPE)


@bp.after_request
def _openrosa_headers(response: Response) -> Response:
    response.headers["X-OpenRosa-Version"] = OPENROSA_VERSION
    if request.endpoint in {"openrosa.submission", "openrosa.submission_head"} and (
        response.status_code in {201, 202, 204}
    ):
        response.headers["X-OpenRosa-Accept-Content-Length"] = str(accept_content_length())
    return response


def openrosa_error(status: int, message: str) -> Response:
    """An error as an OpenRosa message (also for paths under /openrosa/ that match no
    route: server.web_errors answers those)."""
    return _error("http_error", status, message)


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
        field = exc.details.get("field")
        response = _error(exc.code, exc.http_status, exc.message, str(field) if field else None)
        if exc.http_status == 401:
            for challenge in challenges(stale=isinstance(exc, StaleNonce)):
                response.headers.add("WWW-Authenticate", challenge)
        return response

    return _safely(build, exc.http_status)


@bp.errorhandler(TooLarge)
def _too_large(exc: TooLarge) -> Response:
    return _safely(lambda: _error("photo_too_large", 413, f"a photo is too large: {exc}"), 413)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if (
        isinstance(exc, RequestEntityTooLarge)
        and exc.description == RequestEntityTooLarge.description
    ):
        limit = current_app.config["DIBAO_MAX_REQUEST_BYTES"]
        return _safely(
            lambda: _error("request_too_large", 413, f"the request is larger than {limit} bytes"),
            413,
        )
    return _safely(lambda: _error("http_error", status, exc.description or exc.name), status)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return _safely(lambda: _error("internal_error", 500, "internal server error"), 500)


# -- every request: protocol version, then credentials --------------------------------


@bp.before_request
def _check_request() -> None:
    if request.headers.get("X-OpenRosa-Version", "").strip() != OPENROSA_VERSION:
        raise MissingVersionHeader("send the header X-OpenRosa-Version: 1.0")
    g.device = authenticate()


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
        entry = SubElement(root, "xform")
        SubElement(entry, "formID").text = form.form_id
        SubElement(entry, "name").text = form.name
        if form.version:
            SubElement(entry, "version").text = form.version
        SubElement(entry, "hash").text = f"md5:{form.md5}"
        SubElement(entry, "downloadUrl").text = url_for(
            "openrosa.form_download", form_id=form.form_id, _external=True
        )
        SubElement(entry, "manifestUrl").text = url_for(
            "openrosa.form_manifest", form_id=form.form_id, _external=True
        )
    db.session.commit()  # the token's last_used_at
    return _xml(root)


# -- the form's media: this caseworker's visits due -----------------------------------

DUE_FILE = "due_visits.csv"
DUE_COLUMNS = ("name", "label", "household_id", "case_code", "kinds", "due_by", "revisit_reason")


def due_visits_csv() -> bytes:
    """The caseworker's visits due as the form's media file, one row per household
    (the form's ``pulldata`` finds the first row of a household): its kinds, the
    soonest due day, and the reasons of its rejected visits (kind ``revisit``)."""
    caseworker = _device().user
    visits = due_visits(
        caseworker, today=local_today(), window_days=current_app.config["DIBAO_DUE_WINDOW_DAYS"]
    )
    rows: dict[int, dict[str, Any]] = {}
    with force_locale("zh_CN"):
        for visit in visits:
            row = rows.setdefault(
                visit.household_id,
                {
                    "name": visit.household_id,
                    "household_id": visit.household_id,
                    "case_code": visit.case_code,
                    "village": visit.village,
                    "kinds": [],
                    "due_by": visit.due_by,
                    "reasons": [],
                },
            )
            kind = str(VISIT_KIND_LABELS.get(visit.kind.value, visit.kind.value))
            if kind not in row["kinds"]:
                row["kinds"].append(kind)
            row["due_by"] = min(row["due_by"], visit.due_by)
            if visit.revisit is not None and visit.revisit.reason:
                row["reasons"].append(visit.revisit.reason)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(DUE_COLUMNS)
    for row in sorted(rows.values(), key=lambda r: (r["due_by"], r["household_id"])):
        kinds = "、".join(row["kinds"])
        writer.writerow(
            [
                row["name"],
                f"{row['household_id']} {row['village']} · {kinds} · {row['due_by']}",
                row["household_id"],
                row["case_code"],
                kinds,
                row["due_by"].isoformat(),
                "；".join(row["reasons"]),
            ]
        )
    return out.getvalue().encode("utf-8")


@bp.get("/forms/<form_id>/manifest")
def form_manifest(form_id: str) -> Response:
    """The form's media (OpenRosa manifest): the caseworker's visits due, whose hash
    changes when the list does, so Collect fetches it again."""
    _form(form_id)
    body = due_visits_csv()
    root = Element("manifest", xmlns=MANIFEST_NS)
    media = SubElement(root, "mediaFile")
    SubElement(media, "filename").text = DUE_FILE
    SubElement(media, "hash").text = "md5:" + hashlib.md5(body, usedforsecurity=False).hexdigest()
    SubElement(media, "downloadUrl").text = url_for(
        "openrosa.form_media", form_id=form_id, file_name=DUE_FILE, _external=True
    )
    db.session.commit()  # the audit row of the list read, the token's last_used_at
    return _xml(root)


@bp.get("/forms/<form_id>/media/<file_name>")
def form_media(form_id: str, file_name: str) -> Response:
    _form(form_id)
    if file_name != DUE_FILE:
        raise NotFound(f"no media file {file_name!r} for this form")
    body = due_visits_csv()
    db.session.commit()
    response = Response(body, content_type="text/csv; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/forms/<form_id>.xml")
def form_download(form_id: str) -> Response:
    form = _form(form_id)
    db.session.commit()
    response = Response(form.body, content_type=XML_MIMETYPE)
    response.set_etag(form.md5)
    return response


# -- submissions ----------------------------------------------------------------------


def accept_content_length() -> int:
    """The largest POST Collect should make: it counts only the XML and the files, so
    leave room for the multipart headers (at most 100 files per POST) below the
    request limit, which nginx's client_max_body_size must equal (docs/operations.md).
    """
    limit = int(current_app.config["DIBAO_MAX_REQUEST_BYTES"])
    return max(limit - MULTIPART_ALLOWANCE, limit // 2)


@bp.route("/submission", methods=["HEAD"])
def submission_head() -> Response:
    db.session.commit()  # the token's last_used_at
    return Response(status=204)


@bp.post("/submission")
def submission() -> Response:
    """One POST of a submission: the XML and some or all of its photos. The survey is
    recorded by the first POST of its instanceID (as ODK Central does), with the photos
    that came; later POSTs of the same XML bring the others. 201 once every photo is
    in, 202 while some are missing.
    """
    if request.mimetype != "multipart/form-data":
        raise SubmissionRejected("a submission is multipart/form-data")
    body = read_upload(
        blob_store(),
        max_file_bytes=current_app.config["DIBAO_MAX_PHOTO_BYTES"],
        not_multipart="a submission is multipart/form-data",
        max_parts=MAX_PARTS,
        new_file=_new_part,
    )
    try:
        return _receive(body)
    finally:
        body.close()  # the photo files not stored are deleted


def _receive(body: Multipart) -> Response:
    xml_part = body.files.get("xml_submission_file")
    if not isinstance(xml_part, _XmlPart):
        raise SubmissionRejected("the submission has no xml_submission_file part")
    parsed = parse_submission(bytes(xml_part.data))
    uploads = _attachments(parsed, body)
    device = _device()

    facts = {name: FileFacts(t.sha256, t.size) for name, t in uploads.items()}
    data = parsed.validate(facts)
    photo_ids = {a.file_name: a.photo_id for a in parsed.attachments}
    received = visits.receive_survey(
        device=device,
        data=data,
        uploads={photo_ids[name]: temp for name, temp in uploads.items()},
        content_hash=parsed.xml_sha256,
        unsized={a.photo_id for a in parsed.attachments if a.file_name not in uploads},
    )
    survey = received.survey
    missing = [parsed.file_name(photo_id) for photo_id in survey.missing_photos]
    db.session.commit()
    enqueue_upload_work(received)
    if not missing:
        return _reply(_l("Visit received."), f"uuid:{parsed.instance_id}", 201, "submit_success")
    total = len(parsed.attachments)
    if body.fields.get(INCOMPLETE_FIELD, "").strip().lower() == "yes":
        return _reply(
            _l(
                "Received %(received)s of %(total)s photos; the rest follow.",
                received=total - len(missing),
                total=total,
            ),
            f"uuid:{parsed.instance_id}",
            202,
            "submit_success",
        )
    return _reply(
        _l(
            "Visit received, but %(count)s photo(s) are missing: %(files)s. Send the form "
            "again when they are back on the tablet.",
            count=len(missing),
            files=", ".join(missing),
        ),
        f"uuid:{parsed.instance_id}",
        202,
        "submit_success",
    )


@bp.route("/", defaults={"rest": ""}, methods=ANY_METHOD)
@bp.route("/<path:rest>", methods=ANY_METHOD)
def elsewhere(rest: str) -> Response:
    """Any other address or method under /openrosa: an OpenRosa error, not a page."""
    if rest == "submission":
        raise MethodNotAllowed(["HEAD", "POST"], "the submission URL takes HEAD and POST")
    raise NotFound(f"no OpenRosa address /openrosa/{rest}")


class _XmlPart:
    """The submission's XML, kept in memory (at most MAX_XML_BYTES)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        if len(self.data) + len(data) > MAX_XML_BYTES:
            raise RequestEntityTooLarge(f"the submission XML is larger than {MAX_XML_BYTES} bytes")
        self.data.extend(data)
        return len(data)

    def close(self) -> None:
        self.data.clear()


def _new_part(name: str, content_type: str | None) -> FileSink:
    """Where a file part goes: the XML to memory, every other part (a photo, or a
    file the XML does not name) to a hashing temp file of the blob store."""
    if name == "xml_submission_file":
        return _XmlPart()
    return blob_store().new_temp(max_bytes=current_app.config["DIBAO_MAX_PHOTO_BYTES"])


def _attachments(parsed: Submission, body: Multipart) -> dict[str, HashingFile]:
    """The photo parts of this POST by the file name the XML gives them. ODK Collect
    names each part by its file; parts the XML does not refer to (an audit log, a
    discarded photo) are ignored.
    """
    wanted = parsed.file_names
    uploads: dict[str, HashingFile] = {}
    for name, part in body.files.items():
        if name == "xml_submission_file" or not isinstance(part, HashingFile):
            continue
        file_name = name if name in wanted else os.path.basename(body.filenames.get(name, ""))
        if file_name not in wanted:
            logger.info("submission %s: ignoring part %r", parsed.instance_id, name)
            continue
        if file_name in uploads:
            raise SubmissionRejected(f"the file {file_name!r} was sent twice")
        uploads[file_name] = part
    return uploads
