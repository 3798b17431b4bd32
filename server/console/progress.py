"""The progress home (issue 15, item 1): for one area, a row per area one level below
(a village: its own row), the numbers a supervisor watches, and the list of cases
behind each number.

Every number is a ``Filter``: a key (``state:applied``, ``overdue:surveyed``,
``pol:passed``...), the rows it counts (cases, visits, flags, members' months or
payments) and one SQL condition over them. The page's counts and the list behind a
number (``cases_table``) use the same condition, so they cannot drift apart. Counts
are aggregates in SQL, one query per block, grouped by the child area through the
areas' paths (``Area.path`` prefixes), never a query per area nor Python over rows.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask_babel import lazy_gettext as _l
from sqlalchemy import (
    ColumnElement,
    Select,
    case,
    delete,
    false,
    func,
    insert,
    literal_column,
    or_,
    select,
)
from sqlalchemy.orm import aliased

from server.areas.models import Area, AreaLevel
from server.cases.deadlines import UNDER_REVIEW, decision_deadline, decision_overdue, review_overdue
from server.cases.models import CaseState, Household, HouseholdClass, Member
from server.cases.workflow import PRE_APPROVAL
from server.console.models import MonthCount, MonthRollup
from server.console.scope import children
from server.console.tables import Column, Table
from server.extensions import db
from server.labels import (
    FLAG_LABELS,
    PAYMENT_STATUS_LABELS,
    POL_STATUS_LABELS,
    RELATION_LABELS,
    STATE_LABELS,
    VISIT_KIND_LABELS,
)
from server.monthly.notices import Reach, notifier
from server.months import current_month, last_day_of_month, local_date, month_after, window
from server.payments.models import PaymentMonth, PaymentStatus
from server.proof_of_life.models import MonthStatus, ProofOfLifeAttempt, ProofOfLifeMonth
from server.region import region
from server.visits.models import Survey, SurveyFlag

# The steps at which a case waits for a decision, in the workflow's order.
STEPS: tuple[CaseState, ...] = tuple(s for s in CaseState if s in PRE_APPROVAL)
TRENDS_SPAN = 12  # months


# --------------------------------------------------------------------------- periods


@dataclass(frozen=True)
class Period:
    """The moments the numbers are about, in the region's zone."""

    now: datetime
    today: date  # the local day
    month: str  # the local month: visits, reviews due
    month_last: date
    starts: datetime  # the local month's bounds in UTC: [starts, ends)
    ends: datetime
    pol_month: str  # the proof-of-life month: the latest whose window has opened
    pol_closes: datetime
    payroll_month: str  # the payments: the latest month whose window has closed


def period(now: datetime, month: str | None = None) -> Period:
    """The period at ``now``; with ``month``, every month-based number is about that
    month instead (the trends' links)."""
    rules = region()
    tz = rules.timezone
    today = local_date(now, tz)
    this_month = current_month(now, tz)
    if month is None:
        opens, _ = window(this_month, rules.proof_of_life, tz)
        pol_month = this_month if now >= opens else month_after(this_month, -1)
        closes = window(this_month, rules.proof_of_life, tz)[1]
        payroll_month = this_month if now >= closes else month_after(this_month, -1)
        month = this_month
    else:
        pol_month = payroll_month = month
    first = date(int(month[:4]), int(month[5:]), 1)
    zone = ZoneInfo(tz)
    starts = datetime(first.year, first.month, 1, tzinfo=zone)
    following = first + timedelta(days=32)
    ends = datetime(following.year, following.month, 1, tzinfo=zone)
    return Period(
        now=now,
        today=today,
        month=month,
        month_last=last_day_of_month(first),
        starts=starts.astimezone(ZoneInfo("UTC")),
        ends=ends.astimezone(ZoneInfo("UTC")),
        pol_month=pol_month,
        pol_closes=window(pol_month, rules.proof_of_life, tz)[1],
        payroll_month=payroll_month,
    )


# --------------------------------------------------------------------------- filters


class Unit(enum.StrEnum):
    """What a number counts (one row of its list each)."""

    CASES = "cases"
    VISITS = "visits"
    FLAGS = "flags"
    POL = "pol"  # a designated member's month
    PAYMENTS = "payments"  # a household's payment for a month


def _from(unit: Unit) -> Select[Any]:
    """The rows of ``unit`` joined to their household (for its village)."""
    if unit is Unit.CASES:
        return select().select_from(Household)
    if unit is Unit.VISITS:
        return select().select_from(Survey).join(Household, Household.id == Survey.household_id)
    if unit is Unit.FLAGS:
        return (
            select()
            .select_from(SurveyFlag)
            .join(Survey, Survey.id == SurveyFlag.survey_id)
            .join(Household, Household.id == Survey.household_id)
        )
    if unit is Unit.POL:
        return (
            select()
            .select_from(ProofOfLifeMonth)
            .join(Household, Household.id == ProofOfLifeMonth.household_id)
        )
    return (
        select()
        .select_from(PaymentMonth)
        .join(Household, Household.id == PaymentMonth.household_id)
    )


# The one row count of each unit (what ``count(*)`` counts after the joins).
_KEY_OF: Mapping[Unit, Any] = {
    Unit.CASES: Household.id,
    Unit.VISITS: Survey.id,
    Unit.FLAGS: SurveyFlag.id,
    Unit.POL: ProofOfLifeMonth.id,
    Unit.PAYMENTS: PaymentMonth.id,
}

Condition = Callable[[Period], ColumnElement[bool]]


@dataclass(frozen=True)
class Filter:
    key: str  # as in the URL: ``filter=overdue:surveyed``
    unit: Unit
    label: Any  # a lazy string
    where: Condition
    # What the list shows of each row besides the case (see ``_EXTRA``).
    extra: str = ""


def _class_id(code: str) -> ColumnElement[Any]:
    return select(HouseholdClass.id).where(HouseholdClass.code == code).scalar_subquery()


def _reached(stage: Reach) -> Condition:
    def where(p: Period) -> ColumnElement[bool]:
        members = notifier().reached(p.pol_month, stage)
        if members is None:
            return false()
        return ProofOfLifeMonth.member_id.in_(members)

    return where


def _pol(status: MonthStatus) -> Condition:
    return lambda p: (ProofOfLifeMonth.month == p.pol_month) & (ProofOfLifeMonth.status == status)


def _pol_month(p: Period) -> ColumnElement[bool]:
    return ProofOfLifeMonth.month == p.pol_month


POL_FILTERS: tuple[Filter, ...] = (
    Filter("pol:designated", Unit.POL, _l("Designated"), _pol_month),
    Filter(
        "pol:sms_sent",
        Unit.POL,
        _l("SMS sent"),
        lambda p: _pol_month(p) & _reached(Reach.SENT)(p),
    ),
    Filter(
        "pol:delivered",
        Unit.POL,
        _l("Delivered"),
        lambda p: _pol_month(p) & _reached(Reach.DELIVERED)(p),
    ),
    Filter(
        "pol:attempted",
        Unit.POL,
        _l("Attempted"),
        lambda p: (
            _pol_month(p)
            & select(ProofOfLifeAttempt.id)
            .where(ProofOfLifeAttempt.month_id == ProofOfLifeMonth.id)
            .exists()
        ),
    ),
    Filter("pol:passed", Unit.POL, _l("Passed"), _pol(MonthStatus.PASSED)),
    Filter("pol:failed", Unit.POL, _l("Failed"), _pol(MonthStatus.FAILED)),
    Filter("pol:review", Unit.POL, _l("Under review"), _pol(MonthStatus.REVIEW)),
    Filter("pol:exempt", Unit.POL, _l("Exempt"), _pol(MonthStatus.EXEMPT)),
    Filter("pol:missed", Unit.POL, _l("Missed"), _pol(MonthStatus.MISSED)),
    # Still pending while the window is open: the payment is suspended unless they
    # pass before it closes.
    Filter(
        "pol:at_risk",
        Unit.POL,
        _l("At risk of suspension"),
        lambda p: _pol(MonthStatus.PENDING)(p) & (ProofOfLifeMonth.window_closes_at > p.now),
    ),
)

PAYMENT_FILTERS: tuple[Filter, ...] = (
    Filter(
        "pay:paid",
        Unit.PAYMENTS,
        _l("Paid"),
        lambda p: (
            (PaymentMonth.month == p.payroll_month) & (PaymentMonth.status == PaymentStatus.PAYABLE)
        ),
    ),
    Filter(
        "pay:suspended",
        Unit.PAYMENTS,
        _l("Suspended"),
        lambda p: (
            (PaymentMonth.month == p.payroll_month)
            & (PaymentMonth.status == PaymentStatus.SUSPENDED)
        ),
    ),
    Filter(
        "pay:back_paid",
        Unit.PAYMENTS,
        _l("Back-paid"),
        lambda p: (
            (PaymentMonth.back_pay_month == p.payroll_month)
            & (PaymentMonth.status == PaymentStatus.RESTORED)
        ),
    ),
)

VISITS_FILTER = Filter(
    "visits",
    Unit.VISITS,
    _l("Visits this month"),
    lambda p: (Survey.finished_at >= p.starts) & (Survey.finished_at < p.ends),
)
ALL_FLAGS = Filter(
    "flags", Unit.FLAGS, _l("All open flags"), lambda p: SurveyFlag.cleared_at.is_(None)
)
ALL_CASES = Filter("cases", Unit.CASES, _l("All cases"), lambda p: Household.id.is_not(None))


def _state(state: CaseState) -> Filter:
    return Filter(
        f"state:{state.value}", Unit.CASES, STATE_LABELS[state], lambda p: Household.state == state
    )


def _pending(state: CaseState) -> Filter:
    return Filter(
        f"pending:{state.value}",
        Unit.CASES,
        STATE_LABELS[state],
        lambda p: Household.state == state,
        extra="deadline",
    )


def _overdue(state: CaseState) -> Filter:
    return Filter(
        f"overdue:{state.value}",
        Unit.CASES,
        _l("%(step)s: overdue", step=STATE_LABELS[state]),
        lambda p: (Household.state == state) & decision_overdue(p.today),
        extra="deadline",
    )


def _review_due(code: str) -> Filter:
    return Filter(
        f"review_due:{code}",
        Unit.CASES,
        _l("Class %(code)s: review due this month", code=code),
        lambda p: (
            Household.state.in_(UNDER_REVIEW)
            & (Household.class_id == _class_id(code))
            & (Household.next_review_on >= p.today)
            & (Household.next_review_on <= p.month_last)
        ),
        extra="review",
    )


def _review_overdue(code: str) -> Filter:
    return Filter(
        f"review_overdue:{code}",
        Unit.CASES,
        _l("Class %(code)s: review overdue", code=code),
        lambda p: review_overdue(p.today) & (Household.class_id == _class_id(code)),
        extra="review",
    )


def _flag(code: str) -> Filter:
    return Filter(
        f"flag:{code}",
        Unit.FLAGS,
        FLAG_LABELS.get(code, code),
        lambda p: SurveyFlag.cleared_at.is_(None) & (SurveyFlag.code == code),
    )


_FIXED = {f.key: f for f in (*POL_FILTERS, *PAYMENT_FILTERS, VISITS_FILTER, ALL_FLAGS, ALL_CASES)}
_MAKERS: Mapping[str, Callable[[str], Filter | None]] = {
    "state": lambda v: _state(CaseState(v)) if v in set(CaseState) else None,
    "pending": lambda v: _pending(CaseState(v)) if v in set(STEPS) else None,
    "overdue": lambda v: _overdue(CaseState(v)) if v in set(STEPS) else None,
    "review_due": lambda v: _review_due(v) if _plain(v) else None,
    "review_overdue": lambda v: _review_overdue(v) if _plain(v) else None,
    "flag": lambda v: _flag(v) if _plain(v) else None,
}


def _plain(value: str) -> bool:
    return 0 < len(value) <= 40 and all(c.isalnum() or c == "_" for c in value)


def find_filter(key: str) -> Filter | None:
    """The filter with this key, or None."""
    if key in _FIXED:
        return _FIXED[key]
    kind, _, value = key.partition(":")
    maker = _MAKERS.get(kind)
    return maker(value) if maker is not None and value else None


# --------------------------------------------------------------------------- counts


def _villages(area: Area) -> Select[Any]:
    """The ids of the villages inside ``area`` (itself, for a village)."""
    return select(Area.id).where(
        Area.path.startswith(area.path, autoescape=True), Area.level == AreaLevel.VILLAGE
    )


def child_of_village(area: Area) -> dict[int, int]:
    """Each village inside ``area`` -> the area one level below ``area`` holding it (by
    the path prefix); a village -> itself. Areas are few: read at once."""
    if area.level is AreaLevel.VILLAGE:
        return {area.id: area.id}
    by_code = {child.code: child.id for child in children(area)}
    found = {}
    for village_id, path in db.session.execute(
        select(Area.id, Area.path).where(Area.id.in_(_villages(area)))
    ):
        code = path[len(area.path) :].split("/", 1)[0]
        if code in by_code:
            found[village_id] = by_code[code]
    return found


def _per_village(query: Select[Any], area: Area) -> Select[Any]:
    """``query`` (rows joined to their ``Household``) kept to the villages inside
    ``area``, grouped by village: the database counts per village (a few thousand
    groups at most), ``roll_up`` adds villages up to the areas that show them."""
    return query.where(Household.village_id.in_(_villages(area))).group_by(Household.village_id)


@dataclass
class Counted:
    """Every number of the page per area: area id -> ``block/filter key`` -> count (a
    number absent is 0), and per area when the earliest window of a member at risk
    of suspension closes."""

    counts: dict[int, dict[str, int]] = field(default_factory=dict)
    closes: dict[int, datetime] = field(default_factory=dict)

    def add(self, area_id: int, key: str, value: Any) -> None:
        if value:
            into = self.counts.setdefault(area_id, {})
            into[key] = into.get(key, 0) + int(value)

    def close(self, area_id: int, moment: datetime) -> None:
        found = self.closes.get(area_id)
        self.closes[area_id] = moment if found is None else min(found, moment)


def roll_up(counted: Counted, into: Mapping[int, Sequence[int]]) -> Counted:
    """``counted`` per village added up into the areas ``into`` gives for each village
    (the child area holding it on the page; every area on its path for the summary)."""
    found = Counted()
    for village_id, counts in counted.counts.items():
        for target in into.get(village_id, ()):
            for key, value in counts.items():
                found.add(target, key, value)
    for village_id, moment in counted.closes.items():
        for target in into.get(village_id, ()):
            found.close(target, moment)
    return found


def _blocks(classes: Sequence[str], flag_codes: Sequence[str], p: Period) -> list[Block]:
    """The page's tables (their columns), with no counts yet."""
    return [
        Block("states", _l("Cases by state"), [ALL_CASES, *(_state(s) for s in CaseState)]),
        Block(
            "decisions",
            _l("Decisions pending at each step"),
            [f for s in STEPS for f in (_pending(s), _overdue(s))],
            note=_l(
                "Deadline: the whole review, %(review)s working days from the application; "
                "in public notice, the county's decision %(county)s working days after the "
                "notice ends. Overdue: the deadline is before today.",
                review=region().deadlines.review_working_days,
                county=region().deadlines.county_decision_working_days,
            ),
        ),
        Block(
            "reviews",
            _l("Periodic reviews"),
            [f for c in classes for f in (_review_due(c), _review_overdue(c))],
        ),
        Block("visits", _l("Visits this month"), [VISITS_FILTER]),
        Block("flags", _l("Open evidence flags"), [ALL_FLAGS, *(_flag(c) for c in flag_codes)]),
        Block("pol", _l("Proof of life, %(month)s", month=p.pol_month), list(POL_FILTERS)),
        Block("payments", _l("Payments, %(month)s", month=p.payroll_month), list(PAYMENT_FILTERS)),
    ]


def _village_rows(
    area: Area,
    unit: Unit,
    filters: Sequence[Filter],
    p: Period,
    *extra: Any,
    span: ColumnElement[bool] | None = None,
) -> Sequence[Any]:
    """One query: per village inside ``area``, the count of each filter (then the
    ``extra`` columns). ``span``: a condition every counted row meets (it narrows the
    scan)."""
    # A constant, not the row's key: an index holding the filters' columns then
    # answers alone (visits: ``surveys (finished_at, household_id)``).
    columns = [func.count(case((f.where(p), literal_column("1")))) for f in filters]
    query = _per_village(_from(unit).add_columns(Household.village_id, *columns, *extra), area)
    if span is not None:
        query = query.where(span)
    return db.session.execute(query).all()


def count_villages(area: Area, p: Period, classes: Sequence[str]) -> Counted:
    """Every number of the page for each village inside ``area``: one aggregate query
    per kind of row (cases, visits, flags, members' months, payments)."""
    found = Counted()
    blocks = {b.name: b for b in _blocks(classes, (), p)}

    def put(names: Sequence[str], rows: Sequence[Any]) -> None:
        keys = [f"{n}/{f.key}" for n in names for f in blocks[n].filters]
        for village_id, *values in rows:
            for key, value in zip(keys, values, strict=False):
                found.add(village_id, key, value)

    case_blocks = ("states", "decisions", "reviews")
    case_filters = [f for n in case_blocks for f in blocks[n].filters]
    put(case_blocks, _village_rows(area, Unit.CASES, case_filters, p))
    put(
        ("visits",),
        _village_rows(area, Unit.VISITS, [VISITS_FILTER], p, span=VISITS_FILTER.where(p)),
    )
    # Open flags by code: one query grouped by village and code.
    flags = _per_village(
        _from(Unit.FLAGS).add_columns(Household.village_id, SurveyFlag.code, func.count()),
        area,
    ).where(ALL_FLAGS.where(p))
    for village_id, code, count in db.session.execute(flags.group_by(SurveyFlag.code)):
        found.add(village_id, f"flags/{ALL_FLAGS.key}", count)
        found.add(village_id, f"flags/flag:{code}", count)
    at_risk = POL_FILTERS[-1].where(p)
    pol_rows = _village_rows(
        area,
        Unit.POL,
        POL_FILTERS,
        p,
        func.min(case((at_risk, ProofOfLifeMonth.window_closes_at))),
        span=_pol_month(p),
    )
    put(("pol",), pol_rows)
    for village_id, *values in pol_rows:
        if values[-1] is not None:
            found.close(village_id, aware(values[-1]))
    put(
        ("payments",),
        _village_rows(
            area,
            Unit.PAYMENTS,
            PAYMENT_FILTERS,
            p,
            span=(PaymentMonth.month == p.payroll_month)
            | (PaymentMonth.back_pay_month == p.payroll_month),
        ),
    )
    return found


def assemble(
    area: Area,
    p: Period,
    classes: Sequence[str],
    counted: Counted,
    *,
    as_of: datetime,
    from_summary: bool = False,
) -> Progress:
    """The page from its numbers per child area (``counted``, keyed by the rows' ids):
    the same for numbers counted now and for a stored summary."""
    flag_prefix = "flags/flag:"
    codes = sorted(
        {
            key[len(flag_prefix) :]
            for counts in counted.counts.values()
            for key in counts
            if key.startswith(flag_prefix)
        }
    )
    blocks = _blocks(classes, codes, p)
    by_name = {b.name: b for b in blocks}
    for child_id, counts in counted.counts.items():
        for full_key, value in counts.items():
            name, _, key = full_key.partition("/")
            if name in by_name:
                by_name[name].counts.setdefault(child_id, {})[key] = value
    visits, pol, payments = by_name["visits"], by_name["pol"], by_name["payments"]
    return Progress(
        area=area,
        rows=page_rows(area),
        period=p,
        blocks=blocks,
        at_risk_closes=dict(counted.closes),
        trends=trends(area, now=p.now, known=_known(p, visits, pol, payments)),
        trends_as_of=rolled_at(trend_months(p.now)[:-1]),
        as_of=as_of,
        from_summary=from_summary,
    )


def page_rows(area: Area) -> list[Area]:
    """The page's rows: the child areas (a village: itself)."""
    return [area] if area.level is AreaLevel.VILLAGE else children(area)


@dataclass
class Block:
    """One table of the page: its filters (columns) and a count per child area."""

    name: str
    title: Any
    filters: list[Filter]
    counts: dict[int, dict[str, int]] = field(default_factory=dict)
    note: Any = None

    def total(self, key: str) -> int:
        return sum(c.get(key, 0) for c in self.counts.values())

    def count(self, child_id: int, key: str) -> int:
        return self.counts.get(child_id, {}).get(key, 0)


@dataclass
class Progress:
    area: Area
    rows: list[Area]  # the child areas (a village: itself)
    period: Period
    blocks: list[Block]
    # Per child area: when the earliest window of a member at risk closes.
    at_risk_closes: dict[int, datetime]
    trends: list[Trend]
    # When the closed months of the trends were summed up (None: all counted live).
    trends_as_of: datetime | None = None
    # When the blocks' numbers were counted (now, or the stored summary's time).
    as_of: datetime | None = None
    from_summary: bool = False  # read from the stored summary (server.console.summary)

    def block(self, name: str) -> Block:
        return next(b for b in self.blocks if b.name == name)

    def table(self) -> Table:
        """Every number of the page as one table (a row per child area and the total):
        what the page exports."""
        columns = [Column("area_code", str(_l("Area code"))), Column("area", str(_l("Area")))]
        for block in self.blocks:
            columns += [
                Column(f"{block.name}/{f.key}", f"{block.title}: {f.label}") for f in block.filters
            ]
        rows: list[dict[str, Any]] = []
        for child in self.rows:
            row: dict[str, Any] = {"area_code": child.code, "area": child.name}
            for block in self.blocks:
                row.update(
                    {f"{block.name}/{f.key}": block.count(child.id, f.key) for f in block.filters}
                )
            rows.append(row)
        if [child.id for child in self.rows] != [self.area.id]:  # a village is its own row
            total: dict[str, Any] = {"area_code": self.area.code, "area": str(_l("Total"))}
            for block in self.blocks:
                total.update({f"{block.name}/{f.key}": block.total(f.key) for f in block.filters})
            rows.append(total)
        return Table(
            name="progress",
            title=str(_l("Progress in %(area)s", area=self.area.name)),
            columns=columns,
            rows=rows,
            filters={str(_l("Area")): f"{self.area.name} ({self.area.code})"},
        )

    def days_left(self, child_id: int | None = None) -> int | None:
        """Whole days (rounded up) until the earliest at-risk window closes."""
        if child_id is None:
            values = list(self.at_risk_closes.values())
        else:
            found = self.at_risk_closes.get(child_id)
            values = [found] if found is not None else []
        if not values:
            return None
        left = min(values) - self.period.now
        return max(0, -(-int(left.total_seconds()) // 86_400))


def class_codes() -> list[str]:
    return list(db.session.scalars(select(HouseholdClass.code).order_by(HouseholdClass.code)))


def progress(area: Area, *, now: datetime) -> Progress:
    """The page counted now: every number of the current period, per child area."""
    p = period(now)
    classes = class_codes()
    counted = count_villages(area, p, classes)
    into = {v: [c] for v, c in child_of_village(area).items()}
    return assemble(area, p, classes, roll_up(counted, into), as_of=now)


def _known(p: Period, visits: Block, pol: Block, payments: Block) -> dict[tuple[str, str], int]:
    """The trends' counts of this month that the blocks above already hold (the same
    filter over the same month): not counted twice."""
    known = {("visits", p.month): visits.total(VISITS_FILTER.key)}
    if p.pol_month == p.month:
        known["passed", p.month] = pol.total(POL_FILTERS[4].key)
    if p.payroll_month == p.month:
        known["paid", p.month] = payments.total(PAYMENT_FILTERS[0].key)
        known["suspended", p.month] = payments.total(PAYMENT_FILTERS[1].key)
    return known


def aware(moment: datetime | str) -> datetime:
    # SQLite hands an aggregate of a UTC column back as text.
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=ZoneInfo("UTC"))


# --------------------------------------------------------------------------- trends


@dataclass
class Trend:
    name: str
    title: Any
    filter: Filter
    points: list[tuple[str, int]]  # (month, count), oldest first


TRENDS: tuple[tuple[str, Any, Filter], ...] = (
    ("visits", _l("Visits"), VISITS_FILTER),
    ("passed", _l("Proofs of life passed"), POL_FILTERS[4]),
    ("suspended", _l("Payments suspended"), PAYMENT_FILTERS[1]),
    ("paid", _l("Households paid"), PAYMENT_FILTERS[0]),
)


def trend_months(now: datetime) -> list[str]:
    last = current_month(now, region().timezone)
    return [month_after(last, k - TRENDS_SPAN) for k in range(1, TRENDS_SPAN + 1)]


def trends(
    area: Area, *, now: datetime, known: Mapping[tuple[str, str], int] | None = None
) -> list[Trend]:
    """The last 12 months (this one included) of each trend, for the whole area: the
    closed months summed up by ``rollup`` read from ``console_month_counts`` (a few
    rows per village), the others (this month, a month not summed up yet) counted
    live, one query per trend with the same filter as the list behind each bar."""
    months = trend_months(now)
    rolled = rolled_months(months[:-1])
    stored = _stored_counts(area, rolled)
    everything = _holds_everything(area)
    found = []
    for name, title, chosen in TRENDS:
        counts = dict(stored.get(name, {}))
        # ``known``: (trend, month) -> the page's own count of that month (its blocks).
        done = {m: v for (t, m), v in (known or {}).items() if t == name}
        counts.update(done)
        live = [period(now, m) for m in months if m not in rolled and m not in done]
        if live:
            query = _trend_query(chosen, live)
            if not everything:
                query = query.join(Household, Household.id == _HOUSEHOLD_OF[chosen.unit]).where(
                    Household.village_id.in_(_villages(area))
                )
            counts.update({month: int(count) for month, count in db.session.execute(query)})
        found.append(Trend(name, title, chosen, [(m, counts.get(m, 0)) for m in months]))
    return found


def _trend_query(chosen: Filter, periods: Sequence[Period]) -> Select[Any]:
    """(month, count) of ``chosen``'s rows in each of ``periods`` (in month order)."""
    bucket = _month_of_row(chosen.unit, periods)
    rows: ColumnElement[bool] = or_(*(chosen.where(p) for p in periods))
    if chosen.unit is Unit.VISITS:
        # Back-to-back months' visit filters merged into one range each.
        ranges: list[list[datetime]] = []
        for p in periods:
            if ranges and ranges[-1][1] == p.starts:
                ranges[-1][1] = p.ends
            else:
                ranges.append([p.starts, p.ends])
        rows = or_(*((Survey.finished_at >= a) & (Survey.finished_at < b) for a, b in ranges))
    return (
        _bare(chosen.unit)
        # count(*), not of the key: the month records' (month, status, household_id)
        # indexes then answer alone.
        .add_columns(bucket, func.count())
        .where(rows)
        .group_by(bucket)
    )


# --------------------------------------------------------------------------- rollup


def rolled_months(months: Sequence[str]) -> set[str]:
    """Which of ``months`` are summed up in ``console_month_counts``."""
    if not months:
        return set()
    return set(db.session.scalars(select(MonthRollup.month).where(MonthRollup.month.in_(months))))


def rolled_at(months: Sequence[str]) -> datetime | None:
    """When the oldest summary among ``months`` was computed (None: none is)."""
    found = db.session.scalar(
        select(func.min(MonthRollup.computed_at)).where(MonthRollup.month.in_(months))
    )
    return aware(found) if found is not None else None


def _stored_counts(area: Area, months: set[str]) -> dict[str, dict[str, int]]:
    """trend -> month -> the summed-up count of the villages inside ``area``."""
    if not months:
        return {}
    query = (
        select(MonthCount.trend, MonthCount.month, func.sum(MonthCount.count))
        .where(MonthCount.month.in_(months))
        .group_by(MonthCount.trend, MonthCount.month)
    )
    if not _holds_everything(area):
        query = query.where(MonthCount.village_id.in_(_villages(area)))
    found: dict[str, dict[str, int]] = {}
    for trend, month, count in db.session.execute(query):
        found.setdefault(trend, {})[month] = int(count or 0)
    return found


def months_to_roll(now: datetime) -> list[str]:
    """The closed months of the trends' span (every month but the current one)."""
    return trend_months(now)[:-1]


def rollup(months: Sequence[str], *, now: datetime) -> int:
    """Sum up each trend of ``months`` per village, by the live trend query grouped by
    village too, replacing what was stored for them; the rows written. The caller
    commits."""
    if not months:
        return 0
    periods = [period(now, m) for m in sorted(months)]
    counts: list[dict[str, Any]] = []
    for name, _, chosen in TRENDS:
        query = (
            _trend_query(chosen, periods)
            .join(Household, Household.id == _HOUSEHOLD_OF[chosen.unit])
            .add_columns(Household.village_id)
            .group_by(Household.village_id)
        )
        counts.extend(
            {"month": m, "trend": name, "village_id": v, "count": int(c)}
            for m, c, v in db.session.execute(query)
        )
    chosen_months = [p.month for p in periods]
    db.session.execute(delete(MonthCount).where(MonthCount.month.in_(chosen_months)))
    db.session.execute(delete(MonthRollup).where(MonthRollup.month.in_(chosen_months)))
    db.session.execute(
        insert(MonthRollup), [{"month": m, "computed_at": now} for m in chosen_months]
    )
    if counts:
        db.session.execute(insert(MonthCount), counts)
    return len(counts)


def _month_of_row(unit: Unit, periods: Sequence[Period]) -> Any:
    """The month a trend's row belongs to: a visit's local month of ``finished_at``
    (by the months' bounds, the same as the filter's), a month record's own month."""
    if unit is Unit.VISITS:
        return case(*((Survey.finished_at < p.ends, p.month) for p in periods))
    if unit is Unit.POL:
        return ProofOfLifeMonth.month
    return PaymentMonth.month


def _holds_everything(area: Area) -> bool:
    """Whether every village lies inside ``area`` (the one root, a league): its counts
    then need no look-up of each row's village."""
    if area.parent_id is not None:
        return False
    roots = db.session.scalar(select(func.count(Area.id)).where(Area.parent_id.is_(None)))
    return roots == 1


def _bare(unit: Unit) -> Select[Any]:
    """The rows of ``unit`` alone (without their household)."""
    return select().select_from(_KEY_OF[unit].class_)


_HOUSEHOLD_OF: Mapping[Unit, Any] = {
    Unit.CASES: Household.id,
    Unit.VISITS: Survey.household_id,
    Unit.FLAGS: Survey.household_id,
    Unit.POL: ProofOfLifeMonth.household_id,
    Unit.PAYMENTS: PaymentMonth.household_id,
}


# --------------------------------------------------------------------------- lists


def in_area(area: Area) -> ColumnElement[bool]:
    """The household's village lies inside ``area`` (joined as ``village``)."""
    return _VILLAGE.path.startswith(area.path, autoescape=True)


_VILLAGE = aliased(Area, name="village")
_TOWNSHIP = aliased(Area, name="township")


def count_rows(area: Area, chosen: Filter, p: Period) -> int:
    """How many rows the list behind ``chosen`` has (the number on the page)."""
    query = (
        _from(chosen.unit)
        .add_columns(func.count(_KEY_OF[chosen.unit]))
        .join(_VILLAGE, _VILLAGE.id == Household.village_id)
        .where(in_area(area), chosen.where(p))
    )
    return db.session.scalar(query) or 0


_EXTRA: Mapping[Unit, tuple[tuple[str, Any, Any], ...]] = {
    Unit.CASES: (),
    Unit.VISITS: (
        ("finished_at", _l("Visited at"), Survey.finished_at),
        ("visit_kind", _l("Visit kind"), Survey.kind),
    ),
    Unit.FLAGS: (
        ("flag", _l("Flag"), SurveyFlag.code),
        ("raised_at", _l("Raised at"), SurveyFlag.raised_at),
        ("finished_at", _l("Visited at"), Survey.finished_at),
    ),
    Unit.POL: (
        ("member_id", _l("Member"), ProofOfLifeMonth.member_id),
        ("relation", _l("Relation"), Member.relation),
        ("month", _l("Month"), ProofOfLifeMonth.month),
        ("pol_status", _l("Proof of life"), ProofOfLifeMonth.status),
        ("closes", _l("Window closes"), ProofOfLifeMonth.window_closes_at),
    ),
    Unit.PAYMENTS: (
        ("month", _l("Month"), PaymentMonth.month),
        ("amount", _l("Amount (yuan)"), PaymentMonth.amount),
        ("payment_status", _l("Payment"), PaymentMonth.status),
        ("back_pay_month", _l("Back-paid in"), PaymentMonth.back_pay_month),
    ),
}


def cases_table(
    area: Area,
    chosen: Filter,
    p: Period,
    *,
    case_url: Callable[[str], str],
    limit: int | None = None,
    offset: int = 0,
) -> Table:
    """The rows behind one number, as a console table (``limit``: one page of them)."""
    extra = list(_EXTRA[chosen.unit])
    if chosen.extra == "deadline":
        extra.append(("deadline", _l("Deadline"), decision_deadline()))
    elif chosen.extra == "review":
        extra.append(("next_review_on", _l("Review due"), Household.next_review_on))
    query = (
        _from(chosen.unit)
        .add_columns(
            Household.case_code,
            _TOWNSHIP.name,
            _VILLAGE.name,
            HouseholdClass.code,
            Household.state,
            *(column for _, _, column in extra),
        )
        .join(_VILLAGE, _VILLAGE.id == Household.village_id)
        .join(_TOWNSHIP, _TOWNSHIP.id == _VILLAGE.parent_id)
        .join(HouseholdClass, HouseholdClass.id == Household.class_id)
        .where(in_area(area), chosen.where(p))
        .order_by(*_order(chosen), _KEY_OF[chosen.unit])
    )
    if chosen.unit is Unit.POL:
        query = query.join(Member, Member.id == ProofOfLifeMonth.member_id)
    if limit is not None:
        query = query.limit(limit).offset(offset)
    keys = ["case_code", "township", "village", "class", "state", *(k for k, _, _ in extra)]

    def rows() -> Iterator[dict[str, Any]]:
        for values in db.session.execute(query):
            row = dict(zip(keys, values, strict=True))
            row["case_url"] = case_url(row["case_code"])
            for key, table in _LABELS.items():
                if key in row:
                    row[key] = str(table.get(row[key], row[key]))
            yield row

    columns = [
        Column("case_code", str(_l("Case code")), link="case_url"),
        Column("township", str(_l("Township"))),
        Column("village", str(_l("Village"))),
        Column("class", str(_l("Class"))),
        Column("state", str(_l("State"))),
        *(Column(k, str(label)) for k, label, _ in extra),
    ]
    return Table(
        name="progress-cases",
        title=str(chosen.label),
        columns=columns,
        rows=rows(),
        filters={str(_l("Area")): area.name, str(_l("Number")): str(chosen.label)},
    )


_LABELS: Mapping[str, Mapping[Any, Any]] = {
    "state": STATE_LABELS,
    "flag": FLAG_LABELS,
    "visit_kind": VISIT_KIND_LABELS,
    "pol_status": POL_STATUS_LABELS,
    "payment_status": PAYMENT_STATUS_LABELS,
    "relation": RELATION_LABELS,
}


def _order(chosen: Filter) -> list[Any]:
    if chosen.extra == "deadline":
        return [decision_deadline()]
    if chosen.extra == "review":
        return [Household.next_review_on]
    if chosen.unit is Unit.VISITS:
        return [Survey.finished_at.desc()]
    if chosen.unit is Unit.FLAGS:
        return [SurveyFlag.raised_at]
    return [Household.case_code]
