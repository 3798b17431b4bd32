"""Opening a month set-based (PostgreSQL: ``INSERT ... SELECT`` with the links made in
SQL) leaves exactly the rows the row-by-row path leaves: the same records with the same
link hashes, the same reminders (phone, text with the same link), the same caseworker
tasks, the same counts; opening again adds nothing; only the designated members of
households in care are opened; the work goes in ranges of DIBAO_MONTH_OPEN_BATCH ids.

On SQLite ``open_month`` is the row path itself, so the comparison holds trivially
there; it is PostgreSQL's run that compares two different implementations.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, current_app
from flask_migrate import upgrade
from sqlalchemy import delete, select

from server.cases.models import CaseState, Member
from server.extensions import db
from server.monthly import cycle
from server.monthly.models import CampaignStep
from server.proof_of_life import links
from server.proof_of_life import service as pol
from server.proof_of_life.models import ContactTask, MonthStatus, ProofOfLifeMonth
from sms import optouts
from sms.models import MessageKind, MessageStatus, SmsMessage
from tests import factories
from tests.conftest import DatabaseFactory, make_app

MONTH = "2026-12"
MORNING = datetime(2026, 12, 20, 1, 0, tzinfo=UTC)  # 09:00 local on the 20th
CLOSES = datetime(2026, 12, 24, 16, 0, tzinfo=UTC)


def by_sets() -> Callable[..., cycle.StepReport]:
    """The set-based open where it exists (PostgreSQL), else what open_month runs."""
    if db.session.get_bind().dialect.name == "postgresql":
        return cycle.open_month_by_sets
    return cycle.open_month


def recipient(
    phone: str | None = "13912345678",
    *,
    state: CaseState = CaseState.APPROVED,
    designated: bool = True,
    alive: bool = True,
    left: bool = False,
) -> Member:
    household = factories.make_household(state=state, head_phone=phone)
    head = household.members[0]
    head.proof_of_life_required = designated
    head.alive = alive
    head.left_on = date(2026, 10, 1) if left else None
    db.session.commit()
    return head


class People:
    def __init__(self) -> None:
        self.reachable = [recipient(f"1390000100{i}") for i in range(4)]
        self.no_phone = recipient(None)
        self.opted_out = recipient("13900001011")
        optouts.opt_out("+86 139 0000 1011", source="sms")
        self.wrong = recipient("13900001012")
        db.session.add(
            SmsMessage(
                member_id=self.wrong.id,
                household_id=self.wrong.household_id,
                month="2026-11",
                kind=MessageKind.REMINDER,
                status=MessageStatus.FAILED,
                error_code=21211,
                to_phone="+8613900001012",
                body="earlier",
            )
        )
        # A member whose month was already settled, one whose link was revoked once
        # (generation 2), one already reminded: written anew before each open.
        self.passed = recipient("13900001013")
        self.revoked = recipient("13900001014")
        self.reminded = recipient("13900001015")
        # A designated member who is not the head (a second member of a household).
        household = factories.make_household(
            state=CaseState.APPROVED, incomes=("100.00", "0.00", "0.00")
        )
        self.child = household.members[2]
        self.child.proof_of_life_required = True
        self.child.phone = "13900001016"
        self.ignored = [
            recipient("13900001020", designated=False),
            recipient("13900001021", alive=False),
            recipient("13900001022", left=True),
            recipient("13900001023", state=CaseState.SUSPENDED),
            recipient("13900001024", state=CaseState.APPLIED),
            recipient("13900001025", state=CaseState.REJECTED),
        ]
        db.session.commit()

    @property
    def designated(self) -> list[Member]:
        return [
            *self.reachable,
            self.no_phone,
            self.opted_out,
            self.wrong,
            self.passed,
            self.revoked,
            self.reminded,
            self.child,
        ]

    def existing(self) -> None:
        key = links.link_key(current_app.config["SECRET_KEY"])
        for member, status, generation in (
            (self.passed, MonthStatus.PASSED, 1),
            (self.revoked, MonthStatus.PENDING, 2),
            (self.reminded, MonthStatus.PENDING, 1),
        ):
            token = links.make_token(key, member.id, MONTH, generation)
            db.session.add(
                ProofOfLifeMonth(
                    member_id=member.id,
                    household_id=member.household_id,
                    month=MONTH,
                    status=status,
                    window_closes_at=CLOSES,
                    link_generation=generation,
                    link_hash=links.token_hash(token),
                )
            )
        db.session.add(
            SmsMessage(
                member_id=self.reminded.id,
                household_id=self.reminded.household_id,
                month=MONTH,
                kind=MessageKind.REMINDER,
                status=MessageStatus.SENT,
                to_phone="13900001015",
                body="sent before",
            )
        )
        db.session.commit()


def clear() -> None:
    for model in (SmsMessage, ContactTask, ProofOfLifeMonth, CampaignStep):
        db.session.execute(delete(model).where(model.month == MONTH))
    db.session.commit()


def snapshot() -> dict[str, Any]:
    """Everything an open writes for the month, without ids or random ciphertexts."""
    records = sorted(
        (
            r.member_id,
            r.household_id,
            r.status.value,
            r.window_closes_at,
            r.link_generation,
            r.link_hash,
        )
        for r in db.session.scalars(select(ProofOfLifeMonth).where(ProofOfLifeMonth.month == MONTH))
    )
    messages = sorted(
        (
            m.member_id,
            m.household_id,
            m.kind.value,
            m.status.value,
            m.to_phone,
            m.body,
            m.segments,
            m.attempts,
        )
        for m in db.session.scalars(select(SmsMessage).where(SmsMessage.month == MONTH))
    )
    tasks = sorted(
        (t.member_id, t.household_id, t.reason.value, t.error_code)
        for t in db.session.scalars(select(ContactTask).where(ContactTask.month == MONTH))
    )
    return {"records": records, "messages": messages, "tasks": tasks}


@pytest.fixture
def small_batches(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Ranges of 3 member ids and notifier batches of 2; yields the sizes of the
    batches reported to ``progress``."""
    monkeypatch.setattr(cycle, "BATCH", 2)
    app.config["DIBAO_MONTH_OPEN_BATCH"] = 3
    yield []
    app.config.pop("DIBAO_MONTH_OPEN_BATCH")


def test_the_set_based_open_leaves_what_the_row_path_leaves(
    app: Flask, small_batches: list[int]
) -> None:
    people = People()
    people.existing()
    rows_report = cycle.open_month_by_rows(MONTH, now=MORNING)
    by_rows = snapshot()
    clear()
    people.existing()
    sets_report = by_sets()(MONTH, now=MORNING, progress=small_batches.append)
    by_sets_ = snapshot()

    assert by_sets_ == by_rows
    assert asdict(sets_report) == asdict(rows_report)
    queued = [m for m in by_sets_["messages"] if m[3] == "queued"]
    assert sets_report.members == len(by_sets_["records"]) and sets_report.queued == len(queued)
    assert sets_report.tasks == {"no_phone": 1, "opted_out": 1, "wrong_number": 1}
    assert sets_report.skipped == 2  # passed before; reminded before
    # Only the designated members of households in care have a record (the base data
    # may hold designated members of its own).
    opened = {r[0] for r in by_sets_["records"]}
    assert {m.id for m in people.designated} <= opened
    assert not {m.id for m in people.ignored} & opened
    reminded = {m[0] for m in queued}
    assert {m.id for m in [*people.reachable, people.revoked, people.child]} <= reminded
    # Batches of at most 2 reported, every designated member once.
    assert max(small_batches) <= 2 and sum(small_batches) == len(opened)


def test_the_links_made_in_sql_open_the_members_page(app: Flask) -> None:
    people = People()
    people.existing()
    by_sets()(MONTH, now=MORNING)
    for member in [*people.reachable, people.revoked, people.child]:
        [message] = db.session.scalars(
            select(SmsMessage).where(
                SmsMessage.member_id == member.id, SmsMessage.kind == MessageKind.REMINDER
            )
        )
        token = message.body.rsplit("/m/", 1)[1]
        assert links.well_formed(token)
        assert pol.resolve_link(token, now=MORNING).member_id == member.id
    # The revoked link's generation is kept: its reminder carries generation 2's token.
    key = links.link_key(current_app.config["SECRET_KEY"])
    record = db.session.scalar(
        select(ProofOfLifeMonth).where(ProofOfLifeMonth.member_id == people.revoked.id)
    )
    assert record is not None and record.link_generation == 2
    assert record.link_hash == links.token_hash(links.make_token(key, people.revoked.id, MONTH, 2))


def test_opening_twice_adds_nothing(app: Flask, small_batches: list[int]) -> None:
    People().existing()
    first = by_sets()(MONTH, now=MORNING)
    before = snapshot()
    again = by_sets()(MONTH, now=MORNING)

    assert snapshot() == before
    assert again.queued == 0 and again.tasks == {}
    assert again.members == first.members
    # Everyone reachable was told already (6, and the one reminded before), one passed.
    assert again.skipped == first.queued + 1 + 1
    step = db.session.scalar(
        select(CampaignStep).where(CampaignStep.month == MONTH, CampaignStep.step == "open")
    )
    assert step is not None and step.runs == 2 and step.finished_at is not None


def test_a_set_based_open_that_crashed_is_finished_by_the_next_run(
    app: Flask, small_batches: list[int]
) -> None:
    people = People()
    calls: list[int] = []

    def crash_after_the_first_batch(done: int) -> None:
        calls.append(done)
        if len(calls) == 1:
            raise RuntimeError("the machine went down")

    with pytest.raises(RuntimeError):
        by_sets()(MONTH, now=MORNING, progress=crash_after_the_first_batch)
    db.session.rollback()
    assert 0 < len(snapshot()["records"]) < len(people.designated)
    by_sets()(MONTH, now=MORNING)
    done = snapshot()
    clear()
    cycle.open_month_by_rows(MONTH, now=MORNING)
    assert done == snapshot()


def test_ranges_opened_at_once_leave_what_one_range_after_the_other_leaves(
    databases: DatabaseFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DIBAO_MONTH_OPEN_WORKERS ranges on their own connections (a database of its own,
    committed for real: the test transaction's one connection cannot be shared): the
    same rows and counts as one worker, every member reported once, and on PostgreSQL
    the ranges really ran on several threads."""
    fresh = make_app(
        databases.new("open_workers"),
        tmp_path,
        DIBAO_MONTH_OPEN_BATCH=3,
        DIBAO_MONTH_OPEN_WORKERS=3,
    )
    monkeypatch.setattr(cycle, "BATCH", 2)
    threads: set[str] = set()
    real_open_range = cycle._open_range

    def recording(*args: Any) -> None:
        threads.add(threading.current_thread().name)
        real_open_range(*args)

    monkeypatch.setattr(cycle, "_open_range", recording)
    with fresh.app_context():
        upgrade(directory=fresh.extensions["migrate"].directory)
        factories.base_data()
        db.session.commit()
        people = People()
        people.existing()
        reported: list[int] = []
        at_once = cycle.open_month(MONTH, now=MORNING, progress=reported.append)
        opened_at_once = snapshot()
        clear()
        people.existing()
        fresh.config["DIBAO_MONTH_OPEN_WORKERS"] = 1
        one_by_one = cycle.open_month(MONTH, now=MORNING)

        assert snapshot() == opened_at_once
        assert asdict(at_once) == asdict(one_by_one)
        assert sum(reported) == at_once.members == len(opened_at_once["records"])
        assert {m.id for m in people.designated} <= {r[0] for r in opened_at_once["records"]}
        db.session.remove()
    on_threads = {name for name in threads if name.startswith("dibao-open")}
    if databases.dialect == "postgresql":
        assert len(on_threads) >= 2  # (SQLite opens row by row, on the caller's thread)
    else:
        assert on_threads == set()
