"""The death-register page for county approvers: upload a file, read the dry run's
report, apply it (docs/office.md, "Matching the death register").

Upload -> the file kept in the blob store under its SHA-256 and the report shown with
a signed token (the hash, the profile, the user; 30 minutes) in the form -> Apply
reads the same bytes again, checks the hash, classifies again and applies. Nothing
personal goes into a URL.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, render_template, request
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from server.audit import service as audit
from server.auth.permissions import Capability, require, staff_required
from server.crypto import mask_id_number
from server.deaths import importer
from server.deaths import service as deaths
from server.deaths.importer import MAX_FILE_BYTES, RegisterFileError
from server.errors import DomainError
from server.extensions import db
from server.storage import TooLarge, blob_store

bp = Blueprint("deaths", __name__)

TOKEN_SECONDS = 30 * 60
REPORT_ROWS = 500  # rows listed on the page; the counts cover every row

CLASS_LABELS = {
    "matched": _l("Matched"),
    "not_found": _l("Not found"),
    "ambiguous": _l("Ambiguous: check by hand"),
    "already_applied": _l("Already recorded"),
    "outside_area": _l("Not in your area"),
}
REASON_LABELS = {
    "id_checksum": _l("ID number check digit wrong"),
    "date_unparseable": _l("Date of death unreadable"),
    "date_in_future": _l("Date of death in the future"),
    "date_before_birth": _l("Date of death before birth"),
    "name_differs": _l("Name differs"),
    "conflicting_rows": _l("Rows with different dates"),
    "recorded_other_date": _l("Already deceased on another date"),
    "several_members": _l("ID number in several households"),
}


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="deaths.apply")


def _allowed() -> None:
    require(
        current_user,
        Capability.IMPORT_DEATH_REGISTER,
        "only a county approver imports the death register",
    )


@bp.get("/deaths")
@staff_required
def upload_page() -> ResponseReturnValue:
    _allowed()
    return render_template("deaths/upload.html", profiles=sorted(importer.PROFILES))


@bp.post("/deaths/check")
@staff_required
def check() -> ResponseReturnValue:
    """The dry run: the report, and the token the Apply button sends back."""
    _allowed()
    profile_name = request.form.get("profile", importer.DEFAULT_PROFILE.name)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _refused(_("Choose a file to check."))
    store = blob_store()
    temp = store.new_temp(max_bytes=MAX_FILE_BYTES)
    try:
        while chunk := upload.stream.read(1 << 16):
            temp.write(chunk)
    except TooLarge:
        temp.close()
        return _refused(
            _("The file is larger than %(mb)s MB: split it.", mb=MAX_FILE_BYTES // 2**20)
        )
    try:
        temp.seek(0)
        data = temp.read()
        profile = importer.PROFILES.get(profile_name, importer.DEFAULT_PROFILE)
        report = deaths.check(data, actor=current_user, profile=profile)
        sha256 = store.store(temp)
    except RegisterFileError as exc:
        return _refused(file_error_message(exc))
    finally:
        temp.close()
    audit.record(
        "deaths.checked",
        actor=current_user,
        object_type="death_register",
        object_id=sha256[:16],
        file_sha256=sha256,
        **{f"rows_{k}": v for k, v in report.counts().items()},
    )
    db.session.commit()
    token = _serializer().dumps({"sha": sha256, "profile": profile.name, "user": current_user.id})
    return render_template("deaths/report.html", **_report_context(report), token=token)


@bp.post("/deaths/apply")
@staff_required
def apply() -> ResponseReturnValue:
    _allowed()
    try:
        claims: dict[str, Any] = _serializer().loads(
            request.form.get("token", ""), max_age=TOKEN_SECONDS
        )
    except SignatureExpired:
        return _refused(_("The report is more than 30 minutes old: check the file again."))
    except BadSignature:
        return _refused(_("This report cannot be applied: check the file again."))
    if claims.get("user") != current_user.id:
        return _refused(_("This report cannot be applied: check the file again."))
    store = blob_store()
    sha256 = str(claims.get("sha", ""))
    try:
        data = store.path(sha256).read_bytes()
    except (ValueError, OSError):
        return _refused(_("The file is no longer kept: check it again."))
    profile = importer.PROFILES.get(str(claims.get("profile")), importer.DEFAULT_PROFILE)
    try:
        report = deaths.apply(data, actor=current_user, profile=profile)
        if report.sha256 != sha256:  # pragma: no cover - the store is content-addressed
            raise RegisterFileError("the file changed", "changed")
    except RegisterFileError as exc:
        db.session.rollback()
        return _refused(file_error_message(exc))
    except DomainError:
        db.session.rollback()
        raise
    db.session.commit()
    return render_template("deaths/report.html", **_report_context(report), token=None)


def _refused(message: str) -> ResponseReturnValue:
    db.session.rollback()
    return (
        render_template("deaths/upload.html", profiles=sorted(importer.PROFILES), error=message),
        422,
    )


def file_error_message(exc: RegisterFileError) -> str:
    """The user's-language sentence for a file that cannot be read as a register."""
    problem = exc.details.get("problem")
    if problem == "missing_column":
        return _(
            "The file has no column for %(column)s. Accepted headers: %(headers)s.",
            column=exc.details.get("column", ""),
            headers=exc.message.split("accepted headers: ")[-1].rstrip(")"),
        )
    if problem == "too_many_rows":
        return _("The file has more than %(max)s rows: split it.", max=importer.MAX_ROWS)
    if problem == "too_large":
        return _("The file is larger than %(mb)s MB: split it.", mb=MAX_FILE_BYTES // 2**20)
    if problem == "empty":
        return _("The file is empty.")
    return _("The file is neither a CSV (UTF-8 or GB18030) nor an .xlsx workbook.")


def _report_context(report: deaths.Report) -> dict[str, Any]:
    """Rows in the reader's area that found a member (masked), plus counts. Rows of
    members elsewhere are only counted; rows that found nobody are counted too."""
    shown = [
        {
            "line": r.row.line,
            "row_class": r.row_class.value,
            "reason": r.reason.value if r.reason else "",
            "id_number": mask_id_number(r.row.id_number),
            "name": importer.mask_name(r.row.name),
            "died_on": r.row.died_on.isoformat() if r.row.died_on else r.row.raw_date,
            "case_code": report.case_codes.get(r.member.household_id, "")
            if r.member is not None
            else "",
        }
        for r in report.rows
        if r.in_area and (r.member is not None or r.row_class.value == "ambiguous")
    ]
    codes = report.case_codes
    return {
        "counts": report.counts(),
        "total": len(report.rows),
        "rows": shown[:REPORT_ROWS],
        "more_rows": max(0, len(shown) - REPORT_ROWS),
        "import_id": report.import_id,
        "overpayments": [
            {"case_code": codes.get(o.household_id, ""), "month": o.month, "amount": o.amount}
            for o in report.overpayments
        ],
        "class_labels": CLASS_LABELS,
        "reason_labels": REASON_LABELS,
    }
