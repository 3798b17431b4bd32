"""The survey upload's multipart reader: what it reads back, and what it refuses."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from mobile_api.multipart import MAX_HEADER_BYTES, MalformedMultipart, read_multipart

BOUNDARY = "dibao-test-boundary"
DELIMITER = f"\r\n--{BOUNDARY}".encode()


class TrickleStream:
    """Returns at most ``step`` bytes per read, like a slow link."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = io.BytesIO(data)
        self.step = step

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(self.step, size) if size >= 0 else self.step)


class Sink:
    def __init__(self, limit: int | None = None) -> None:
        self.data = bytearray()
        self.closed = False
        self.limit = limit

    def write(self, data: bytes) -> int:
        self.data += data
        if self.limit is not None and len(self.data) > self.limit:
            raise OverflowError("sink full")
        return len(data)

    def close(self) -> None:
        self.closed = True


def _body(fields: dict[str, str], files: dict[str, bytes]) -> bytes:
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    for name, data in files.items():
        parts.append(
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{name}.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def _read(
    body: bytes, step: int = 1 << 20, **limits: int
) -> tuple[dict[str, str], dict[str, bytes]]:
    sinks: dict[str, Sink] = {}

    def new_file(name: str, content_type: str | None) -> Sink:
        sinks[name] = Sink()
        return sinks[name]

    result = read_multipart(TrickleStream(body, step), BOUNDARY, new_file, **limits)
    assert result.files == sinks
    return result.fields, {name: bytes(sink.data) for name, sink in sinks.items()}


# Data that looks like the delimiter, or its start, in every way short of being it.
tricky = (
    st.lists(
        st.sampled_from(
            [b"\r", b"\n", b"\r\n", b"-", b"--", b"\r\n--", f"\r\n--{BOUNDARY[:-1]}".encode(), b"x"]
        )
        | st.binary(max_size=40),
        max_size=30,
    )
    .map(b"".join)
    .filter(
        # A sender picks a boundary that does not occur in its data (RFC 2046): the first
        # delimiter after the data must be the one that ends it.
        lambda data: (data + DELIMITER).find(DELIMITER) == len(data)
    )
)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(
    survey=st.text(max_size=200),
    photos=st.dictionaries(st.from_regex(r"\A[a-z0-9_]{1,8}\Z"), tricky, max_size=4),
    step=st.integers(min_value=1, max_value=90),
)
def test_whatever_was_sent_is_read_back_byte_for_byte(
    survey: str, photos: dict[str, bytes], step: int
) -> None:
    photos.pop("survey", None)
    fields, files = _read(_body({"survey": survey}, photos), step=step)
    assert fields == {"survey": survey}
    assert files == photos


def test_a_body_made_by_werkzeug_reads_the_same() -> None:
    boundary, body = encode_multipart(
        {
            "survey": '{"a": 1}',
            "p1": FileStorage(io.BytesIO(b"\xff\xd8 jpeg \r\n-- bytes"), filename="p1.jpg"),
        },
        boundary=BOUNDARY,
    )
    sinks: dict[str, Sink] = {}
    result = read_multipart(
        io.BytesIO(body), boundary, lambda name, _ct: sinks.setdefault(name, Sink())
    )
    assert result.fields == {"survey": '{"a": 1}'}
    assert bytes(sinks["p1"].data) == b"\xff\xd8 jpeg \r\n-- bytes"


def test_a_preamble_before_the_first_boundary_is_ignored() -> None:
    fields, _ = _read(b"ignore me\r\n" + _body({"survey": "{}"}, {}))
    assert fields == {"survey": "{}"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "no multipart boundary"),
        (b"no boundary at all", "no multipart boundary"),
        (_body({"survey": "{}"}, {"p1": b"abc"})[:-30], "ends inside a part"),
        (f"--{BOUNDARY}\r\nContent-Disposition: form-data".encode(), "headers are missing"),
        (
            f"--{BOUNDARY}\r\nX-Pad: {'a' * MAX_HEADER_BYTES}\r\n\r\nx\r\n--{BOUNDARY}--".encode(),
            "too long",
        ),
        (f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{BOUNDARY}--".encode(), "name"),
        (
            f'--{BOUNDARY}\r\nContent-Disposition: attachment; name="a"\r\n\r\nx\r\n'
            f"--{BOUNDARY}--".encode(),
            "not form-data",
        ),
        (f"--{BOUNDARY}\r\nno colon here\r\n\r\nx\r\n--{BOUNDARY}--".encode(), "no ':'"),
        (f"--{BOUNDARY}junk\r\n\r\nx\r\n--{BOUNDARY}--".encode(), "line break"),
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="a"\r\n\r\n'.encode()
            + b"\xff\xfe\r\n"
            + f"--{BOUNDARY}--".encode(),
            "not UTF-8",
        ),
    ],
)
def test_a_malformed_body_is_refused_with_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(MalformedMultipart, match=message):
        _read(body)


def test_a_name_sent_twice_is_refused_and_open_sinks_are_closed() -> None:
    body = _body({}, {"p1": b"one"}).replace(f"--{BOUNDARY}--".encode(), b"") + _body(
        {}, {"p1": b"two"}
    )
    sinks: list[Sink] = []

    def new_file(_name: str, _ct: str | None) -> Sink:
        sinks.append(Sink())
        return sinks[-1]

    with pytest.raises(MalformedMultipart, match="'p1' sent twice"):
        read_multipart(io.BytesIO(body), BOUNDARY, new_file)
    assert sinks and all(sink.closed for sink in sinks)


def test_limits_on_parts_and_field_size() -> None:
    many = _body({f"f{i}": "x" for i in range(5)}, {})
    assert len(_read(many, max_parts=5)[0]) == 5
    with pytest.raises(MalformedMultipart, match="more than 4 parts"):
        _read(many, max_parts=4)
    with pytest.raises(MalformedMultipart, match="larger than 10 bytes"):
        _read(_body({"survey": "x" * 11}, {}), max_field_bytes=10)
    assert _read(_body({"survey": "x" * 10}, {}), max_field_bytes=10)[0] == {"survey": "x" * 10}


def test_an_error_from_a_sink_goes_through_and_every_sink_is_closed() -> None:
    sinks: list[Sink] = []

    def new_file(_name: str, _ct: str | None) -> Sink:
        sinks.append(Sink(limit=100))
        return sinks[-1]

    body = _body({"survey": "{}"}, {"p1": b"a" * 50, "p2": b"b" * 500})
    with pytest.raises(OverflowError):
        read_multipart(TrickleStream(body, 64), BOUNDARY, new_file)
    assert len(sinks) == 2 and all(sink.closed for sink in sinks)


@pytest.mark.parametrize("boundary", ["", "x" * 201])
def test_a_missing_or_overlong_boundary_is_refused(boundary: str) -> None:
    with pytest.raises(MalformedMultipart, match="boundary"):
        read_multipart(io.BytesIO(b""), boundary, lambda _n, _c: Sink())


def test_repeatable_file_parts_are_kept_in_order() -> None:
    body = (
        _body({"nonce": "n"}, {"frames": b"first"}).replace(f"--{BOUNDARY}--\r\n".encode(), b"")
        + _body({}, {"frames": b"second"}).replace(f"--{BOUNDARY}--\r\n".encode(), b"")
        + _body({}, {"frames": b"third"})
    )
    result = read_multipart(
        TrickleStream(body, 5), BOUNDARY, lambda _n, _c: Sink(), repeatable=frozenset({"frames"})
    )
    assert result.fields == {"nonce": "n"}
    assert result.files == {}
    assert [bytes(s.data) for s in result.repeated["frames"]] == [b"first", b"second", b"third"]
    with pytest.raises(MalformedMultipart, match="'frames' sent twice"):
        read_multipart(io.BytesIO(body), BOUNDARY, lambda _n, _c: Sink())


def test_a_boundary_longer_than_rfc_2046_allows_is_still_read() -> None:
    long = "-" * 15 + "WerkzeugFormPart_1763882351.4403958" + "0.8839217649113871" * 2
    assert len(long) > 70
    body = _body({"survey": "{}"}, {}).replace(BOUNDARY.encode(), long.encode())
    result = read_multipart(io.BytesIO(body), long, lambda _n, _c: Sink())
    assert result.fields == {"survey": "{}"}
