"""The console's nightly work (Celery beat; ``dibao console rollup`` by hand)."""

from __future__ import annotations

from celery import shared_task

from server import clock
from server.console.progress import months_to_roll, rollup
from server.extensions import db


@shared_task(ignore_result=True)
def rollup_task() -> int:
    """Sum up the closed months of the progress trends again (late uploads, late
    passes and back-pay change them); the counts written."""
    now = clock.utcnow()
    written = rollup(months_to_roll(now), now=now)
    db.session.commit()
    return written
