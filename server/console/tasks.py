"""The console's periodic work (Celery beat; ``dibao console rollup`` and
``dibao console refresh`` by hand)."""

from __future__ import annotations

from celery import shared_task
from flask import current_app

from server import clock
from server.console.progress import months_to_roll, rollup
from server.console.summary import refresh
from server.extensions import db


@shared_task(ignore_result=True)
def rollup_task() -> int:
    """Sum up the closed months of the progress trends again (late uploads, late
    passes and back-pay change them); the counts written."""
    now = clock.utcnow()
    written = rollup(months_to_roll(now), now=now)
    db.session.commit()
    return written


@shared_task(ignore_result=True)
def refresh_task() -> int:
    """Count the progress home's numbers of every area again (every minute, when
    ``DIBAO_CONSOLE_REFRESH`` is "background"); the rows written."""
    if current_app.config["DIBAO_CONSOLE_REFRESH"] != "background":
        return 0
    written = refresh(clock.utcnow())
    db.session.commit()
    return written
