"""Checking and applying a death register against the database: the effects, the dry
run that changes nothing, idempotence, ambiguous rows never applied, the command."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from flask.cli import ScriptInfo
from sqlalchemy import select

from server.audit.models import AuditEntry
from server.cases.models import CaseEvent, CaseState
from server.cli import cli
from server.deaths import service as deaths
from server.deaths.models import DeathImport, Overpayment
from server.errors import NotPermitted
from server.extensions import db
from server.proof_of_life.models import MonthStatus, ProofOfLifeMonth
from tests import factories
from tests.deaths.helpers import TODAY, active_case, case_rows, table_counts
from tests.deaths.registers import csv_bytes


def _pol(member_id: int) -> dict[str, MonthStatus]:
    return {
        r.month: r.status
        for r in db.session.scalars(
            select(ProofOfLifeMonth).where(ProofOfLifeMonth.member_id == member_id)
        )
    }


def test_the_dry_run_classifies_and_changes_nothing(app: Flask) -> None:
    family, single = active_case(), active_case(incomes=("0.00",))
    data = csv_bytes(
        [
            family.line(),
            single.line(name="李四"),
            ["440524188001010014", "赵六", "2026-01-01"],
        ]
    )
    before, rows = table_counts(), case_rows()
    report = deaths.check(data, actor=factories.user("approver"), today=TODAY)
    assert report.counts() == {
        "matched": 1,
        "ambiguous": 1,
        "not_found": 1,
        "already_applied": 0,
        "outside_area": 0,
    }
    assert report.case_codes[family.household.id] == family.household.case_code
    db.session.expire_all()
    assert table_counts() == before
    assert case_rows() == rows


def test_applying_records_the_death_and_its_consequences(app: Flask) -> None:
    family, single = active_case(), active_case(incomes=("0.00",))
    approver = factories.user("approver")
    old_amount = family.household.monthly_allowance
    report = deaths.apply(
        csv_bytes([family.line(), single.line(died_on="2026-04-02")]),
        actor=approver,
        today=TODAY,
    )
    assert report.counts()["matched"] == 2 and report.import_id is not None
    db.session.expire_all()

    # The member is deceased from the date, no longer designated.
    head = family.head
    assert (head.alive, head.died_on.isoformat(), head.proof_of_life_required) == (
        False,
        "2026-03-10",
        False,
    )
    # Proof of life: exempt from the month of death; what passed stays passed.
    assert _pol(head.id) == {
        "2026-02": MonthStatus.PASSED,
        "2026-03": MonthStatus.PASSED,
        "2026-04": MonthStatus.EXEMPT,
        "2026-05": MonthStatus.EXEMPT,
        "2026-06": MonthStatus.EXEMPT,
    }
    exempt = db.session.scalars(
        select(ProofOfLifeMonth).where(
            ProofOfLifeMonth.member_id == head.id, ProofOfLifeMonth.month == "2026-06"
        )
    ).one()
    assert exempt.decision_reason == "death register: member died on 2026-03-10"
    assert exempt.decided_by_id == approver.id

    # The family's allowance recomputed for the one member left, through the workflow.
    household = family.household
    assert household.state is CaseState.APPROVED
    assert household.monthly_allowance is not None and old_amount is not None
    assert household.monthly_allowance < old_amount
    event = household.events[-1]
    assert (event.action, event.actor_id) == ("recompute_allowance", approver.id)
    # The head (the designated member) died: the township must designate another.
    assert event.reason == (
        "death register: member died on 2026-03-10; "
        "no living member is designated for proof of life: designate one"
    )

    # The single-person household is suspended, waiting for the county's termination.
    alone = single.household
    assert alone.state is CaseState.SUSPENDED
    suspend = db.session.scalars(
        select(CaseEvent).where(CaseEvent.household_id == alone.id, CaseEvent.action == "suspend")
    ).one()
    assert suspend.reason is not None
    assert "died on 2026-04-02" in suspend.reason and "terminate" in suspend.reason

    # Payments after the month of death: overpayments (April was suspended, not paid).
    listed = {
        (o.household_id, o.month): o.amount
        for o in db.session.scalars(
            select(Overpayment).where(Overpayment.import_id == report.import_id)
        )
    }
    assert set(listed) == {(household.id, "2026-05"), (alone.id, "2026-05")}
    assert listed[(household.id, "2026-05")] == old_amount - household.monthly_allowance
    assert listed[(alone.id, "2026-05")] == alone.monthly_allowance > Decimal("0")
    assert [o.month for o in deaths.overpayments_of(alone)] == ["2026-05"]

    batch = db.session.get(DeathImport, report.import_id)
    assert batch is not None and (batch.applied, batch.rows, batch.actor_id) == (2, 2, approver.id)
    actions = {
        e.action
        for e in db.session.scalars(select(AuditEntry).where(AuditEntry.actor_id == approver.id))
    }
    assert {
        "member.deceased",
        "pol.month_decided",
        "case.recompute_allowance",
        "case.suspend",
        "overpayment.listed",
        "deaths.imported",
    } <= actions
    # No personal data in the audit details.
    for entry in db.session.scalars(select(AuditEntry)):
        text = repr(entry.details)
        assert head.id_number not in text and head.name not in text


def test_the_same_file_twice_changes_nothing(app: Flask) -> None:
    family = active_case()
    data = csv_bytes([family.line()])
    approver = factories.user("approver")
    deaths.apply(data, actor=approver, today=TODAY)
    db.session.flush()
    before, rows = table_counts(), case_rows()
    again = deaths.apply(data, actor=approver, today=TODAY)
    assert again.counts()["already_applied"] == 1 and again.import_id is None
    db.session.expire_all()
    assert table_counts() == before
    assert case_rows() == rows


def test_ambiguous_rows_are_never_applied(app: Flask) -> None:
    cases = [active_case() for _ in range(4)]
    data = csv_bytes(
        [
            cases[0].line(name="王小"),
            cases[1].line(died_on="2027-01-01"),
            cases[2].line(died_on="1900-01-01"),
            cases[3].line(died_on="2026-03-01"),
            cases[3].line(died_on="2026-03-02"),
        ]
    )
    report = deaths.apply(data, actor=factories.user("approver"), today=TODAY)
    assert report.counts()["ambiguous"] == 5 and report.import_id is None
    db.session.expire_all()
    assert all(c.head.alive for c in cases)


def test_an_approver_applies_only_in_their_county(app: Flask) -> None:
    family = active_case()
    data = csv_bytes([family.line()])
    elsewhere = deaths.apply(data, actor=factories.user("other_approver"), today=TODAY)
    assert elsewhere.counts()["outside_area"] == 1 and elsewhere.import_id is None
    assert family.head.alive
    for username in ("caseworker_a", "reviewer_a", "supervisor", "admin"):
        with pytest.raises(NotPermitted):
            deaths.check(data, actor=factories.user(username), today=TODAY)


def _run(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app))


def test_the_command_dry_runs_masked_then_applies(app: Flask, tmp_path: Any) -> None:
    family = active_case()
    register = tmp_path / "register.csv"
    register.write_bytes(csv_bytes([family.line(), ["440524188001010014", "赵六", "2026-01-01"]]))
    db.session.commit()
    dry = _run(app, "deaths", "import", str(register), "--rows")
    assert dry.exit_code == 0, dry.output
    assert "matched=1" in dry.output and "not_found=1" in dry.output
    assert "dry run" in dry.output
    assert family.head.name not in dry.output and family.head.id_number not in dry.output
    assert family.head.name[0] + "*" in dry.output and family.household.case_code in dry.output
    assert family.head.alive

    refused = _run(app, "deaths", "import", str(register), "--apply")
    assert refused.exit_code != 0 and "--user" in refused.output

    applied = _run(app, "deaths", "import", str(register), "--apply", "--user", "approver")
    assert applied.exit_code == 0, applied.output
    assert "applied import" in applied.output
    again = _run(app, "deaths", "import", str(register), "--apply", "--user", "approver")
    assert "already_applied=1" in again.output and "nothing to apply" in again.output

    # Another registry's column names, through a profile file; GB18030 text.
    profile = tmp_path / "civil.toml"
    profile.write_text(
        '[columns]\nid_number = ["SFZH"]\nname = ["XM"]\ndate_of_death = ["SWRQ"]\n',
        encoding="utf-8",
    )
    other = tmp_path / "other.csv"
    other.write_bytes(csv_bytes([family.line()], header=("SFZH", "XM", "SWRQ"), encoding="gb18030"))
    mapped = _run(app, "deaths", "import", str(other), "--profile", str(profile))
    assert mapped.exit_code == 0, mapped.output
    assert "already_applied=1" in mapped.output

    bad = tmp_path / "bad.csv"
    bad.write_bytes(csv_bytes([["x"]], header=("编号",)))
    failed = _run(app, "deaths", "import", str(bad))
    assert failed.exit_code != 0 and "身份证号" in failed.output
