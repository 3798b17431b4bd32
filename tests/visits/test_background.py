"""The photo work and pattern checks of a received visit after the answer
(server/visits/background.py): the embedded default's background thread gives a visit
the same flags as the work done in the request, and a sweep takes up what a dead
process left pending.

These tests run the thread for real, each on a database of its own (the thread's
session cannot see a test's rolled-back transaction).
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import delete, func, select, update

from server import clock
from server.cases.models import CaseState, Household, Member
from server.config import ConfigError
from server.extensions import db
from server.faces.models import FaceTemplate
from server.visits import background, tasks
from server.visits.models import PhotoHash, PhotoKind, Survey, SurveyPhoto
from tests import factories
from tests.conftest import DatabaseFactory, make_app, process_env
from tests.mobile_api.test_api_devices import device_login
from tests.processes import start_celery_worker
from tests.visits.test_integrity_patterns import one_spot_flagged, one_spot_uploads
from tests.visits.test_openrosa import FACES, basic, instance_xml, obama, submit

pytestmark = pytest.mark.slow  # face detection and real threads: a few seconds


def new_app(databases: DatabaseFactory, tmp_path: Path, label: str, **config: Any) -> Flask:
    app = make_app(databases.new(label), tmp_path / label, **config)
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory)
        factories.base_data()
        for _ in range(2):
            factories.make_household(state=CaseState.APPROVED)
        db.session.commit()
        db.session.remove()
    return app


Visits = list[tuple[bytes, dict[str, bytes]]]


def two_visits(app: Flask) -> Visits:
    """A portrait and a housing photo at one household; then the very same housing
    photo at another household (a reused picture: the job's flag)."""
    with app.app_context():
        homes = db.session.execute(select(Household.id).order_by(Household.id)).all()
        first_member = db.session.scalar(
            select(Member.id).where(Member.household_id == homes[0][0]).order_by(Member.id)
        )
        db.session.remove()
    house = (FACES / "biden" / "biden_1.jpg").read_bytes()
    first = instance_xml(
        homes[0][0],
        uuid.UUID(int=1),
        members=[(first_member, "王大", "120.5", "portrait.jpg")],
        housing=["house.jpg"],
    )
    second = instance_xml(homes[1][0], uuid.UUID(int=2), housing=["house.jpg"])
    return [(first, {"portrait.jpg": obama(), "house.jpg": house}), (second, {"house.jpg": house})]


def send(app: Flask, visits: Visits) -> None:
    client = app.test_client()
    response = device_login(client)
    assert response.status_code == 201, response.get_json()
    headers = basic("caseworker_a", response.get_json()["token"])
    for xml, files in visits:
        reply = submit(client, headers, xml, files)
        assert reply.status_code == 201, reply.data


def flags_of(app: Flask) -> dict[str, list[tuple[Any, ...]]]:
    with app.app_context():
        found = {
            survey.client_uuid: sorted(
                (f.code, f.severity, f.value, f.threshold, str(sorted(f.extra.items())))
                for f in survey.flags
            )
            for survey in db.session.scalars(select(Survey))
        }
        db.session.remove()
        return found


def pending(app: Flask) -> int:
    with app.app_context():
        count = db.session.scalar(
            select(func.count())
            .select_from(SurveyPhoto)
            .where(SurveyPhoto.received_at.is_not(None), SurveyPhoto.thumbnail_sha256.is_(None))
        )
        db.session.remove()
        return int(count or 0)


def test_the_thread_gives_a_visit_the_flags_the_request_would_have(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    inline = new_app(databases, tmp_path, "inline", DIBAO_BACKGROUND_JOBS="inline")
    threaded = new_app(databases, tmp_path, "thread", DIBAO_BACKGROUND_JOBS="thread")
    assert background.mode(inline) == "inline" and background.mode(threaded) == "thread"

    # The same bytes to both (the apps' databases were made alike).
    visits = two_visits(inline)
    send(inline, visits)
    assert pending(inline) == 0  # done before the answers
    send(threaded, visits)
    assert background.wait_idle(threaded, timeout=120)
    assert pending(threaded) == 0

    expected = flags_of(inline)
    assert flags_of(threaded) == expected
    second = expected[str(uuid.UUID(int=2))]
    assert any(code == "photo_reused" for code, *_ in second), second
    with threaded.app_context():
        template = db.session.scalars(select(FaceTemplate)).one()
        photo = db.session.get(SurveyPhoto, template.survey_photo_id)
        assert photo is not None and photo.kind is PhotoKind.MEMBER_PORTRAIT
        assert all(p.phash is not None for p in db.session.scalars(select(SurveyPhoto)))
        db.session.remove()


def test_the_sweep_does_the_work_a_dead_process_left_pending(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    app = new_app(databases, tmp_path, "sweep", DIBAO_BACKGROUND_JOBS="thread")
    send(app, two_visits(app))
    assert background.wait_idle(app, timeout=120)
    done = flags_of(app)
    with app.app_context():
        # As a process killed before its job committed leaves them: received, nothing
        # derived (the job's work on a photo is one transaction), the job's flags absent.
        reused = db.session.scalars(
            select(SurveyPhoto).where(SurveyPhoto.survey.has(client_uuid=str(uuid.UUID(int=2))))
        ).one()
        db.session.execute(delete(PhotoHash).where(PhotoHash.survey_photo_id == reused.id))
        reused.survey.flags[:] = [f for f in reused.survey.flags if f.code != "photo_reused"]
        reused.thumbnail_sha256, reused.phash = None, None
        db.session.commit()
        assert pending(app) == 1
        # Within the grace period the sweep leaves it alone (its job may still be queued).
        assert background.sweep(timedelta(minutes=10)) == 0
        assert pending(app) == 1
        db.session.execute(
            update(SurveyPhoto)
            .where(SurveyPhoto.id == reused.id)
            .values(received_at=clock.utcnow() - timedelta(minutes=11))
        )
        db.session.commit()
        assert background.sweep(timedelta(minutes=10)) == 1
        assert background.sweep(timedelta(minutes=10)) == 0  # nothing twice
        db.session.remove()
    assert pending(app) == 0
    assert flags_of(app) == done


def test_with_a_broker_celery_does_the_work_and_a_bad_mode_is_refused(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    app = make_app(databases.new("mode"), tmp_path / "mode", DIBAO_BACKGROUND_JOBS="thread")
    assert background.mode(app) == "thread"
    app.config["CELERY_BROKER_URL"] = "redis://127.0.0.1:6379/15"
    assert background.mode(app) == "celery"
    with pytest.raises(ConfigError, match="DIBAO_BACKGROUND_JOBS"):
        make_app(databases.new("bad"), tmp_path / "bad", DIBAO_BACKGROUND_JOBS="later")


def test_the_thread_checks_a_burst_of_visits_once_after_the_delay(
    databases: DatabaseFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pattern checks wait DIBAO_PATTERN_DELAY_SECONDS, then look at the visits
    received meanwhile together: one run for the burst, every visit flagged."""
    app = new_app(
        databases,
        tmp_path,
        "delay",
        DIBAO_BACKGROUND_JOBS="thread",
        DIBAO_PATTERN_DELAY_SECONDS=120,
    )
    runs: list[list[int]] = []
    real = background.check_after_uploads

    def counted(survey_ids: list[int]) -> int:
        runs.append(sorted(survey_ids))
        return real(survey_ids)

    monkeypatch.setattr(background, "check_after_uploads", counted)
    client = app.test_client()
    token = device_login(client).get_json()["token"]
    with app.app_context():
        households = one_spot_uploads(client, token)
        time.sleep(1.0)  # the thread has taken the jobs: it holds their checks
        assert runs == []
        assert not one_spot_flagged(households)
        db.session.remove()
    assert background.wait_idle(app, timeout=60)  # runs them now
    with app.app_context():
        assert len(runs) == 1 and len(runs[0]) == 3
        assert one_spot_flagged(households)
        db.session.remove()


@pytest.mark.slow
def test_with_a_broker_a_burst_of_visits_waits_for_one_task(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    """With a Redis broker the visits wait in a Redis set for one delayed task, which
    a real Celery worker runs: every visit of the burst flagged, nothing left waiting."""
    broker = "redis://127.0.0.1:6379/11"
    redis.Redis.from_url(broker).flushdb()
    url = databases.new("patterns-celery")
    app = make_app(url, tmp_path, CELERY_BROKER_URL=broker, DIBAO_PATTERN_DELAY_SECONDS=2)
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory)
        factories.base_data()
        db.session.commit()
        db.session.remove()
    client = app.test_client()
    token = device_login(client).get_json()["token"]
    with app.app_context():
        households = one_spot_uploads(client, token)
        waiting, scheduled = tasks._waiting_keys()
    queued = redis.Redis.from_url(broker)
    assert queued.scard(waiting) == 3 and queued.exists(scheduled)
    worker = start_celery_worker(process_env(url, tmp_path, CELERY_BROKER_URL=broker))
    try:
        deadline = time.monotonic() + 90
        with app.app_context():
            while not one_spot_flagged(households):
                assert time.monotonic() < deadline, "the worker never ran the pattern checks"
                assert worker.poll() is None, "the worker died"
                db.session.rollback()
                time.sleep(0.5)
            db.session.remove()
        assert queued.scard(waiting) == 0 and not queued.exists(scheduled)
        assert queued.keys(f"{waiting}:*") == []
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_a_failed_delayed_check_puts_its_visits_back_for_the_next_window(
    databases: DatabaseFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delayed task takes the waiting set whole; if the checks fail, the visits go
    back into the set (the next window's task takes them), and none is lost."""
    broker = "redis://127.0.0.1:6379/10"
    queued = redis.Redis.from_url(broker)
    queued.flushdb()
    app = make_app(databases.new("patterns-retry"), tmp_path, CELERY_BROKER_URL=broker)
    with app.app_context():
        waiting, scheduled = tasks._waiting_keys()
        queued.sadd(waiting, 11, 12)
        queued.set(scheduled, "1")

        def broken(survey_ids: list[int]) -> int:
            raise RuntimeError("database went away")

        monkeypatch.setattr(tasks, "check_after_uploads", broken)
        with pytest.raises(RuntimeError):
            tasks.check_waiting_patterns_task.run()
        assert sorted(int(v) for v in queued.smembers(waiting)) == [11, 12]
        assert not queued.exists(scheduled)  # the next visit publishes a new task
        assert queued.keys(f"{waiting}:*") == []

        seen: list[list[int]] = []
        monkeypatch.setattr(tasks, "check_after_uploads", lambda ids: seen.append(ids) or 0)
        assert tasks.check_waiting_patterns_task.run() == 0
        assert seen == [[11, 12]] and queued.scard(waiting) == 0
        assert tasks.check_waiting_patterns_task.run() == 0  # nothing waits: nothing runs
        assert seen == [[11, 12]]
        db.session.remove()
