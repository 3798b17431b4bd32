"""The campaign page for staff: one month's proof of life, messages, caseworker tasks and
payments, per township inside the viewer's area. Counts only, nobody identifiable."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import func, select

from server import clock
from server.areas.models import Area
from server.auth.permissions import scope_to_actor, staff_required
from server.cases.models import Household
from server.extensions import db
from server.monthly.cycle import moments
from server.monthly.models import CampaignStep
from server.months import current_month, month_after
from server.payments.models import PaymentMonth
from server.proof_of_life.models import ContactTask, MonthStatus, ProofOfLifeMonth
from server.proof_of_life.service import attempt_figures
from server.region import local_time, region
from server.validation import query_month
from sms.models import MessageStatus, SmsMessage

bp = Blueprint("campaign", __name__)

POL_COLUMNS = [s.value for s in MonthStatus]
MESSAGE_COLUMNS = [s.value for s in MessageStatus]


def _per_township(model: Any, column: Any, month: str, *extra: Any) -> dict[int, dict[str, int]]:
    """Counts of ``column``'s values per township (the village's parent), in scope."""
    query = (
        select(Area.parent_id, column, func.count())
        .select_from(model)
        .join(Household, Household.id == model.household_id)
        .join(Area, Area.id == Household.village_id)
        .where(model.month == month, *extra)
        .group_by(Area.parent_id, column)
    )
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for township_id, value, count in db.session.execute(scope_to_actor(query, current_user)):
        counts[township_id][str(getattr(value, "value", value))] = count
    return counts


@bp.get("/campaign")
@staff_required
def month_page() -> ResponseReturnValue:
    today = current_month(clock.utcnow(), region().timezone)
    month = query_month("month", today)
    pol = _per_township(ProofOfLifeMonth, ProofOfLifeMonth.status, month)
    messages = _per_township(SmsMessage, SmsMessage.status, month)
    tasks = _per_township(ContactTask, ContactTask.reason, month, ContactTask.resolved_at.is_(None))
    payments = _per_township(PaymentMonth, PaymentMonth.status, month)
    ids = set(pol) | set(messages) | set(tasks) | set(payments)
    names = (
        dict(db.session.execute(select(Area.id, Area.name).where(Area.id.in_(ids))).all())
        if ids
        else {}
    )
    rows = [
        {
            "township": names.get(township_id, "?"),
            "pol": pol.get(township_id, {}),
            "messages": messages.get(township_id, {}),
            "tasks": sum(tasks.get(township_id, {}).values()),
            "payments": payments.get(township_id, {}),
        }
        for township_id in sorted(ids, key=lambda i: names.get(i, ""))
    ]
    steps = {
        step.step: step
        for step in db.session.scalars(select(CampaignStep).where(CampaignStep.month == month))
    }
    figures = attempt_figures(month, current_user, now=clock.utcnow())
    return render_template(
        "campaign/month.html",
        figures=figures,
        month=month,
        previous=month_after(month, -1),
        following=month_after(month, 1),
        at={name: local_time(moment) for name, moment in vars(moments(month)).items()},
        steps=steps,
        rows=rows,
        pol_columns=POL_COLUMNS,
        message_columns=MESSAGE_COLUMNS,
    )
