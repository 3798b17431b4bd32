"""Background jobs for received visits: their photos, and the pattern checks across
a caseworker's visits. Tasks take ids, never ORM objects."""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid

import redis
from celery import shared_task
from flask import current_app
from sqlalchemy import inspect

from server.extensions import db
from server.region import region
from server.visits import background
from server.visits.faces import enroll_portrait
from server.visits.integrity.pattern_job import (
    check_after_upload,
    check_after_uploads,
    check_recent,
)
from server.visits.service import ReceivedSurvey, analyse_photo

logger = logging.getLogger(__name__)


# Named as before the move from server/faces/ (messages already queued keep working).
@shared_task(
    name="server.faces.tasks.process_photo_task",
    ignore_result=True,
    acks_late=True,
    max_retries=3,
    default_retry_delay=30,
)
def process_photo_task(survey_photo_id: int) -> None:
    """The slow part of a received photo: decoding, reuse check and the reviewer's
    thumbnail, then (portraits) the face template and the search across households.
    Safe to run twice."""
    analyse_photo(survey_photo_id)
    db.session.commit()
    enroll_portrait(survey_photo_id)
    db.session.commit()


@shared_task(
    name="server.faces.tasks.process_photos_task",
    ignore_result=True,
    acks_late=True,
    max_retries=3,
    default_retry_delay=30,
)
def process_photos_task(survey_photo_ids: list[int]) -> None:
    """The slow part of several photos of one upload, one after the other: one message
    on the broker per upload instead of one per photo. Safe to run twice."""
    for survey_photo_id in survey_photo_ids:
        process_photo_task.run(survey_photo_id)


def enqueue_photo_work(survey_photo_ids: list[int]) -> None:
    """Queue the slow work of newly stored photos; call after the commit. Without a
    broker it goes to this process's background thread (server/visits/background.py),
    or with DIBAO_BACKGROUND_JOBS=inline runs right here, and its flags show on the
    next read of the survey."""
    if background.mode() == "thread":
        background.submit(survey_photo_ids, None)
        return
    # End the caller's transaction first: in eager mode the job runs right here with a
    # session of its own, and on SQLite an open transaction holds the write lock.
    db.session.close()
    # The task as registered with the current Flask app's Celery (tests run several apps).
    if not survey_photo_ids:
        return
    task = current_app.extensions["celery"].tasks[process_photos_task.name]
    task.delay(list(survey_photo_ids))


@shared_task(
    name="server.visits.tasks.check_patterns_task",
    ignore_result=True,
    acks_late=True,
    max_retries=3,
    default_retry_delay=30,
)
def check_patterns_task(survey_id: int) -> None:
    """The pattern checks around a newly received visit (its caseworker's day and
    month; docs/field-visits.md, "Patterns across visits"). Safe to run twice."""
    check_after_upload(survey_id)
    db.session.commit()


@shared_task(name="server.visits.tasks.nightly_patterns_task", ignore_result=True)
def nightly_patterns_task() -> int:
    """Every caseworker's last ``[integrity.patterns] nightly_days`` checked again
    (late uploads, other caseworkers' visits sharing a spot); visits newly flagged."""
    _checked, flagged = check_recent(region().integrity.patterns.nightly_days)
    return flagged


# -- pattern checks after a delay, with a Redis broker ---------------------------------
#
# The visits waiting for their pattern checks are a Redis set; the first one of a
# window publishes one delayed task (``DIBAO_PATTERN_DELAY_SECONDS``), which takes the
# whole set: a burst of uploads costs one look at each caseworker's month, and one
# message on the broker, not one per upload. Lost if Redis loses them: the nightly run
# (``nightly_patterns_task``) checks every caseworker's recent days again.

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def _waiting_keys() -> tuple[str, str]:
    """(the set of waiting visits, the marker of a published task), named after the
    database, so that apps sharing a Redis keep apart."""
    database = str(current_app.config["SQLALCHEMY_DATABASE_URI"]).encode("utf-8")
    name = hashlib.sha256(database).hexdigest()[:16]
    return f"dibao:patterns:{name}:waiting", f"dibao:patterns:{name}:scheduled"


def _pattern_redis() -> redis.Redis | None:
    """The broker's Redis when pattern checks wait (a delay is set and the broker is
    Redis); None: each visit publishes its own task, as without a delay."""
    url = str(current_app.config.get("CELERY_BROKER_URL") or "")
    if current_app.config["DIBAO_PATTERN_DELAY_SECONDS"] <= 0 or not url.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        return None
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = redis.Redis.from_url(
                url, socket_timeout=5.0, socket_connect_timeout=5.0
            )
        return client


def queue_pattern_checks(survey_ids: list[int]) -> None:
    """Let these new visits' pattern checks wait for the window's task (publishing it
    if none is), or publish one task per visit when nothing waits."""
    if not survey_ids:
        return
    tasks = current_app.extensions["celery"].tasks
    client = _pattern_redis()
    if client is None:
        for survey_id in survey_ids:
            tasks[check_patterns_task.name].delay(survey_id)
        return
    delay = float(current_app.config["DIBAO_PATTERN_DELAY_SECONDS"])
    waiting, scheduled = _waiting_keys()
    pipe = client.pipeline(transaction=True)
    pipe.sadd(waiting, *survey_ids)
    # The marker outlives the task's countdown: a lost message is replaced then.
    pipe.set(scheduled, "1", nx=True, ex=int(delay) + 60)
    _added, first = pipe.execute()
    if first:
        tasks[check_waiting_patterns_task.name].apply_async(countdown=delay)


@shared_task(
    name="server.visits.tasks.check_waiting_patterns_task",
    ignore_result=True,
    acks_late=True,
    max_retries=3,
    default_retry_delay=30,
)
def check_waiting_patterns_task() -> int:
    """The pattern checks of every visit waiting in Redis, once per caseworker; the
    number of visits newly flagged. Safe to run twice (a second run finds none)."""
    client = _pattern_redis()
    if client is None:
        return 0
    waiting, scheduled = _waiting_keys()
    # Clear the marker first: a visit added from now on publishes a new task.
    client.delete(scheduled)
    batch = f"{waiting}:{uuid.uuid4().hex}"
    try:
        client.rename(waiting, batch)
    except redis.ResponseError:  # nothing waits
        return 0
    survey_ids = sorted(int(v) for v in client.smembers(batch))
    try:
        flagged = check_after_uploads(survey_ids)
        db.session.commit()
    except Exception:
        db.session.rollback()
        client.sadd(waiting, *survey_ids)  # back in the set, for the next window's task
        client.delete(batch)
        raise
    client.delete(batch)
    return flagged


def enqueue_upload_work(received: ReceivedSurvey) -> None:
    """After an upload's commit: the slow work of its new photos and, for a new visit,
    the pattern checks of its caseworker. A failure here never fails the upload (it is
    committed; the nightly run checks the patterns again)."""
    # The id without reloading the expired row (the commit expired it).
    identity = inspect(received.survey).identity
    survey_id = identity[0] if received.created and identity else None
    if background.mode() == "thread":
        background.submit(received.new_photos, None if survey_id is None else int(survey_id))
        return
    enqueue_photo_work(received.new_photos)
    if survey_id is None:
        return
    try:
        queue_pattern_checks([int(survey_id)])
    except Exception:  # the upload stands; the nightly run catches up
        db.session.rollback()
        logger.exception("pattern checks of survey %s failed after its upload", survey_id)
