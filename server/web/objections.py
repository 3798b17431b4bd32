"""The reviewer's side of objections (docs/office.md, "Objections"): one objection of a
case, its text (the read is audited) and the decision: unfounded, or survey again."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user

from server.auth.permissions import staff_required
from server.cases import objections, queries
from server.cases.objection_models import ObjectionStatus
from server.errors import DomainError
from server.extensions import db
from server.labels import error_message

bp = Blueprint("objections", __name__)


@bp.get("/cases/<case_code>/objections/<id:objection_id>")
@staff_required
def objection_page(case_code: str, objection_id: int) -> ResponseReturnValue:
    household = queries.get_case(current_user, case_code)
    objection = objections.read(current_user, household, objection_id)
    db.session.commit()  # the audit row of the read
    return render_template("cases/objection.html", household=household, objection=objection)


@bp.post("/cases/<case_code>/objections/<id:objection_id>")
@staff_required
def decide_objection(case_code: str, objection_id: int) -> ResponseReturnValue:
    household = queries.get_case(current_user, case_code)
    objection = objections.read(current_user, household, objection_id)
    outcome_text = request.form.get("outcome", "")
    note = request.form.get("note", "")
    try:
        outcome = ObjectionStatus(outcome_text)
        objections.decide(current_user, objection, outcome, note)
    except ValueError:
        db.session.rollback()
        error = _("Choose unfounded or survey again.")
    except DomainError as exc:
        db.session.rollback()
        if exc.http_status == 404:
            raise
        error = error_message(exc)
    else:
        db.session.commit()
        flash(_("The objection's outcome was recorded."), "info")
        return redirect(url_for("cases.case_detail", case_code=household.case_code), 303)
    objection = objections.read(current_user, household, objection_id)
    db.session.commit()
    return render_template(
        "cases/objection.html",
        household=household,
        objection=objection,
        error=error,
        note=note,
        outcome=outcome_text,
    ), 422
