"""Background jobs for faces. Tasks take ids, never ORM objects."""

from __future__ import annotations

from celery import shared_task

from server.extensions import db
from server.faces.service import enroll_portrait


@shared_task(ignore_result=True, acks_late=True, max_retries=3, default_retry_delay=30)
def enroll_portrait_task(survey_photo_id: int) -> None:
    enroll_portrait(survey_photo_id)
    db.session.commit()
