"""Background jobs for received visits: their photos, and the pattern checks across
a caseworker's visits. Tasks take ids, never ORM objects."""

from __future__ import annotations

import logging

from celery import shared_task
from flask import current_app
from sqlalchemy import inspect

from server.extensions import db
from server.region import region
from server.visits import background
from server.visits.faces import enroll_portrait
from server.visits.integrity.pattern_job import check_after_upload, check_recent
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
    task = current_app.extensions["celery"].tasks[check_patterns_task.name]
    try:
        task.delay(int(survey_id))
    except Exception:  # the upload stands; the nightly run catches up
        db.session.rollback()
        logger.exception("pattern checks of survey %s failed after its upload", survey_id)
