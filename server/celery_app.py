"""Celery wired to the Flask app (the pattern of Flask's own Celery example):
every task runs inside an app context. Without CELERY_BROKER_URL tasks run eagerly,
in-process, so the embedded default needs no broker.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.schedules import crontab
from flask import Flask


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    broker = app.config.get("CELERY_BROKER_URL")
    celery = Celery(app.name, task_cls=FlaskTask)
    celery.config_from_object(
        {
            "broker_url": broker or "memory://",
            "task_always_eager": not broker,
            "task_eager_propagates": True,
            "task_ignore_result": True,
            "worker_prefetch_multiplier": 1,
            "broker_connection_retry_on_startup": True,
            "timezone": "Asia/Shanghai",
            "beat_schedule": {
                # Proof-of-life frames past their retention period, every night.
                "purge-proof-of-life-frames": {
                    "task": "server.proof_of_life.tasks.purge_frames_task",
                    "schedule": crontab(hour=3, minute=17),
                },
                # The SMS campaign: each hour, whichever step is due (open on the 20th,
                # the follow-up on the 23rd, the close when the window ends) and not done.
                "sms-campaign-tick": {
                    "task": "sms.tasks.campaign_tick_task",
                    "schedule": crontab(minute=2),
                },
                # The public snapshot, when something changed or it is getting old.
                "public-refresh": {
                    "task": "server.public.tasks.refresh_public_task",
                    "schedule": crontab(),
                },
                # Messages due now (new ones, retries after backoff, expired leases).
                "sms-send-due": {
                    "task": "sms.tasks.send_due_task",
                    "schedule": crontab(),
                },
            },
        }
    )
    celery.set_default()
    app.extensions["celery"] = celery
    return celery
