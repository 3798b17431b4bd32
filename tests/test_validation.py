"""Properties of the edge's converters and guards (server/validation.py,
server/safe_json.py, server.crypto.equal_secret), over generated input."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import NotFound
from werkzeug.routing import Map, RequestRedirect, Rule

from server import safe_json
from server.crypto import equal_secret
from server.validation import (
    DB_INT_MAX,
    MAX_YEAR,
    MIN_YEAR,
    ByteCount,
    DbId,
    IdConverter,
    SaneDate,
    SaneDatetime,
    Text,
    TextConverter,
    TokenConverter,
    parse_date,
    parse_id,
    parse_int,
    parse_month,
)

ROUTES = Map(
    [
        Rule("/ids/<id:value>", endpoint="id"),
        Rule("/tokens/<token:value>", endpoint="token"),
        Rule("/texts/<value>", endpoint="text"),
    ],
    converters={"id": IdConverter, "token": TokenConverter, "default": TextConverter},
)
URLS = ROUTES.bind("example.test")

numbers = st.one_of(
    st.integers(),
    st.integers(min_value=DB_INT_MAX - 3, max_value=DB_INT_MAX + 3),
    st.integers(min_value=2**63 - 3, max_value=2**63 + 3),
    st.integers(min_value=10**19, max_value=10**31),
)
path_parts = st.one_of(
    numbers.map(str),
    st.text(min_size=1, max_size=40).filter(lambda t: "/" not in t),
    st.from_regex(r"\A0*[0-9]{1,25}\Z"),
)


def _match(path: str) -> tuple[str, Any] | None:
    try:
        endpoint, values = URLS.match(path)
    except (NotFound, RequestRedirect):  # a redirect: "//" merged, not this value
        return None
    return endpoint, values["value"]


@given(path_parts)
def test_an_id_in_a_path_is_a_row_id_or_no_match(part: str) -> None:
    found = _match(f"/ids/{part}")
    if found is None:
        assert parse_id(part) is None or part != str(int(part))  # out of range, or 0-padded
        return
    value = found[1]
    assert isinstance(value, int) and 1 <= value <= DB_INT_MAX
    assert str(value) == part  # the only spelling that matches
    assert URLS.build("id", {"value": value}) == f"/ids/{part}"


@given(numbers)
def test_every_row_id_and_only_those_pass(number: int) -> None:
    expected = number if 1 <= number <= DB_INT_MAX else None
    assert parse_id(str(number)) == expected
    found = _match(f"/ids/{number}")
    assert (found[1] if found else None) == expected


@given(st.text(max_size=80))
def test_tokens_and_text_in_paths_hold_no_nul(part: str) -> None:
    for prefix in ("/tokens/", "/texts/"):
        found = _match(prefix + part)
        if found is not None:
            assert "\x00" not in found[1] and found[1] == part
    token = _match("/tokens/" + part)
    if token is not None:
        assert 1 <= len(part) <= 64 and part.isascii()


@given(st.text(max_size=30), st.integers(-(10**12), 10**12), st.integers(-(10**12), 10**12))
def test_parse_int_gives_a_number_in_bounds_or_nothing(text: str, low: int, high: int) -> None:
    value = parse_int(text, low, high)
    if value is not None:
        assert low <= value <= high and int(text) == value


@given(st.one_of(st.text(max_size=12), st.from_regex(r"\A-?[0-9]{1,6}-[0-9]{1,3}\Z")))
def test_a_month_is_yyyy_mm_in_the_sane_years_or_nothing(text: str) -> None:
    month = parse_month(text)
    if month is not None:
        year, number = int(month[:4]), int(month[5:])
        assert MIN_YEAR <= year <= MAX_YEAR and 1 <= number <= 12 and month == text


@given(
    st.one_of(
        st.text(max_size=12),
        st.dates().map(str),
        st.from_regex(r"\A[0-9]{4,5}-[0-9]{2}-[0-9]{2}\Z"),
    )
)
def test_a_date_is_iso_in_the_sane_years_or_nothing(text: str) -> None:
    value = parse_date(text)
    if value is not None:
        assert MIN_YEAR <= value.year <= MAX_YEAR and value.isoformat() == text


class Body(BaseModel):
    id: DbId | None = None
    size: ByteCount | None = None
    day: SaneDate | None = None
    at: SaneDatetime | None = None
    text: Text | None = None


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "id": numbers,
            "size": numbers,
            "day": st.dates().map(str),
            "at": st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
            "text": st.text(max_size=20),
        },
    )
)
@settings(max_examples=200, deadline=None)
def test_body_types_keep_only_what_a_column_holds(payload: dict[str, Any]) -> None:
    try:
        body = Body.model_validate(payload)
    except ValidationError:
        return
    for value in (body.id, body.size):
        assert value is None or 1 <= value <= DB_INT_MAX
    if body.day is not None:
        assert MIN_YEAR <= body.day.year <= MAX_YEAR
    if body.at is not None:
        body.at.timestamp()  # converts to UTC without overflow
        assert MIN_YEAR <= body.at.year <= MAX_YEAR
    assert body.text is None or "\x00" not in body.text


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=5), children, max_size=4
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    _containers,
    max_leaves=30,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@given(json_values)
def test_the_scan_measures_the_parsers_nesting(value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False)
    assert safe_json.nesting(text.encode("utf-8", "surrogatepass")) == _depth(value)
    if any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in _strings(value)):
        with pytest.raises(safe_json.JSONValueRefused):
            safe_json.loads(text)
    else:
        assert safe_json.loads(text) == value


def _strings(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_strings(v) for v in value)
    if isinstance(value, dict):
        return "".join(k + _strings(v) for k, v in value.items())
    return ""


@given(
    st.integers(1, 3 * safe_json.MAX_DEPTH),
    st.booleans(),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8),
)
def test_deep_json_is_refused_or_read_never_a_recursion_error(
    depth: int, objects: bool, filler: str
) -> None:
    inner = json.dumps(filler)  # brackets inside a string do not count
    opening, closing = ('{"k":', "}") if objects else ("[", "]")
    text = opening * depth + inner + closing * depth
    if depth > safe_json.MAX_DEPTH:
        with pytest.raises(safe_json.JSONTooDeep):
            safe_json.loads(text)
    else:
        safe_json.loads(text)


@given(st.text(max_size=200))
def test_any_text_is_json_or_a_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        safe_json.loads(text)


@given(st.text(max_size=40), st.text(max_size=40))
def test_equal_secret_is_equality_for_any_text(a: str, b: str) -> None:
    assert equal_secret(a, b) == (a == b)
    assert equal_secret(a, a)
    assert equal_secret(a.encode("utf-8", "surrogatepass"), a)


def test_a_written_reason_is_stripped_and_limited() -> None:
    from server.errors import ValidationFailed
    from server.validation import MAX_REASON_LENGTH, written_reason

    assert written_reason("  why  ", "reject") == "why"
    assert written_reason("   ", "reject") is None and written_reason(None, "reject") is None
    assert written_reason(" " + "x" * MAX_REASON_LENGTH + " ", "reject") == "x" * MAX_REASON_LENGTH
    with pytest.raises(ValidationFailed) as raised:
        written_reason("x" * (MAX_REASON_LENGTH + 1), "clear_flag")
    assert raised.value.details["field"] == "reason"
    assert raised.value.details["max_length"] == MAX_REASON_LENGTH
