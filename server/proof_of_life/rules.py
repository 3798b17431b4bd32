"""The region's proof-of-life rules (the ``[proof_of_life]`` section of the region file,
with its ``[proof_of_life.liveness]`` thresholds)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from server.proof_of_life.analysis import LivenessThresholds

# The face tolerances of the verification pipeline, as measured (the reasoning and the
# measurements: server/proof_of_life/pipeline.py's docstring and docs/proof-of-life.md).
MATCH_TOLERANCE = 0.55
REVIEW_TOLERANCE = 0.60
_TOLERANCES = frozenset({"match_tolerance", "review_tolerance"})


class ProofOfLifeConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ProofOfLifeRules:
    open_day: int = 20  # the window opens on this day of the month, 00:00 local time
    window_days: int = 5  # ... and closes this many days later
    attempts_per_day: int = 5  # a recipient's own attempts per local day
    attempts_per_month: int = 15  # ... and per monthly window
    session_seconds: int = 120  # a session must be used within this
    frames_min: int = 6
    frames_max: int = 12
    frame_max_bytes: int = 400_000
    capture_count: int = 10
    capture_interval_ms: int = 300
    capture_width: int = 640
    capture_height: int = 480
    frame_retention_days: int = 30  # frames kept for audit, then deleted; results stay
    assisted_far_from_home_m: int = 300  # an assisted attempt farther than this is flagged
    # Guided capture (docs/proof-of-life.md): the page sends each step short batches.
    guided_session_seconds: int = 300  # a guided session: the face step and two challenges
    guided_step_seconds: int = 40  # the page's time for one step before a plain retry
    guided_interval_ms: int = 250  # between frames of a face, turn or mouth step
    guided_blink_interval_ms: int = 100  # a blink lasts 100-400 ms: sampled faster
    guided_batch_frames: int = 3  # frames per batch (face, turn, mouth)
    guided_blink_batch_frames: int = 6  # frames per batch of the blink step
    guided_batch_max: int = 8  # the most frames one batch may carry
    guided_max_frames: int = 90  # the most frames of one guided session
    guided_width: int = 640  # the frame size the page captures (it may send less)
    guided_height: int = 480
    guided_frame_max_bytes: int = 100_000
    # The face: at or under match_tolerance the member's; above review_tolerance someone
    # else's; in between a person decides (pipeline.Thresholds, thresholds_for).
    match_tolerance: float = MATCH_TOLERANCE
    review_tolerance: float = REVIEW_TOLERANCE
    # The liveness thresholds (``[proof_of_life.liveness]``: LivenessThresholds' fields,
    # measured by benchmarks/liveness_rates.py); a value not set keeps the measured one.
    liveness: LivenessThresholds = field(default_factory=LivenessThresholds)

    def __post_init__(self) -> None:
        if not 0 < self.match_tolerance <= self.review_tolerance:
            raise ProofOfLifeConfigError(
                "proof_of_life: 0 < match_tolerance <= review_tolerance is required"
            )
        if not 1 <= self.open_day <= 28:
            raise ProofOfLifeConfigError("proof_of_life.open_day must be 1-28")
        if not self.frames_min <= self.capture_count <= self.frames_max:
            raise ProofOfLifeConfigError(
                "proof_of_life: frames_min <= capture_count <= frames_max is required"
            )
        most = max(self.guided_batch_frames, self.guided_blink_batch_frames)
        if not most <= self.guided_batch_max <= self.guided_max_frames:
            raise ProofOfLifeConfigError(
                "proof_of_life: guided batch frames <= guided_batch_max <= guided_max_frames"
                " is required"
            )


def parse_proof_of_life_rules(data: dict[str, Any]) -> ProofOfLifeRules:
    known = {f.name for f in fields(ProofOfLifeRules)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProofOfLifeConfigError(f"proof_of_life: unknown settings {unknown}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name == "liveness":
            values[name] = _liveness(value)
            continue
        if name in _TOLERANCES:
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ProofOfLifeConfigError(
                    f"proof_of_life.{name}: {value!r} must be a positive number"
                )
            values[name] = float(value)
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ProofOfLifeConfigError(
                f"proof_of_life.{name}: {value!r} must be a positive whole number"
            )
        values[name] = value
    return ProofOfLifeRules(**values)


def _liveness(data: Any) -> LivenessThresholds:
    """The ``[proof_of_life.liveness]`` table: positive numbers for LivenessThresholds'
    fields, nothing else."""
    if not isinstance(data, dict):
        raise ProofOfLifeConfigError("proof_of_life.liveness must be a table")
    known = {f.name for f in fields(LivenessThresholds)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProofOfLifeConfigError(f"proof_of_life.liveness: unknown settings {unknown}")
    for name, value in data.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ProofOfLifeConfigError(
                f"proof_of_life.liveness.{name}: {value!r} must be a positive number"
            )
    return LivenessThresholds(**{name: float(value) for name, value in data.items()})


@dataclass(frozen=True)
class CampaignRules:
    """The monthly SMS campaign (the ``[campaign]`` section; docs/sms.md)."""

    follow_up_day: int = 23  # the follow-up to members still pending, this day of the month
    grace_days: int = 30  # after the window closes, a pass still restores the month (back-pay)
    missed_months_to_review: int = 3  # this many missed months in a row: the case is reviewed
    send_from_hour: int = 8  # messages go out between these local hours only
    send_until_hour: int = 21

    def grace_ends(self, closes: datetime) -> datetime:
        """The end of the grace period of a month whose window closes at ``closes``: a
        pass until then restores the month's payment (back-pay)."""
        return closes + timedelta(days=self.grace_days)

    def closed_since_grace_began(self, now: datetime) -> datetime:
        """A month whose window closed after this moment is still in its grace period
        at ``now`` (the same rule as :meth:`grace_ends`, for SQL filters)."""
        return now - timedelta(days=self.grace_days)

    def check(self, pol: ProofOfLifeRules) -> None:
        closes_day = pol.open_day + pol.window_days
        if not pol.open_day < self.follow_up_day < closes_day:
            raise ProofOfLifeConfigError(
                f"campaign.follow_up_day must fall inside the window "
                f"(after day {pol.open_day}, before day {closes_day})"
            )
        if not 0 <= self.send_from_hour < self.send_until_hour <= 24:
            raise ProofOfLifeConfigError(
                "campaign: 0 <= send_from_hour < send_until_hour <= 24 is required"
            )


def parse_campaign_rules(data: dict[str, Any], pol: ProofOfLifeRules) -> CampaignRules:
    known = {f.name for f in fields(CampaignRules)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProofOfLifeConfigError(f"campaign: unknown settings {unknown}")
    for name, value in data.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ProofOfLifeConfigError(f"campaign.{name}: {value!r} must be a whole number")
    rules = CampaignRules(**data)
    rules.check(pol)
    return rules
