"""Send a member this month's proof-of-life link again (after a phone correction):
the same link, to the number on file now, through the registered notifier. At most
once per member and month (the SMS channel keeps one message per member, month and
kind), only while the month's window is open and the member's month is pending."""

from __future__ import annotations

from datetime import datetime

from server.audit import service as audit
from server.auth.models import User
from server.auth.permissions import Capability, can, not_found, require_in_area
from server.cases.models import Household, Member
from server.errors import DomainError, IllegalTransition, NotPermitted, ValidationFailed
from server.extensions import db
from server.monthly.cycle import moments
from server.monthly.notices import Notice, NoticeKind, Told, notifier
from server.proof_of_life import service as pol
from server.proof_of_life.models import MonthStatus


class AlreadyResent(DomainError):
    """This month's link was re-sent to the member already (the rate limit)."""

    code = "already_resent"
    http_status = 429


def may_resend(actor: User) -> bool:
    """Township staff and the checkers of changes (the people who correct phones)."""
    return can(actor, Capability.PROPOSE_CASE_CHANGES) or can(actor, Capability.CHECK_CASE_CHANGES)


def resend_link(actor: User, household: Household, member_id: int, *, now: datetime) -> Told:
    """Queue this month's link for the member, to their phone on file; flushes."""
    require_in_area(actor, household.village)
    member = db.session.get(Member, member_id)
    if member is None or member.household_id != household.id:
        raise not_found("member")
    if not may_resend(actor):
        raise NotPermitted("this role does not send links", action="resend_link")
    if not member.phone:
        raise ValidationFailed("the member has no phone on file", field="phone", problem="none")
    month = pol.this_month(now)
    at = moments(month)
    if not at.opens <= now < at.closes:
        raise IllegalTransition(
            f"the {month} proof-of-life window is not open", action="resend_link", why="window"
        )
    record = pol.month_record(member, month)  # NotDesignated / NotInCare
    if record.status is not MonthStatus.PENDING:
        raise IllegalTransition(
            f"this member's {month} is {record.status.value}", action="resend_link", why="done"
        )
    notice = Notice(
        NoticeKind.RESEND,
        member.id,
        household.id,
        month,
        member.name,
        member.phone,
        pol.link_token(record),
        record.window_closes_at,
    )
    told = notifier().tell([notice], now=now)
    if told.already:
        raise AlreadyResent(
            f"the {month} link was re-sent to this member already", action="resend_link"
        )
    audit.record(
        "pol.link_resent",
        actor=actor,
        object_type="member",
        object_id=member.id,
        household_id=household.id,
        month=month,
        queued=told.queued,
        tasks=told.tasks,
    )
    db.session.flush()
    return told
