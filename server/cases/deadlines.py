"""When the decision a pending case waits for, or its periodic review, is due, as SQL
(for the console's counts, its lists, the exceptions inbox and the worklists).

Registration sets ``review_due_on``: the whole review, from the application to the
decision, in working days (``deadlines.review_working_days``, 45 for special cases);
the start of the public notice sets ``decision_due_on``: the county's confirmation,
``county_decision_working_days`` working days after the notice ends. A case in public
notice waits for the county's decision; a case at an earlier step for the township's
steps within the whole review's deadline.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, case, func

from server.cases.models import CaseState, Household


def decision_deadline() -> ColumnElement[Any]:
    """The deadline of the decision a case at a pre-approval step waits for."""
    return case(
        (
            Household.state == CaseState.IN_PUBLIC_NOTICE,
            func.coalesce(Household.decision_due_on, Household.review_due_on),
        ),
        else_=Household.review_due_on,
    )


def decision_overdue(today: date) -> ColumnElement[bool]:
    """The case's decision deadline lies before ``today`` (the region's local day)."""
    return decision_deadline() < today


# Cases whose periodic review runs (the allowance is paid or suspended).
UNDER_REVIEW = (CaseState.APPROVED, CaseState.SUSPENDED)


def review_overdue(today: date) -> ColumnElement[bool]:
    """A case under periodic review whose review date lies before ``today``."""
    return Household.state.in_(UNDER_REVIEW) & (Household.next_review_on < today)
