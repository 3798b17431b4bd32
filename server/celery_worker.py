"""Celery entry point: ``celery -A server.celery_worker worker --loglevel INFO``."""

from server import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]

import server.faces.tasks  # noqa: E402,F401  register the tasks
