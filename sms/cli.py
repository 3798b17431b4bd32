"""The ``dibao campaign`` and ``dibao sms`` commands (registered on the app by
``sms.init_app``): the monthly cycle's steps by hand or from cron, then sending."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from server import clock
from server.extensions import db
from server.monthly import cycle
from server.region import local_iso
from sms import sender, shared_rate, tasks
from sms.models import SmsMessage
from sms.service import gateway


def month_option(month: str | None) -> str:
    try:
        return cycle.month_or_current(month, now=clock.utcnow())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--month") from exc


@click.group("sms")
def sms_group() -> None:
    """SMS: the outbox (SMS_BACKEND=outbox keeps messages here instead of sending)."""


@sms_group.command("outbox")
@click.option("--month", help="Only this month (YYYY-MM).")
@click.option("--limit", default=50, show_default=True, type=int)
@with_appcontext
def sms_outbox_command(month: str | None, limit: int) -> None:
    """List the messages the outbox kept, newest first (phone numbers masked)."""
    query = select(SmsMessage).where(SmsMessage.provider == "outbox")
    if month:
        query = query.where(SmsMessage.month == month)
    messages = db.session.scalars(
        query.order_by(SmsMessage.sent_at.desc(), SmsMessage.id.desc()).limit(limit)
    ).all()
    if not messages:
        click.echo("the outbox is empty")
    for message in messages:
        phone = message.to_phone
        masked = phone[:3] + "*" * max(0, len(phone) - 7) + phone[-4:] if len(phone) > 7 else "***"
        when = local_iso(message.sent_at) if message.sent_at else "-"
        click.echo(f"{when}  {message.month}  {message.kind.value:<9}  {masked}  {message.body}")


@click.group("campaign")
def campaign_group() -> None:
    """The monthly SMS campaign: open (the 20th), remind (the 23rd), close, status.

    Every step is idempotent: a second run does nothing new, and a run after a crash
    finishes what the first started. Celery beat runs them in production
    (docs/operations.md); these commands are for cron and for people.
    """


def _run_step(step: str, month: str | None, send: bool) -> None:
    chosen = month_option(month)
    actions: dict[str, Callable[..., Any]] = {
        "open": cycle.open_month,
        "remind": cycle.remind,
        "close": cycle.close,
    }
    action = actions[step]
    total = cycle.size(step, chosen)
    try:
        with click.progressbar(length=total, label=f"{step} {chosen}", file=sys.stderr) as bar:
            report = action(chosen, now=clock.utcnow(), progress=bar.update)
    except cycle.CampaignError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(asdict(report), ensure_ascii=False, sort_keys=True))
    if step != "close" and send:
        _send_now()


def _send_now() -> None:
    """Hand the queued messages to Celery, or send them here without a broker."""
    if current_app.config.get("CELERY_BROKER_URL"):
        tasks.enqueue_sending()
        click.echo("sending: handed to the Celery workers")
        return
    now = clock.utcnow()
    total = sender.due(now)
    if not sender.sending_hours(now):
        click.echo("outside the sending hours: messages stay queued until they open")
        return
    throttle = shared_rate.throttle(current_app.config)  # shared with running workers
    with click.progressbar(length=total, label="sending", file=sys.stderr) as bar:
        sent = failed = 0
        while True:
            report = sender.send_due(
                gateway(),
                clock=clock.utcnow,
                rate_per_s=current_app.config["SMS_RATE_PER_SECOND"],
                throttle=throttle,
                limit=100,
                lease=timedelta(seconds=current_app.config["SMS_CLAIM_LEASE_SECONDS"]),
            )
            bar.update(report.handled)
            sent, failed = sent + report.sent, failed + report.failed
            if not report.handled or report.outside_hours:
                break
    click.echo(f"sent {sent}, failed {failed}, still due {sender.due(clock.utcnow())}")


_SEND = click.option(
    "--send/--no-send",
    default=True,
    show_default=True,
    help="Send the queued messages now (to Celery when a broker is configured).",
)
_MONTH = click.option("--month", help="YYYY-MM (default: this month, local time).")


@campaign_group.command("open")
@_MONTH
@_SEND
@with_appcontext
def campaign_open_command(month: str | None, send: bool) -> None:
    """Create the month's records and reminders; members without a usable number get a
    caseworker task."""
    _run_step("open", month, send)


@campaign_group.command("remind")
@_MONTH
@_SEND
@with_appcontext
def campaign_remind_command(month: str | None, send: bool) -> None:
    """Queue the follow-up for members still pending."""
    _run_step("remind", month, send)


@campaign_group.command("close")
@_MONTH
@with_appcontext
def campaign_close_command(month: str | None) -> None:
    """Close the window: pending -> missed, payments suspended, unsent messages cancelled."""
    _run_step("close", month, send=False)


@campaign_group.command("send")
@with_appcontext
def campaign_send_command() -> None:
    """Send every message that is due now (retries included)."""
    _send_now()


@campaign_group.command("status")
@_MONTH
@with_appcontext
def campaign_status_command(month: str | None) -> None:
    """What each step did, and counts by status (no personal data)."""
    click.echo(json.dumps(cycle.status(month_option(month)), ensure_ascii=False, indent=2))
