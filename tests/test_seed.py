"""`dibao seed`: realistic, complete, and the same data for the same seed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask_migrate import upgrade
from sqlalchemy import select

from server.areas.models import Area, AreaLevel
from server.auth.models import Role, User
from server.auth.passwords import verify_password
from server.cases.models import CaseEvent, CaseState, Household, Member
from server.extensions import db
from server.seed import id_check_digit
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
    _, report = seeded(databases, tmp_path, "--households", "5", "--seed", "1")
    assert set(report) == {"areas", "users", "households"}
    assert report["households"] == 5
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
