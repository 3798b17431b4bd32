"""The snapshot refresher (Celery beat every 5 seconds, or ``dibao public refresh``)."""

from __future__ import annotations

from celery import shared_task

from server.public.changes import refresh


@shared_task(ignore_result=True)
def refresh_public_task() -> int | None:
    """Absorb the recorded changes into the public snapshot (a full build when due or
    needed); the id of the snapshot, or None when nothing was done."""
    built = refresh()
    return built.id if built else None
