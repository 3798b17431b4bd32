"""Message texts: the signature first, a masked name only, the deadline, the link;
segments counted as the network counts them."""

from __future__ import annotations

from datetime import date

import pytest

from sms.templates import follow_up, masked_name, reminder, segments

URL = "https://mz.example.cn/m/" + "A" * 24
OFFICE = "【科尔沁区民政局】"
LAST_DAY = date(2026, 11, 24)


@pytest.mark.parametrize(
    ("name", "masked"), [("王小明", "王**"), ("李娜", "李*"), ("欧阳修", "欧**"), ("", "")]
)
def test_only_the_family_name_is_shown(name: str, masked: str) -> None:
    assert masked_name(name) == masked


def test_the_reminder_carries_signature_masked_name_deadline_and_link() -> None:
    text = reminder(
        signature="【科尔沁区民政局】", name="王小明", last_day=date(2026, 11, 24), url=URL
    )
    assert text.startswith("【科尔沁区民政局】王**")
    assert "11月24日" in text and text.endswith(URL)
    assert "小明" not in text
    for forbidden in ("密码", "验证码"):
        assert forbidden not in text  # never asks for a password or a code
    assert segments(text) == 2  # 79 characters of UCS-2: 70 fit one segment
    later = follow_up(
        signature="【科尔沁区民政局】", name="王小明", last_day=date(2026, 11, 24), url=URL
    )
    assert "截止11月24日" in later and segments(later) == 2


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("认" * 70, 1),
        ("认" * 71, 2),
        ("认" * 134, 2),
        ("认" * 135, 3),
        ("a" * 69 + "€", 1),  # € is not in the basic set: UCS-2, 70 characters
        ("😀" * 35, 1),  # two UTF-16 units each
        ("😀" * 36, 2),
    ],
)
def test_segments_follow_gsm7_and_ucs2_limits(text: str, count: int) -> None:
    assert segments(text) == count
