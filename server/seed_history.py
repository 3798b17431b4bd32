"""The seeded league's past: field visits, proof-of-life months, SMS and payments.

``server.seed`` writes the households; for each one it hands this module the rows it
wrote (with their ids) and this module adds, for the last ``months`` months and the month
in progress:

- **visits** (``surveys``): the initial survey of a case that reached "surveyed" in the
  period (on the day of its ``record_survey`` event, by the caseworker who recorded it),
  the periodic reviews on their schedule (``server.seed._reviews``: most on time, some
  late, the overdue ones missing), and the caseworker's home visits that assisted a
  member's monthly proof of life. Each caseworker's day is a sequence: from about 08:30,
  visits of 15-60 minutes with 5-35 minutes of travel between them, on the caseworker's
  field days; fixes within a few tens of metres of the home, accuracies 3-30 m;
- **planted suspicious visits**: a fix kilometres from the home, a mock location, several
  households "visited" from one spot, and (with photos) a photo reused from another
  household. Their ``survey_flags`` rows come from the real checks of
  ``server.visits.checks`` (``check_location``, and with photos ``check_photos``,
  ``check_travel`` and ``check_photo_reuse`` over every visit);
- **proof of life** (``pol_months``, ``pol_attempts``): every living designated member of
  an approved household, every month after the approval: passed (by link or assisted by
  the caseworker), in review then decided, failed, exempt, missed (some passed later by a
  reviewer's decision within the grace period); the month in progress has members still
  pending;
- **SMS** through the registered message history (``server.monthly.notices``; the sms
  package writes its own rows): the reminder on the window's first day and the follow-up,
  delivered, sent or failed; a failed or missing number gives a caseworker contact task;
- **payments** (``payment_months``) for every closed month, as ``close_month`` and
  ``settle`` would leave them: suspended when a member's month was missed or failed at
  the close, restored (back-pay in the payroll cut after the decision) when a reviewer
  passed it later within the grace period.

Deterministic for a given seed and date: it draws from its own generator, so the
households themselves are the same with or without history. Demo photos
(:func:`add_photos`) are small JPEGs drawn with Pillow, stored through the blob store
like uploads, with their ``survey_photos`` rows (sha256, EXIF, phash, thumbnail).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Table, func, select

from server.cases.models import CaseState
from server.extensions import db
from server.monthly.notices import Notice, NoticeKind, PastMessage, message_history
from server.months import local_moment, month_after, month_text, window
from server.payments.models import PaymentMonth, PaymentStatus
from server.proof_of_life import links
from server.proof_of_life.models import (
    ContactReason,
    ContactTask,
    MonthStatus,
    Outcome,
    ProofOfLifeAttempt,
    ProofOfLifeMonth,
    StartedBy,
)
from server.region import RegionRules
from server.visits.checks import (
    Flag,
    GpsFix,
    PhotoEvidence,
    PreviousVisit,
    check_location,
    check_photo_reuse,
    check_photos,
    check_travel,
)
from server.visits.models import (
    PhotoKind,
    ReviewStatus,
    Survey,
    SurveyFlag,
    SurveyPhoto,
    SurveyStatus,
)

SURVEYS = cast(Table, Survey.__table__)
FLAGS = cast(Table, SurveyFlag.__table__)
POL_MONTHS = cast(Table, ProofOfLifeMonth.__table__)
ATTEMPTS = cast(Table, ProofOfLifeAttempt.__table__)
PAYMENTS = cast(Table, PaymentMonth.__table__)
TASKS = cast(Table, ContactTask.__table__)
# Written in this order (foreign keys); the SMS table is the registered history's.
TABLES = (SURVEYS, FLAGS, POL_MONTHS, ATTEMPTS, PAYMENTS, TASKS)

SMS_MONTHS = 3  # the outbox's history: the month in progress and the two before it
VISITS_PER_DAY = 10  # what one caseworker's field day holds
SPOUSE_FACTOR = 1.7  # designated members per household when spouses prove life too
DAY_STARTS = time(8, 30)
DAY_ENDS = time(18, 0)
EXEMPT_REASONS = ("住院治疗", "外出务工，已电话核实", "重度残疾，入户核实")
DECISION_REASONS = ("入户核实本人健在", "视频通话核实", "村委会证明")
HOUSING = ("砖瓦房", "土坯房", "楼房", "彩钢房")
# SMS error codes (Twilio's): unreachable, unknown number, landline.
FAILED_CODES = (30003, 30005, 30006)
CHALLENGES = ("blink,turn_left", "turn_right,blink", "smile,turn_left")
REASONS = {Outcome.REVIEW: "face_uncertain", Outcome.FAILED: "face_mismatch", Outcome.PASSED: ""}
# Every column of a pol_attempts row (the COPY needs them all), as a finished session.
_ATTEMPT: dict[str, Any] = {
    "device_token_id": None,
    "flags": "",
    "submitted_at": None,
    "reasons": "",
    "distance": None,
    "model_name": None,
    "model_version": None,
    "measurements": None,
    "frame_hashes": None,
    "frames_deleted_at": None,
    "guided": False,
    "step": None,
    "guide_state": None,
    "stopped_step": None,
    "stopped_why": None,
}


@dataclass(frozen=True)
class HistoryOptions:
    months: int = 12  # closed months before the month in progress (0: no history)
    visits: int | None = None  # total visits to reach with assisted visits (None: natural)
    photos: bool = False  # demo: synthesized photos, and every check over every visit


@dataclass
class HistoryCounts:
    visits: int = 0
    flags: int = 0
    pol_months: int = 0
    attempts: int = 0
    payments: int = 0
    messages: int = 0
    contact_tasks: int = 0
    photos: int = 0
    caseworkers: int = 0

    def as_json(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Visit:
    """A planned visit, before its row: what the checks need."""

    row: dict[str, Any]
    household_id: int
    home: tuple[float, float]
    planted: str | None = None


@dataclass
class _MonthPlan:
    """One member's proof of life for one month."""

    status: MonthStatus
    attempt: Outcome | None = None
    attempt_at: datetime | None = None
    assisted: bool = False
    passed_at: datetime | None = None
    decided_at: datetime | None = None
    decision: MonthStatus | None = None  # the reviewer's decision, if any
    blocked_at_close: bool = False  # missed or failed when the window closed
    reason: str | None = None


@dataclass
class Staff:
    """Who works where: a township's caseworkers (the first is the one on the case
    events), its reviewer; each village's township."""

    caseworkers: dict[int, list[int]]  # township id -> user ids
    reviewers: dict[int, int]  # township id -> user id
    township_of: dict[int, int]  # village id -> township id


class History:
    def __init__(
        self,
        options: HistoryOptions,
        *,
        seed: int,
        rules: RegionRules,
        today: date,
        now: datetime,
        secret_key: str,
        staff: Staff,
        households: int,
    ) -> None:
        self.options = options
        self.rng = random.Random(f"history-{seed}")
        self.rules = rules
        self.today = today
        self.now = now
        self.zone = ZoneInfo(rules.timezone)
        self.key = links.link_key(secret_key)
        self.staff = staff
        self.counts = HistoryCounts()
        self.current = month_text(today.year, today.month)
        self.months = [month_after(self.current, -k) for k in range(options.months, 0, -1)]
        self.start = (
            local_moment(self.months[0], 1, rules.timezone).date() if self.months else today
        )
        self.windows = {
            m: window(m, rules.proof_of_life, rules.timezone) for m in [*self.months, self.current]
        }
        self.assisted_share, self.spouses = _assisted_share(options, households)
        self.thresholds = rules.visit_thresholds
        self.history = message_history()
        self.sms_from = month_after(self.current, 1 - SMS_MONTHS)
        self.payloads = [
            json.dumps(
                {
                    "housing": {"type": kind, "rooms": rooms},
                    "income": {},
                    "members": [],
                    "notes": "",
                    "track": [],
                },
                ensure_ascii=False,
                sort_keys=True,
            )
            for kind in HOUSING
            for rooms in range(1, 5)
        ]
        self.buffers: dict[str, list[dict[str, Any]]] = {}
        self.next_ids: dict[str, int] = {}
        self.days: dict[tuple[int, date], datetime] = {}
        self.last_fix: dict[int, tuple[float, float, datetime]] = {}
        self.planted = {"far": 0, "mock": 0, "spot": 0}
        self.visits: list[_Visit] = []  # kept for the checks (photos mode) only
        load = max(1.0, self.expected_visits(households) / max(1, _caseworker_count(staff)))
        per_field_day = load / max(1, 21 * max(1, options.months))
        # A caseworker with few visits gathers them on two field days a week.
        self.field_days = (1, 3) if per_field_day < 3 else (0, 1, 2, 3, 4)

    # ------------------------------------------------------------------ ids, rows

    @staticmethod
    def expected_visits(households: int) -> float:
        return households * 2.0

    def reserve_ids(self, tables: Iterable[Table]) -> None:
        """Explicit ids from max(id) + 1 (the sequences are set after the load)."""
        for table in tables:
            found = db.session.scalar(select(func.max(table.c.id)))
            self.next_ids[table.name] = (found or 0) + 1

    def _add(self, table: Table, row: dict[str, Any]) -> int:
        row_id = self.next_ids[table.name]
        self.next_ids[table.name] = row_id + 1
        row["id"] = row_id
        self.buffers.setdefault(table.name, []).append(row)
        return row_id

    def flush(self, write: Callable[[Table, list[dict[str, Any]]], None]) -> None:
        for table in TABLES:
            rows = self.buffers.pop(table.name, [])
            if rows:
                write(table, rows)
        if self.history is not None:
            rows = self.buffers.pop(self.history.table.name, [])
            if rows:
                write(self.history.table, rows)

    def tables(self) -> list[Table]:
        return [*TABLES, *([self.history.table] if self.history is not None else [])]

    # ------------------------------------------------------------------ a household

    def household(
        self,
        household_id: int,
        household: dict[str, Any],
        members: list[dict[str, Any]],
        events: list[dict[str, Any]],
        reviews: list[date],
        village_id: int,
        caseworker_id: int,
    ) -> None:
        rng = self.rng
        township = self.staff.township_of[village_id]
        workers = self.staff.caseworkers[township]
        own = workers[household_id % len(workers)]
        home = (household["home_lat"], household["home_lon"])
        for event in events:
            if event["action"] == "record_survey" and self.start <= event["at"].date() < self.today:
                visit = self._visit(
                    household_id, home, caseworker_id, event["at"].date(), "initial_survey"
                )
                if visit is not None:
                    event["at"] = visit.row["finished_at"]
        for day in reviews:
            if self.start <= day < self.today:
                self._visit(household_id, home, own, day, "periodic_review")
        if household["state"] != CaseState.APPROVED.value or household["approved_on"] is None:
            return
        first = month_text(household["approved_on"].year, household["approved_on"].month)
        reviewer = self.staff.reviewers[township]
        designated = []
        for member in members:
            if self.spouses and member["relation"] == "spouse":
                member["proof_of_life_required"] = True  # the benchmark's volume
            if not member["proof_of_life_required"] or not member["alive"]:
                continue
            if member["phone"] is not None and rng.random() < 0.03:
                member["phone"] = None  # no mobile on file: a contact task each month
            designated.append(member)
        for month in [*self.months, self.current]:
            if month <= first:
                continue
            plans = []
            for member in designated:
                plan = self._plan(month)
                self._month(household_id, household, member, month, plan, own, reviewer, home)
                plans.append(plan)
            if month != self.current and plans:
                self._payment(household_id, household, month, plans, self.windows[month][1])

    # ------------------------------------------------------------------ visits

    def _slot(
        self, caseworker: int, day: date, *, latest: date
    ) -> tuple[datetime, datetime] | None:
        """The next free slot of the caseworker's day, moving to the next day when the
        day is full; None when every day up to ``latest`` is full."""
        rng = self.rng
        while True:
            cursor = self.days.get((caseworker, day))
            if cursor is None:
                opening = datetime.combine(day, DAY_STARTS, self.zone)
                cursor = opening + timedelta(minutes=rng.randrange(0, 40))
            started = cursor + timedelta(minutes=rng.randrange(5, 36))
            finished = started + timedelta(minutes=rng.randrange(15, 61), seconds=rng.randrange(60))
            if finished.timetz() > DAY_ENDS.replace(tzinfo=self.zone):
                if day >= latest:
                    return None
                day += timedelta(days=1)
                continue
            self.days[(caseworker, day)] = finished
            return started.astimezone(UTC), finished.astimezone(UTC)

    def _field_day(self, day: date) -> date:
        """The caseworker's field day on or after ``day`` (before today)."""
        moved = day
        while moved.weekday() not in self.field_days:
            moved += timedelta(days=1)
        return moved if moved < self.today else day

    def _visit(
        self,
        household_id: int,
        home: tuple[float, float],
        caseworker: int,
        day: date,
        kind: str,
        *,
        latest: date | None = None,
    ) -> _Visit | None:
        rng = self.rng
        if kind != "assisted_proof_of_life":
            day = self._field_day(day)
        limit = latest or self.today - timedelta(days=1)
        slot = self._slot(caseworker, day, latest=max(limit, day))
        if slot is None or slot[1] >= self.now:
            return None
        started, finished = slot
        accuracy = round(rng.uniform(3, 30), 1)
        lat, lon = _offset(*home, rng, min(60.0, accuracy * 1.5))
        mock = False
        planted = None
        draw = rng.random()
        spot = self.last_fix.get(caseworker)
        if draw < 0.004 or (self.options.photos and self.planted["far"] < 3 and draw < 0.05):
            lat, lon = _offset(*home, rng, 4_000, at_least=1_200)
            planted = "far"
        elif draw < 0.006 or (self.options.photos and self.planted["mock"] < 2 and draw < 0.08):
            mock, planted = True, "mock"
        elif (
            spot is not None
            and spot[2].date() == finished.date()
            and (draw < 0.008 or (self.options.photos and self.planted["spot"] < 3 and draw < 0.1))
        ):
            lat, lon, planted = spot[0], spot[1], "spot"  # filed from the previous visit's spot
        if planted is not None:
            self.planted[planted] += 1
        received = min(finished + timedelta(minutes=rng.randrange(5, 600)), self.now)
        uid = uuid.UUID(int=rng.getrandbits(128), version=4)
        fix_at = finished - timedelta(seconds=rng.randrange(30, 600))
        row: dict[str, Any] = {
            "client_uuid": str(uid),
            "content_hash": hashlib.sha256(uid.bytes).hexdigest(),
            "household_id": household_id,
            "caseworker_id": caseworker,
            "device_token_id": None,
            "kind": kind,
            "status": SurveyStatus.COMPLETE,
            "started_at": started,
            "finished_at": finished,
            "gps_lat": lat,
            "gps_lon": lon,
            "gps_accuracy_m": accuracy,
            "gps_altitude_m": None,
            "gps_fix_at": fix_at,
            "gps_provider": "gps",
            "gps_is_mock": mock,
            "payload": self.payloads[rng.randrange(len(self.payloads))],
            "received_at": received,
            "completed_at": received,
            "review_status": ReviewStatus.RECEIVED,
        }
        survey_id = self._add(SURVEYS, row)
        visit = _Visit(row, household_id, home, planted)
        self.counts.visits += 1
        if self.options.photos:
            self.visits.append(visit)  # every check later, with the photos
        elif planted is not None:
            fix = GpsFix(lat, lon, accuracy, fix_at, mock)
            self._flags(survey_id, check_location(fix, *home, self.thresholds), received)
        self.last_fix[caseworker] = (lat, lon, finished)
        return visit

    def _flags(self, survey_id: int, flags: list[Flag], raised_at: datetime) -> None:
        for flag in flags:
            self._add(
                FLAGS,
                {
                    "survey_id": survey_id,
                    "code": flag.code,
                    "severity": flag.severity,
                    "value": None if flag.value is None else str(flag.value),
                    "threshold": None if flag.threshold is None else str(flag.threshold),
                    "detail": flag.detail,
                    "raised_at": raised_at,
                    "cleared_at": None,
                    "cleared_by_id": None,
                    "clear_reason": None,
                    "extra": {},
                },
            )
            self.counts.flags += 1

    # ------------------------------------------------------------------ proof of life

    def _plan(self, month: str) -> _MonthPlan:
        """What happened to one member's month: a draw, then the times."""
        rng = self.rng
        opens, closes = self.windows[month]
        in_progress = month == self.current
        # The month in progress: its window is treated as open from four days ago
        # (even before the open day) up to now, so that every stage has members.
        begin = max(opens, self.now - timedelta(days=4)) if in_progress else opens
        end = self.now if in_progress else closes
        if begin >= end:
            begin = end - timedelta(days=2)

        def moment(lo: datetime = begin, hi: datetime = end) -> datetime:
            seconds = max(1, int((hi - lo).total_seconds()) - 1)
            return lo + timedelta(seconds=rng.randrange(seconds))

        draw = rng.random()
        if in_progress and draw < 0.35:
            plan = _MonthPlan(MonthStatus.PENDING)
            if rng.random() < 0.3:  # tried and gave up
                plan.attempt, plan.attempt_at = Outcome.INCOMPLETE, moment()
            return plan
        if rng.random() < self.assisted_share:
            at = moment()
            return _MonthPlan(MonthStatus.PASSED, Outcome.PASSED, at, True, passed_at=at)
        draw = rng.random()
        if draw < 0.84:
            at = moment()
            return _MonthPlan(MonthStatus.PASSED, Outcome.PASSED, at, passed_at=at)
        if draw < 0.89:  # an uncertain match: a reviewer decides
            at = moment()
            plan = _MonthPlan(MonthStatus.REVIEW, Outcome.REVIEW, at)
            decided = at + timedelta(hours=rng.randrange(2, 72))
            if not in_progress and decided >= closes and rng.random() < 0.5:
                decided = closes - timedelta(hours=rng.randrange(1, 12))
            if decided < self.now:
                if rng.random() < 0.75:
                    plan.status = plan.decision = MonthStatus.PASSED
                    plan.passed_at = decided
                else:
                    plan.status = plan.decision = MonthStatus.FAILED
                    plan.blocked_at_close = in_progress or decided < closes
                plan.decided_at = decided
                plan.reason = rng.choice(DECISION_REASONS)
            return plan
        if draw < 0.91:
            plan = _MonthPlan(MonthStatus.EXEMPT, decision=MonthStatus.EXEMPT)
            plan.decided_at = moment(begin - timedelta(days=3), end)
            plan.reason = rng.choice(EXEMPT_REASONS)
            return plan
        if in_progress:
            at = moment()
            return _MonthPlan(MonthStatus.PENDING, Outcome.FAILED, at)
        # Missed: still pending at the close; some passed later on a reviewer's decision.
        plan = _MonthPlan(MonthStatus.MISSED, blocked_at_close=True)
        if rng.random() < 0.4:
            plan.attempt, plan.attempt_at = Outcome.INCOMPLETE, moment()
        if rng.random() < 0.45:
            decided = closes + timedelta(hours=rng.randrange(12, 24 * 28))
            if decided < self.now:
                plan.status = plan.decision = MonthStatus.PASSED
                plan.passed_at = plan.decided_at = decided
                plan.reason = rng.choice(DECISION_REASONS)
        return plan

    def _month(
        self,
        household_id: int,
        household: dict[str, Any],
        member: dict[str, Any],
        month: str,
        plan: _MonthPlan,
        caseworker: int,
        reviewer: int,
        home: tuple[float, float],
    ) -> None:
        opens, closes = self.windows[month]
        created = min(opens, self.now - timedelta(days=4)) if month == self.current else opens
        token = links.make_token(self.key, member["id"], month, 1)
        updated = max(
            (t for t in (plan.attempt_at, plan.decided_at, plan.passed_at) if t), default=created
        )
        if plan.status is MonthStatus.MISSED:
            updated = max(updated, closes)
        record = {
            "member_id": member["id"],
            "household_id": household_id,
            "month": month,
            "status": plan.status,
            "window_closes_at": closes,
            "link_generation": 1,
            "link_hash": links.token_hash(token),
            "passed_at": plan.passed_at,
            "decided_by_id": reviewer if plan.decision is not None else None,
            "decision_reason": plan.reason,
            "assistance_need": "cannot_move" if plan.assisted else None,
            "created_at": created,
            "updated_at": updated,
        }
        month_id = self._add(POL_MONTHS, record)
        self.counts.pol_months += 1
        if plan.attempt is not None and plan.attempt_at is not None:
            self._attempt(month_id, member["id"], plan, caseworker, household_id, home)
            if plan.assisted:  # the visit's time
                record["passed_at"] = record["updated_at"] = plan.passed_at
        self._messages(household_id, member, month, plan, token, created, closes)

    def _attempt(
        self,
        month_id: int,
        member_id: int,
        plan: _MonthPlan,
        caseworker: int,
        household_id: int,
        home: tuple[float, float],
    ) -> None:
        rng = self.rng
        at = cast(datetime, plan.attempt_at)
        assisted_by = None
        lat = lon = accuracy = distance = None
        if plan.assisted:
            local_day = at.astimezone(self.zone).date()
            latest = (self.windows[_month_of(at, self.zone)][1] - timedelta(seconds=1)).astimezone(
                self.zone
            )
            visit = self._visit(
                household_id,
                home,
                caseworker,
                local_day,
                "assisted_proof_of_life",
                latest=min(latest.date(), self.today - timedelta(days=1)),
            )
            if visit is not None:
                at = visit.row["finished_at"] - timedelta(minutes=5)
                plan.attempt_at = plan.passed_at = at
                lat, lon = visit.row["gps_lat"], visit.row["gps_lon"]
                accuracy = visit.row["gps_accuracy_m"]
                distance = round(_metres(lat, lon, *home), 1)
                assisted_by = caseworker
            else:  # the caseworker's days were full: the member managed alone
                plan.assisted = False
        outcome = cast(Outcome, plan.attempt)
        row = dict(_ATTEMPT)
        row.update(
            session_id=f"{rng.getrandbits(128):032x}",
            month_id=month_id,
            member_id=member_id,
            nonce=f"{rng.getrandbits(128):032x}",
            challenges=CHALLENGES[int(rng.random() * len(CHALLENGES))],
            started_by=StartedBy.CASEWORKER if plan.assisted else StartedBy.RECIPIENT,
            assisted_by_id=assisted_by,
            gps_lat=lat,
            gps_lon=lon,
            gps_accuracy_m=accuracy,
            gps_distance_m=distance,
            created_at=at - timedelta(seconds=20 + int(rng.random() * 70)),
            expires_at=at + timedelta(seconds=60),
            outcome=outcome,
            counts_against_limits=not plan.assisted,
        )
        if outcome is Outcome.INCOMPLETE:
            row.update(stopped_step="face", stopped_why="timeout")
        else:
            row.update(
                submitted_at=at,
                reasons=REASONS[outcome],
                distance=round(0.2 + rng.random() * 0.35, 3),
            )
        self._add(ATTEMPTS, row)
        self.counts.attempts += 1

    def _messages(
        self,
        household_id: int,
        member: dict[str, Any],
        month: str,
        plan: _MonthPlan,
        token: str,
        opened: datetime,
        closes: datetime,
    ) -> None:
        """The reminder when the window opens, the follow-up to those still pending on
        the follow-up day; a member without a number, or whose reminder failed, gets a
        caseworker contact task instead."""
        rng = self.rng
        if plan.status is MonthStatus.EXEMPT and (plan.decided_at or closes) <= opened:
            return
        if member["phone"] is None:
            self._task(household_id, member["id"], month, ContactReason.NO_PHONE, None, opened)
            return
        if self.history is None or month < self.sms_from:
            return
        follow_up = local_moment(
            month,
            self.rules.campaign.follow_up_day,
            self.rules.timezone,
            self.rules.campaign.send_from_hour,
        )
        if month == self.current:
            follow_up = max(follow_up, self.now - timedelta(days=1))
        sends = [
            (NoticeKind.REMINDER, opened + timedelta(hours=self.rules.campaign.send_from_hour))
        ]
        done_at = plan.passed_at or plan.attempt_at or plan.decided_at
        if follow_up < self.now and (done_at is None or done_at > follow_up):
            sends.append((NoticeKind.FOLLOW_UP, follow_up))
        notice_failed = False
        for kind, sent_at in sends:
            if sent_at >= self.now or notice_failed:
                break
            sent_at += timedelta(seconds=rng.randrange(0, 3600))
            draw = rng.random()
            if draw < 0.05:
                status, code, delivered = "failed", rng.choice(FAILED_CODES), None
            elif draw < 0.10 or sent_at > self.now - timedelta(minutes=10):
                status, code, delivered = "sent", None, None
            else:
                status, code = "delivered", None
                delivered = min(sent_at + timedelta(seconds=rng.randrange(3, 300)), self.now)
            notice = Notice(
                kind, member["id"], household_id, month, member["name"], member["phone"],
                token, closes,
            )  # fmt: skip
            for row in self.history.rows([PastMessage(notice, status, code, sent_at, delivered)]):
                self._add(self.history.table, row)
                self.counts.messages += 1
            if status == "failed":
                notice_failed = True
                reason = (
                    ContactReason.WRONG_NUMBER
                    if code in (30005, 30006)
                    else ContactReason.NOT_DELIVERED
                )
                resolved = closes if month != self.current else None
                self._task(household_id, member["id"], month, reason, code, sent_at, resolved)

    def _task(
        self,
        household_id: int,
        member_id: int,
        month: str,
        reason: ContactReason,
        code: int | None,
        at: datetime,
        resolved: datetime | None = None,
    ) -> None:
        if month != self.current and resolved is None:
            resolved = self.windows[month][1]
        self._add(
            TASKS,
            {
                "member_id": member_id,
                "household_id": household_id,
                "month": month,
                "reason": reason,
                "error_code": code,
                "created_at": at,
                "resolved_at": resolved,
            },
        )
        self.counts.contact_tasks += 1

    def _payment(
        self,
        household_id: int,
        household: dict[str, Any],
        month: str,
        plans: list[_MonthPlan],
        closes: datetime,
    ) -> None:
        """The household's payment row for a closed month, from its designated members'
        months: suspended at the close if one blocked it (or when one failed later);
        restored when every blocking month was passed within the grace period."""
        status, suspended_at, restored_at, back_pay = PaymentStatus.PAYABLE, None, None, None
        grace_ends = self.rules.campaign.grace_ends(closes)
        if any(p.status is MonthStatus.FAILED and not p.blocked_at_close for p in plans):
            late = [p.decided_at or closes for p in plans if p.status is MonthStatus.FAILED]
            status, suspended_at = PaymentStatus.SUSPENDED, min(late)  # settle() suspends
        elif blocked := [p for p in plans if p.blocked_at_close]:
            status, suspended_at = PaymentStatus.SUSPENDED, closes
            if all(
                p.status is MonthStatus.PASSED
                and p.decided_at is not None
                and p.decided_at < grace_ends
                for p in blocked
            ):
                restored = max(cast(datetime, p.decided_at) for p in blocked)
                status, restored_at = PaymentStatus.RESTORED, restored
                back_pay = self._payroll_month(restored)
        self._add(
            PAYMENTS,
            {
                "household_id": household_id,
                "month": month,
                "amount": household["monthly_allowance"] or Decimal("0.00"),
                "status": status,
                "suspended_at": suspended_at,
                "restored_at": restored_at,
                "back_pay_month": back_pay,
                "created_at": closes,
            },
        )
        self.counts.payments += 1

    def _payroll_month(self, moment: datetime) -> str:
        """``server.payments.service.payroll_month_for``: the first month whose window
        closes after ``moment``."""
        month = _month_of(moment, self.zone)
        closes = window(month, self.rules.proof_of_life, self.rules.timezone)[1]
        return month if moment < closes else month_after(month)


def _month_of(moment: datetime, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone)
    return month_text(local.year, local.month)


def _caseworker_count(staff: Staff) -> int:
    return sum(len(v) for v in staff.caseworkers.values())


def _assisted_share(options: HistoryOptions, households: int) -> tuple[float, bool]:
    """The share of members' months passed with a caseworker at home: about one in ten,
    or what reaches ``options.visits`` (the benchmark's volume: nearly all); and whether
    spouses prove life too (when the heads alone cannot reach that volume)."""
    if options.visits is None or households == 0 or options.months == 0:
        return 0.1, False
    natural = History.expected_visits(households) * options.months / 12
    in_care = households * 0.68 * (options.months + 1) * 0.75
    need = (options.visits - natural) / in_care
    if need <= 0.9:
        return max(0.1, need), False
    return min(1.0, need / SPOUSE_FACTOR), True


def caseworkers_per_township(options: HistoryOptions, households: int, townships: int) -> int:
    """Enough caseworkers that the assisted visits of a window fit in their field days."""
    if options.visits is None or options.months == 0:
        return 1
    share, spouses = _assisted_share(options, households)
    per_month = households * 0.68 * share * (SPOUSE_FACTOR if spouses else 1) / townships
    return max(1, math.ceil(per_month / (4 * VISITS_PER_DAY)))


def _offset(
    lat: float, lon: float, rng: random.Random, max_m: float, at_least: float = 0.0
) -> tuple[float, float]:
    distance = at_least + (max_m - at_least) * math.sqrt(rng.random())
    bearing = rng.uniform(0, 2 * math.pi)
    dlat = distance * math.cos(bearing) / 111_320
    dlon = distance * math.sin(bearing) / (111_320 * math.cos(math.radians(lat)))
    return round(lat + dlat, 6), round(lon + dlon, 6)


def _metres(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_000 * math.asin(math.sqrt(a))


# --------------------------------------------------------------------------- photos


@dataclass
class _Drawn:
    data: bytes
    phash: str
    width: int
    height: int


def _jpeg(seed: int, taken_at: datetime, lat: float, lon: float, zone: ZoneInfo) -> bytes:
    """A small picture of a house, different per household (``seed``)."""
    from PIL import ExifTags, Image, ImageDraw

    rng = random.Random(seed)
    image = Image.new("RGB", (320, 240), (rng.randrange(90, 200), rng.randrange(140, 230), 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 170, 320, 240), fill=(rng.randrange(60, 140), rng.randrange(90, 160), 60))
    for _ in range(rng.randrange(3, 7)):
        x, y = rng.randrange(0, 280), rng.randrange(60, 200)
        w, h = rng.randrange(20, 120), rng.randrange(20, 90)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.rectangle((x, y, x + w, y + h), fill=colour)
        draw.polygon(
            [(x - 8, y), (x + w // 2, y - rng.randrange(15, 50)), (x + w + 8, y)],
            fill=(rng.randrange(120, 200), 40, 30),
        )
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "HUAWEI"
    exif[ExifTags.Base.Model] = "MatePad SE"
    inner = exif.get_ifd(ExifTags.IFD.Exif)
    inner[ExifTags.Base.DateTimeOriginal] = taken_at.astimezone(zone).strftime("%Y:%m:%d %H:%M:%S")
    inner[ExifTags.Base.OffsetTimeOriginal] = taken_at.astimezone(zone).strftime("%z")[:3] + ":00"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N" if lat >= 0 else "S"
    gps[ExifTags.GPS.GPSLatitude] = _dms(abs(lat))
    gps[ExifTags.GPS.GPSLongitudeRef] = "E" if lon >= 0 else "W"
    gps[ExifTags.GPS.GPSLongitude] = _dms(abs(lon))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=75, exif=exif)
    return out.getvalue()


def _dms(value: float) -> tuple[float, float, float]:
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round((value - degrees - minutes / 60) * 3600, 2)
    return float(degrees), float(minutes), seconds


@dataclass
class _PhotoVisit:
    survey: Survey
    home: tuple[float, float]
    planted: str | None


def add_photos(history: History, *, now: datetime) -> None:
    """Demo: one housing photo per visit of the last three months, drawn per household
    and stored through the blob store; two visits reuse another household's photo. Then
    every check over every visit (location, travel in each caseworker's order, photos,
    photo reuse), their flags as the upload path would store them."""
    from server.storage import blob_store
    from server.visits.photos import inspect_photo, make_thumbnail

    store = blob_store()
    rules = history.rules
    thresholds = history.thresholds
    recent = history.today - timedelta(days=92)
    by_id = {v.row["id"]: v for v in history.visits}
    surveys = db.session.scalars(select(Survey).where(Survey.id.in_(list(by_id)))).all()
    ordered = sorted(surveys, key=lambda s: (s.caseworker_id, s.finished_at, s.id))
    previous: dict[int, PreviousVisit] = {}
    phashes: list[tuple[str, int]] = []
    reuse_left = 2
    last_photo: tuple[bytes, int] | None = None
    for survey in ordered:
        visit = by_id[survey.id]
        fix = GpsFix(
            survey.gps_lat,
            survey.gps_lon,
            survey.gps_accuracy_m,
            survey.gps_fix_at,
            survey.gps_is_mock,
        )
        flags = check_location(fix, *visit.home, thresholds)
        flags += check_travel(
            fix, survey.finished_at, previous.get(survey.caseworker_id), thresholds
        )
        previous[survey.caseworker_id] = PreviousVisit(
            survey.gps_lat, survey.gps_lon, survey.finished_at
        )
        if survey.finished_at.date() >= recent:
            taken = survey.started_at + (survey.finished_at - survey.started_at) / 2
            data = _jpeg(
                survey.household_id * 7919 + survey.id % 3, taken, fix.lat, fix.lon, history.zone
            )
            reused = False
            if (
                reuse_left
                and last_photo is not None
                and last_photo[1] != survey.household_id
                and history.rng.random() < 0.05
            ):
                data, reused = last_photo[0], True
                reuse_left -= 1
            photo = _store_photo(store, survey, data, now, inspect_photo, make_thumbnail)
            evidence = PhotoEvidence(
                photo.photo_id, photo.exif_taken_at, photo.exif_lat, photo.exif_lon
            )
            flags += check_photos(
                [evidence], fix, survey.started_at, survey.finished_at, thresholds
            )
            if photo.phash is not None:
                flags += check_photo_reuse(
                    photo.phash,
                    [(h, hid) for h, hid in phashes if hid != survey.household_id],
                    max_hamming=rules.photo_reuse_hamming,
                )
                phashes.append((photo.phash, survey.household_id))
            if not reused:
                last_photo = (data, survey.household_id)
            history.counts.photos += 1
        for flag in flags:
            survey.flags.append(
                SurveyFlag(
                    code=flag.code,
                    severity=flag.severity,
                    value=None if flag.value is None else str(flag.value),
                    threshold=None if flag.threshold is None else str(flag.threshold),
                    detail=flag.detail,
                    raised_at=survey.received_at,
                )
            )
            history.counts.flags += 1
    db.session.flush()


def _store_photo(
    store: Any,
    survey: Survey,
    data: bytes,
    now: datetime,
    inspect_photo: Callable[..., Any],
    make_thumbnail: Callable[..., Any],
) -> SurveyPhoto:
    path = store.temp_path(".jpg")
    path.write_bytes(data)
    info = inspect_photo(path)
    sha256 = store.store_file(path)
    thumb = store.temp_path(".jpg")
    try:
        make_thumbnail(store.path(sha256), thumb)
        thumbnail = store.store_file(thumb)
    finally:
        thumb.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
    photo = SurveyPhoto(
        photo_id="housing-1",
        kind=PhotoKind.HOUSING,
        member_ref=None,
        sha256=sha256,
        bytes=len(data),
        taken_at=info.taken_at,
        received_at=survey.received_at,
        content_type="image/jpeg",
        width=info.width,
        height=info.height,
        exif_taken_at=info.taken_at,
        exif_lat=info.gps_lat,
        exif_lon=info.gps_lon,
        camera=info.camera,
        phash=info.phash,
        thumbnail_sha256=thumbnail,
    )
    survey.photos.append(photo)
    return photo


def busiest_day(caseworker_id: int, tz: str) -> tuple[date, int] | None:
    """The local day with the caseworker's most visits, and how many (for the demo's
    printed map link; walks one caseworker's visits)."""
    days: dict[date, int] = {}
    for finished in db.session.scalars(
        select(Survey.finished_at).where(Survey.caseworker_id == caseworker_id)
    ):
        day = finished.astimezone(ZoneInfo(tz)).date()
        days[day] = days.get(day, 0) + 1
    if not days:
        return None
    return max(days.items(), key=lambda item: (item[1], item[0]))
