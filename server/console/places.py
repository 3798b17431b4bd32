"""What the console's lists share: a case's village and township (one join, no
per-row look-up), the months whose proof of life can still be acted on, and the local
dates rows are dated by."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from flask import g, url_for
from sqlalchemy import Select, select
from sqlalchemy.orm import aliased

from server.areas.models import Area, AreaLevel
from server.cases.models import Household
from server.extensions import db
from server.monthly.cycle import moments
from server.months import current_month, last_local_day, local_date, month_after
from server.region import region

Village = aliased(Area, name="village")
Township = aliased(Area, name="township")


def with_place(query: Select[*tuple[Any, ...]], path: str) -> Select[*tuple[Any, ...]]:
    """``query`` (over ``Household``) with the village's and the township's names and
    the township's code as its last columns, limited to villages under ``path``."""
    return (
        query.add_columns(Village.name, Township.name, Township.code)
        .join(Village, Village.id == Household.village_id)
        .join(Township, Township.id == Village.parent_id)
        .where(Village.path.startswith(path, autoescape=True))
    )


def townships(area: Area) -> list[Area]:
    """The townships a list inside ``area`` can be filtered by, by name."""
    if area.level is AreaLevel.VILLAGE:
        return [area.parent] if area.parent is not None else []
    return list(
        db.session.scalars(
            select(Area)
            .where(
                Area.level == AreaLevel.TOWNSHIP,
                Area.path.startswith(area.path, autoescape=True),
            )
            .order_by(Area.name, Area.code)
        )
    )


def live_months(now: datetime) -> list[str]:
    """The months whose proof of life can still be acted on at ``now``: the window has
    opened and its grace period (``CampaignRules.grace_ends``) has not ended."""
    rules = region()
    this = current_month(now, rules.timezone)
    found = []
    for back in (2, 1, 0):
        month = month_after(this, -back)
        times = moments(month)
        if times.opens <= now < rules.campaign.grace_ends(times.closes):
            found.append(month)
    return found


def window_last_day(month: str) -> date:
    """The last local day of the month's proof-of-life window."""
    return last_local_day(moments(month).closes, region().timezone)


def local_day(moment: datetime) -> date:
    return local_date(moment, region().timezone)


def case_url(case_code: str) -> str:
    """The case page's address (built once per request: lists have many rows; case
    codes need no escaping)."""
    prefix: str | None = g.get("console_case_url")
    if prefix is None:
        prefix = url_for("cases.case_detail", case_code="_").removesuffix("_")
        g.console_case_url = prefix
    return prefix + case_code
