"""`dibao seed`: realistic, complete, and the same data for the same seed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import func, select

from server.areas.models import Area, AreaLevel
from server.auth.models import Role, User
from server.auth.passwords import verify_password
from server.cases.models import CaseEvent, CaseState, Household, Member, phone_lookup_hash
from server.extensions import db
from server.payments.models import PaymentMonth, PaymentStatus
from server.proof_of_life.models import (
    PAYMENT_BLOCKING,
    ContactTask,
    MonthStatus,
    ProofOfLifeAttempt,
    ProofOfLifeMonth,
    StartedBy,
)
from server.seed import id_check_digit, seed_database
from server.seed_history import HistoryOptions
from server.storage import blob_store
from server.visits.models import Survey, SurveyFlag, SurveyPhoto
from sms.models import MessageStatus, SmsMessage
from tests.conftest import DATA_KEY, DatabaseFactory, make_app

TODAY = "2026-11-20"


def dibao(*args: str, database_url: str, instance: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test",
        "DIBAO_DATA_KEY": DATA_KEY,
        "DIBAO_INSTANCE_PATH": str(instance),
    }
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def seeded(databases: DatabaseFactory, tmp_path: Path, *args: str) -> tuple[str, dict[str, Any]]:
    url = databases.new("seed")
    migrated = dibao("db", "upgrade", database_url=url, instance=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    result = dibao("seed", *args, "--today", TODAY, "--json", database_url=url, instance=tmp_path)
    assert result.returncode == 0, result.stderr
    return url, json.loads(result.stdout)


def dump(url: str, tmp_path: Path) -> list[tuple[Any, ...]]:
    """Everything seeded, decrypted, in a stable order (ciphertexts differ per run)."""
    application = make_app(url, tmp_path)
    with application.app_context():
        households = db.session.scalars(select(Household).order_by(Household.id)).all()
        rows: list[tuple[Any, ...]] = [
            (
                h.case_code,
                h.village.code,
                h.state,
                h.household_class.code,
                h.address,
                h.home_lat,
                h.home_lon,
                h.monthly_allowance,
                h.applied_on,
                h.next_review_on,
                tuple(
                    (m.name, m.id_number, m.phone, m.birth_date, m.relation, m.monthly_income)
                    for m in h.members
                ),
                tuple((e.action, e.to_state, e.at, e.reason) for e in h.events),
            )
            for h in households
        ]
    return rows


@pytest.mark.slow
def test_the_same_seed_gives_the_same_data_and_another_seed_does_not(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    first_url, first = seeded(databases, tmp_path, "--households", "40", "--seed", "7")
    second_url, second = seeded(databases, tmp_path, "--households", "40", "--seed", "7")
    other_url, other = seeded(databases, tmp_path, "--households", "40", "--seed", "8")
    assert first == second
    assert dump(first_url, tmp_path) == dump(second_url, tmp_path)
    assert dump(first_url, tmp_path) != dump(other_url, tmp_path)
    assert first["users"] != other["users"]  # passwords differ


@pytest.mark.slow
def test_seed_json_describes_areas_users_and_households(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    _, report = seeded(databases, tmp_path, "--households", "20", "--seed", "1", "--months", "3")
    assert set(report) == {"areas", "users", "households", "history"}
    assert report["history"]["visits"] > 0 and report["history"]["pol_months"] > 0
    assert report["households"] == 20
    levels = [a["level"] for a in report["areas"]]
    assert levels.count("league") == 1 and levels.count("county") == 1
    assert levels.count("township") == 5 and levels.count("village") == 40
    codes = {a["code"] for a in report["areas"]}
    assert all(a["parent"] in codes for a in report["areas"] if a["level"] != "league")
    assert {u["role"] for u in report["users"]} == {r.value for r in Role}
    assert all(set(u) == {"username", "password", "role", "area"} for u in report["users"])


def _distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_000 * math.asin(math.sqrt(a))


@pytest.mark.slow
def test_seeded_data_is_realistic(databases: DatabaseFactory, tmp_path: Path) -> None:
    url, report = seeded(databases, tmp_path, "--households", "400", "--seed", "3")
    application = make_app(url, tmp_path)
    with application.app_context():
        households = db.session.scalars(select(Household)).all()
        assert {h.state for h in households} == set(CaseState)
        assert {h.household_class.code for h in households} == {"A", "B", "C"}
        for h in households:
            assert 1 <= len(h.members) <= 6
            assert h.village.level is AreaLevel.VILLAGE
            assert _distance_m(h.home_lat, h.home_lon, h.village.lat, h.village.lon) <= 2_000
            assert abs(h.home_lat - 46.08) < 1 and abs(h.home_lon - 122.05) < 1
            assert sum(m.relation.value == "head" for m in h.members) == 1
            assert h.events[0].action == "apply" and h.events[-1].to_state == h.state.value
            if h.state in (CaseState.APPROVED, CaseState.SUSPENDED):
                assert h.monthly_allowance is not None and h.monthly_allowance > 0
                assert h.next_review_on is not None
        members = db.session.scalars(select(Member)).all()
        for m in members:
            assert len(m.id_number) == 18 and m.id_number[:6] == "152201"
            assert m.id_number[6:14] == m.birth_date.strftime("%Y%m%d")
            assert id_check_digit(m.id_number[:17]) == m.id_number[17]
            assert 2 <= len(m.name) <= 4
            assert m.phone is None or (len(m.phone) == 11 and m.phone.startswith("1"))
            # The bulk writer bypasses the ORM's validator: it sets the look-up hash itself.
            assert m.phone_hash == phone_lookup_hash(m.phone)
        assert len({m.id_number for m in members}) == len(members)
        # Every printed password logs its user in.
        for entry in report["users"]:
            user = db.session.scalar(select(User).where(User.username == entry["username"]))
            assert user is not None and user.area.code == entry["area"]
            assert verify_password(user.password_hash, entry["password"])
        assert db.session.scalar(select(CaseEvent.id).where(CaseEvent.actor_id.is_(None))) is None


@pytest.mark.slow
def test_seed_refuses_a_database_that_already_has_data(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    url, _ = seeded(databases, tmp_path, "--households", "1", "--seed", "1")
    again = dibao("seed", "--households", "1", database_url=url, instance=tmp_path)
    assert again.returncode != 0
    assert "already holds areas" in again.stderr


@pytest.mark.slow
def test_seed_refuses_an_unmigrated_database(databases: DatabaseFactory, tmp_path: Path) -> None:
    result = dibao(
        "seed", "--households", "1", database_url=databases.new("raw"), instance=tmp_path
    )
    assert result.returncode != 0
    assert "dibao db upgrade" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("households", ["-1", "many"])
def test_seed_rejects_a_bad_household_count(households: str, tmp_path: Path) -> None:
    result = dibao(
        "seed",
        "--households",
        households,
        database_url=f"sqlite:///{tmp_path}/x.sqlite3",
        instance=tmp_path,
    )
    assert result.returncode == 2
    assert "--households" in result.stderr


def test_areas_and_users_are_scoped_consistently(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    application = make_app(databases.new("scoped"), tmp_path)
    with application.app_context():
        upgrade(directory=application.extensions["migrate"].directory)
        from server.seed import seed_database

        seed_database(
            households=3,
            seed=1,
            rules=application.config["REGION"],
            today=__import__("datetime").date(2026, 11, 20),
            hash_passwords=False,
        )
        for area in db.session.scalars(select(Area)):
            assert area.parent is None or area.path.startswith(area.parent.path)
        db.session.rollback()


# --------------------------------------------------------------------------- history

HISTORY_TODAY = date(2026, 11, 22)  # the month in progress: its window opened on the 20th


@contextmanager
def seeded_history(
    databases: DatabaseFactory, tmp_path: Path, *, households: int, seed: int, **options: Any
) -> Iterator[Flask]:
    """An app on a database seeded in-process with history; its context pushed."""
    application = make_app(databases.new("history"), tmp_path / f"instance{seed}")
    with application.app_context():
        upgrade(directory=application.extensions["migrate"].directory)
        seed_database(
            households=households,
            seed=seed,
            rules=application.config["REGION"],
            today=HISTORY_TODAY,
            hash_passwords=False,
            history=HistoryOptions(**options),
        )
        db.session.commit()
        yield application


def history_dump() -> list[Any]:
    """The history's rows in a stable order, decrypted, ids left out."""
    visits = db.session.execute(
        select(
            Survey.client_uuid,
            Survey.household_id,
            Survey.caseworker_id,
            Survey.kind,
            Survey.started_at,
            Survey.finished_at,
            Survey.gps_lat,
            Survey.gps_lon,
            Survey.gps_accuracy_m,
            Survey.gps_is_mock,
        ).order_by(Survey.id)
    ).all()
    flags = db.session.execute(
        select(SurveyFlag.survey_id, SurveyFlag.code, SurveyFlag.value).order_by(SurveyFlag.id)
    ).all()
    months = db.session.execute(
        select(
            ProofOfLifeMonth.member_id,
            ProofOfLifeMonth.month,
            ProofOfLifeMonth.status,
            ProofOfLifeMonth.passed_at,
            ProofOfLifeMonth.decision_reason,
        ).order_by(ProofOfLifeMonth.id)
    ).all()
    payments = db.session.execute(
        select(
            PaymentMonth.household_id,
            PaymentMonth.month,
            PaymentMonth.status,
            PaymentMonth.amount,
            PaymentMonth.back_pay_month,
        ).order_by(PaymentMonth.id)
    ).all()
    messages = db.session.execute(
        select(SmsMessage.member_id, SmsMessage.month, SmsMessage.kind, SmsMessage.status).order_by(
            SmsMessage.id
        )
    ).all()
    return [visits, flags, months, payments, messages]


@pytest.mark.slow
def test_history_is_the_same_for_the_same_seed(databases: DatabaseFactory, tmp_path: Path) -> None:
    dumps = []
    for seed in (11, 11, 12):
        with seeded_history(databases, tmp_path, households=60, seed=seed, months=3):
            dumps.append(history_dump())
    assert dumps[0] == dumps[1]
    assert dumps[0][0] and dumps[0][2] and dumps[0][3] and dumps[0][4]
    assert dumps[0] != dumps[2]


@pytest.mark.slow
def test_history_is_consistent(databases: DatabaseFactory, tmp_path: Path) -> None:
    with seeded_history(databases, tmp_path, households=120, seed=4, months=6) as application:
        rules = application.config["REGION"]
        zone = ZoneInfo(rules.timezone)
        now = datetime.combine(HISTORY_TODAY, time(12), zone).astimezone(UTC)
        # Each visit: by a caseworker of the household's township, before now, 15-60 min,
        # a fix with a plausible accuracy; one caseworker's visits never overlap.
        rows = db.session.execute(
            select(Survey, Household, User)
            .join(Household, Household.id == Survey.household_id)
            .join(User, User.id == Survey.caseworker_id)
            .order_by(Survey.caseworker_id, Survey.started_at)
        ).all()
        assert rows
        previous: dict[int, datetime] = {}
        for survey, household, user in rows:
            assert user.role is Role.CASEWORKER
            assert household.village.parent_id == user.area_id
            assert survey.finished_at < now
            assert timedelta(minutes=15) <= survey.finished_at - survey.started_at
            assert survey.finished_at - survey.started_at <= timedelta(minutes=61)
            assert 3 <= (survey.gps_accuracy_m or 0) <= 30
            assert 8 <= survey.started_at.astimezone(zone).hour < 19
            if survey.caseworker_id in previous:
                assert survey.started_at >= previous[survey.caseworker_id]
            previous[survey.caseworker_id] = survey.finished_at
        # Proof of life only for approved households, never before the approval.
        for record, household in db.session.execute(
            select(ProofOfLifeMonth, Household).join(
                Household, Household.id == ProofOfLifeMonth.household_id
            )
        ):
            assert household.state is CaseState.APPROVED
            assert household.approved_on is not None
            assert record.month > household.approved_on.strftime("%Y-%m")
        # Payments follow the months: suspended while a month blocks, restored (back-pay
        # in a later payroll) only after a later pass within the grace period.
        blocking = {
            (h, m)
            for h, m in db.session.execute(
                select(ProofOfLifeMonth.household_id, ProofOfLifeMonth.month).where(
                    ProofOfLifeMonth.status.in_(PAYMENT_BLOCKING)
                )
            )
        }
        passes: dict[tuple[int, str], list[ProofOfLifeMonth]] = {}
        for r in db.session.scalars(
            select(ProofOfLifeMonth).where(ProofOfLifeMonth.status == MonthStatus.PASSED)
        ):
            passes.setdefault((r.household_id, r.month), []).append(r)
        payments = db.session.scalars(select(PaymentMonth)).all()
        assert payments
        for payment in payments:
            key = (payment.household_id, payment.month)
            assert payment.month < "2026-11"  # closed months only
            if payment.status is PaymentStatus.SUSPENDED:
                assert key in blocking
            elif payment.status is PaymentStatus.RESTORED:
                assert key not in blocking
                assert payment.restored_at is not None and payment.back_pay_month is not None
                late = [
                    r
                    for r in passes[key]
                    if r.passed_at is not None and r.passed_at > r.window_closes_at
                ]
                assert late  # passed after the close, within the grace period
                assert payment.restored_at == max(r.passed_at for r in late if r.passed_at)
                assert payment.restored_at < rules.campaign.grace_ends(late[0].window_closes_at)
                assert payment.back_pay_month > payment.month
            else:
                assert key not in blocking
        # The month in progress: members still pending, no payment yet.
        statuses = set(
            db.session.scalars(
                select(ProofOfLifeMonth.status).where(ProofOfLifeMonth.month == "2026-11")
            )
        )
        assert MonthStatus.PENDING in statuses
        assert MonthStatus.MISSED not in statuses


@pytest.mark.slow
def test_the_demo_has_every_state_the_console_shows(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    with seeded_history(databases, tmp_path, households=400, seed=2, months=12, photos=True):
        codes = set(db.session.scalars(select(SurveyFlag.code)))
        assert {"gps_far_from_home", "gps_mock", "photo_reused"} <= codes
        statuses = set(db.session.scalars(select(ProofOfLifeMonth.status)))
        assert set(MonthStatus) <= statuses
        assert {MessageStatus.DELIVERED, MessageStatus.FAILED} <= set(
            db.session.scalars(select(SmsMessage.status))
        )
        assert {PaymentStatus.SUSPENDED, PaymentStatus.RESTORED, PaymentStatus.PAYABLE} <= set(
            db.session.scalars(select(PaymentMonth.status))
        )
        assert db.session.scalar(select(func.count(ContactTask.id)))
        assert db.session.scalar(
            select(func.count(ProofOfLifeAttempt.id)).where(
                ProofOfLifeAttempt.started_by == StartedBy.CASEWORKER
            )
        )
        assert {"initial_survey", "periodic_review", "assisted_proof_of_life"} == set(
            db.session.scalars(select(Survey.kind))
        )
        # Photos: stored in the blob store, one per household's picture, with their hash.
        photos = db.session.scalars(select(SurveyPhoto)).all()
        assert len(photos) > 20
        store = blob_store()
        assert all(store.exists(p.received_sha256) for p in photos)
        assert all(p.phash and p.thumbnail_sha256 for p in photos)
        reused = {
            p.sha256
            for p in photos
            if p.survey.flags and any(f.code == "photo_reused" for f in p.survey.flags)
        }
        households_per_photo = {
            sha: {p.survey.household_id for p in photos if p.sha256 == sha} for sha in reused
        }
        assert all(len(h) == 2 for h in households_per_photo.values())
        # Apart from the reused ones, no two households share a photo.
        by_sha: dict[str, set[int]] = {}
        for p in photos:
            by_sha.setdefault(p.received_sha256, set()).add(p.survey.household_id)
        assert sum(len(h) > 1 for h in by_sha.values()) == len(reused)
