"""Visit integrity (issue 16): the checks that catch a fabricated visit sitting just
inside every single threshold, and the risk score that sums them up.

- ``visit``: per-visit checks of the upload (duration, photo times, implausible GPS
  fixes and tracks): pure functions.
- ``photo_match``: photo reuse robust to crops, rotations, re-encoding and small edits.
- ``face_match``: calibrated face tolerances with a review band, mirrored portraits, the
  household's own templates.
- ``patterns`` (pure) and ``pattern_job`` (the background job): patterns across one
  caseworker's visits (one spot, fast legs, odd hours, shared spots).
- ``risk``: a score per visit and per caseworker-month from the flags and patterns,
  explainable; ``risk_queries`` fetches its inputs (the console, the case page and the
  back-check draw use it).
- ``rules``: the region file's ``[integrity.*]`` sections, parsed into ``IntegrityRules``.

The modules holding rules (``visit``, ``photo_match``, ``face_match``, ``patterns``,
``risk``, ``rules``) are pure: no Flask, no database, no ``server.region`` (the region
parser imports them). docs/field-visits.md, "Integrity checks", has every check, its
threshold, its blind spots and the evaluation's figures.
"""
