"""Celery entry point: ``celery -A server.celery_worker worker --loglevel INFO``, and
``celery -A server.celery_worker beat`` for the periodic tasks. The task modules are
the ones the app registered (``server.celery_app.TASK_MODULES`` and the adapters'
``register_tasks``)."""

from server import create_app
from server.celery_app import import_task_modules

flask_app = create_app()
celery = flask_app.extensions["celery"]
import_task_modules(celery)
