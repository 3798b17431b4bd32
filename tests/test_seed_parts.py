"""`dibao seed --with`: the benchmark league's bulk parts (server/seed_parts.py)."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from flask_migrate import upgrade
from sqlalchemy import Table, func, select

from server.areas.models import Area
from server.auth.models import User
from server.cases.models import CaseState, Household, Member
from server.extensions import db
from server.faces.models import FaceTemplate
from server.months import month_after
from server.payments.models import PaymentMonth, PaymentStatus
from server.proof_of_life.models import PAYMENT_BLOCKING, MonthStatus, ProofOfLifeMonth
from server.seed import seed_database
from server.seed_parts import PARTS, PartsOptions, parse_parts, with_defaults
from server.visits.models import PhotoHash, PhotoKind, ReviewStatus, Survey, SurveyPhoto
from tests.conftest import DatabaseFactory, make_app
from tests.test_seed import dibao

TODAY = date(2026, 11, 20)
HOUSEHOLDS = 200
PLANTED_EVERY = 20  # the league plants one in 1,000; a small one needs more to test


@contextmanager
def league(
    databases: DatabaseFactory,
    tmp_path: Path,
    *,
    seed: int = 5,
    parts: frozenset[str] | None = frozenset(PARTS),
    months: int = 3,
) -> Iterator[dict[str, Any]]:
    """A database seeded in-process with the parts; the app's context pushed."""
    application = make_app(databases.new("parts"), tmp_path / f"instance{seed}")
    with application.app_context():
        upgrade(directory=application.extensions["migrate"].directory)
        report = seed_database(
            households=HOUSEHOLDS,
            seed=seed,
            rules=application.config["REGION"],
            today=TODAY,
            hash_passwords=False,
            parts=None
            if parts is None
            else PartsOptions(parts, months=months, planted_every=PLANTED_EVERY),
        )
        db.session.commit()
        yield report.as_json()
        db.session.remove()
        db.engine.dispose()


def count(table: Any) -> int:
    return db.session.scalar(select(func.count()).select_from(table)) or 0


def test_every_part_is_written_with_its_relations(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    with league(databases, tmp_path) as report:
        parts = report["parts"]
        assert parts["visits"] == count(Survey) > HOUSEHOLDS * 0.2
        assert parts["photos"] == count(SurveyPhoto) == 2 * parts["visits"]
        assert parts["photo_hashes"] == count(PhotoHash) == 2 * parts["photos"]
        assert parts["templates"] == count(FaceTemplate)
        assert parts["pol_months"] == count(ProofOfLifeMonth) > 0
        assert parts["payments"] == count(PaymentMonth) > 0

        # Every visit by a caseworker of the household's township, near the home.
        township_of = {a: p for a, p in db.session.execute(select(Area.id, Area.parent_id))}
        for visit in db.session.scalars(select(Survey)):
            assert visit.caseworker.area_id == township_of[visit.household.village_id]
            assert abs(visit.gps_lat - visit.household.home_lat) < 0.001
            assert visit.review_status is ReviewStatus.RECEIVED
            assert json.loads(visit.payload)["housing"]["rooms"] >= 1  # decrypts
            assert visit.started_at < visit.finished_at <= visit.received_at
            assert {p.kind for p in visit.photos} == {PhotoKind.HOUSING, PhotoKind.MEMBER_PORTRAIT}
        # Each photo: its full and centre hashes, the full one its phash.
        hashes: dict[int, dict[str, int]] = {}
        for row in db.session.scalars(select(PhotoHash)):
            hashes.setdefault(row.survey_photo_id, {})[row.kind] = row.hash
        for photo in db.session.scalars(select(SurveyPhoto)):
            assert set(hashes[photo.id]) == {"full", "centre"}
            assert f"{hashes[photo.id]['full'] & (2**64 - 1):016x}" == photo.phash
            if photo.kind is PhotoKind.MEMBER_PORTRAIT:
                member = db.session.get(Member, int(cast(str, photo.member_ref)))
                assert member is not None and member.household_id == photo.survey.household_id

        # Templates: one per designated member, decrypted with the app's key to 128 floats.
        templates = db.session.scalars(select(FaceTemplate).order_by(FaceTemplate.id)).all()
        designated = count(select(Member.id).where(Member.proof_of_life_required).subquery())
        assert len(templates) == designated == HOUSEHOLDS
        vectors = np.stack([np.frombuffer(t.encoding, np.float64) for t in templates])
        assert vectors.shape == (HOUSEHOLDS, 128)
        for template in templates:
            owner = db.session.get(Member, template.member_id)
            assert owner is not None and owner.household_id == template.household_id
        # The planted duplicates: close pairs, always across households.
        close = [
            (a, b)
            for a, b in itertools.combinations(range(len(templates)), 2)
            if np.linalg.norm(vectors[a] - vectors[b]) < 0.4
        ]
        assert len(close) == parts["planted_templates"] == HOUSEHOLDS // PLANTED_EVERY
        assert all(templates[a].household_id != templates[b].household_id for a, b in close)

        # Months: one per designated member of an approved household, per month after
        # its approval; payments one per such household and month, suspended as blocked.
        months = [month_after("2026-11", -k) for k in (3, 2, 1)]
        expected: Counter[tuple[int, str]] = Counter()
        for household in db.session.scalars(
            select(Household).where(Household.state == CaseState.APPROVED)
        ):
            first = f"{household.approved_on:%Y-%m}"
            for month in months:
                if month > first:
                    for member in household.members:
                        if member.proof_of_life_required:
                            expected[(member.id, month)] += 1
        found = Counter(
            db.session.execute(select(ProofOfLifeMonth.member_id, ProofOfLifeMonth.month)).all()
        )
        assert found == expected
        statuses = {row.status for row in db.session.scalars(select(ProofOfLifeMonth))}
        assert {MonthStatus.PASSED, MonthStatus.MISSED} <= statuses
        blocked = {
            (h, m)
            for h, m, s in db.session.execute(
                select(
                    ProofOfLifeMonth.household_id, ProofOfLifeMonth.month, ProofOfLifeMonth.status
                )
            )
            if s in PAYMENT_BLOCKING
        }
        for payment in db.session.scalars(select(PaymentMonth)):
            assert payment.month in months
            suspended = payment.status is PaymentStatus.SUSPENDED
            assert suspended == ((payment.household_id, payment.month) in blocked)


def _dump() -> list[Any]:
    """The parts' rows, decrypted, in a stable order."""
    return [
        db.session.execute(
            select(
                Survey.client_uuid,
                Survey.household_id,
                Survey.caseworker_id,
                Survey.finished_at,
                Survey.gps_lat,
                Survey.gps_lon,
            ).order_by(Survey.id)
        ).all(),
        [s.payload for s in db.session.scalars(select(Survey).order_by(Survey.id))],
        db.session.execute(
            select(SurveyPhoto.survey_id, SurveyPhoto.sha256, SurveyPhoto.phash).order_by(
                SurveyPhoto.id
            )
        ).all(),
        db.session.execute(
            select(PhotoHash.survey_photo_id, PhotoHash.kind, PhotoHash.hash).order_by(
                PhotoHash.survey_photo_id, PhotoHash.kind
            )
        ).all(),
        [
            (t.member_id, t.encoding)
            for t in db.session.scalars(select(FaceTemplate).order_by(FaceTemplate.id))
        ],
        [
            (m.member_id, m.month, m.status, m.passed_at, m.decision_reason)
            for m in db.session.scalars(select(ProofOfLifeMonth).order_by(ProofOfLifeMonth.id))
        ],
        db.session.execute(
            select(PaymentMonth.household_id, PaymentMonth.month, PaymentMonth.status).order_by(
                PaymentMonth.id
            )
        ).all(),
    ]


def _households() -> list[Any]:
    return [
        (h.case_code, h.state, h.home_lat, tuple((m.name, m.id_number) for m in h.members))
        for h in db.session.scalars(select(Household).order_by(Household.id))
    ]


def test_the_same_seed_gives_the_same_parts_and_the_same_households(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    with league(databases, tmp_path / "a", seed=5) as first_report:
        first, first_households = _dump(), _households()
    with league(databases, tmp_path / "b", seed=5) as second_report:
        assert _dump() == first and second_report == first_report
    with league(databases, tmp_path / "c", seed=6):
        assert _dump() != first
    # The parts draw from their own generators: the households are those seeded without.
    with league(databases, tmp_path / "d", seed=5, parts=None) as plain:
        assert "parts" not in plain
        assert _households() == first_households
        assert count(Survey) == count(FaceTemplate) == count(ProofOfLifeMonth) == 0


def test_only_the_parts_asked_for_are_written(databases: DatabaseFactory, tmp_path: Path) -> None:
    with league(databases, tmp_path, parts=frozenset({"templates"}), months=0) as report:
        assert report["parts"]["templates"] == count(FaceTemplate) == HOUSEHOLDS
        assert count(Survey) == count(ProofOfLifeMonth) == count(PaymentMonth) == 0
        # The sequences continue after the explicit ids.
        user = db.session.scalar(select(User).limit(1))
        member = db.session.scalar(select(Member).where(Member.proof_of_life_required).limit(1))
        assert user is not None and member is not None
        added = FaceTemplate(
            member_id=member.id,
            household_id=member.household_id,
            encoding=bytes(1024),
            model_name="m",
            model_version="v",
        )
        db.session.add(added)
        db.session.flush()
        assert added.id == HOUSEHOLDS + 1
        db.session.rollback()


def test_with_defaults_fills_the_model_defaults_a_bulk_row_leaves_out(tmp_path: Path) -> None:
    surveys = cast(Table, Survey.__table__)
    with make_app(f"sqlite:///{tmp_path}/x.sqlite3", tmp_path).app_context():  # the clock
        rows = with_defaults(surveys, [{"household_id": 1, "gps_is_mock": True}])
    assert rows[0]["household_id"] == 1 and rows[0]["gps_is_mock"] is True  # given: kept
    assert rows[0]["review_status"] is ReviewStatus.RECEIVED  # a scalar default
    assert rows[0]["received_at"] is not None  # a callable default (utcnow)
    assert rows[0]["reviewed_at"] is None and rows[0]["review_reason"] is None  # nullable
    assert "id" not in rows[0]  # the primary key is left to the sequence
    assert with_defaults(surveys, []) == []


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("all", set(PARTS)),
        ("none", set()),
        ("visits, photos", {"visits", "photos"}),
        ("templates", {"templates"}),
    ],
)
def test_parse_parts(text: str, parts: set[str]) -> None:
    assert parse_parts(text) == parts


@pytest.mark.slow
def test_the_cli_default_is_unchanged_and_a_bad_part_is_refused(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    url = databases.new("cli_parts")
    assert dibao("db", "upgrade", database_url=url, instance=tmp_path).returncode == 0
    bad = dibao(
        "seed", "--households", "5", "--with", "visits,faces", database_url=url, instance=tmp_path
    )
    assert bad.returncode == 2
    assert "unknown part faces" in bad.stderr and "visits, photos, templates" in bad.stderr
    needs = dibao(
        "seed",
        "--households",
        "5",
        "--with",
        "payments",
        "--months",
        "2",
        database_url=url,
        instance=tmp_path,
    )
    assert needs.returncode == 2 and "payments needs months" in needs.stderr
    plain = dibao("seed", "--households", "5", "--json", database_url=url, instance=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert set(json.loads(plain.stdout)) == {"areas", "users", "households", "history"}
    application = make_app(url, tmp_path)
    with application.app_context():
        assert count(Survey) == count(FaceTemplate) == count(ProofOfLifeMonth) == 0
        db.session.remove()
        db.engine.dispose()
