"""The case page's forms for changes to a case (server/cases/changes.py): reading what
was typed, and the sentence shown next to the field a refusal names."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from flask_babel import lazy_gettext as _l
from werkzeug.datastructures import MultiDict

from server.auth.models import User
from server.cases import changes
from server.cases.models import CaseChange, ChangeKind, Household, Relation
from server.cases.service import NewMember
from server.errors import DomainError, ValidationFailed
from server.labels import error_message
from server.validation import parse_id

# The sentence for a refusal's ``problem`` (details of ValidationFailed and BaseMoved).
PROBLEMS = {
    "format": _l("Not in the expected form."),
    "checksum": _l("The ID number's check character is wrong: please check the number."),
    "birth_date": _l("The ID number does not carry this birth date."),
    "duplicate": _l("This ID number is already registered (or proposed) in the league."),
    "head": _l("The household has its head: remove the old head and name a new one instead."),
    "phone": _l("A mobile number has 11 digits and starts with 1."),
    "same": _l("Nothing differs from what is recorded."),
    "pending": _l("A change of this kind is already waiting for a checker."),
    "member": _l("No such member in this household."),
    "last": _l("The last member cannot be removed: terminate the case instead."),
    "required": _l("Required."),
    "negative": _l("An income cannot be negative."),
    "big": _l("An income this high is a typing error."),
    "future": _l("A birth date cannot be in the future."),
}
MOVED = {
    "member_gone": _l("The member is no longer in the household: the change cannot apply."),
    "phone": _l("The phone changed since the proposal: the change cannot apply."),
    "income": _l("An income changed since the proposal: the change cannot apply."),
    "relation": _l("The member's relation changed since the proposal."),
    "duplicate": _l("The ID number was registered meanwhile: the change cannot apply."),
    "closed": _l("The case is closed now: the change cannot apply."),
    "last": _l("The last member cannot be removed: terminate the case instead."),
}
OTHER = {
    "check_own_change": _l("You proposed this change: a second person must check it."),
    "check_change": _l("Only township reviewers and county approvers check changes."),
    "propose_change": _l("Only township staff propose changes to a case."),
    "withdraw_change": _l("Only the person who proposed a change withdraws it."),
    "already_resent": _l("This month's link was re-sent to this member already."),
}


def problem_message(exc: DomainError) -> str:
    """The user's-language sentence for a refused change (or re-send)."""
    details = exc.details
    if exc.code == "change_base_moved":
        return str(MOVED.get(details.get("why", ""), error_message(exc)))
    if exc.code == "already_resent":
        return str(OTHER["already_resent"])
    if exc.code == "not_permitted" and details.get("action") in OTHER:
        return str(OTHER[details["action"]])
    if exc.code == "illegal_transition" and "change_status" in details:
        return str(_l("This change was decided already."))
    if exc.code == "illegal_transition" and details.get("action") == "propose_change":
        return str(_l("A closed case cannot be changed."))
    if details.get("action") == "resend_link":
        return str(_l("This member's link cannot be re-sent now (window closed or month done)."))
    if details.get("problem") in PROBLEMS:
        return str(PROBLEMS[details["problem"]])
    return error_message(exc)


@dataclass
class ChangeForm:
    """A propose form as typed, with the refusal's message by field (for the page)."""

    kind: str
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValidationFailed(
            "a date is YYYY-MM-DD", field="birth_date", problem="format"
        ) from None


def _member_id(form: MultiDict[str, str], name: str) -> int:
    value = parse_id(form.get(name))
    if value is None:
        raise ValidationFailed("choose a member", field=name, problem="required")
    return value


def propose(actor: User, household: Household, kind: str, form: MultiDict[str, str]) -> CaseChange:
    """Run one propose form; ValidationFailed names the field to show it next to."""
    reason = form.get("reason")
    if kind == ChangeKind.ADD_MEMBER:
        try:
            relation = Relation(form.get("relation", ""))
        except ValueError:
            raise ValidationFailed(
                "choose a relation", field="relation", problem="required"
            ) from None
        new = NewMember(
            name=form.get("name", ""),
            id_number=form.get("id_number", ""),
            birth_date=_date(form.get("birth_date", "")),
            relation=relation,
            phone=form.get("phone", "").strip() or None,
            able_to_work=form.get("able_to_work") == "yes",
            monthly_income=changes.parse_income(form.get("monthly_income") or "0"),
            proof_of_life_required=form.get("proof_of_life_required") == "yes",
        )
        return changes.propose_add_member(actor, household, new, reason)
    if kind == ChangeKind.REMOVE_MEMBER:
        new_head = parse_id(form.get("new_head"))
        return changes.propose_remove_member(
            actor, household, _member_id(form, "member"), reason, new_head_id=new_head
        )
    if kind == ChangeKind.CORRECT_PHONE:
        return changes.propose_phone(
            actor, household, _member_id(form, "member"), form.get("phone"), reason
        )
    if kind == ChangeKind.CHANGE_INCOME:
        lines = []
        for member in household.living_members:
            name = f"income_{member.id}"
            typed = form.get(name)
            if typed is None:
                continue
            lines.append(changes.IncomeLine(member.id, changes.parse_income(typed, field=name)))
        return changes.propose_incomes(actor, household, lines, reason)
    raise ValidationFailed("unknown kind of change", field="kind", problem="format")


def refused_form(kind: str, form: MultiDict[str, str], exc: DomainError) -> ChangeForm:
    """The form as typed with the message next to the field the refusal names."""
    name = str(exc.details.get("field") or "kind")
    if name == "monthly_income" and kind == ChangeKind.CHANGE_INCOME:
        name = "kind"  # no line differs: said above the form
    values = {k: v for k, v in form.items() if k != "csrf_token"}
    return ChangeForm(kind=kind, values=values, errors={name: problem_message(exc)})
