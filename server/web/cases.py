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

from server import clock
from server.auth.permissions import Capability, can, staff_required
from server.cases import changes as case_changes_service
from server.cases import objections, queries, service, workflow
from server.cases.models import CaseChange, CaseState, Household
from server.deaths.service import overpayments_of
from server.errors import DomainError
from server.extensions import db
from server.labels import error_message
from server.monthly import resend
from server.proof_of_life import service as pol
from server.proof_of_life.models import MonthStatus
from server.validation import MAX_REASON_LENGTH, query_enum, query_int
from server.visits import review
from server.visits.integrity.risk_queries import loaded_visit_scores
from server.web import change_forms

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


def _case_page(
    household: Household,
    revealed: int | None,
    change_form: change_forms.ChangeForm | None = None,
    status: int = 200,
    revealed_change: int | None = None,
) -> ResponseReturnValue:
    """One case; ID numbers and phones masked but for the member ``revealed``; a
    refused change's form as typed (``change_form``). Commits the audit rows of the
    read (and of the reveal)."""
    # A role that reads no personal data (the administrator) sees the case without its
    # members' details: a read page, not a decision refused.
    reads = can(current_user, Capability.READ_PERSONAL_DATA)
    members = service.read_member_details(current_user, household) if reads else []
    case_changes = (
        case_changes_service.read_changes(current_user, household)
        if reads
        else [(c, None) for c in case_changes_service.history(household)]
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
        case_changes=case_changes,
        change_form=change_form,
        revealed_change=revealed_change,
        may_check=lambda change: case_changes_service.may_check(current_user, change),
        may_resend=resend.may_resend(current_user),
        overpayments=overpayments_of(household),
        objections=objections.of_case(household),
    ), status


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


# --------------------------------------------------------------------------- changes


@bp.post("/cases/<case_code>/changes/<kind>")
@staff_required
def propose_change(case_code: str, kind: str) -> ResponseReturnValue:
    """A change to the case, waiting for a second person (server/cases/changes.py). A
    refusal shows the case page again with the form as typed and the message next to
    its field."""
    household = queries.get_case(current_user, case_code)
    try:
        change_forms.propose(current_user, household, kind, request.form)
    except DomainError as exc:
        db.session.rollback()
        if exc.http_status == 404:
            raise
        household = queries.get_case(current_user, case_code)
        form = change_forms.refused_form(kind, request.form, exc)
        return _case_page(household, revealed=None, change_form=form, status=exc.http_status)
    db.session.commit()
    flash(_("Change proposed: it takes effect when a second person approves it."), "info")
    return redirect(url_for("cases.case_detail", case_code=case_code, _anchor="changes")), 303


@bp.post("/cases/<case_code>/changes/<id:change_id>/reveal")
@staff_required
def reveal_change(case_code: str, change_id: int) -> ResponseReturnValue:
    """The case page with one change's full ID number and phones (audited); answered
    to the POST itself, like a member's reveal."""
    household = queries.get_case(current_user, case_code)
    revealed = case_changes_service.reveal_change(current_user, household, change_id)
    return _case_page(household, revealed=None, revealed_change=revealed)


def _decide_change(
    case_code: str, change_id: int, decision: Callable[[CaseChange], object], done: str
) -> ResponseReturnValue:
    household = queries.get_case(current_user, case_code)
    try:
        decision(case_changes_service.change_of_case(current_user, household, change_id))
    except DomainError as exc:
        db.session.rollback()
        if exc.http_status == 404:
            raise
        flash(change_forms.problem_message(exc), "error")
    else:
        db.session.commit()
        flash(done, "info")
    return redirect(url_for("cases.case_detail", case_code=case_code, _anchor="changes")), 303


@bp.post("/cases/<case_code>/changes/<id:change_id>/approve")
@staff_required
def approve_change(case_code: str, change_id: int) -> ResponseReturnValue:
    note = request.form.get("note")
    return _decide_change(
        case_code,
        change_id,
        lambda change: case_changes_service.approve(current_user, change, note),
        _("Change approved: the case and its allowance are updated."),
    )


@bp.post("/cases/<case_code>/changes/<id:change_id>/reject")
@staff_required
def reject_change(case_code: str, change_id: int) -> ResponseReturnValue:
    note = request.form.get("note")
    return _decide_change(
        case_code,
        change_id,
        lambda change: case_changes_service.reject(current_user, change, note),
        _("Change rejected: nothing was changed."),
    )


@bp.post("/cases/<case_code>/changes/<id:change_id>/withdraw")
@staff_required
def withdraw_change(case_code: str, change_id: int) -> ResponseReturnValue:
    return _decide_change(
        case_code,
        change_id,
        lambda change: case_changes_service.withdraw(current_user, change),
        _("Change withdrawn."),
    )


@bp.post("/cases/<case_code>/members/<id:member_id>/resend-link")
@staff_required
def resend_link(case_code: str, member_id: int) -> ResponseReturnValue:
    """This month's proof-of-life link, again, to the member's phone on file (once per
    member and month; audited)."""
    household = queries.get_case(current_user, case_code)
    try:
        told = resend.resend_link(current_user, household, member_id, now=clock.utcnow())
    except DomainError as exc:
        db.session.rollback()
        if exc.http_status == 404:
            raise
        flash(change_forms.problem_message(exc), "error")
    else:
        db.session.commit()
        if told.queued:
            flash(_("This month's link will be sent to the member's phone."), "info")
        else:
            flash(_("The member cannot get an SMS: their caseworker will reach them."), "error")
    return redirect(url_for("cases.case_detail", case_code=case_code, _anchor="changes")), 303


@bp.get("/changes")
@staff_required
def changes_waiting() -> ResponseReturnValue:
    """The changes of the user's area waiting for them to check (not their own)."""
    waiting = case_changes_service.waiting_for(current_user)
    return render_template("cases/changes_waiting.html", waiting=waiting)
