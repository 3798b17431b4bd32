"""The SMS gateway port (Twilio adapter and local outbox), the SMS side of the monthly
cycle (``campaign.SmsNotifier``) and Twilio webhooks. Depends on ``server``, never the
reverse: the app factory calls :func:`init_app`, which registers everything ``sms``
adds to the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

# Imported by the Celery app (``server.celery_worker``) through the app's task list.
TASK_MODULES = ("sms.tasks",)


def init_app(app: Flask) -> None:
    """Blueprints (the campaign page, the Twilio webhooks), the ``campaign`` and ``sms``
    commands, the notifier of the monthly cycle, and the Celery tasks with their beat
    schedule."""
    from celery.schedules import crontab

    import sms.models  # noqa: F401  the tables
    from server.celery_app import register_tasks
    from server.monthly import notices
    from sms.campaign import SmsHistory, SmsNotifier
    from sms.cli import campaign_group, sms_group
    from sms.views import bp as campaign_bp
    from sms.webhooks import bp as webhooks_bp

    app.register_blueprint(webhooks_bp)
    app.register_blueprint(campaign_bp)
    app.cli.add_command(sms_group)
    app.cli.add_command(campaign_group)
    notices.register(app, SmsNotifier())
    notices.register_history(app, SmsHistory())  # the demo seeder's past messages
    register_tasks(
        app,
        TASK_MODULES,
        {
            # The monthly cycle: each hour, whichever step is due (open on the 20th, the
            # follow-up on the 23rd, the close when the window ends) and not done.
            "sms-campaign-tick": {
                "task": "sms.tasks.campaign_tick_task",
                "schedule": crontab(minute=2),
            },
            # Messages due now (new ones, retries after backoff, expired leases).
            "sms-send-due": {
                "task": "sms.tasks.send_due_task",
                "schedule": crontab(),
            },
        },
    )
