"""The slow work of a received visit after the answer, in the embedded default (no
broker): its photos' decoding, reuse checks, thumbnails and face enrollment, then the
pattern checks of its caseworker (docs/odk-collect.md, "Photo work after the answer").

``DIBAO_BACKGROUND_JOBS`` (without CELERY_BROKER_URL; with one, Celery does this work):

- ``thread`` (default): one worker thread per process takes the jobs from a queue,
  each inside an app context with a session of its own;
- ``inline``: the work runs in the request, before the answer (tests, and the
  behaviour before this module).

Nothing is lost when a process dies: a photo is pending until its work is done (no
thumbnail yet: the work of one photo commits in one transaction), and every
``DIBAO_JOB_SWEEP_SECONDS`` (and once when the thread starts) the thread takes up the
photos pending for longer than ``DIBAO_JOB_SWEEP_GRACE_SECONDS``. The pattern checks
of a visit whose job was lost run again with the nightly checks (``dibao visits
patterns``). Whichever way the work runs, the visit gets the same flags.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask, current_app
from sqlalchemy import select

from server import clock
from server.extensions import db
from server.transactions import commits_per_batch
from server.visits.faces import enroll_portrait
from server.visits.integrity.pattern_job import check_after_uploads
from server.visits.models import SurveyPhoto
from server.visits.service import analyse_photo

logger = logging.getLogger(__name__)

MODES = ("thread", "inline")
SWEEP_BATCH = 100
# Jobs the thread takes off its queue at once: their photos one by one, then the
# pattern checks once per caseworker.
JOB_BATCH = 50


@dataclass(frozen=True)
class Job:
    """The work of one upload: its new photos, then (a new visit) its pattern checks."""

    photo_ids: tuple[int, ...]
    survey_id: int | None


def mode(app: Flask | None = None) -> str:
    """ "celery" with a broker, else the configured DIBAO_BACKGROUND_JOBS."""
    config = (app or current_app).config
    if config.get("CELERY_BROKER_URL"):
        return "celery"
    return str(config["DIBAO_BACKGROUND_JOBS"])


@commits_per_batch
def process_photo(survey_photo_id: int) -> bool:
    """The whole work of one received photo in one transaction, under a lock on its
    row (another process's sweep skips it meanwhile); False if it was not pending or
    is being done elsewhere. The same functions as the Celery task, in the same order."""
    claimed = db.session.scalar(
        select(SurveyPhoto.id)
        .where(
            SurveyPhoto.id == survey_photo_id,
            SurveyPhoto.received_at.is_not(None),
            SurveyPhoto.thumbnail_sha256.is_(None),
        )
        .with_for_update(skip_locked=True)
    )
    if claimed is None:
        db.session.rollback()
        return False
    analyse_photo(survey_photo_id)
    enroll_portrait(survey_photo_id)
    db.session.commit()
    return True


@commits_per_batch
def run_photos(jobs: Sequence[Job]) -> None:
    """The photos of the jobs in the order queued, inside an app context. A failing
    photo does not stop the others (it stays pending: the sweep tries it again)."""
    for job in jobs:
        for photo_id in job.photo_ids:
            try:
                process_photo(photo_id)
            except Exception:
                db.session.rollback()
                logger.exception("background work of survey photo %s failed", photo_id)


@commits_per_batch
def run_patterns(survey_ids: Sequence[int]) -> None:
    """The pattern checks of new visits, once per caseworker (they see every visit
    received by then). A failure is logged: the nightly run checks them again."""
    if not survey_ids:
        return
    try:
        check_after_uploads(survey_ids)
        db.session.commit()
    except Exception:
        db.session.rollback()
        logger.exception("pattern checks of surveys %s failed", list(survey_ids))


def pending_photos(grace: timedelta, limit: int = SWEEP_BATCH) -> list[int]:
    """Received photos whose work is not done, received longer than ``grace`` ago."""
    cutoff = clock.utcnow() - grace
    return list(
        db.session.scalars(
            select(SurveyPhoto.id)
            .where(
                SurveyPhoto.thumbnail_sha256.is_(None),
                SurveyPhoto.received_at.is_not(None),
                SurveyPhoto.received_at < cutoff,
            )
            .order_by(SurveyPhoto.received_at, SurveyPhoto.id)
            .limit(limit)
        )
    )


@commits_per_batch
def sweep(grace: timedelta) -> int:
    """Do the work of every photo pending longer than ``grace``; the number done."""
    done = 0
    tried: set[int] = set()
    while True:
        batch = [i for i in pending_photos(grace) if i not in tried]
        db.session.rollback()
        if not batch:
            return done
        for photo_id in batch:
            tried.add(photo_id)
            try:
                done += process_photo(photo_id)
            except Exception:
                db.session.rollback()
                logger.exception("sweep: work of survey photo %s failed", photo_id)


class Worker:
    """The process's background thread: jobs from a queue, a sweep now and then.

    Photos are worked on as soon as they are queued. The pattern checks of new
    visits wait ``DIBAO_PATTERN_DELAY_SECONDS`` from the first visit queued, then run
    once for every visit queued meanwhile (once per caseworker): a burst of uploads
    costs one look at each caseworker's month, not one per upload. :func:`wait_idle`
    runs them at once.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.pid = os.getpid()
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.sweep_every = float(app.config["DIBAO_JOB_SWEEP_SECONDS"])
        self.grace = timedelta(seconds=float(app.config["DIBAO_JOB_SWEEP_GRACE_SECONDS"]))
        self.pattern_delay = float(app.config["DIBAO_PATTERN_DELAY_SECONDS"])
        self.flush = threading.Event()
        self.thread = threading.Thread(target=self._run, name="dibao-background", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self._sweep()  # at start: what a dead process left pending
        last_sweep = time.monotonic()
        held: list[int] = []  # new visits whose pattern checks wait
        due = 0.0  # when they run
        while True:
            now = time.monotonic()
            timeout = max(0.0, last_sweep + self.sweep_every - now)
            if held:
                timeout = min(timeout, max(0.0, due - now))
            jobs = self._take(timeout)
            if jobs:
                if any(job.photo_ids for job in jobs):  # nothing to open a session for
                    self._in_app(run_photos, jobs)
                for job in jobs:
                    if job.survey_id is None:
                        self.jobs.task_done()
                    else:
                        if not held:
                            due = time.monotonic() + self.pattern_delay
                        held.append(job.survey_id)
            if held and (self.flush.is_set() or time.monotonic() >= due):
                self.flush.clear()
                self._in_app(run_patterns, held)
                for _ in held:
                    self.jobs.task_done()
                held = []
            elif not held:
                self.flush.clear()  # a wake with nothing held: the next burst waits
            if time.monotonic() >= last_sweep + self.sweep_every:
                self._sweep()
                last_sweep = time.monotonic()

    def _take(self, timeout: float) -> list[Job]:
        """The next jobs queued (at most JOB_BATCH), waiting at most ``timeout``."""
        try:
            jobs = [self.jobs.get(timeout=timeout) if timeout > 0 else self.jobs.get_nowait()]
        except queue.Empty:
            return []
        while len(jobs) < JOB_BATCH:
            try:
                jobs.append(self.jobs.get_nowait())
            except queue.Empty:
                break
        return jobs

    def _in_app(self, work: Callable[[Any], None], argument: Any) -> None:
        try:
            with self.app.app_context():
                work(argument)
                db.session.remove()
        except Exception:  # never let the thread die
            logger.exception("background jobs failed")

    def wake(self) -> None:
        """Run the waiting pattern checks now (an empty job wakes the thread)."""
        self.flush.set()
        self.jobs.put(Job((), None))

    def _sweep(self) -> None:
        try:
            with self.app.app_context():
                done = sweep(self.grace)
                db.session.remove()
            if done:
                logger.info("background sweep: %s pending photos done", done)
        except Exception:
            logger.exception("background sweep failed")


_workers: dict[int, Worker] = {}
_lock = threading.Lock()


def worker(app: Flask) -> Worker:
    """This process's worker for the app, started on first use (a forked process,
    such as a gunicorn worker, starts its own)."""
    with _lock:
        current = _workers.get(id(app))
        if current is None or current.pid != os.getpid() or not current.thread.is_alive():
            current = _workers[id(app)] = Worker(app)
        return current


def start(app: Flask) -> None:
    """Start the thread (and its first sweep) now, when the app runs in thread mode."""
    if mode(app) == "thread":
        worker(app)


def submit(photo_ids: Sequence[int], survey_id: int | None) -> None:
    """Queue an upload's work for this process's background thread (after the commit)."""
    if not photo_ids and survey_id is None:
        return
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    worker(app).jobs.put(Job(tuple(photo_ids), survey_id))


def wait_idle(app: Flask, timeout: float = 60.0) -> bool:
    """Run the waiting pattern checks now and wait until this process's queue is empty
    and its jobs done (tests, benchmarks); False on timeout."""
    current = _workers.get(id(app))
    if current is None:
        return True
    current.wake()
    done = threading.Event()

    def join() -> None:
        current.jobs.join()
        done.set()

    threading.Thread(target=join, daemon=True).start()
    return done.wait(timeout)
