"""Periodic proof-of-life work (Celery beat in production; ``dibao proof-of-life
purge-frames`` from cron or by hand)."""

from __future__ import annotations

from celery import shared_task

from server import clock
from server.extensions import db
from server.proof_of_life.service import purge_old_frames
from server.storage import blob_store


@shared_task(ignore_result=True)
def purge_frames_task() -> int:
    deleted = purge_old_frames(now=clock.utcnow(), store=blob_store())
    db.session.commit()
    return deleted
