"""Celery wired to the Flask app (the pattern of Flask's own Celery example):
every task runs inside an app context. Without CELERY_BROKER_URL tasks run eagerly,
in-process, so the embedded default needs no broker.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from celery import Celery, Task
from celery.schedules import crontab
from flask import Flask

# The server's own task modules.
TASK_MODULES = (
    "server.visits.tasks",
    "server.proof_of_life.tasks",
    "server.public.tasks",
    "server.console.tasks",
)


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
            # The task modules a worker imports (server.celery_worker); an adapter
            # adds its own with register_tasks (sms.init_app).
            "include": list(TASK_MODULES),
            "beat_schedule": {
                # Proof-of-life frames past their retention period, every night.
                "purge-proof-of-life-frames": {
                    "task": "server.proof_of_life.tasks.purge_frames_task",
                    "schedule": crontab(hour=3, minute=17),
                },
                # The pattern checks across visits of every caseworker's last days
                # (docs/field-visits.md, "Patterns across visits").
                "visit-patterns": {
                    "task": "server.visits.tasks.nightly_patterns_task",
                    "schedule": crontab(hour=3, minute=41),
                },
                # The progress trends' closed months summed up again, every night
                # (and so the month just closed, on its first night).
                "console-rollup": {
                    "task": "server.console.tasks.rollup_task",
                    "schedule": crontab(hour=2, minute=41),
                },
                # The progress home's numbers of every area (when the summary is
                # refreshed in the background: DIBAO_CONSOLE_REFRESH).
                "console-refresh": {
                    "task": "server.console.tasks.refresh_task",
                    "schedule": crontab(),
                },
                # The public snapshot absorbs recorded changes (a full build when due).
                "public-refresh": {
                    "task": "server.public.tasks.refresh_public_task",
                    "schedule": timedelta(seconds=5),
                },
            },
        }
    )
    celery.set_default()
    app.extensions["celery"] = celery
    return celery


def register_tasks(
    app: Flask, modules: Iterable[str], beat_schedule: Mapping[str, Any] | None = None
) -> None:
    """Add an adapter's task modules (imported by the worker) and periodic tasks."""
    conf = app.extensions["celery"].conf
    conf.include = [*conf.include, *modules]
    conf.beat_schedule = {**conf.beat_schedule, **(beat_schedule or {})}


def import_task_modules(celery: Celery) -> None:
    """Import every registered task module, so that the worker knows their tasks."""
    for name in celery.conf.include:
        importlib.import_module(name)
