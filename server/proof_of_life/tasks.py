"""Periodic proof-of-life work (Celery beat in production; ``dibao proof-of-life
purge-frames`` from cron or by hand)."""

from __future__ import annotations

from celery import shared_task
from flask import current_app

from server import clock
from server.extensions import db
from server.proof_of_life.service import purge_old_frames


@shared_task(ignore_result=True)
def purge_frames_task() -> int:
    deleted = purge_old_frames(now=clock.utcnow(), store=current_app.extensions["dibao.blobs"])
    db.session.commit()
    return deleted
