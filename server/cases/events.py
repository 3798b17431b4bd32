"""What the case core announces to the packages above it (server/events.py): an
approved change to a case (server/cases/changes.py) that others must follow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from server.events import Event


@dataclass(frozen=True)
class MemberLeft:
    """A member was removed from their household (an approved change): their open
    proof-of-life months are no longer due."""

    member_id: int
    household_id: int
    actor_id: int
    now: datetime


@dataclass(frozen=True)
class PhoneCorrected:
    """A member's phone was corrected (an approved change): messages not sent yet go
    to the new number."""

    member_id: int
    household_id: int
    now: datetime


member_left: Event[MemberLeft] = Event("cases.member_left")
phone_corrected: Event[PhoneCorrected] = Event("cases.phone_corrected")
