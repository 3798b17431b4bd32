"""Build the published snapshot from the case tables, with allow-list queries.

Each build reads only the columns it publishes or needs to generalize (case code,
village, class, state, amount, living-member count, the state and time of each case
event, proof-of-life month statuses, payment totals) and, when the region shows masked
names, the head's name, of which only the first character is kept. Rows are written
in batches under a new snapshot that readers ignore until it is ``ready``; the previous
snapshot stays readable meanwhile, older ones are deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, Row, case, cast, delete, func, select, update
from sqlalchemy.sql.elements import ColumnElement

from server.areas.models import Area, AreaLevel
from server.cases import objections
from server.cases.models import CaseEvent, CaseState, Household, HouseholdClass, Member, Relation
from server.clock import utcnow
from server.extensions import bulk_insert, db
from server.months import current_month, month_after
from server.payments.models import PaymentMonth, PaymentStatus
from server.proof_of_life.models import PAYMENT_BLOCKING, MonthStatus, ProofOfLifeMonth
from server.public.generalize import Key, generalize, masked_surnames
from server.public.models import PublicCase, PublicCensus, PublicDirty, PublicSnapshot
from server.public.rules import PublicRules
from server.public.schemas import case_document
from server.region import region
from server.transactions import commits_per_batch

logger = logging.getLogger(__name__)

BATCH = 5000
# Statuses whose (proposed) monthly amount is published.
AMOUNT_STATES = frozenset({CaseState.IN_PUBLIC_NOTICE, CaseState.APPROVED, CaseState.SUSPENDED})
MISSED = frozenset(PAYMENT_BLOCKING)  # what blocks the payment shows as missed
PASSED = frozenset({MonthStatus.PASSED, MonthStatus.EXEMPT})
# A build that started this long ago and never finished is dead (its rows are dropped).
STALE_BUILD = timedelta(hours=2)


@dataclass(frozen=True)
class _Place:
    code: str
    name: str
    level: str
    parent: str | None


class _Areas:
    """Every area by id, and the county and township of each village."""

    def __init__(self) -> None:
        rows = db.session.execute(
            select(Area.id, Area.code, Area.name, Area.level, Area.parent_id)
        ).all()
        by_id = {row.id: row for row in rows}
        self.places: dict[str, _Place] = {}
        self.chain: dict[int, tuple[str, str, str]] = {}  # village id -> county, township, village
        for row in rows:
            parent = by_id.get(row.parent_id) if row.parent_id else None
            self.places[row.code] = _Place(
                row.code, row.name, AreaLevel(row.level).value, parent.code if parent else None
            )
            if AreaLevel(row.level) is AreaLevel.VILLAGE and parent is not None:
                county = by_id.get(parent.parent_id) if parent.parent_id else None
                self.chain[row.id] = (county.code if county else parent.code, parent.code, row.code)


def _month(at: datetime, zone: ZoneInfo) -> str:
    return current_month(at, zone.key)


# Per (village id, class code, size band, status): [cases, persons, allowance in fen].
# Generalization decides from the cases (all statuses together); the per-township
# figures add up what each group is published as.
Census = dict[tuple[int, str, str, str], list[int]]


def census(rules: PublicRules, villages: Sequence[int] | None = None) -> Census:
    """The census, counted in SQL: of every village, or of ``villages`` only (indexed
    on the household's village)."""
    members = select(Member.household_id, func.count().label("n")).where(
        Member.alive.is_(True), Member.left_on.is_(None)
    )
    # The raw column (whole fen, server.types.Money), summed exactly in SQL.
    fen = func.sum(func.coalesce(cast(Household.__table__.c.monthly_allowance, BigInteger), 0))
    query = select(Household.village_id, HouseholdClass.code, Household.state, func.count(), fen)
    query = query.join(HouseholdClass, HouseholdClass.id == Household.class_id)
    if villages is not None:
        members = members.join(Household, Household.id == Member.household_id).where(
            Household.village_id.in_(villages)
        )
        query = query.where(Household.village_id.in_(villages))
    sizes = members.group_by(Member.household_id).subquery()
    size = func.coalesce(sizes.c.n, 0)
    rows = db.session.execute(
        query.add_columns(size)
        .outerjoin(sizes, sizes.c.household_id == Household.id)
        .group_by(Household.village_id, HouseholdClass.code, Household.state, size)
    ).all()
    counts: Census = {}
    for village_id, class_code, state, n_cases, n_fen, n_members in rows:
        key = (village_id, class_code, rules.size_band(n_members), CaseState(state).value)
        entry = counts.setdefault(key, [0, 0, 0])
        entry[0] += n_cases
        entry[1] += n_cases * n_members
        entry[2] += int(n_fen or 0)
    return counts


def census_rows(counts: Census) -> list[dict[str, Any]]:
    return [
        {
            "village_id": v,
            "class_code": c,
            "size_band": b,
            "status": st,
            "cases": n,
            "persons": persons,
            "fen": fen,
        }
        for (v, c, b, st), (n, persons, fen) in sorted(counts.items())
    ]


def figures(
    areas: _Areas, counts: Census, decisions: dict[Key, Key | None], k: int
) -> tuple[list[list[Any]], list[dict[str, Any]], int]:
    """The statistics' cells and townships, and the number of published cases, from the
    census and the published form of each group (what a full build's rows add up to)."""
    tally = _Tally()
    for (village_id, class_code, band, status), (n, persons, fen) in counts.items():
        county, township, village = areas.chain[village_id]
        shown = decisions.get(Key(county, township, village, class_code, band))
        if shown is None or not n:
            continue
        tally.published += n
        tally.cells[(shown.county, shown.township, shown.village, status, shown.class_code)] += n
        totals = tally.township_totals[shown.township]
        totals[status] += n
        if status == CaseState.APPROVED.value:
            totals["persons"] += persons
            tally.township_money[shown.township] += Decimal(fen) / 100
    cells = [[*key, n] for key, n in sorted(tally.cells.items(), key=_sort_key)]
    return cells, _township_stats(tally.township_totals, tally.township_money, k), tally.published


def group_counts(areas: _Areas, counts: Census) -> Counter[Key]:
    """Cases by (county, township, village, class, size band), all statuses together."""
    keyed: Counter[Key] = Counter()
    for (village_id, class_code, band, _status), (n, _persons, _fen) in counts.items():
        county, township, village = areas.chain[village_id]
        keyed[Key(county, township, village, class_code, band)] += n
    return keyed


def fingerprint(rules: PublicRules, areas: _Areas, classes: dict[int, str]) -> str:
    """What every published row depends on besides its case: the rules, the area tree
    and the class codes. A different fingerprint means a full build."""
    material = json.dumps(
        {
            "rules": [rules.k, rules.amount, str(rules.amount_band), list(rules.size_bands)],
            "masked": rules.masked_names,
            "places": {code: [p.name, p.level, p.parent] for code, p in areas.places.items()},
            "chain": {str(i): list(c) for i, c in areas.chain.items()},
            "classes": {str(i): c for i, c in classes.items()},
        },
        ensure_ascii=False,
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()


@commits_per_batch
def start() -> PublicSnapshot:
    """Register a new build (committed, so concurrent refreshers can see it)."""
    mark = db.session.scalar(select(func.max(PublicDirty.id))) or 0
    snapshot = PublicSnapshot(
        token=secrets.token_hex(16), state="building", started_at=utcnow(), source_mark=mark
    )
    db.session.add(snapshot)
    db.session.commit()
    return snapshot


@dataclass
class _Tally:
    """What the published rows add up to, for the snapshot's statistics."""

    cells: Counter[tuple[str, str | None, str | None, str, str | None]] = field(
        default_factory=Counter
    )
    surnames: Counter[tuple[Key, str]] = field(default_factory=Counter)
    township_totals: defaultdict[str | None, Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    township_money: defaultdict[str | None, Decimal] = field(
        default_factory=lambda: defaultdict(Decimal)
    )
    published: int = 0
    withheld: int = 0

    def add(
        self, shown: Key, state: CaseState, size: int, allowance: Decimal | None, surname: str
    ) -> None:
        self.published += 1
        if surname:
            self.surnames[(shown, surname)] += 1
        self.cells[
            (shown.county, shown.township, shown.village, state.value, shown.class_code)
        ] += 1
        totals = self.township_totals[shown.township]
        totals[state.value] += 1
        if state is CaseState.APPROVED:
            totals["persons"] += size
            self.township_money[shown.township] += allowance or Decimal(0)


@dataclass(frozen=True)
class _Batch:
    """The facts of the households with ids in [start, end) that a build publishes."""

    households: Sequence[Row[int, str, int, int, CaseState, Decimal | None]]
    sizes: dict[int, int]  # living members
    changes: dict[int, list[str]]  # "state:YYYY-MM" at each change of state
    months: dict[int, dict[str, str]]  # this year's proof of life: month -> shown status
    surnames: dict[int, str]  # the head's masked surname, when names are shown masked

    @classmethod
    def load(cls, scope: Scope, *, zone: ZoneInfo, this_year: str, masked_names: bool) -> _Batch:
        households = db.session.execute(
            select(
                Household.id,
                Household.case_code,
                Household.village_id,
                Household.class_id,
                Household.state,
                Household.monthly_allowance,
            ).where(scope(Household.id))
        ).all()
        sizes = dict(
            db.session.execute(
                select(Member.household_id, func.count())
                .where(scope(Member.household_id))
                .where(Member.alive.is_(True), Member.left_on.is_(None))
                .group_by(Member.household_id)
            ).all()
        )
        return cls(
            households,
            sizes,
            _state_changes(scope, zone),
            _pol_months(scope, this_year),
            _head_surnames(scope) if masked_names else {},
        )


# Which households a batch holds, as a condition on a household id column.
Scope = Callable[[Any], ColumnElement[bool]]


def id_range(start: int, end: int) -> Scope:
    return lambda column: (column >= start) & (column < end)


def id_list(ids: Sequence[int]) -> Scope:
    return lambda column: column.in_(list(ids))


def _state_changes(scope: Scope, zone: ZoneInfo) -> dict[int, list[str]]:
    changes: dict[int, list[str]] = defaultdict(list)
    last_state: dict[int, str] = {}
    for household_id, to_state, at in db.session.execute(
        select(CaseEvent.household_id, CaseEvent.to_state, CaseEvent.at)
        .where(scope(CaseEvent.household_id))
        .order_by(CaseEvent.household_id, CaseEvent.id)
    ):
        if last_state.get(household_id) != to_state:
            changes[household_id].append(f"{to_state}:{_month(at, zone)}")
            last_state[household_id] = to_state
    return changes


def _pol_months(scope: Scope, this_year: str) -> dict[int, dict[str, str]]:
    """Per household, this year's months as published: missed when any member missed or
    failed, passed when all passed or were exempt, pending otherwise."""
    months: dict[int, dict[str, str]] = defaultdict(dict)
    for household_id, month, status in db.session.execute(
        select(
            ProofOfLifeMonth.household_id, ProofOfLifeMonth.month, ProofOfLifeMonth.status
        ).where(
            scope(ProofOfLifeMonth.household_id),
            ProofOfLifeMonth.month >= f"{this_year}-01",
        )
    ):
        record = months[household_id]
        if status in MISSED:
            record[month] = "missed"
        elif status in PASSED:
            record.setdefault(month, "passed")
        elif record.get(month) != "missed":
            record[month] = "pending"
    return months


def _head_surnames(scope: Scope) -> dict[int, str]:
    """The head's surname as shown masked (its first character and ``*``)."""
    return {
        household_id: f"{name.strip()[:1]}*" if name and name.strip() else ""
        for household_id, name in db.session.execute(
            select(Member.household_id, Member.name).where(
                scope(Member.household_id),
                Member.relation == Relation.HEAD,
            )
        )
    }


@dataclass(frozen=True)
class _Publishing:
    """What every row of one build is made with."""

    snapshot_id: int
    rules: PublicRules
    areas: _Areas
    area_names: dict[str, str]
    decisions: dict[Key, Key | None]  # None: the group is withheld
    classes: dict[int, str]

    def rows(self, batch: _Batch, tally: _Tally) -> list[dict[str, Any]]:
        """The published rows of ``batch`` (cases of a withheld group left out), counted
        into ``tally``."""
        rules = self.rules
        rows: list[dict[str, Any]] = []
        for h in batch.households:
            size = batch.sizes.get(h.id, 0)
            county, township, village = self.areas.chain[h.village_id]
            full = Key(county, township, village, self.classes[h.class_id], rules.size_band(size))
            shown = self.decisions.get(full)
            if shown is None:
                tally.withheld += 1
                continue
            state = CaseState(h.state)
            amount = h.monthly_allowance if state in AMOUNT_STATES else None
            surname = batch.surnames.get(h.id, "")
            tally.add(shown, state, size, h.monthly_allowance, surname)
            row = {
                "snapshot_id": self.snapshot_id,
                "case_code": h.case_code,
                "county_code": shown.county,
                "township_code": shown.township,
                "village_code": shown.village,
                "class_code": shown.class_code,
                "size_band": shown.band,
                "status": state.value,
                "amount": rules.published_amount(amount),
                "masked_name": surname or None,
                "changes": " ".join(batch.changes.get(h.id, [])),
                "proof_of_life": " ".join(
                    f"{m}:{s}" for m, s in sorted(batch.months.get(h.id, {}).items())
                ),
            }
            row["document"] = case_document(row, self.area_names, masked_names=rules.masked_names)
            rows.append(row)
        return rows


@commits_per_batch
def build(snapshot: PublicSnapshot | None = None) -> PublicSnapshot:
    """Build a complete snapshot, make it the current one, drop older ones."""
    snapshot = snapshot or start()
    rules = region().public
    counted = census(rules)
    zone = ZoneInfo(region().timezone)
    now = utcnow()
    this_year = now.astimezone(zone).strftime("%Y")
    areas = _Areas()
    classes = dict(db.session.execute(select(HouseholdClass.id, HouseholdClass.code)).all())
    publishing = _Publishing(
        snapshot_id=snapshot.id,
        rules=rules,
        areas=areas,
        area_names={code: place.name for code, place in areas.places.items()},
        decisions=generalize(group_counts(areas, counted), rules.k),
        classes=classes,
    )
    tally = _Tally()
    low, high = db.session.execute(select(func.min(Household.id), func.max(Household.id))).one()
    start_id = low or 0
    while high is not None and start_id <= high:
        end_id = start_id + BATCH
        batch = _Batch.load(
            id_range(start_id, end_id),
            zone=zone,
            this_year=this_year,
            masked_names=rules.masked_names,
        )
        bulk_insert(PublicCase, publishing.rows(batch, tally))
        db.session.commit()
        start_id = end_id

    if rules.masked_names:
        _withhold_surnames(snapshot.id, tally.surnames, rules.k)

    stats = {
        "built_at": now.isoformat(),
        "k": rules.k,
        "amount": rules.amount,
        "published": tally.published,
        "withheld": tally.withheld,
        "areas": {
            code: {"name": p.name, "level": p.level, "parent": p.parent}
            for code, p in areas.places.items()
            if p.level in ("county", "township", "village")
        },
        "cells": [[*key, n] for key, n in sorted(tally.cells.items(), key=_sort_key)],
        "townships": _township_stats(tally.township_totals, tally.township_money, rules.k),
        "payments": _payment_stats(areas, rules.k, now, zone),
        "proof_of_life": _proof_of_life_stats(rules.k, this_year),
        "objections": _objection_stats(snapshot.id, zone),
    }
    snapshot.stats = json.dumps(stats, ensure_ascii=False, separators=(",", ":"))
    snapshot.cases = tally.published
    snapshot.withheld = tally.withheld
    snapshot.fingerprint = fingerprint(rules, areas, classes)
    # The census goes with the snapshot it was built with; the changes the build saw
    # are done with.
    db.session.execute(delete(PublicCensus))
    bulk_insert(PublicCensus, census_rows(counted))
    db.session.execute(delete(PublicDirty).where(PublicDirty.id <= snapshot.source_mark))
    snapshot.state = "ready"
    snapshot.finished_at = utcnow()
    db.session.commit()
    _drop_old(snapshot)
    logger.info(
        "public snapshot %s built: %d cases published, %d withheld",
        snapshot.id,
        tally.published,
        tally.withheld,
    )
    return snapshot


def _sort_key(item: tuple[tuple[Any, ...], int]) -> tuple[str, ...]:
    return tuple("" if v is None else str(v) for v in item[0])


@commits_per_batch
def _withhold_surnames(snapshot_id: int, surnames: Counter[tuple[Key, str]], k: int) -> None:
    shown = masked_surnames(surnames, k)
    for group, surname in surnames:
        if (group, surname) in shown:
            continue
        condition: list[ColumnElement[bool]] = [
            PublicCase.snapshot_id == snapshot_id,
            PublicCase.county_code == group.county,
        ]
        for column, value in (
            (PublicCase.township_code, group.township),
            (PublicCase.village_code, group.village),
            (PublicCase.class_code, group.class_code),
            (PublicCase.size_band, group.band),
        ):
            condition.append(column.is_(None) if value is None else column == value)
        shown_as = f'"masked_name":{json.dumps(surname, ensure_ascii=False)}'
        db.session.execute(
            update(PublicCase)
            .where(*condition, PublicCase.masked_name == surname)
            .values(
                masked_name=None,
                document=func.replace(PublicCase.document, shown_as, '"masked_name":null'),
            )
        )
    db.session.commit()


def _money(value: Any) -> str:
    return f"{Decimal(value or 0):.2f}"


def _objection_stats(snapshot_id: int, zone: ZoneInfo) -> dict[str, list[Any]]:
    """Per published case with objections: [received, resolved, latest received day,
    latest resolved day] (docs/public.md, "Objections during the public notice")."""
    counts = objections.public_counts(zone.key)
    if not counts:
        return {}
    published = set(
        db.session.scalars(
            select(PublicCase.case_code).where(
                PublicCase.snapshot_id == snapshot_id, PublicCase.case_code.in_(list(counts))
            )
        )
    )
    return {
        code: [c.received, c.resolved, c.last_received_on, c.last_resolved_on]
        for code, c in sorted(counts.items())
        if code in published
    }


def _township_stats(
    totals: dict[str | None, Counter[str]], money: dict[str | None, Decimal], k: int
) -> list[dict[str, Any]]:
    """Per published township (None: cases shown at the county only): households by
    status; persons and money of the active ones only where at least k are active."""
    out = []
    for township in sorted(totals, key=lambda t: t or ""):
        counts = totals[township]
        active = counts.get(CaseState.APPROVED.value, 0)
        enough = active >= k
        out.append(
            {
                "township": township,
                "households": {
                    s.value: counts.get(s.value, 0) for s in CaseState if counts.get(s.value)
                },
                "active": active,
                "persons": counts["persons"] if enough else None,
                "monthly_amount": _money(money[township]) if enough else None,
            }
        )
    return out


def _per_township_and_month(
    model: Any, first_month: str, *sums: Any, townships: Sequence[str] | None = None
) -> list[Any]:
    """(township code, month, rows, *sums) of a per-household monthly table (payment or
    proof-of-life months) from ``first_month`` on; of ``townships`` only when given."""
    village = Area.__table__.alias("village")
    township = Area.__table__.alias("township")
    query = (
        select(township.c.code, model.month, func.count(), *sums)
        .join(Household, Household.id == model.household_id)
        .join(village, village.c.id == Household.village_id)
        .join(township, township.c.id == village.c.parent_id)
        .where(model.month >= first_month)
    )
    if townships is not None:
        query = query.where(township.c.code.in_(list(townships)))
    return list(
        db.session.execute(
            query.group_by(township.c.code, model.month).order_by(model.month, township.c.code)
        ).all()
    )


def _payment_stats(
    areas: _Areas,
    k: int,
    now: datetime,
    zone: ZoneInfo,
    townships: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Money per township and month (the last 12 months): households paid, the amount
    paid (paid on time plus restored later), households suspended. A cell with fewer
    than k households has its figures withheld."""
    first = month_after(current_month(now, zone.key), -11)
    paid = PaymentMonth.status.in_([PaymentStatus.PAYABLE, PaymentStatus.RESTORED])
    rows = _per_township_and_month(
        PaymentMonth,
        first,
        func.sum(case((paid, 1), else_=0)),
        # The raw column (whole fen, server.types.Money), summed exactly in SQL.
        func.sum(case((paid, cast(PaymentMonth.amount, BigInteger)), else_=0)),
        func.sum(case((PaymentMonth.status == PaymentStatus.SUSPENDED, 1), else_=0)),
        townships=townships,
    )
    out = []
    for code, month, n, n_paid, cents, n_suspended in rows:
        enough = n >= k
        out.append(
            {
                "township": code,
                "month": month,
                "households": n,
                "paid_households": int(n_paid) if enough else None,
                "amount_paid": _money(Decimal(int(cents or 0)) / 100) if enough else None,
                "suspended": int(n_suspended) if enough else None,
            }
        )
    return out


def _proof_of_life_stats(
    k: int, year: str, townships: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Recipients asked, passed, missed and pending per township and month this year;
    fewer than k recipients: only the number asked."""
    status = ProofOfLifeMonth.status
    rows = _per_township_and_month(
        ProofOfLifeMonth,
        f"{year}-01",
        func.sum(case((status.in_(PASSED), 1), else_=0)),
        func.sum(case((status.in_(MISSED), 1), else_=0)),
        townships=townships,
    )
    out = []
    for code, month, n, n_passed, n_missed in rows:
        enough = n >= k
        out.append(
            {
                "township": code,
                "month": month,
                "recipients": n,
                "passed": int(n_passed) if enough else None,
                "missed": int(n_missed) if enough else None,
                "pending": int(n - n_passed - n_missed) if enough else None,
            }
        )
    return out


@commits_per_batch
def abandon(snapshot_id: int) -> None:
    """Drop a build that failed half-way (its rows were never visible)."""
    db.session.execute(delete(PublicCase).where(PublicCase.snapshot_id == snapshot_id))
    db.session.execute(delete(PublicSnapshot).where(PublicSnapshot.id == snapshot_id))
    db.session.commit()


@commits_per_batch
def _drop_old(current: PublicSnapshot) -> None:
    """Keep the current snapshot and the one before it (requests that started reading it
    finish); delete older ones and builds that died."""
    previous = db.session.scalar(
        select(func.max(PublicSnapshot.id)).where(
            PublicSnapshot.state == "ready", PublicSnapshot.id < current.id
        )
    )
    keep = {current.id, previous} - {None}
    dead_before = utcnow() - STALE_BUILD
    doomed = db.session.scalars(
        select(PublicSnapshot.id).where(
            PublicSnapshot.id.not_in(keep),
            (PublicSnapshot.state == "ready") | (PublicSnapshot.started_at < dead_before),
            PublicSnapshot.id < current.id,
        )
    ).all()
    for snapshot_id in doomed:
        db.session.execute(delete(PublicCase).where(PublicCase.snapshot_id == snapshot_id))
        db.session.execute(delete(PublicSnapshot).where(PublicSnapshot.id == snapshot_id))
        db.session.commit()
