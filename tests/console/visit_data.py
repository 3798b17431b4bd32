"""Planted visits for the console's visit pages (lane V): rows written directly, so a
test says exactly which visits, fixes, times and flags exist."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from server.auth.models import User
from server.cases.models import Household
from server.extensions import db
from server.visits.models import ReviewStatus, Survey, SurveyFlag, SurveyStatus


def plant_visit(
    household: Household,
    caseworker: User,
    finished_at: datetime,
    *,
    minutes: float = 30,
    lat: float | None = None,
    lon: float | None = None,
    kind: str = "periodic_review",
    flags: tuple[str, ...] = (),
    cleared: tuple[str, ...] = (),
    on_time: bool | None = None,
    status: ReviewStatus = ReviewStatus.RECEIVED,
) -> Survey:
    """A complete visit; ``flags`` open warnings, ``cleared`` cleared ones."""
    survey = Survey(
        client_uuid=str(uuid.uuid4()),
        content_hash="0" * 64,
        household_id=household.id,
        caseworker_id=caseworker.id,
        kind=kind,
        status=SurveyStatus.COMPLETE,
        started_at=finished_at - timedelta(minutes=minutes),
        finished_at=finished_at,
        gps_lat=household.home_lat if lat is None else lat,
        gps_lon=household.home_lon if lon is None else lon,
        gps_accuracy_m=10.0,
        payload="{}",
        received_at=finished_at + timedelta(minutes=5),
        completed_at=finished_at + timedelta(minutes=5),
        review_on_time=on_time,
        review_status=status,
    )
    for code in flags:
        survey.flags.append(SurveyFlag(code=code, severity="warning", detail=""))
    for code in cleared:
        survey.flags.append(
            SurveyFlag(
                code=code,
                severity="warning",
                detail="",
                cleared_at=finished_at + timedelta(days=1),
                clear_reason="核实无误",
            )
        )
    db.session.add(survey)
    db.session.flush()
    return survey
