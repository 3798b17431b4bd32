"""Tables that console pages show and export: columns (some personal), rows, the
filters that chose them. Pages answer with ``server.web.exports.respond``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from flask_babel import gettext as _

from server.auth.models import User
from server.auth.permissions import Capability, can
from server.region import local_time


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    # Names, ID numbers, phones, addresses: only for roles that read personal data.
    personal: bool = False
    # The key of the row's URL for this cell (pages only; files carry the text).
    link: str | None = None


@dataclass
class Table:
    name: str  # the file name's stem: ascii, e.g. "exceptions"
    title: str
    columns: Sequence[Column]
    rows: Iterable[Mapping[str, Any]]
    # What chose the rows, as label -> value (shown above the table and in the file).
    filters: Mapping[str, str] = field(default_factory=dict)

    def columns_for(self, actor: User) -> list[Column]:
        reads = can(actor, Capability.READ_PERSONAL_DATA)
        return [c for c in self.columns if reads or not c.personal]


def cell(value: Any) -> Any:
    """A value as a file cell: text for dates and times (the region's zone), numbers
    stay numbers."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return local_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if isinstance(value, int | float):
        return value
    return str(value)
