"""The snapshot refresher (Celery beat every minute, or ``dibao public refresh``)."""

from __future__ import annotations

from celery import shared_task

from server.public.changes import refresh


@shared_task(ignore_result=True)
def refresh_public_task() -> int | None:
    """Rebuild the public snapshot when a change was recorded or it is older than
    ``[public] refresh_minutes``; the id of the new snapshot, or None."""
    built = refresh()
    return built.id if built else None
