"""Celery entry point: ``celery -A server.celery_worker worker --loglevel INFO``, and
``celery -A server.celery_worker beat`` for the periodic tasks."""

from server import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]

import sms.tasks  # noqa: E402,F401
