"""Objections from the public case page (docs/public.md, "Objections during the public
notice"): a form while the case is in public notice, the receipt, and the outcome page
behind the receipt code. Routes of the ``public`` blueprint, so they set no cookie:
the form carries a signed, expiring token instead of a session's CSRF token, with a
small arithmetic question whose answer only the server can check (no JavaScript, no
third-party service). None of these answers is cached (``no-store``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from flask import Response, current_app, request
from flask_babel import gettext as _
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select
from werkzeug.exceptions import NotFound

from server import clock
from server.cases import objections
from server.cases.codes import normalize_case_code
from server.cases.models import Household
from server.cases.objection_models import MAX_CONTACT, MAX_REASON, ObjectionStatus
from server.cases.workflow import local_today
from server.errors import IllegalTransition, ValidationFailed
from server.extensions import csrf, db, limiter
from server.months import local_date
from server.public import queries
from server.public.views import MAX_ARG_LENGTH, _render, _snapshot, bp
from server.region import region

# How long a form (its question) stays good, in seconds.
FORM_MAX_AGE = 30 * 60
SALT = "dibao.objection-form"


def _address_rate() -> str:
    return str(current_app.config["DIBAO_OBJECTION_RATE_LIMIT"])


def _case_rate() -> str:
    return str(current_app.config["DIBAO_OBJECTION_CASE_RATE_LIMIT"])


def _receipt_rate() -> str:
    return str(current_app.config["DIBAO_OBJECTION_RECEIPT_RATE_LIMIT"])


def _case_key() -> str:
    code = str((request.view_args or {}).get("case_code", ""))[:MAX_ARG_LENGTH]
    return "case:" + hashlib.sha256(code.upper().encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _received(response: Response) -> bool:
    return response.status_code == 201


class _ClockSigner(TimestampSigner):
    """Timestamps from the service's clock (server/clock.py), as everything else."""

    def get_timestamp(self) -> int:
        return int(clock.utcnow().timestamp())


def _signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        str(current_app.config["SECRET_KEY"]), salt=SALT, signer=_ClockSigner
    )


def _answer_mac(nonce: str, answer: int) -> str:
    key = str(current_app.config["SECRET_KEY"]).encode("utf-8")
    message = f"{SALT}\x00{nonce}\x00{answer}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class Challenge:
    """A question (two small numbers to add) and the signed token that carries the case,
    a one-time nonce and a MAC of the answer (not the answer: the token is readable)."""

    left: int
    right: int
    token: str

    @classmethod
    def new(cls, case_code: str) -> Challenge:
        left, right = 2 + secrets.randbelow(8), 2 + secrets.randbelow(8)
        nonce = secrets.token_hex(16)
        token = _signer().dumps([case_code, nonce, _answer_mac(nonce, left + right)])
        return cls(left, right, str(token))


@dataclass
class Form:
    reason: str = ""
    contact: str = ""
    errors: dict[str, str] = field(default_factory=dict)


def _household(case_code: str) -> tuple[str, Household]:
    """The published case with this code (404 as on the case page otherwise)."""
    code = normalize_case_code(case_code[:MAX_ARG_LENGTH])
    if code is None:
        raise NotFound(_("%(code)s is not a case code.", code=case_code[:MAX_ARG_LENGTH]))
    snapshot = _snapshot()
    household = db.session.scalar(select(Household).where(Household.case_code == code))
    if household is None or snapshot is None or queries.one(snapshot, code) is None:
        raise NotFound(_("No published case has the code %(code)s.", code=code))
    return code, household


def _no_store(response: Response, status: int) -> Response:
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _form_page(code: str, household: Household, form: Form, status: int = 200) -> Response:
    if not objections.open_for_objections(household, local_today()):
        return _no_store(_render("public/objection_closed.html", code=code), 409)
    return _no_store(
        _render(
            "public/objection_form.html",
            code=code,
            form=form,
            challenge=Challenge.new(code),
            notice_ends_on=household.notice_ends_on,
            max_reason=MAX_REASON,
            max_contact=MAX_CONTACT,
        ),
        status,
    )


@bp.get("/public/cases/<case_code>/objection")
def objection_form(case_code: str) -> Response:
    code, household = _household(case_code)
    return _form_page(code, household, Form())


def _number(text: str) -> int | None:
    digits = unicodedata.normalize("NFKC", text).strip()
    if not digits.isascii() or not digits.isdigit() or len(digits) > 3:
        return None
    return int(digits)


def _check_token(code: str, form: Form) -> str | None:
    """The form's nonce when its token is good, its answer right and its nonce unused;
    otherwise None, with the message in ``form.errors``."""
    try:
        signed: Any = _signer().loads(request.form.get("token", ""), max_age=FORM_MAX_AGE)
    except SignatureExpired:
        form.errors["challenge"] = _(
            "This form has expired. Please answer the new question and send it again."
        )
        return None
    except BadSignature:
        form.errors["challenge"] = _(
            "This form is not valid. Please answer the new question and send it again."
        )
        return None
    if not isinstance(signed, list) or len(signed) != 3 or signed[0] != code:
        form.errors["challenge"] = _(
            "This form is not valid. Please answer the new question and send it again."
        )
        return None
    _case, nonce, mac = (str(part) for part in signed)
    answer = _number(request.form.get("answer", ""))
    if answer is None or not hmac.compare_digest(_answer_mac(nonce, answer), mac):
        form.errors["challenge"] = _(
            "The answer to the question is wrong. Please answer the new question."
        )
        return None
    if objections.nonce_used(nonce):
        form.errors["challenge"] = _(
            "This form was already sent. Please answer the new question to send another."
        )
        return None
    return nonce


@bp.post("/public/cases/<case_code>/objection")
@limiter.limit(_case_rate, key_func=_case_key, deduct_when=_received)
@limiter.limit(_address_rate)
def send_objection(case_code: str) -> Response:
    code, household = _household(case_code)
    form = Form(
        reason=request.form.get("reason", "")[: MAX_REASON * 2],
        contact=request.form.get("contact", "")[: MAX_CONTACT * 2],
    )
    if not form.reason.strip():
        form.errors["reason"] = _("Please write the reason for your objection.")
    elif len(form.reason.strip()) > MAX_REASON:
        form.errors["reason"] = _(
            "The reason may be at most %(max)s characters long.", max=MAX_REASON
        )
    if len(form.contact.strip()) > MAX_CONTACT:
        form.errors["contact"] = _(
            "The contact may be at most %(max)s characters long.", max=MAX_CONTACT
        )
    nonce = _check_token(code, form)
    if form.errors or nonce is None:
        return _form_page(code, household, form, 422)
    try:
        received = objections.submit(
            household,
            reason=form.reason,
            contact=form.contact,
            nonce=nonce,
            address=request.remote_addr,
            today=local_today(),
        )
    except IllegalTransition:
        db.session.rollback()
        return _no_store(_render("public/objection_closed.html", code=code), 409)
    except ValidationFailed as exc:
        db.session.rollback()
        form.errors[str(exc.details.get("field", "reason"))] = _("This value is not valid.")
        return _form_page(code, household, form, 422)
    deadline = received.objection.deadline
    db.session.commit()
    return _no_store(
        _render(
            "public/objection_receipt.html",
            code=code,
            receipt=received.receipt,
            deadline=deadline,
        ),
        201,
    )


csrf.exempt(send_objection)


@bp.get("/public/objections/<receipt>")
@limiter.limit(_receipt_rate)
def objection_status(receipt: str) -> Response:
    objection = objections.by_receipt(receipt[:MAX_ARG_LENGTH])
    if objection is None:
        raise NotFound(_("No objection has this receipt code."))
    zone = region().timezone
    return _no_store(
        _render(
            "public/objection_status.html",
            code=objection.household.case_code,
            status=objection.status.value,
            received_on=local_date(objection.received_at, zone),
            decided_on=local_date(objection.decided_at, zone) if objection.decided_at else None,
            deadline=objection.deadline,
            resolved=objection.status is not ObjectionStatus.OPEN,
        ),
        200,
    )
