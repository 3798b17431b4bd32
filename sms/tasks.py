"""Celery tasks: the hourly campaign tick and the sender (Celery beat in production,
``server/celery_app.py``; ``dibao campaign ...`` does the same from cron or by hand).

Without a broker (the embedded default) tasks run eagerly, in the calling process.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from celery import shared_task
from flask import current_app

from server import clock
from server.monthly import cycle
from sms import sender, shared_rate
from sms.service import gateway

logger = logging.getLogger(__name__)

# A sending task stops after this long and queues its successor, so that one task never
# holds a worker for hours and a restarted worker picks the work up within a minute.
SEND_BUDGET_S = 50.0


def _now() -> datetime:
    return clock.utcnow()


def enqueue_sending() -> None:
    """Queue a sending task with the current Flask app's Celery (eager without a
    broker: it runs right here)."""
    current_app.extensions["celery"].tasks[send_due_task.name].delay()


@shared_task(ignore_result=True)
def send_due_task() -> dict[str, Any]:
    report = sender.send_due(
        gateway(),
        clock=_now,
        rate_per_s=current_app.config["SMS_RATE_PER_SECOND"],
        throttle=shared_rate.throttle(current_app.config),  # one rate for every worker
        budget_s=SEND_BUDGET_S,
        lease=timedelta(seconds=current_app.config["SMS_CLAIM_LEASE_SECONDS"]),
    )
    if report.handled:
        logger.info(
            "sms: %d sent, %d failed, %d to retry, %d cancelled",
            report.sent,
            report.failed,
            report.retrying,
            report.cancelled,
        )
    if not report.outside_hours and report.handled and sender.due(_now()):
        enqueue_sending()
    return {"sent": report.sent, "failed": report.failed, "cancelled": report.cancelled}


@shared_task(ignore_result=True)
def campaign_tick_task() -> list[str]:
    """Run whichever campaign steps are due and not yet finished, then send."""
    done = cycle.tick(now=_now())
    if done:
        logger.info("campaign: ran %s", ", ".join(done))
        enqueue_sending()
    return done
