"""The progress home's numbers of the current period, stored for every area at once
(docs/decisions/0009-console-current-summary.md).

Counting a league's numbers live takes seconds on 100,000 households and a million
visits; a supervisor opening the page should not wait for them. ``refresh`` counts
every village once (the same queries as the live page, ``count_villages``), adds the
villages up into every area on their path and replaces ``console_current_counts``;
``stored`` builds the page from the rows of one area's children, a few hundred rows.
A summary serves only its own period (the same local day, month, proof-of-life month
and payroll month) and only while it is at most ``DIBAO_CONSOLE_SUMMARY_SECONDS`` old;
otherwise the page is counted live (``progress.progress``). Who refreshes it:
``DIBAO_CONSOLE_REFRESH``: "background" (the Celery beat task, every minute) or
"inline" (a page view finding it missing or old; the default without a broker).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, text

from server.areas.models import Area, AreaLevel
from server.console.models import CurrentCount, CurrentSummary
from server.console.progress import (
    Counted,
    Period,
    Progress,
    assemble,
    aware,
    class_codes,
    count_villages,
    page_rows,
    period,
    roll_up,
)
from server.extensions import db

SUMMARY_ID = 1
LOCK_KEY = 0x0D1BA0C0  # pg_advisory_xact_lock: the summary's refresh


def refresh(now: datetime) -> int:
    """Count every area's numbers of the period at ``now`` and replace the stored
    summary with them; the rows written. The caller commits."""
    if db.session.get_bind().dialect.name == "postgresql":
        # One refresh at a time: a second waits, then replaces the first's rows.
        db.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    p = period(now)
    classes = class_codes()
    ids_by_code = {code: id_ for code, id_ in db.session.execute(select(Area.code, Area.id))}
    counted = Counted()
    for root in db.session.scalars(select(Area).where(Area.parent_id.is_(None))):
        found = count_villages(root, p, classes)
        counted.counts.update(found.counts)
        counted.closes.update(found.closes)
    # Each village's numbers go to every area on its path ("/L/C/T/V/"), itself included.
    into: dict[int, list[int]] = {}
    for village_id, path in db.session.execute(
        select(Area.id, Area.path).where(Area.level == AreaLevel.VILLAGE)
    ):
        into[village_id] = [ids_by_code[c] for c in path.strip("/").split("/") if c in ids_by_code]
    rolled = roll_up(counted, into)
    rows = [
        {
            "area_id": area_id,
            "key": key,
            "count": value,
            "earliest": rolled.closes.get(area_id) if key == AT_RISK else None,
        }
        for area_id, counts in rolled.counts.items()
        for key, value in counts.items()
    ]
    db.session.execute(delete(CurrentCount))
    db.session.execute(delete(CurrentSummary))
    db.session.execute(
        insert(CurrentSummary),
        [
            {
                "id": SUMMARY_ID,
                "computed_at": now,
                "today": p.today.isoformat(),
                "month": p.month,
                "pol_month": p.pol_month,
                "payroll_month": p.payroll_month,
            }
        ],
    )
    if rows:
        db.session.execute(insert(CurrentCount), rows)
    return len(rows)


AT_RISK = "pol/pol:at_risk"


def _serves(summary: CurrentSummary | None, p: Period, max_age: float) -> bool:
    if summary is None:
        return False
    computed = aware(summary.computed_at)
    return (
        p.now - timedelta(seconds=max_age) <= computed <= p.now
        and summary.today == p.today.isoformat()
        and (summary.month, summary.pol_month, summary.payroll_month)
        == (p.month, p.pol_month, p.payroll_month)
    )


def stored(area: Area, *, now: datetime, max_age: float) -> Progress | None:
    """The page from the stored summary, or None when there is none that serves."""
    p = period(now)
    summary = db.session.get(CurrentSummary, SUMMARY_ID)
    if summary is None or not _serves(summary, p, max_age):
        return None
    ids = [row.id for row in page_rows(area)]
    counted = Counted()
    for area_id, key, count, earliest in db.session.execute(
        select(
            CurrentCount.area_id, CurrentCount.key, CurrentCount.count, CurrentCount.earliest
        ).where(CurrentCount.area_id.in_(ids))
    ):
        counted.add(area_id, key, count)
        if earliest is not None:
            counted.close(area_id, aware(earliest))
    return assemble(
        area, p, class_codes(), counted, as_of=aware(summary.computed_at), from_summary=True
    )
