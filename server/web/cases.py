"""Dashboard pages for cases: the home list by state, one case, workflow buttons."""

from __future__ import annotations

from collections.abc import Callable

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import current_user

from server.auth.permissions import Capability, can, staff_required
from server.cases import queries, service, workflow
from server.cases.models import CaseState, Household
from server.deaths.service import overpayments_of
from server.errors import DomainError
from server.extensions import db
from server.labels import error_message
from server.proof_of_life import service as pol
from server.proof_of_life.models import MonthStatus
from server.validation import MAX_REASON_LENGTH, query_enum, query_int
from server.visits import review
from server.visits.integrity.risk_queries import loaded_visit_scores

bp = Blueprint("cases", __name__)


@bp.get("/")
@staff_required
def home() -> ResponseReturnValue:
    state = query_enum("state", CaseState)
    page = query_int("page", 1)
    counts = queries.state_counts(current_user)
    cases = queries.list_cases(
        current_user, state=state, page=page, per_page=current_app.config["HOME_PAGE_SIZE"]
    )
    return render_template("cases/home.html", counts=counts, cases=cases, state=state)


@bp.get("/cases/<case_code>")
@staff_required
def case_detail(case_code: str) -> ResponseReturnValue:
    household = queries.get_case(current_user, case_code)
    return _case_page(household, revealed=None)


@bp.post("/cases/<case_code>/members/<id:member_id>/reveal")
@staff_required
def reveal_member(case_code: str, member_id: int) -> ResponseReturnValue:
    """The case page with one member's full ID number and phone (audited); answered to
    the POST itself, so the full values are in no URL, history entry or cache."""
    household = queries.get_case(current_user, case_code)
    revealed = service.reveal_member(current_user, household, member_id)
    return _case_page(household, revealed=revealed)


def _case_page(household: Household, revealed: int | None) -> ResponseReturnValue:
    """One case; ID numbers and phones masked but for the member ``revealed``.
    Commits the audit rows of the read (and of the reveal)."""
    # A role that reads no personal data (the administrator) sees the case without its
    # members' details: a read page, not a decision refused.
    members = (
        service.read_member_details(current_user, household)
        if can(current_user, Capability.READ_PERSONAL_DATA)
        else []
    )
    db.session.commit()  # the audit rows of this read
    visits = review.visits_of(household)
    return render_template(
        "cases/detail.html",
        household=household,
        members=members,
        visits=visits,
        # The risk score: for reviewers and supervisors (a caseworker is not told
        # what weighs most: docs/field-visits.md, "The risk score").
        risks=(
            loaded_visit_scores(visits)
            if can(current_user, Capability.REVIEW_VISITS)
            or can(current_user, Capability.READ_CONSOLE)
            else {}
        ),
        review_moves=review.review_moves,
        actions=workflow.available_actions(household, current_user),
        allowance=workflow.allowance_for(household),
        pol_months=pol.months_of(household),
        pol_member_names={m.member_id: m.name for m in members},
        revealed=revealed,
        overpayments=overpayments_of(household),
    )


def _decide(
    case_code: str, decision: Callable[[Household], object], done: str
) -> ResponseReturnValue:
    """Run one decision on a case from a form: commit and say so, or roll back and
    say why (in the user's language); back to the case page either way.
    """
    household = queries.get_case(current_user, case_code)
    try:
        decision(household)
    except DomainError as exc:
        db.session.rollback()
        if exc.http_status == 404:
            raise
        flash(error_message(exc), "error")
    else:
        db.session.commit()
        flash(done, "info")
    return redirect(url_for("cases.case_detail", case_code=case_code)), 303


@bp.post("/cases/<case_code>/flags/<id:flag_id>/clear")
@staff_required
def clear_flag(case_code: str, flag_id: int) -> ResponseReturnValue:
    reason = request.form.get("reason")
    return _decide(
        case_code,
        lambda household: review.clear_flag(current_user, household, flag_id, reason),
        _("Flag cleared."),
    )


@bp.post("/cases/<case_code>/visits/<id:survey_id>/review")
@staff_required
def review_visit(case_code: str, survey_id: int) -> ResponseReturnValue:
    """A visit's review: has issues, approved or rejected (back to its caseworker)."""
    status, reason = request.form.get("status", ""), request.form.get("reason")
    return _decide(
        case_code,
        lambda household: review.review_visit(current_user, household, survey_id, status, reason),
        _("Visit review saved."),
    )


@bp.post("/cases/<case_code>/proof-of-life/<id:month_id>")
@staff_required
def decide_proof_of_life(case_code: str, month_id: int) -> ResponseReturnValue:
    def decide(household: Household) -> None:
        record = pol.month_of_case(household, month_id)
        try:
            status = MonthStatus(request.form.get("status", ""))
        except ValueError:
            abort(400, description=_("Unknown proof-of-life status."))
        pol.decide_month(
            record, actor=current_user, status=status, reason=request.form.get("reason", "")
        )

    return _decide(case_code, decide, _("Done."))


@bp.get("/photos/<id:photo_id>")
@staff_required
def photo(photo_id: int) -> ResponseReturnValue:
    found = review.open_photo(current_user, photo_id, thumbnail=request.args.get("size") == "thumb")
    db.session.commit()  # the audit row of this read
    response = send_file(found.path, mimetype=found.content_type, max_age=0, etag=False)
    response.headers["Cache-Control"] = "private, no-store"
    # Shown in the page, saved under a name of ours; nosniff (set for every answer)
    # keeps a browser from reading the bytes as anything but the type we name.
    response.headers["Content-Disposition"] = f'inline; filename="{found.filename}"'
    return response


# Decisions that end a case: the page asks to confirm them (a required checkbox on a
# page of its own, no JavaScript) before anything is written.
CONFIRM_FIRST = frozenset({"reject", "terminate"})


@bp.post("/cases/<case_code>/transitions")
@staff_required
def case_transition(case_code: str) -> ResponseReturnValue:
    action, reason = request.form.get("action", ""), request.form.get("reason")
    if action in CONFIRM_FIRST and request.form.get("confirmed") != "yes":
        household = queries.get_case(current_user, case_code)
        # Only a decision that could go ahead is confirmed; any other one fails below
        # with its own message (a missing or too long reason, a role, a state).
        text = (reason or "").strip()
        if (
            action in workflow.available_actions(household, current_user)
            and text
            and len(text) <= MAX_REASON_LENGTH
        ):
            return render_template(
                "cases/confirm.html", household=household, action=action, reason=text
            )
    return _decide(
        case_code,
        lambda household: workflow.transition(household, action, actor=current_user, reason=reason),
        _("Done."),
    )
