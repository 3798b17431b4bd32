"""The region's supervision rules (the ``[supervision]`` section of the region file):
the revisit after a rejection, the shared-spot distance of the activity page and the
monthly back-check sample (docs/supervision.md)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


class SupervisionConfigError(ValueError):
    pass


@dataclass(frozen=True)
class SupervisionRules:
    # A rejected visit is due again this many days after the rejection.
    revisit_days: int = 7
    # Two visits' fixes this close (metres) in one month, at different households:
    # a visit "filed from a spot shared with other households' visits".
    shared_spot_m: float = 30.0
    # Visits drawn for back-checks per area and month (all of them when fewer).
    back_check_sample: int = 10


# The back-check draw's weights of issue 15, replaced by the risk score (issue 16): a
# region file still setting them is refused with a pointer to their new home.
RETIRED = (
    "weight_open_flag",
    "weight_cleared_flag",
    "weight_rejected_visit",
    "weight_failed_back_check",
    "record_months",
    "record_cap",
)


def parse_supervision_rules(data: dict[str, Any]) -> SupervisionRules:
    retired = sorted(set(data) & set(RETIRED))
    if retired:
        raise SupervisionConfigError(
            f"supervision.{retired[0]}: retired; the back-check draw weighs visits by the"
            ' risk score, set in [integrity.risk] (docs/field-visits.md, "The risk score")'
        )
    known = {f.name: f for f in fields(SupervisionRules)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SupervisionConfigError(f"supervision: unknown settings {unknown}")
    values: dict[str, Any] = {}
    for name, raw in data.items():
        default = getattr(SupervisionRules, name)
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
            raise SupervisionConfigError(f"supervision.{name}: {raw!r} must be a number >= 0")
        if isinstance(default, int) and not isinstance(raw, int):
            raise SupervisionConfigError(f"supervision.{name}: {raw!r} must be a whole number")
        values[name] = type(default)(raw)
    rules = SupervisionRules(**values)
    if rules.shared_spot_m <= 0 or rules.revisit_days < 1:
        raise SupervisionConfigError(
            "supervision: shared_spot_m must be positive, revisit_days at least 1"
        )
    return rules
