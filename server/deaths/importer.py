"""Reading a death-register file and classifying its rows: pure functions, no database.

A file is CSV (UTF-8 with or without a byte-order mark, or GB18030 as Chinese
registries export it) or .xlsx. A *profile* names the columns: each field accepts
several header spellings (身份证号 / 公民身份号码 / id_number ...). Rows are matched by
the keyed hash of the normalized ID number only, never by name; the name is a check.
See docs/office.md, "Matching the death register".
"""

from __future__ import annotations

import csv
import enum
import io
import operator
import re
import tomllib
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from server.crypto import normalize_id_number
from server.errors import ValidationFailed

MAX_FILE_BYTES = 32 * 1024 * 1024  # a 200,000-row register is about 10 MB as CSV
MAX_ROWS = 200_000

# GB 11643-1999: weights of the 17 digits, and the check character by the sum mod 11.
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_ID_SHAPE = re.compile(r"\d{17}[\dX]")


def id_checksum_ok(id_number: str) -> bool:
    """Whether ``id_number`` (normalized) is an 18-character resident ID whose last
    character is its GB 11643-1999 (ISO 7064 MOD 11-2) check character."""
    if not _ID_SHAPE.fullmatch(id_number):
        return False
    total = sum(map(operator.mul, map(int, id_number[:17]), _ID_WEIGHTS))
    return _ID_CHECK[total % 11] == id_number[17]


# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class Profile:
    """Which header names mean which field (compared after trimming, case-insensitive)."""

    name: str
    id_number: tuple[str, ...]
    person_name: tuple[str, ...]
    date_of_death: tuple[str, ...]


DEFAULT_PROFILE = Profile(
    name="default",
    id_number=("身份证号", "身份证号码", "公民身份号码", "证件号码", "id_number", "id number"),
    person_name=("姓名", "死者姓名", "name"),
    date_of_death=("死亡日期", "死亡时间", "date_of_death", "date of death", "died_on"),
)
PROFILES: Mapping[str, Profile] = {DEFAULT_PROFILE.name: DEFAULT_PROFILE}


class RegisterFileError(ValidationFailed):
    """The file cannot be read as a register: says which problem (``problem``)."""

    def __init__(self, message: str, problem: str, **details: Any) -> None:
        super().__init__(message, field="file", problem=problem, **details)


def load_profile(name_or_file: str) -> Profile:
    """A built-in profile by name, or a TOML file with a ``[columns]`` table:
    ``id_number``, ``name`` and ``date_of_death``, each a list of header names."""
    if name_or_file in PROFILES:
        return PROFILES[name_or_file]
    path = Path(name_or_file)
    if not path.is_file():
        raise RegisterFileError(
            f"no profile {name_or_file!r}: use one of {sorted(PROFILES)} or a TOML file",
            "unknown_profile",
        )
    try:
        columns = tomllib.loads(path.read_text(encoding="utf-8"))["columns"]
        fields = [columns[key] for key in ("id_number", "name", "date_of_death")]
    except (tomllib.TOMLDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise RegisterFileError(
            f"profile {path.name}: needs a [columns] table with id_number, name and "
            f"date_of_death ({exc})",
            "bad_profile",
        ) from exc
    if not all(isinstance(f, list) and f and all(isinstance(s, str) for s in f) for f in fields):
        raise RegisterFileError(
            f"profile {path.name}: each column is a non-empty list of header names",
            "bad_profile",
        )
    return Profile(path.stem, *(tuple(f) for f in fields))


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class RegisterRow:
    """One data row: ``line`` is its line (CSV) or row (xlsx) number in the file."""

    line: int
    id_number: str  # normalized
    name: str  # normalized
    died_on: date | None
    raw_date: str


def read_register(data: bytes, profile: Profile = DEFAULT_PROFILE) -> list[RegisterRow]:
    """Every data row of a register file (CSV or xlsx, by its content), with the
    profile's three columns; blank rows skipped. Raises RegisterFileError."""
    if len(data) > MAX_FILE_BYTES:
        raise RegisterFileError(
            f"the file is {len(data)} bytes; at most {MAX_FILE_BYTES} are accepted",
            "too_large",
            max_bytes=MAX_FILE_BYTES,
        )
    table = _xlsx_rows(data) if data[:4] == b"PK\x03\x04" else _csv_rows(data)
    header = next(table, None)
    if header is None:
        raise RegisterFileError("the file is empty", "empty")
    positions = _columns(header, profile)
    rows: list[RegisterRow] = []
    for line, cells in enumerate(table, start=2):
        values = [cells[i] if i < len(cells) else None for i in positions]
        if all(v is None or str(v).strip() == "" for v in values):
            continue
        if len(rows) >= MAX_ROWS:
            raise RegisterFileError(
                f"the file has more than {MAX_ROWS} rows; split it", "too_many_rows", max=MAX_ROWS
            )
        id_cell, name_cell, date_cell = values
        died_on, raw = parse_date(date_cell)
        rows.append(
            RegisterRow(
                line=line,
                id_number=normalize_id_number(_text(id_cell)),
                name=normalize_name(_text(name_cell)),
                died_on=died_on,
                raw_date=raw,
            )
        )
    return rows


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _csv_rows(data: bytes) -> Iterator[Sequence[Any]]:
    if data.startswith(b"\xef\xbb\xbf"):
        text = data[3:].decode("utf-8", errors="strict")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            try:
                text = data.decode("gb18030")
            except UnicodeDecodeError as exc:
                raise RegisterFileError(
                    "the file is neither UTF-8 nor GB18030 text, nor an .xlsx workbook",
                    "unreadable",
                ) from exc
    try:
        yield from csv.reader(io.StringIO(text, newline=""))
    except csv.Error as exc:
        raise RegisterFileError(f"the CSV cannot be read: {exc}", "unreadable") from exc


def _xlsx_rows(data: bytes) -> Iterator[Sequence[Any]]:
    from zipfile import BadZipFile

    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (BadZipFile, KeyError, ValueError, OSError) as exc:
        raise RegisterFileError("the .xlsx workbook cannot be read", "unreadable") from exc
    try:
        sheet = book.worksheets[0]
        yield from sheet.iter_rows(values_only=True)
    finally:
        book.close()


def _columns(header: Sequence[Any], profile: Profile) -> list[int]:
    names = [str(h).strip().lower() if h is not None else "" for h in header]
    positions = []
    for wanted in (profile.id_number, profile.person_name, profile.date_of_death):
        found = [i for i, n in enumerate(names) if n in {w.strip().lower() for w in wanted}]
        if not found:
            raise RegisterFileError(
                f"no column for {wanted[0]} (accepted headers: {', '.join(wanted)})",
                "missing_column",
                column=wanted[0],
            )
        positions.append(found[0])
    return positions


_DATE_PATTERNS = (
    re.compile(r"(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?"),
    re.compile(r"(\d{4})(\d{2})(\d{2})"),
)
_EXCEL_EPOCH = date(1899, 12, 30)


def parse_date(value: object) -> tuple[date | None, str]:
    """A date of death from a cell: 2026-03-05, 2026/3/5, 2026.3.5, 2026年3月5日,
    20260305, a time after the date (ignored), or an Excel date (a date cell, or its
    serial number). Returns (the date or None when unparseable, the raw text)."""
    if isinstance(value, datetime):
        return value.date(), value.date().isoformat()
    if isinstance(value, date):
        return value, value.isoformat()
    if isinstance(value, int | float) and not isinstance(value, bool):
        if 20_000 <= value <= 80_000:  # an Excel serial day: 1954 to 2119
            day = _EXCEL_EPOCH + timedelta(days=int(value))
            return day, day.isoformat()
        value = _text(value)
    raw = "" if value is None else str(value).strip()
    text = raw.split(" ")[0].split("T")[0]
    for pattern in _DATE_PATTERNS:
        match = pattern.fullmatch(text)
        if match:
            try:
                return date(*(int(g) for g in match.groups())), raw
            except ValueError:
                return None, raw
    return None, raw


_NAME_DOTS = str.maketrans({"•": "·", "・": "·", "．": "·", ".": "·", "‧": "·", "⋅": "·"})


def normalize_name(raw: str) -> str:
    """Names compare after NFKC, without spaces, with every middle-dot variant of
    Mongolian and other minority names (其其格·巴特尔) as ``·``."""
    return "".join(unicodedata.normalize("NFKC", raw).split()).translate(_NAME_DOTS)


def mask_name(name: str) -> str:
    """A name as reports show it: the surname's first character, then ``*``s (张*)."""
    return name[:1] + "*" * (len(name) - 1) if name else ""


# --------------------------------------------------------------------------- classifying


class RowClass(enum.StrEnum):
    MATCHED = "matched"
    NOT_FOUND = "not_found"
    AMBIGUOUS = "ambiguous"
    ALREADY_APPLIED = "already_applied"


class Reason(enum.StrEnum):
    """Why a row is ambiguous (never applied: a person checks it)."""

    ID_CHECKSUM = "id_checksum"
    DATE_UNPARSEABLE = "date_unparseable"
    DATE_IN_FUTURE = "date_in_future"
    DATE_BEFORE_BIRTH = "date_before_birth"
    NAME_DIFFERS = "name_differs"
    CONFLICTING_ROWS = "conflicting_rows"  # the same ID on rows with different dates
    RECORDED_OTHER_DATE = "recorded_other_date"  # already deceased, another date
    SEVERAL_MEMBERS = "several_members"  # one ID registered in several households


@dataclass(frozen=True)
class Candidate:
    """What matching needs of a member found under a row's ID hash."""

    member_id: int
    household_id: int
    birth_date: date
    alive: bool
    died_on: date | None
    in_area: bool


@dataclass
class Classified:
    row: RegisterRow
    row_class: RowClass
    reason: Reason | None = None
    member: Candidate | None = None

    @property
    def in_area(self) -> bool:
        """Rows that match no member are the reader's own file; others follow the member."""
        return self.member is None or self.member.in_area


@dataclass
class Classification:
    rows: list[Classified] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = {c.value: 0 for c in RowClass}
        counts["outside_area"] = 0
        for r in self.rows:
            if r.in_area:
                counts[r.row_class.value] += 1
            else:
                counts["outside_area"] += 1
        return counts

    def to_apply(self) -> list[Classified]:
        """The matched rows in the reader's area, one per member."""
        seen: set[int] = set()
        out = []
        for r in self.rows:
            if (
                r.row_class is RowClass.MATCHED
                and r.in_area
                and r.member is not None
                and r.member.member_id not in seen
            ):
                seen.add(r.member.member_id)
                out.append(r)
        return out


def classify(
    rows: Iterable[RegisterRow],
    candidates: Mapping[str, Sequence[Candidate]],
    *,
    hash_of: Callable[[str], str],
    member_name: Callable[[int], str],
    today: date,
) -> Classification:
    """Each row's class. ``candidates``: the members under each ID hash found;
    ``member_name``: the normalized name of a member (decrypted only for rows found)."""
    rows = list(rows)
    dates_by_id: dict[str, set[date | None]] = defaultdict(set)
    for row in rows:
        dates_by_id[row.id_number].add(row.died_on)
    result = Classification()
    for row in rows:
        found = candidates.get(hash_of(row.id_number), ())
        result.rows.append(_classify_row(row, found, dates_by_id, member_name, today))
    return result


def _classify_row(
    row: RegisterRow,
    found: Sequence[Candidate],
    dates_by_id: Mapping[str, set[date | None]],
    member_name: Callable[[int], str],
    today: date,
) -> Classified:
    member = found[0] if len(found) == 1 else None
    if not found:
        if not id_checksum_ok(row.id_number):
            return Classified(row, RowClass.AMBIGUOUS, Reason.ID_CHECKSUM)
        return Classified(row, RowClass.NOT_FOUND)

    def ambiguous(reason: Reason) -> Classified:
        return Classified(row, RowClass.AMBIGUOUS, reason, member or found[0])

    if member is None:
        # Several members under one ID: the member chosen for the area check is the
        # first; such a row is never applied.
        return ambiguous(Reason.SEVERAL_MEMBERS)
    if not id_checksum_ok(row.id_number):
        return ambiguous(Reason.ID_CHECKSUM)
    if row.died_on is None:
        return ambiguous(Reason.DATE_UNPARSEABLE)
    if len(dates_by_id[row.id_number]) > 1:
        return ambiguous(Reason.CONFLICTING_ROWS)
    if row.died_on > today:
        return ambiguous(Reason.DATE_IN_FUTURE)
    if row.died_on < member.birth_date:
        return ambiguous(Reason.DATE_BEFORE_BIRTH)
    if member_name(member.member_id) != row.name:
        return ambiguous(Reason.NAME_DIFFERS)
    if not member.alive:
        if member.died_on == row.died_on:
            return Classified(row, RowClass.ALREADY_APPLIED, None, member)
        return ambiguous(Reason.RECORDED_OTHER_DATE)
    return Classified(row, RowClass.MATCHED, None, member)
