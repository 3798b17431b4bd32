"""Bulk parts of a benchmark league: visits, photo metadata, face templates, proof-of-life
months and payments, for a million households and more.

``dibao seed --with PARTS`` (``server.seed``) hands this module every household it writes
(with its members' ids) and this module adds, in the same chunks and the same writer
(binary COPY on PostgreSQL, bulk INSERTs on SQLite), so memory is bounded by the chunk
size, never by the number of households:

- ``visits`` (``surveys``): one completed field visit for about a third of the
  households, by one of the caseworkers of the household's township, in the last
  ``months`` months (the last 60 days with ``--months 0``), with a GPS fix within 30 m of
  the home;
- ``photos`` (``survey_photos``, ``photo_hashes``): two photos per visit (the house and
  the head of the household's portrait), metadata only (no files: their blob keys are
  random and do not exist), each with the ``full`` and ``centre`` hashes the upload
  indexes (server/visits/photo_index.py), random 64-bit values;
- ``templates`` (``face_templates``): a 128-d encoding like face_recognition's for each
  designated member (the head), encrypted by the column type as an enrollment stores it;
  one in ``PLANTED_EVERY`` is a near-duplicate of another household's member (the planted
  cross-household matches of the face benchmark);
- ``months`` (``pol_months``): the ``months`` closed months before the month in progress,
  for every designated member of an approved household after its approval: passed
  (most), exempt, missed, failed, in review, or missed and passed later by a reviewer;
- ``payments`` (``payment_months``): the household's payment for each of those months:
  suspended when a member's month blocks it, restored after a late pass.

Deterministic for a given seed and date: the parts draw from their own generators, so the
households are the same with or without them. This is benchmark data: unlike
server/seed_history.py, no caseworker's day is planned and no check runs over it.
"""

from __future__ import annotations

import functools
import json
import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import numpy as np
from sqlalchemy import Table, func, select

from server.cases.models import CaseState
from server.errors import ValidationFailed
from server.extensions import db
from server.faces.engine import MODEL_NAME
from server.faces.models import FaceTemplate
from server.months import month_after, month_text, window
from server.payments.models import PaymentMonth, PaymentStatus
from server.proof_of_life.models import MonthStatus, ProofOfLifeMonth
from server.region import RegionRules
from server.visits.models import (
    PhotoHash,
    PhotoKind,
    ReviewStatus,
    Survey,
    SurveyPhoto,
    SurveyStatus,
)

PARTS = ("visits", "photos", "templates", "months", "payments")
# A part that needs another: photos belong to visits, payments to months.
NEEDS = {"photos": "visits", "payments": "months"}

SURVEYS = cast(Table, Survey.__table__)
PHOTOS = cast(Table, SurveyPhoto.__table__)
HASHES = cast(Table, PhotoHash.__table__)
TEMPLATES = cast(Table, FaceTemplate.__table__)
POL_MONTHS = cast(Table, ProofOfLifeMonth.__table__)
PAYMENTS = cast(Table, PaymentMonth.__table__)
# Written in this order (foreign keys).
TABLES = (SURVEYS, PHOTOS, HASHES, TEMPLATES, POL_MONTHS, PAYMENTS)

VISIT_SHARE = 0.3  # households with a visit
PLANTED_EVERY = 1000  # one template in this many is another household's member's face
TEMPLATE_SPREAD = 0.09  # per component: norms about 1, like face_recognition's encodings
PLANTED_NOISE = 0.01  # a planted duplicate's distance to its original: about 0.11
MODEL_VERSION = "synthetic (dibao seed)"
HOUSING = ("砖瓦房", "土坯房", "楼房", "彩钢房")
EXEMPT_REASONS = ("住院治疗", "外出务工，已电话核实")
CAMERAS = ("HUAWEI MatePad", "Lenovo Tab M10", "Xiaomi Pad 6")
# A closed month's outcomes (sums to 1): "late" is missed at the close, then passed by a
# reviewer within the grace period (the payment restored).
MONTH_WEIGHTS = {
    "passed": 0.90,
    "exempt": 0.02,
    "missed": 0.04,
    "failed": 0.01,
    "review": 0.01,
    "late": 0.02,
}


def parse_parts(text: str) -> frozenset[str]:
    """``--with``: a comma-separated list of PARTS, or ``all``, or ``none``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return frozenset(PARTS)
    if names == ["none"]:
        return frozenset()
    unknown = [name for name in names if name not in PARTS]
    if unknown or not names:
        raise ValidationFailed(
            f"--with: unknown part {', '.join(unknown) or repr(text)}; "
            f"give a comma-separated list of {', '.join(PARTS)}, or all, or none",
            field="with",
        )
    parts = frozenset(names)
    for part, needed in NEEDS.items():
        if part in parts and needed not in parts:
            raise ValidationFailed(f"--with {part} needs {needed} too", field="with")
    return parts


@dataclass(frozen=True)
class PartsOptions:
    parts: frozenset[str]
    months: int = 0  # closed months of proof of life and payments; visits span them
    planted_every: int = PLANTED_EVERY  # one planted duplicate template in this many


@dataclass
class PartsCounts:
    visits: int = 0
    photos: int = 0
    photo_hashes: int = 0
    templates: int = 0
    planted_templates: int = 0
    pol_months: int = 0
    payments: int = 0

    def as_json(self) -> dict[str, int]:
        return dict(self.__dict__)


def column_defaults(table: Table) -> dict[str, Callable[[], Any]]:
    """For each column of ``table`` a bulk row may leave out: how to fill it as an ORM
    INSERT would (the model's Python-side default, else NULL when nullable). Columns with
    only a server default are left to the server. A column added later with a default
    is filled, so a later migration cannot break the COPY."""
    fillers: dict[str, Callable[[], Any]] = {}
    for column in table.c:
        default = column.default
        if default is not None and getattr(default, "is_scalar", False):
            fillers[column.name] = functools.partial(_constant, default.arg)  # type: ignore[attr-defined]
        elif default is not None and getattr(default, "is_callable", False):
            # SQLAlchemy wraps a default callable to take the execution context.
            fillers[column.name] = functools.partial(default.arg, None)  # type: ignore[attr-defined]
        elif (
            default is None
            and column.server_default is None
            and column.nullable
            and not column.primary_key
        ):
            fillers[column.name] = functools.partial(_constant, None)
    return fillers


def _constant(value: Any) -> Any:
    return value


def with_defaults(table: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with every missing column filled by :func:`column_defaults` (once per
    call: a callable default such as ``utcnow`` gives the whole batch one value)."""
    if not rows:
        return rows
    missing = {name: fill for name, fill in column_defaults(table).items() if name not in rows[0]}
    if not missing:
        return rows
    filled = {name: fill() for name, fill in missing.items()}
    return [{**filled, **row} for row in rows]


class Parts:
    """The parts of one seeding run, household by household (``server.seed`` calls
    :meth:`household` for each one written, then :meth:`flush` with its writer)."""

    def __init__(
        self,
        options: PartsOptions,
        *,
        seed: int,
        rules: RegionRules,
        today: date,
        now: datetime,
        caseworkers: dict[int, list[int]],
        reviewers: dict[int, int],
        township_of: dict[int, int],
    ) -> None:
        self.parts = options.parts
        self.planted_every = options.planted_every
        self.rng = random.Random(f"parts-{seed}")
        self.vectors = np.random.default_rng([seed, 19])
        self.rules = rules
        self.today = today
        self.now = now
        self.caseworkers = caseworkers
        self.reviewers = reviewers
        self.township_of = township_of
        self.counts = PartsCounts()
        current = month_text(today.year, today.month)
        self.months = [month_after(current, -k) for k in range(options.months, 0, -1)]
        self.windows = {m: window(m, rules.proof_of_life, rules.timezone) for m in self.months}
        self.grace = {m: rules.campaign.grace_ends(self.windows[m][1]) for m in self.months}
        span_days = max(60, 30 * options.months)
        self.first_day = now - timedelta(days=span_days)
        self.span_seconds = int((now - self.first_day).total_seconds()) - 3600
        self.payloads = [
            json.dumps(
                {"housing": {"type": kind, "rooms": rooms}, "income": {}, "members": []},
                ensure_ascii=False,
                sort_keys=True,
            )
            for kind in HOUSING
            for rooms in range(1, 5)
        ]
        self.outcomes = list(MONTH_WEIGHTS)
        self.outcome_cum = list(np.cumsum(list(MONTH_WEIGHTS.values())))
        self.buffers: dict[str, list[dict[str, Any]]] = {}
        self.next_ids: dict[str, int] = {}
        # Recent templates of other households, the originals of the planted duplicates.
        self.recent: list[tuple[int, np.ndarray[Any, np.dtype[np.float64]]]] = []
        self.pending_templates: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ ids, rows

    def tables(self) -> list[Table]:
        wanted = {
            "surveys": "visits" in self.parts,
            "survey_photos": "photos" in self.parts,
            "photo_hashes": "photos" in self.parts,
            "face_templates": "templates" in self.parts,
            "pol_months": "months" in self.parts,
            "payment_months": "payments" in self.parts,
        }
        return [table for table in TABLES if wanted[table.name]]

    def reserve_ids(self, tables: Iterable[Table]) -> None:
        """Explicit ids from max(id) + 1 (``server.seed`` sets the sequences after)."""
        for table in tables:
            if "id" in table.c:
                found = db.session.scalar(select(func.max(table.c.id)))
                self.next_ids[table.name] = (found or 0) + 1

    def _add(self, table: Table, row: dict[str, Any]) -> int:
        if table.name in self.next_ids:
            row_id = self.next_ids[table.name]
            self.next_ids[table.name] = row_id + 1
            row["id"] = row_id
        self.buffers.setdefault(table.name, []).append(row)
        return cast(int, row.get("id", 0))

    def flush(self, write: Callable[[Table, list[dict[str, Any]]], None]) -> None:
        self._encode_templates()
        for table in TABLES:
            rows = self.buffers.pop(table.name, [])
            if rows:
                write(table, with_defaults(table, rows))

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
        township = self.township_of[village_id]
        workers = self.caseworkers[township]
        own = workers[household_id % len(workers)]
        designated = [m for m in members if m["proof_of_life_required"] and m["alive"]]
        if "visits" in self.parts and self.rng.random() < VISIT_SHARE:
            self._visit(household_id, household, designated, own)
        if "templates" in self.parts:
            for member in designated:
                self.pending_templates.append(
                    {
                        "member_id": member["id"],
                        "household_id": household_id,
                        "survey_photo_id": None,
                        "source_sha256": None,
                        "enrolled_by_id": own,
                        "model_name": MODEL_NAME,
                        "model_version": MODEL_VERSION,
                        "active": True,
                        "created_at": member["created_at"],
                    }
                )
        if (
            "months" in self.parts
            and household["state"] == CaseState.APPROVED.value
            and household["approved_on"] is not None
        ):
            first = month_text(household["approved_on"].year, household["approved_on"].month)
            reviewer = self.reviewers[township]
            for month in self.months:
                if month > first and designated:
                    self._month(household_id, household, designated, month, reviewer)

    def _visit(
        self,
        household_id: int,
        household: dict[str, Any],
        designated: list[dict[str, Any]],
        caseworker: int,
    ) -> None:
        rng = self.rng
        finished = self.first_day + timedelta(seconds=rng.randrange(self.span_seconds))
        lat, lon = _near(household["home_lat"], household["home_lon"], rng, 30.0)
        survey_id = self._add(
            SURVEYS,
            {
                "client_uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "content_hash": f"{rng.getrandbits(256):064x}",
                "household_id": household_id,
                "caseworker_id": caseworker,
                "device_token_id": None,
                "kind": "periodic_review",
                "status": SurveyStatus.COMPLETE,
                "started_at": finished - timedelta(minutes=rng.randrange(15, 60)),
                "finished_at": finished,
                "gps_lat": lat,
                "gps_lon": lon,
                "gps_accuracy_m": float(rng.randrange(3, 30)),
                "gps_altitude_m": None,
                "gps_fix_at": finished,
                "gps_provider": "gps",
                "gps_is_mock": False,
                "payload": rng.choice(self.payloads),
                "received_at": finished + timedelta(minutes=rng.randrange(1, 240)),
                "completed_at": finished + timedelta(minutes=rng.randrange(1, 240)),
                "review_status": ReviewStatus.RECEIVED,
            },
        )
        self.counts.visits += 1
        if "photos" not in self.parts:
            return
        head = designated[0]["id"] if designated else None
        shots = [("house", PhotoKind.HOUSING, None), ("portrait", PhotoKind.MEMBER_PORTRAIT, head)]
        for photo_id, kind, member in shots:
            taken = finished - timedelta(minutes=rng.randrange(1, 15))
            full = rng.getrandbits(64)
            photo = self._add(
                PHOTOS,
                {
                    "survey_id": survey_id,
                    "photo_id": photo_id,
                    "kind": kind,
                    "member_ref": None if member is None else str(member),
                    "sha256": f"{rng.getrandbits(256):064x}",
                    "bytes": rng.randrange(200_000, 3_000_000),
                    "taken_at": taken,
                    "received_at": finished + timedelta(minutes=rng.randrange(1, 240)),
                    "content_type": "image/jpeg",
                    "width": 4000,
                    "height": 3000,
                    "exif_taken_at": taken,
                    "exif_lat": lat,
                    "exif_lon": lon,
                    "camera": rng.choice(CAMERAS),
                    "phash": f"{full:016x}",
                    "thumbnail_sha256": None,
                },
            )
            for hash_kind, value in (("full", full), ("centre", rng.getrandbits(64))):
                self._add(
                    HASHES,
                    {"survey_photo_id": photo, "kind": hash_kind, "hash": _signed(value)},
                )
                self.counts.photo_hashes += 1
            self.counts.photos += 1

    def _month(
        self,
        household_id: int,
        household: dict[str, Any],
        designated: list[dict[str, Any]],
        month: str,
        reviewer: int,
    ) -> None:
        rng = self.rng
        opens, closes = self.windows[month]
        grace = self.grace[month]
        length = int((closes - opens).total_seconds())
        blocked_at_close = failed = missed = False
        restored: datetime | None = None
        for member in designated:
            outcome = rng.choices(self.outcomes, cum_weights=self.outcome_cum)[0]
            passed_at = decided_at = None
            reason = None
            if outcome in ("passed", "review", "failed"):
                passed_at = opens + timedelta(seconds=rng.randrange(length))
            status = MonthStatus(outcome) if outcome != "late" else MonthStatus.PASSED
            if outcome == "exempt":
                decided_at = opens + timedelta(seconds=rng.randrange(length))
                reason = rng.choice(EXEMPT_REASONS)
            elif outcome == "late":
                decided_at = closes + timedelta(
                    seconds=rng.randrange(max(1, int((grace - closes).total_seconds())))
                )
                passed_at = decided_at
                reason = "入户核实本人健在"
                blocked_at_close = True
                restored = max(restored or decided_at, decided_at)
            elif outcome == "failed":
                decided_at, passed_at = passed_at, None
                failed = True
            elif outcome == "missed":
                blocked_at_close = missed = True
            self._add(
                POL_MONTHS,
                {
                    "member_id": member["id"],
                    "household_id": household_id,
                    "month": month,
                    "status": status,
                    "window_closes_at": closes,
                    "link_generation": 1,
                    "link_hash": None,
                    "passed_at": passed_at if status is MonthStatus.PASSED else None,
                    "decided_by_id": reviewer if reason is not None else None,
                    "decision_reason": reason,
                    "assistance_need": None,
                    "created_at": opens,
                    "updated_at": max(t for t in (opens, passed_at, decided_at) if t),
                },
            )
            self.counts.pol_months += 1
        if "payments" not in self.parts:
            return
        paid, suspended_at, back_pay = PaymentStatus.PAYABLE, None, None
        if failed or blocked_at_close:
            paid, suspended_at = PaymentStatus.SUSPENDED, closes
            if restored is not None and not (failed or missed):
                paid, back_pay = PaymentStatus.RESTORED, month_after(month)
        self._add(
            PAYMENTS,
            {
                "household_id": household_id,
                "month": month,
                "amount": household["monthly_allowance"] or Decimal("0.00"),
                "status": paid,
                "suspended_at": suspended_at,
                "restored_at": restored if paid is PaymentStatus.RESTORED else None,
                "back_pay_month": back_pay,
                "created_at": closes,
            },
        )
        self.counts.payments += 1

    def _encode_templates(self) -> None:
        """The chunk's templates: random encodings drawn in one go, one in
        PLANTED_EVERY replaced by a near copy of an earlier household's."""
        rows, self.pending_templates = self.pending_templates, []
        if not rows:
            return
        vectors = self.vectors.normal(0.0, TEMPLATE_SPREAD, size=(len(rows), 128))
        for row, vector in zip(rows, vectors, strict=True):
            self.counts.templates += 1
            others = [i for i, (h, _) in enumerate(self.recent) if h != row["household_id"]]
            if self.counts.templates % self.planted_every == 0 and others:
                # Each original copied once, never a copy: each planted pair stands alone.
                _, original = self.recent.pop(others[self.rng.randrange(len(others))])
                vector = original + self.vectors.normal(0.0, PLANTED_NOISE, size=128)
                self.counts.planted_templates += 1
            else:
                self.recent.append((row["household_id"], vector))
                if len(self.recent) > 64:
                    del self.recent[:32]
            row["encoding"] = np.asarray(vector, np.float64).tobytes()
            self._add(TEMPLATES, row)


def check_options(options: PartsOptions) -> None:
    if options.months < 0:
        raise ValidationFailed("--months must not be negative", field="months")
    if options.planted_every < 1:
        raise ValidationFailed("planted_every must be at least 1", field="planted_every")
    if "months" in options.parts and options.months == 0:
        raise ValidationFailed("--with months needs --months 1 or more", field="months")


def _near(lat: float, lon: float, rng: random.Random, max_m: float) -> tuple[float, float]:
    dlat = rng.uniform(-max_m, max_m) / 111_320
    dlon = rng.uniform(-max_m, max_m) / (111_320 * np.cos(np.radians(lat)))
    return round(lat + dlat, 6), round(float(lon + dlon), 6)


def _signed(value: int) -> int:
    """A 64-bit hash as the signed integer a BIGINT column holds."""
    return value - (1 << 64) if value >= 1 << 63 else value
