"""Realistic demo and benchmark data: one county of Xing'an League, its townships
and villages, staff for every role, and households spread over every state and
class. Deterministic for a given seed (and reference date). Households are
written in chunks with bulk INSERTs (binary COPY on PostgreSQL), never one ORM
object per round trip.
"""

from __future__ import annotations

import contextvars
import functools
import math
import queue
import random
import string
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from itertools import accumulate
from typing import Any, NamedTuple, cast
from zoneinfo import ZoneInfo

import psycopg
from faker.providers.person.zh_CN import Provider as ZhPerson
from faker.providers.phone_number.zh_CN import Provider as ZhPhone
from flask import current_app
from psycopg import sql
from psycopg.pq import TransactionStatus
from sqlalchemy import Table, func, insert, select, text

from server import clock
from server.areas.models import Area, AreaLevel, build_path
from server.audit import service as audit
from server.auth.models import Role, User
from server.auth.passwords import hash_password
from server.auth.service import check_login
from server.cases.allowance import compute_allowance
from server.cases.codes import new_case_code
from server.cases.models import (
    CaseEvent,
    CaseState,
    Household,
    HouseholdClass,
    Member,
    Relation,
    phone_lookup_hash,
)
from server.cases.standards import seed_first_versions, standards_for_month
from server.crypto import FieldCipher
from server.crypto import id_check_digit as id_check_digit  # where tests and benchmarks take it
from server.errors import ValidationFailed
from server.extensions import db
from server.months import add_months, first_of_next_month
from server.public import changes as public_changes
from server.region import RegionRules
from server.seed_history import (
    History,
    HistoryCounts,
    HistoryOptions,
    Staff,
    add_photos,
    caseworkers_per_township,
)
from server.seed_parts import Parts, PartsCounts, PartsOptions, check_options
from server.types import EncryptedText, field_cipher

CENTER = (46.08, 122.05)  # Ulanhot, Xing'an League
LEAGUE = ("152200", "兴安盟")
COUNTY = ("152201", "乌兰浩特市")
TOWNSHIPS = (
    ("152201100", "义勒力特镇"),
    ("152201101", "葛根庙镇"),
    ("152201102", "乌兰哈达镇"),
    ("152201200", "太本站镇"),
    ("152201201", "斯力很苏木"),
)
VILLAGE_NAMES = (
    "红旗",
    "东升",
    "新民",
    "永丰",
    "胜利",
    "兴隆",
    "前进",
    "和平",
    "团结",
    "光明",
    "宝力根",
    "巴彦",
    "乌兰",
    "额尔敦",
    "哈达",
    "新立",
    "太平",
    "双井",
    "三合",
    "五道",
    "富裕",
    "长兴",
    "平安",
    "德胜",
    "联合",
    "向阳",
    "幸福",
    "永安",
    "吉祥",
    "保安",
    "金星",
    "白音",
    "查干",
    "阿拉坦",
    "敖包",
    "呼和",
    "那仁",
    "苏布",
    "海力森",
    "达尔罕",
)

# Share of cases in each state (sums to 1).
STATE_WEIGHTS = {
    CaseState.APPLIED: 0.04,
    CaseState.ACCEPTED: 0.04,
    CaseState.SURVEYED: 0.04,
    CaseState.TOWNSHIP_REVIEWED: 0.03,
    CaseState.IN_PUBLIC_NOTICE: 0.03,
    CaseState.APPROVED: 0.68,
    CaseState.SUSPENDED: 0.05,
    CaseState.TERMINATED: 0.05,
    CaseState.REJECTED: 0.04,
}
# The workflow path to each state (after "apply").
PATH_TO = {
    CaseState.APPLIED: [],
    CaseState.ACCEPTED: ["accept"],
    CaseState.SURVEYED: ["accept", "record_survey"],
    CaseState.TOWNSHIP_REVIEWED: ["accept", "record_survey", "township_review"],
    CaseState.IN_PUBLIC_NOTICE: [
        "accept",
        "record_survey",
        "township_review",
        "start_public_notice",
    ],
    CaseState.APPROVED: [
        "accept",
        "record_survey",
        "township_review",
        "start_public_notice",
        "approve",
    ],
}
TARGET_OF = {
    "accept": CaseState.ACCEPTED,
    "record_survey": CaseState.SURVEYED,
    "township_review": CaseState.TOWNSHIP_REVIEWED,
    "start_public_notice": CaseState.IN_PUBLIC_NOTICE,
    "approve": CaseState.APPROVED,
    "suspend": CaseState.SUSPENDED,
    "terminate": CaseState.TERMINATED,
    "reject": CaseState.REJECTED,
}
REASONS = {
    "reject": "家庭人均收入超过当地低保标准",
    "suspend": "本月未完成生存认证，暂停发放",
    "terminate": "家庭收入状况改善，不再符合条件",
}
MEMBER_COUNT_WEIGHTS = (22, 30, 22, 14, 8, 4)  # 1..6 members
CHUNK = 2000


@dataclass
class SeedReport:
    areas: list[dict[str, Any]] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)
    households: int = 0
    history: HistoryCounts = field(default_factory=HistoryCounts)
    parts: PartsCounts | None = None  # with ``--with`` only

    def as_json(self) -> dict[str, Any]:
        found = {
            "areas": self.areas,
            "users": self.users,
            "households": self.households,
            "history": self.history.as_json(),
        }
        if self.parts is not None:
            found["parts"] = self.parts.as_json()
        return found


def sync_household_classes(rules: RegionRules) -> dict[str, HouseholdClass]:
    """Make the class table match the region file (insert or update by code)."""
    existing = {c.code: c for c in db.session.scalars(select(HouseholdClass))}
    for rule in rules.classes:
        row = existing.get(rule.code) or HouseholdClass(code=rule.code)
        row.name, row.name_en = rule.name, rule.name_en
        row.review_interval_months = rule.review_interval_months
        if row.id is None:
            # The region file's amounts as seeded; what is paid is read from the
            # versions (server/cases/standards.py), changed from the office's page.
            row.monthly_standard, row.fixed_monthly = rule.monthly_standard, rule.fixed_monthly
        db.session.add(row)
        existing[rule.code] = row
    db.session.flush()
    seed_first_versions(existing, rules)
    return existing


class _People:
    """Names, ID numbers and phones from Faker's zh_CN tables, drawn with our RNG
    (Faker's own per-call machinery is ten times slower at this volume).
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.last_names = list(ZhPerson.last_names.keys())
        self.last_cum = list(accumulate(ZhPerson.last_names.values()))
        self.first_names = list(ZhPerson.first_names)
        self.phone_prefixes = [str(p) for p in ZhPhone.phonenumber_prefixes]
        self.serials: set[str] = set()
        self.prefixes: dict[date, str] = {}

    def name(self, surname: str | None = None) -> str:
        surname = surname or self.rng.choices(self.last_names, cum_weights=self.last_cum)[0]
        return surname + self.rng.choice(self.first_names)

    def id_number(self, birth: date, male: bool) -> str:
        while True:
            seq = self.rng.randrange(0, 500) * 2 + (1 if male else 0)
            prefix = self.prefixes.get(birth)
            if prefix is None:
                prefix = self.prefixes[birth] = f"{COUNTY[0]}{birth:%Y%m%d}"
            first17 = f"{prefix}{seq:03d}"
            if first17 not in self.serials:
                self.serials.add(first17)
                return first17 + id_check_digit(first17)

    def phone(self) -> str:
        return self.rng.choice(self.phone_prefixes) + f"{self.rng.randrange(10**8):08d}"


def _offset(lat: float, lon: float, rng: random.Random, max_m: float) -> tuple[float, float]:
    """A point uniformly within ``max_m`` metres of (lat, lon)."""
    distance = max_m * math.sqrt(rng.random())
    bearing = rng.uniform(0, 2 * math.pi)
    dlat = distance * math.cos(bearing) / 111_320
    dlon = distance * math.sin(bearing) / (111_320 * math.cos(math.radians(lat)))
    return round(lat + dlat, 6), round(lon + dlon, 6)


def _password(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(rng.choice(alphabet) for _ in range(14))


def seed_database(
    *,
    households: int,
    seed: int,
    rules: RegionRules,
    today: date,
    hash_passwords: bool = True,
    history: HistoryOptions | None = None,
    parts: PartsOptions | None = None,
) -> SeedReport:
    """Fill an empty database. Flushes; the caller commits. Raises ValidationFailed
    if the database already holds areas. With ``history`` (server/seed_history.py),
    the last months' visits, proof of life, SMS and payments too; with ``parts``
    (server/seed_parts.py, not together with a history) the benchmark league's bulk
    visits, photo metadata, face templates, proof-of-life months and payments.
    """
    _check_seed_options(households, history, parts)
    # Written around the ORM (COPY): the public snapshot is built again in full (and
    # the bulk INSERTs below record nothing else).
    public_changes.full_build_needed()
    rng = random.Random(seed)
    report = SeedReport()
    classes = sync_household_classes(rules)

    league, county, townships, villages = _add_league_areas(report, rng)
    db.session.flush()

    options = history or HistoryOptions(months=0)
    if options.months < 0:
        raise ValidationFailed("--months must not be negative", field="months")
    extra = caseworkers_per_township(options, households, len(townships)) - 1
    users_by_area, staff = _add_users(
        report, rng, league, county, townships, hash_passwords, extra, tuple(villages)
    )
    db.session.flush()

    chronicle: History | None = None
    if options.months:
        chronicle = History(
            options,
            seed=seed,
            rules=rules,
            today=today,
            now=_seed_now(today, rules),
            secret_key=current_app.config["SECRET_KEY"],
            staff=staff,
            households=households,
        )
        chronicle.counts.caseworkers = sum(len(v) for v in staff.caseworkers.values())
    bulk: Parts | None = None
    if parts is not None and parts.parts:
        bulk = Parts(
            parts,
            seed=seed,
            rules=rules,
            today=today,
            now=_seed_now(today, rules),
            caseworkers=staff.caseworkers,
            reviewers=staff.reviewers,
            township_of=staff.township_of,
        )
    _add_households(
        households, rng, rules, today, villages, classes, users_by_area, county, chronicle or bulk
    )
    if parts is not None:
        report.parts = bulk.counts if bulk is not None else PartsCounts()
    report.households = households
    if chronicle is not None:
        if options.photos:
            add_photos(chronicle, now=chronicle.now)
        report.history = chronicle.counts
    audit.record("seed", actor=None, households=households, seed=seed)
    db.session.flush()
    return report


def _check_seed_options(
    households: int, history: HistoryOptions | None, parts: PartsOptions | None
) -> None:
    """ValidationFailed for options that do not go together or an already seeded database."""
    if parts is not None:
        check_options(parts)
        if history is not None and history.months:
            raise ValidationFailed(
                "--with seeds the benchmark parts instead of the history: not both",
                field="with",
            )
    if households < 0:
        raise ValidationFailed("--households must not be negative", field="households")
    if db.session.scalar(select(func.count()).select_from(Area)):
        raise ValidationFailed(
            "the database already holds areas; seed only into an empty database", field="database"
        )


def _add_league_areas(
    report: SeedReport, rng: random.Random
) -> tuple[Area, Area, list[Area], list[Area]]:
    """The league, its county, the townships and eight villages in each."""
    league = _add_area(report, LEAGUE, AreaLevel.LEAGUE, None, CENTER)
    county = _add_area(report, COUNTY, AreaLevel.COUNTY, league, CENTER)
    villages: list[Area] = []
    townships: list[Area] = []
    village_names = list(VILLAGE_NAMES)
    rng.shuffle(village_names)
    for t_index, (code, name) in enumerate(TOWNSHIPS):
        t_center = _offset(*CENTER, rng, 25_000)
        township = _add_area(report, (code, name), AreaLevel.TOWNSHIP, county, t_center)
        townships.append(township)
        for v_index in range(8):
            v_name = village_names[(t_index * 8 + v_index) % len(village_names)]
            suffix = "嘎查" if rng.random() < 0.4 else "村"
            village = _add_area(
                report,
                (f"{code}{201 + v_index:03d}", v_name + suffix),
                AreaLevel.VILLAGE,
                township,
                _offset(*t_center, rng, 6_000),
            )
            villages.append(village)
    return league, county, townships, villages


def _add_area(
    report: SeedReport,
    code_name: tuple[str, str],
    level: AreaLevel,
    parent: Area | None,
    center: tuple[float, float],
) -> Area:
    code, name = code_name
    area = Area(
        code=code,
        name=name,
        level=level,
        parent=parent,
        path=build_path(parent, code),
        lat=center[0],
        lon=center[1],
    )
    db.session.add(area)
    report.areas.append(
        {
            "code": code,
            "name": name,
            "level": level.value,
            "parent": parent.code if parent else None,
        }
    )
    return area


def _add_users(
    report: SeedReport,
    rng: random.Random,
    league: Area,
    county: Area,
    townships: list[Area],
    hash_passwords: bool,
    extra_caseworkers: int = 0,
    villages: tuple[Area, ...] = (),
) -> tuple[dict[tuple[str, Role], User], Staff]:
    plan: list[tuple[str, Role, Area]] = [
        ("admin", Role.ADMIN, league),
        ("supervisor", Role.SUPERVISOR, league),
        ("county_supervisor", Role.SUPERVISOR, county),
        ("approver", Role.COUNTY_APPROVER, county),
    ]
    for index, township in enumerate(townships, start=1):
        plan.append((f"caseworker{index}", Role.CASEWORKER, township))
        plan.append((f"reviewer{index}", Role.TOWNSHIP_REVIEWER, township))
    by_area: dict[tuple[str, Role], User] = {}
    for username, role, area in plan:
        password = _password(rng)
        user = User(
            username=check_login(username),  # the rule every login follows
            # Without hashing (benchmarks only) nobody can log in: "!" never verifies.
            password_hash=hash_password(password) if hash_passwords else "!",
            role=role,
            area=area,
        )
        db.session.add(user)
        by_area[(area.code, role)] = user
        report.users.append(
            {"username": username, "password": password, "role": role.value, "area": area.code}
        )
    # More village caseworkers for a large history (the benchmark's volume). They have
    # no password ("!" never verifies): the visits need them, nobody logs in as them.
    extras = [
        {
            "username": f"caseworker{index}-{k}",
            "password_hash": "!",
            "role": Role.CASEWORKER,
            "area_id": township.id,
        }
        for index, township in enumerate(townships, start=1)
        for k in range(1, extra_caseworkers + 1)
    ]
    if extras:
        db.session.execute(insert(cast(Table, User.__table__)), extras)
    db.session.flush()
    caseworkers: dict[int, list[int]] = {
        t.id: [by_area[(t.code, Role.CASEWORKER)].id] for t in townships
    }
    if extras:
        for user_id, area_id in db.session.execute(
            select(User.id, User.area_id)
            .where(User.username.like("caseworker%-%"), User.role == Role.CASEWORKER)
            .order_by(User.id)
        ):
            caseworkers[area_id].append(user_id)
    staff = Staff(
        caseworkers=caseworkers,
        reviewers={t.id: by_area[(t.code, Role.TOWNSHIP_REVIEWER)].id for t in townships},
        township_of={v.id: v.parent.id for v in villages if v.parent is not None},
    )
    return by_area, staff


def _seed_now(today: date, rules: RegionRules) -> datetime:
    """The moment the history ends: now when seeding today, else noon of ``today``
    (so that a past reference date gives the same data every time)."""
    zone = ZoneInfo(rules.timezone)
    now = clock.utcnow()
    if now.astimezone(zone).date() == today:
        return now
    return datetime.combine(today, time(12), zone).astimezone(UTC)


def _chunks(total: int) -> Iterator[int]:
    done = 0
    while done < total:
        size = min(CHUNK, total - done)
        yield size
        done += size


def _add_households(
    total: int,
    rng: random.Random,
    rules: RegionRules,
    today: date,
    villages: list[Area],
    classes: dict[str, HouseholdClass],
    users: dict[tuple[str, Role], User],
    county: Area,
    history: History | Parts | None = None,
) -> None:
    cipher = field_cipher()
    people = _People(rng)
    states = list(STATE_WEIGHTS)
    state_cum = list(accumulate(STATE_WEIGHTS.values()))
    class_codes = [rule.code for rule in rules.classes]
    approver = users[(county.code, Role.COUNTY_APPROVER)]
    village_staff = {
        v.id: (
            users[(v.parent.code, Role.CASEWORKER)],
            users[(v.parent.code, Role.TOWNSHIP_REVIEWER)],
        )
        for v in villages
        if v.parent is not None
    }
    # Plain snapshots: ORM attribute access costs more than the rest per household.
    places = {
        v.id: _Village(
            v.id, v.name, v.lat, v.lon, village_staff[v.id][0].id, village_staff[v.id][1].id
        )
        for v in villages
    }
    class_info = _class_info(classes, today)
    run = _Run(
        rng,
        people,
        rules,
        today,
        approver.id,
        functools.cache(rules.calendar.add_working_days),
        functools.cache(add_months),
    )
    village_list = [places[v.id] for v in villages]  # drawn like the villages themselves
    codes: set[str] = set()
    extra_tables = history.tables() if history is not None else []
    if history is not None:
        history.reserve_ids([_MEMBERS, *extra_tables])
    next_member = history.next_ids.pop(_MEMBERS.name) if history is not None else None
    writer = _CopyWriter.for_session(total, cipher, tuple(extra_tables)) or _InsertWriter()
    try:
        for size in _chunks(total):
            rows: list[dict[str, Any]] = []
            pending: list[tuple[list[dict[str, Any]], list[dict[str, Any]], list[date]]] = []
            for _ in range(size):
                village = rng.choice(village_list)
                state = rng.choices(states, cum_weights=state_cum)[0]
                class_code = rng.choice(class_codes)
                household, members, events, reviews = _one_household(
                    run, village, class_info[class_code], state, codes
                )
                rows.append(household)
                pending.append((members, events, reviews))
            ids = writer.write_households(rows)
            next_member = _write_chunk(
                writer, cipher, ids, rows, pending, places, history, next_member
            )
    except BaseException:
        writer.close(discard=True)
        raise
    writer.close()
    if history is not None:
        _set_sequences([_MEMBERS, *extra_tables])


def _write_chunk(
    writer: _CopyWriter | _InsertWriter,
    cipher: FieldCipher,
    ids: list[int],
    rows: list[dict[str, Any]],
    pending: list[tuple[list[dict[str, Any]], list[dict[str, Any]], list[date]]],
    places: dict[int, _Village],
    history: History | Parts | None,
    next_member: int | None,
) -> int | None:
    """The members and events of a chunk of households just written (and their
    history); the next explicit member id."""
    member_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    for household_id, row, (members, events, reviews) in zip(ids, rows, pending, strict=True):
        for m in members:
            m["household_id"] = household_id
            m["id_number_hash"] = cipher.lookup_hash(m["id_number"], "members.id_number")
            # Bulk rows bypass Member's phone validator: the same hash, set here.
            m["phone_hash"] = phone_lookup_hash(m["phone"])
            if next_member is not None:  # explicit ids: the history refers to them
                m["id"], next_member = next_member, next_member + 1
        for e in events:
            e["household_id"] = household_id
        if history is not None:
            village = places[row["village_id"]]
            history.household(
                household_id, row, members, events, reviews, village.id, village.caseworker_id
            )
        member_rows.extend(members)
        event_rows.extend(events)
    writer.write(_MEMBERS, member_rows)
    writer.write(_EVENTS, event_rows)
    if history is not None:
        history.flush(writer.write)
    return next_member


def _set_sequences(tables: list[Table]) -> None:
    """After rows written with explicit ids: each table's sequence past its max(id)."""
    if db.session.get_bind().dialect.name != "postgresql":
        return
    for table in tables:
        if "id" not in table.c:
            continue
        db.session.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "  # noqa: S608
                f"(SELECT max(id) FROM {table.name}))"
            )
        )


_HOUSEHOLDS = cast(Table, Household.__table__)
_MEMBERS = cast(Table, Member.__table__)
_EVENTS = cast(Table, CaseEvent.__table__)


class _InsertWriter:
    """Bulk INSERTs through the session (SQLite, or PostgreSQL without psycopg)."""

    def write_households(self, rows: list[dict[str, Any]]) -> list[int]:
        statement = insert(_HOUSEHOLDS).returning(_HOUSEHOLDS.c.id, sort_by_parameter_order=True)
        return list(db.session.execute(statement, rows).scalars())

    def write(self, table: Table, rows: list[dict[str, Any]]) -> None:
        db.session.execute(insert(table), rows)

    def close(self, discard: bool = False) -> None:
        pass


class _CopyWriter:
    """Binary COPY on the session's own psycopg connection, in its transaction.

    A worker thread runs the COPYs, so the server's work (indexes) overlaps
    generating the next chunk; the main thread leaves the connection alone until
    ``close``. The tables' foreign keys are dropped for the load and added back in
    ``close``, which checks them in one pass. Household ids are drawn from the
    sequence up front: the same ids INSERT would have taken, in the same order.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        ids: list[int],
        cipher: FieldCipher,
        extra_tables: tuple[Table, ...] = (),
    ) -> None:
        self.conn = conn
        self.ids = iter(ids)
        self.cipher = cipher
        self.dialect = db.session.get_bind().dialect
        # Column types for binary COPY, read now: the worker owns the connection later.
        self.type_oids: dict[tuple[str, str], int] = {
            (table.name, column): oid
            for table in (_HOUSEHOLDS, _MEMBERS, _EVENTS, *extra_tables)
            for column, oid in conn.execute(
                "SELECT attname, atttypid FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (table.name,),
            )
        }
        self.formats: dict[str, _CopyFormat] = {}
        self.foreign_keys = _drop_foreign_keys(
            conn, (_HOUSEHOLDS, _MEMBERS, _EVENTS, *extra_tables)
        )
        self.queue: queue.Queue[tuple[_CopyFormat, list[dict[str, Any]]] | None] = queue.Queue(
            maxsize=6
        )
        self.error: BaseException | None = None
        # The worker sees this context (the app), though it only needs the connection.
        context = contextvars.copy_context()
        self.thread = threading.Thread(
            target=context.run, args=(self._work,), name="seed-copy", daemon=True
        )
        self.thread.start()

    @classmethod
    def for_session(
        cls, households: int, cipher: FieldCipher, extra_tables: tuple[Table, ...] = ()
    ) -> _CopyWriter | None:
        connection = db.session.connection()
        driver = connection.connection.driver_connection
        if connection.dialect.name != "postgresql" or not isinstance(driver, psycopg.Connection):
            return None
        if households == 0:
            return None
        ids = db.session.execute(
            text(
                "SELECT nextval(pg_get_serial_sequence('households', 'id')) "
                "FROM generate_series(1, :n)"
            ),
            {"n": households},
        ).scalars()
        return cls(driver, sorted(ids), cipher, extra_tables)

    def write_households(self, rows: list[dict[str, Any]]) -> list[int]:
        ids = [next(self.ids) for _ in rows]
        for household_id, row in zip(ids, rows, strict=True):
            row["id"] = household_id
        self.write(_HOUSEHOLDS, rows)
        return ids

    def write(self, table: Table, rows: list[dict[str, Any]]) -> None:
        if self.error is not None:
            raise self.error
        if rows:
            if table.name not in self.formats:
                self.formats[table.name] = _CopyFormat(table, list(rows[0]), self)
            self.queue.put((self.formats[table.name], rows))

    def _work(self) -> None:
        while (job := self.queue.get()) is not None:
            if self.error is None:
                try:
                    job[0].copy(self.conn, job[1])
                except BaseException as exc:  # re-raised on the main thread
                    self.error = exc

    def close(self, discard: bool = False) -> None:
        """Wait for the worker, then restore the foreign keys. ``discard``: the
        caller is failing; stop copying, and keep the caller's exception.
        """
        if discard:
            self.error = self.error or RuntimeError("seeding stopped")
        self.queue.put(None)
        self.thread.join()
        # Restored even when failing, so that no commit can keep rows without them.
        # After a failed COPY the transaction can only roll back, which restores them.
        if self.conn.info.transaction_status == TransactionStatus.INTRANS:
            try:
                _add_foreign_keys(self.conn, self.foreign_keys)
            except psycopg.Error:
                if not discard:
                    raise
        if self.error is not None and not discard:
            raise self.error


class _CopyFormat:
    """How to COPY one table's rows: the columns, their types, and each value's
    conversion as the column type would do it for an INSERT (encryption, money
    in fen, enum values).
    """

    def __init__(self, table: Table, names: list[str], writer: _CopyWriter) -> None:
        for column in table.c:
            if column.name not in names and column.default is not None:
                raise ValueError(f"seed rows for {table.name} lack {column.name}")
        self.names = names
        self.processors: list[tuple[int, Callable[[Any], Any]]] = []
        for index, name in enumerate(names):
            column_type = table.c[name].type
            if isinstance(column_type, EncryptedText):
                self.processors.append(
                    (index, functools.partial(_encrypt, writer.cipher, column_type.context))
                )
            elif (processor := column_type.bind_processor(writer.dialect)) is not None:
                self.processors.append((index, processor))
        self.oids = [writer.type_oids[(table.name, name)] for name in names]
        self.statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, names))
        )

    def copy(self, conn: psycopg.Connection[Any], rows: list[dict[str, Any]]) -> None:
        names, processors = self.names, self.processors
        with conn.cursor() as cursor, cursor.copy(self.statement) as copy:
            copy.set_types(self.oids)
            for row in rows:
                values = [row[name] for name in names]
                for index, processor in processors:
                    values[index] = processor(values[index])
                copy.write_row(values)


def _drop_foreign_keys(
    conn: psycopg.Connection[Any], tables: tuple[Table, ...]
) -> list[tuple[str, str, str]]:
    """Drop the foreign keys of ``tables`` for a bulk load; return them to add back.

    During COPY the server checks each foreign key row by row, which costs it more
    than everything else; adding the constraint back checks all rows in one join
    (PostgreSQL manual, "Populating a Database"). It all happens in the seeding
    transaction. Without the privilege to alter the tables, keep them.
    """
    found = [
        (table.name, name, definition)
        for table in tables
        for name, definition in conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'f' ORDER BY conname",
            (table.name,),
        )
    ]
    try:
        with conn.transaction():  # a savepoint inside the seeding transaction
            for table_name, name, _ in found:
                conn.execute(
                    sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                        sql.Identifier(table_name), sql.Identifier(name)
                    )
                )
    except psycopg.errors.InsufficientPrivilege:
        return []
    return found


def _add_foreign_keys(
    conn: psycopg.Connection[Any], foreign_keys: list[tuple[str, str, str]]
) -> None:
    for table_name, name, definition in foreign_keys:
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.Identifier(table_name), sql.Identifier(name), sql.SQL(definition)
            )
        )


def _encrypt(cipher: FieldCipher, context: str, value: str | None) -> bytes | None:
    return None if value is None else cipher.encrypt(value, context)


class _Village(NamedTuple):
    id: int
    name: str
    lat: float
    lon: float
    caseworker_id: int
    reviewer_id: int


class _Class(NamedTuple):
    id: int
    monthly_standard: Decimal
    fixed_monthly: Decimal
    review_interval_months: int


class _Run(NamedTuple):
    """What every household of one seeding run shares."""

    rng: random.Random
    people: _People
    rules: RegionRules
    today: date
    approver_id: int
    add_working_days: Callable[[date, int], date]  # the region calendar's, memoized
    add_months: Callable[[date, int], date]  # memoized


_CENT = Decimal("0.01")
# timedelta(days=n) for every offset drawn below (ages up to 95 years): indexing is
# ten times cheaper than constructing one per use.
_DAYS = tuple(timedelta(days=n) for n in range(96 * 365))
_MEMBER_SIZES = range(1, 7)
_MEMBER_CUM = list(accumulate(MEMBER_COUNT_WEIGHTS))
_PENDING = frozenset(
    {
        CaseState.APPLIED,
        CaseState.ACCEPTED,
        CaseState.SURVEYED,
        CaseState.TOWNSHIP_REVIEWED,
        CaseState.IN_PUBLIC_NOTICE,
    }
)
_CASEWORKER_ACTIONS = frozenset({"apply", "accept", "record_survey"})
_REVIEWER_ACTIONS = frozenset({"township_review", "start_public_notice"})


def _one_household(
    run: _Run, village: _Village, household_class: _Class, state: CaseState, codes: set[str]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], list[date]]:
    rng, rules, today = run.rng, run.rules, run.today
    # cum_weights gives the same draw as weights, without re-accumulating every call.
    size = rng.choices(_MEMBER_SIZES, cum_weights=_MEMBER_CUM)[0]
    members = _members(rng, run.people, size, today, household_class)

    # Pending cases applied recently; decided ones up to three years ago.
    if state in _PENDING:
        applied_on = today - _DAYS[rng.randrange(0, 35)]
    else:
        applied_on = today - _DAYS[rng.randrange(40, 3 * 365)]
    household: dict[str, Any] = {}
    events = _history(run, village, state, applied_on, household)

    incomes = [m["monthly_income"] for m in members]
    result = compute_allowance(
        method=rules.allowance_method,
        monthly_standard=household_class.monthly_standard,
        fixed_monthly=household_class.fixed_monthly,
        minimum_monthly=rules.minimum_monthly,
        member_incomes=incomes,
    )
    approved_on: date | None = household.get("approved_on")
    last_reviewed_on, next_review_on, reviews = _reviews(run, approved_on, household_class)

    code = new_case_code(rng)
    while code in codes:
        code = new_case_code(rng)
    codes.add(code)
    home_lat, home_lon = _offset(village.lat, village.lon, rng, 2_000)
    household.update(
        {
            "case_code": code,
            "village_id": village.id,
            "home_lat": home_lat,
            "home_lon": home_lon,
            "home_pending": False,
            "address": f"{village.name}{rng.randrange(1, 9)}组{rng.randrange(1, 120)}号",
            "class_id": household_class.id,
            "monthly_allowance": result.monthly_amount if approved_on and result.eligible else None,
            "conflict_of_interest": rng.random() < 0.02,
            "conflict_note": None,
            "state": state.value,
            "special_case": False,
            "applied_on": applied_on,
            "review_due_on": run.add_working_days(applied_on, rules.deadlines.review_working_days),
            "payment_starts_on": first_of_next_month(approved_on) if approved_on else None,
            "last_reviewed_on": last_reviewed_on,
            "next_review_on": next_review_on
            if state in (CaseState.APPROVED, CaseState.SUSPENDED)
            else None,
            "state_changed_at": events[-1]["at"],
            "created_at": events[0]["at"],
        }
    )
    household.setdefault("notice_ends_on", None)
    household.setdefault("decision_due_on", None)
    household.setdefault("approved_on", None)
    return household, members, events, reviews


def _history(
    run: _Run, village: _Village, state: CaseState, applied_on: date, household: dict[str, Any]
) -> list[dict[str, Any]]:
    """The case events from the application to ``state``, by the village's caseworker,
    reviewer and the county approver; the notice and approval dates into ``household``."""
    rng, rules, today = run.rng, run.rules, run.today
    events: list[dict[str, Any]] = []
    day = applied_on
    previous: CaseState | None = None
    for action in ["apply", *_steps_to(state, rng)]:
        target = CaseState.APPLIED if action == "apply" else TARGET_OF[action]
        if action != "apply":
            day = min(day + _DAYS[rng.randrange(1, 6)], today)
        if action == "start_public_notice":
            household["notice_ends_on"] = day + timedelta(days=rules.deadlines.public_notice_days)
            household["decision_due_on"] = run.add_working_days(
                household["notice_ends_on"], rules.deadlines.county_decision_working_days
            )
            if target is not state:  # moved on: the notice ran its course
                day = min(household["notice_ends_on"], today)
        if action in _CASEWORKER_ACTIONS:
            actor_id = village.caseworker_id
        elif action in _REVIEWER_ACTIONS:
            actor_id = village.reviewer_id
        else:
            actor_id = run.approver_id
        events.append(
            {
                "at": datetime.combine(day, time(1 + rng.randrange(9), rng.randrange(60)), UTC),
                "actor_id": actor_id,
                "action": action,
                "from_state": previous.value if previous else None,
                "to_state": target.value,
                "reason": REASONS.get(action),
            }
        )
        if action == "approve":
            household["approved_on"] = day
        previous = target
    return events


def _reviews(
    run: _Run, approved_on: date | None, household_class: _Class
) -> tuple[date | None, date | None, list[date]]:
    """The last periodic review, the next one due and the days the reviews were done:
    every ``review_interval_months`` from the previous one, most within a week of the due
    day, one in five up to six weeks late; a review due in the last two months may still
    be missing (overdue)."""
    if approved_on is None:
        return None, None, []
    rng = run.rng
    interval = household_class.review_interval_months
    last_reviewed_on = approved_on
    next_review_on = run.add_months(last_reviewed_on, interval)
    done: list[date] = []
    while next_review_on <= run.today - _DAYS[rng.randrange(0, 60)]:
        late = rng.randrange(8, 45) if rng.random() < 0.2 else rng.randrange(0, 7)
        last_reviewed_on = min(next_review_on + _DAYS[late], run.today - _DAYS[1])
        done.append(last_reviewed_on)
        next_review_on = run.add_months(last_reviewed_on, interval)
    return last_reviewed_on, next_review_on, done


def _steps_to(state: CaseState, rng: random.Random) -> list[str]:
    if state in PATH_TO:
        return list(PATH_TO[state])
    if state is CaseState.REJECTED:
        return [*PATH_TO[CaseState.IN_PUBLIC_NOTICE][: rng.randrange(0, 5)], "reject"]
    if state is CaseState.SUSPENDED:
        return [*PATH_TO[CaseState.APPROVED], "suspend"]
    # Terminated: from active, sometimes after a suspension.
    tail = ["suspend", "terminate"] if rng.random() < 0.5 else ["terminate"]
    return [*PATH_TO[CaseState.APPROVED], *tail]


def _class_info(classes: dict[str, HouseholdClass], today: date) -> dict[str, _Class]:
    """Plain snapshots of the classes, with the standards in effect ``today``."""
    in_effect = standards_for_month(today)
    return {
        code: _Class(
            c.id,
            in_effect[c.id].monthly_standard,
            in_effect[c.id].fixed_monthly,
            c.review_interval_months,
        )
        for code, c in classes.items()
    }


def _members(
    rng: random.Random, people: _People, size: int, today: date, household_class: _Class
) -> list[dict[str, Any]]:
    standard = household_class.monthly_standard
    head_age = rng.randrange(28, 88)
    surname = None
    plan: list[tuple[Relation, int]] = [(Relation.HEAD, head_age)]
    if size > 1 and head_age > 25:
        plan.append((Relation.SPOUSE, max(20, head_age + rng.randrange(-6, 6))))
    while len(plan) < size:
        if head_age > 60 and rng.random() < 0.4:
            plan.append((Relation.GRANDCHILD, rng.randrange(1, 18)))
        elif head_age < 50 and rng.random() < 0.2:
            plan.append((Relation.PARENT, min(95, head_age + rng.randrange(22, 32))))
        else:
            plan.append((Relation.CHILD, max(0, head_age - rng.randrange(20, 35))))
    rows = []
    created_at = datetime.combine(today, time(0), UTC)
    for relation, age in plan:
        birth = today - _DAYS[age * 365 + rng.randrange(365)]
        male = rng.random() < 0.5
        name = people.name(surname if relation in (Relation.CHILD, Relation.GRANDCHILD) else None)
        if relation is Relation.HEAD:
            surname = name[0]
        able = 18 <= age < 60 and rng.random() < 0.45
        income = (
            Decimal(rng.randrange(0, int(standard * 60))) / 100
            if able
            else Decimal(rng.randrange(0, 12000)) / 100
        )
        rows.append(
            {
                "name": name,
                "id_number": people.id_number(birth, male),
                "phone": people.phone()
                if age >= 16 and (relation is Relation.HEAD or rng.random() < 0.6)
                else None,
                "birth_date": birth,
                "relation": relation.value,
                "able_to_work": able,
                "monthly_income": income.quantize(_CENT),
                "alive": True,
                "died_on": None,
                "proof_of_life_required": relation is Relation.HEAD,
                "created_at": created_at,
            }
        )
    return rows
