"""Background jobs for received visit photos. Tasks take ids, never ORM objects."""

from __future__ import annotations

from celery import shared_task
from flask import current_app

from server.extensions import db
from server.visits.faces import enroll_portrait
from server.visits.service import analyse_photo


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
    """Queue the slow work of newly stored photos; call after the commit. In eager
    mode it runs right here, and its flags show on the next read of the survey."""
    # End the caller's transaction first: in eager mode the job runs right here with a
    # session of its own, and on SQLite an open transaction holds the write lock.
    db.session.close()
    # The task as registered with the current Flask app's Celery (tests run several apps).
    if not survey_photo_ids:
        return
    task = current_app.extensions["celery"].tasks[process_photos_task.name]
    task.delay(list(survey_photo_ids))
