"""Reading register files and classifying rows: pure, no database."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from server.deaths.importer import (
    MAX_ROWS,
    Candidate,
    Reason,
    RegisterFileError,
    RowClass,
    classify,
    id_checksum_ok,
    load_profile,
    mask_name,
    normalize_name,
    parse_date,
    read_register,
)
from tests.deaths.registers import csv_bytes, excel_date, xlsx_bytes

GOOD_ID = "11010519491231002X"  # the standard's own example
TODAY = date(2026, 11, 23)


def test_the_checksum_follows_gb_11643_mod_11_2() -> None:
    assert id_checksum_ok(GOOD_ID)
    assert id_checksum_ok("440524188001010014")
    assert not id_checksum_ok("110105194912310021")  # last character changed
    assert not id_checksum_ok("110105194912310X2X")  # X only as the check character
    assert not id_checksum_ok("11010519491231002")  # 17 characters
    assert not id_checksum_ok("110105491231002")  # the old 15-digit form has no check


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
def test_csv_in_each_encoding_reads_the_same_rows(encoding: str) -> None:
    data = csv_bytes([[GOOD_ID.lower(), " 张 三 ", "2026-03-05"]], encoding=encoding)
    (row,) = read_register(data)
    assert (row.line, row.id_number, row.name, row.died_on) == (
        2,
        GOOD_ID,
        "张三",
        date(2026, 3, 5),
    )


def test_xlsx_reads_date_cells_serial_numbers_and_text() -> None:
    data = xlsx_bytes(
        [
            [GOOD_ID, "张三", excel_date(date(2026, 3, 5))],
            ["440524188001010014", "李四", 46086],
            ["440524188001010014", "李四", "2026/3/5"],
        ]
    )
    rows = read_register(data)
    assert [r.died_on for r in rows] == [date(2026, 3, 5)] * 3


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("2026-03-05", date(2026, 3, 5)),
        ("2026/3/5", date(2026, 3, 5)),
        ("20260305", date(2026, 3, 5)),
        ("2026.3.5", date(2026, 3, 5)),
        ("2026年3月5日", date(2026, 3, 5)),
        ("2026-03-05 14:30:00", date(2026, 3, 5)),
        (20260305, date(2026, 3, 5)),
        ("2026-02-30", None),
        ("5/3/2026", None),
        ("", None),
        ("unknown", None),
    ],
)
def test_dates(cell: object, expected: date | None) -> None:
    assert parse_date(cell)[0] == expected


def test_profile_mapping_accepts_the_default_headers_and_a_file(tmp_path: Path) -> None:
    data = csv_bytes(
        [[1, GOOD_ID, "张三", "20260305"]], header=("序号", "公民身份号码", "姓名", "死亡时间")
    )
    (row,) = read_register(data)
    assert row.id_number == GOOD_ID
    profile_file = tmp_path / "civil.toml"
    profile_file.write_text(
        '[columns]\nid_number = ["SFZH"]\nname = ["XM"]\ndate_of_death = ["SWRQ"]\n',
        encoding="utf-8",
    )
    profile = load_profile(str(profile_file))
    data = csv_bytes([[GOOD_ID, "张三", "20260305"]], header=("SFZH", "XM", "SWRQ"))
    assert read_register(data, profile)[0].name == "张三"
    with pytest.raises(RegisterFileError) as missing:
        read_register(data)
    assert missing.value.details["problem"] == "missing_column"
    assert "身份证号" in missing.value.message


def test_a_profile_that_is_neither_known_nor_a_valid_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RegisterFileError) as unknown:
        load_profile("nonesuch")
    assert unknown.value.details["problem"] == "unknown_profile"
    bad = tmp_path / "bad.toml"
    bad.write_text("[columns]\nid_number = 3\n", encoding="utf-8")
    with pytest.raises(RegisterFileError) as broken:
        load_profile(str(bad))
    assert broken.value.details["problem"] == "bad_profile"


def test_limits_and_unreadable_files(monkeypatch: pytest.MonkeyPatch) -> None:
    from server.deaths import importer

    monkeypatch.setattr(importer, "MAX_ROWS", 2)
    with pytest.raises(RegisterFileError) as many:
        read_register(csv_bytes([[GOOD_ID, "张三", "20260305"]] * 3))
    assert many.value.details["problem"] == "too_many_rows"
    monkeypatch.setattr(importer, "MAX_FILE_BYTES", 10)
    with pytest.raises(RegisterFileError) as large:
        read_register(csv_bytes([[GOOD_ID, "张三", "20260305"]]))
    assert large.value.details["problem"] == "too_large"
    monkeypatch.undo()
    assert MAX_ROWS == 200_000
    for data, problem in (
        (b"", "empty"),
        (b"PK\x03\x04not a zip", "unreadable"),
        (b"\xff\xfe\x00\xd8\x00", "unreadable"),
    ):
        with pytest.raises(RegisterFileError) as error:
            read_register(data)
        assert error.value.details["problem"] == problem


def test_names_compare_after_normalization_and_are_masked() -> None:
    assert normalize_name("其其格 • 巴特尔") == normalize_name("其其格·巴特尔")
    assert normalize_name("ＡＢ") == "AB"
    assert mask_name("张三") == "张*"
    assert mask_name("其其格") == "其**"
    assert mask_name("") == ""


def _candidate(member_id: int = 1, **changes: object) -> Candidate:
    values: dict[str, object] = {
        "member_id": member_id,
        "household_id": 10,
        "birth_date": date(1950, 1, 1),
        "alive": True,
        "died_on": None,
        "in_area": True,
    }
    values.update(changes)
    return Candidate(**values)  # type: ignore[arg-type]


def _classify(
    lines: list[list[object]], members: dict[str, list[Candidate]]
) -> list[tuple[str, str | None]]:
    rows = read_register(csv_bytes(lines))
    result = classify(
        rows,
        members,
        hash_of=lambda id_number: id_number,
        member_name=lambda member_id: "张三",
        today=TODAY,
    )
    return [(r.row_class.value, r.reason.value if r.reason else None) for r in result.rows]


@pytest.mark.parametrize(
    ("line", "candidate", "expected"),
    [
        ([GOOD_ID, "张三", "2026-03-05"], _candidate(), ("matched", None)),
        (["440524188001010014", "张三", "2026-03-05"], None, ("not_found", None)),
        (["440524188001010015", "张三", "2026-03-05"], None, ("ambiguous", "id_checksum")),
        (["110105194912310021", "张三", "2026-03-05"], _candidate(), ("ambiguous", "id_checksum")),
        ([GOOD_ID, "张四", "2026-03-05"], _candidate(), ("ambiguous", "name_differs")),
        ([GOOD_ID, "张三", "2027-01-01"], _candidate(), ("ambiguous", "date_in_future")),
        ([GOOD_ID, "张三", "1940-01-01"], _candidate(), ("ambiguous", "date_before_birth")),
        ([GOOD_ID, "张三", "soon"], _candidate(), ("ambiguous", "date_unparseable")),
        (
            [GOOD_ID, "张三", "2026-03-05"],
            _candidate(alive=False, died_on=date(2026, 3, 5)),
            ("already_applied", None),
        ),
        (
            [GOOD_ID, "张三", "2026-03-05"],
            _candidate(alive=False, died_on=date(2026, 2, 1)),
            ("ambiguous", "recorded_other_date"),
        ),
    ],
)
def test_each_class(
    line: list[object], candidate: Candidate | None, expected: tuple[str, str | None]
) -> None:
    members = {} if candidate is None else {line[0]: [candidate]}  # type: ignore[dict-item]
    assert _classify([line], members) == [expected]


def test_duplicates_and_several_members() -> None:
    members = {GOOD_ID: [_candidate()]}
    same = [[GOOD_ID, "张三", "2026-03-05"], [GOOD_ID, "张三", "2026/3/5"]]
    assert _classify(same, members) == [("matched", None), ("matched", None)]
    rows = read_register(csv_bytes(same))
    once = classify(rows, members, hash_of=str, member_name=lambda _: "张三", today=TODAY)
    assert len(once.to_apply()) == 1  # one member, applied once
    different = [[GOOD_ID, "张三", "2026-03-05"], [GOOD_ID, "张三", "2026-03-06"]]
    assert _classify(different, members) == [("ambiguous", Reason.CONFLICTING_ROWS.value)] * 2
    two = {GOOD_ID: [_candidate(1), _candidate(2, household_id=11)]}
    assert _classify([[GOOD_ID, "张三", "2026-03-05"]], two) == [
        ("ambiguous", Reason.SEVERAL_MEMBERS.value)
    ]


def test_counts_put_rows_of_members_elsewhere_apart() -> None:
    members = {GOOD_ID: [_candidate(in_area=False)]}
    rows = read_register(csv_bytes([[GOOD_ID, "张三", "2026-03-05"]]))
    result = classify(rows, members, hash_of=str, member_name=lambda _: "张三", today=TODAY)
    assert result.counts()["outside_area"] == 1
    assert result.counts()[RowClass.MATCHED.value] == 0
    assert result.to_apply() == []
