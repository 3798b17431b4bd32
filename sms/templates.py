"""The message texts (zh_CN) and how many SMS segments each takes.

Every message starts with the office's signature (【...】, from the region file), carries
no personal data beyond a masked name, and never asks for a password or a code. A
Chinese text is sent as UCS-2: 70 characters fit one segment, 67 per segment beyond
that; the link alone is ``len(PUBLIC_BASE_URL) + 27`` characters, so a short public
address keeps the reminder to one or two segments.
"""

from __future__ import annotations

import math
from datetime import date

# GSM 03.38 basic character set (a message of only these is sent as GSM-7).
_GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


def masked_name(name: str) -> str:
    """The family name and one asterisk per other character: 王小明 -> 王**."""
    name = name.strip()
    return name[:1] + "*" * (len(name) - 1) if name else ""


def segments(text: str) -> int:
    """SMS segments for ``text``: GSM-7 (160 / 153) or UCS-2 (70 / 67, UTF-16 units)."""
    if all(ch in _GSM7 for ch in text):
        single, multi, length = 160, 153, len(text)
    else:
        single, multi = 70, 67
        length = len(text.encode("utf-16-le")) // 2
    return 1 if length <= single else math.ceil(length / multi)


def reminder(*, signature: str, name: str, last_day: date, url: str) -> str:
    """The 20th: the member's link and the last day of the window."""
    deadline = f"{last_day.month}月{last_day.day}日"
    return f"{signature}{masked_name(name)}您好，请在{deadline}前完成本月认证：{url}"


def follow_up(*, signature: str, name: str, last_day: date, url: str) -> str:
    """To members still pending a few days later."""
    deadline = f"{last_day.month}月{last_day.day}日"
    return f"{signature}{masked_name(name)}您好，本月认证还未完成，截止{deadline}：{url}"
