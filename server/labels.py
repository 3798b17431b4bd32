"""Human labels (zh_CN and English through Babel) for the domain's codes."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from server.auth.models import Role
from server.cases.models import CaseState, Relation
from server.crypto import mask_id_number, mask_phone
from server.errors import DomainError, ReasonRequired
from server.region import local_time
from server.validation import MAX_REASON_LENGTH

STATE_LABELS = {
    CaseState.APPLIED: _l("Applied"),
    CaseState.ACCEPTED: _l("Accepted"),
    CaseState.SURVEYED: _l("Surveyed"),
    CaseState.TOWNSHIP_REVIEWED: _l("Township reviewed"),
    CaseState.IN_PUBLIC_NOTICE: _l("In public notice"),
    CaseState.APPROVED: _l("Active"),
    CaseState.SUSPENDED: _l("Suspended"),
    CaseState.TERMINATED: _l("Terminated"),
    CaseState.REJECTED: _l("Rejected"),
}

ROLE_LABELS = {
    Role.CASEWORKER: _l("Caseworker"),
    Role.TOWNSHIP_REVIEWER: _l("Township reviewer"),
    Role.COUNTY_APPROVER: _l("County approver"),
    Role.SUPERVISOR: _l("Supervisor"),
    Role.ADMIN: _l("Administrator"),
}

RELATION_LABELS = {
    Relation.HEAD: _l("Head"),
    Relation.SPOUSE: _l("Spouse"),
    Relation.CHILD: _l("Child"),
    Relation.PARENT: _l("Parent"),
    Relation.GRANDCHILD: _l("Grandchild"),
    Relation.GRANDPARENT: _l("Grandparent"),
    Relation.SIBLING: _l("Sibling"),
    Relation.OTHER: _l("Other"),
}

ACTION_LABELS = {
    "apply": _l("Application registered"),
    "accept": _l("Accept"),
    "record_survey": _l("Record household survey"),
    "township_review": _l("Township review passed"),
    "start_public_notice": _l("Start public notice"),
    "return_for_resurvey": _l("Return for re-survey"),
    "approve": _l("Approve"),
    "reject": _l("Reject"),
    "suspend": _l("Suspend"),
    "reinstate": _l("Reinstate"),
    "terminate": _l("Terminate"),
    "seed": _l("Imported"),
    "periodic_review": _l("Periodic review visit"),
    "proof_of_life_review": _l("Review after missed proofs of life"),
    "case_change": _l("Change to the case approved"),
    "review_after_change": _l("Review after a change: income reaches the standard"),
    "standard_changed": _l("Allowance recomputed: new class standard"),
}

# Changes to a case (server/cases/changes.py).
CHANGE_KIND_LABELS = {
    "add_member": _l("Add a member"),
    "remove_member": _l("Remove a member"),
    "correct_phone": _l("Correct a phone"),
    "change_income": _l("Change incomes"),
}
CHANGE_STATUS_LABELS = {
    "pending": _l("Waiting for a checker"),
    "approved": _l("Approved"),
    "rejected": _l("Rejected"),
    "withdrawn": _l("Withdrawn"),
}


FLAG_LABELS = {
    "gps_far_from_home": _l("GPS fix far from the registered home"),
    "gps_low_accuracy": _l("GPS fix not accurate"),
    "gps_mock": _l("Simulated GPS location"),
    "visit_in_future": _l("Visit time is in the future"),
    "visit_stale": _l("Visit uploaded long after it happened"),
    "visit_times_inverted": _l("Visit ended before it started"),
    "photo_exif_far": _l("Photo taken far from the visit"),
    "photo_time_outside_visit": _l("Photo taken outside the visit's time"),
    "photo_no_exif": _l("Photo carries no time or place"),
    "photo_reused": _l("Same photo as in another household"),
    "impossible_travel": _l("Faster than a car since the previous visit"),
    "portrait_no_face": _l("No face in the portrait"),
    "portrait_many_faces": _l("Several faces in the portrait"),
    "portrait_member_unknown": _l("Portrait names no member"),
    "face_in_other_household": _l("Same face as a member of another household"),
    "visit_kind_mismatch": _l("Visit kind does not fit the case's state"),
    "member_registered_elsewhere": _l("Applicant already registered in another household"),
    # Visit integrity (issue 16; docs/field-visits.md, "Integrity checks").
    "visit_too_short": _l("Visit too short for what it recorded"),
    "photos_bunched": _l("Photos all taken within moments"),
    "gps_too_precise": _l("GPS fix more precise than a phone can be"),
    "gps_at_registered_point": _l("GPS fix exactly at the registered point"),
    "gps_repeated": _l("Same GPS coordinates as another visit"),
    "gps_fix_stale": _l("GPS fix older than the visit"),
    "track_static": _l("GPS track that never moves"),
    "track_jump": _l("GPS track that jumps"),
    "photo_near_duplicate": _l("Near-identical photos in one caseworker's month"),
    "face_not_member": _l("Portrait does not match the member's enrolled face"),
    "pattern_one_spot": _l("Several households visited from one spot"),
    "pattern_fast_legs": _l("Too fast between visits along the day"),
    "pattern_odd_hours": _l("Visit at an hour nobody visits"),
    "pattern_shared_spots": _l("Many visits from spots shared with other households"),
}
# The risk score (server.visits.integrity.risk; docs/field-visits.md, "The risk score").
RISK_BAND_LABELS = {
    "low": _l("low"),
    "medium": _l("medium"),
    "high": _l("high"),
}
# A caseworker-month's parts that are not flag codes, with their count.
RISK_MONTH_PART_LABELS = {
    "mean_visit": _l("Mean over %(n)s visits"),
    "worst_visit": _l("Worst visit"),
    "high_visits": _l("High-risk visits: %(n)s"),
    "rejected": _l("Visits rejected: %(n)s"),
    "failed_back_checks": _l("Back-checks failed: %(n)s"),
}


CHALLENGE_LABELS = {
    "blink": _l("Blink"),
    "turn_left": _l("Turn left"),
    "turn_right": _l("Turn right"),
    "open_mouth": _l("Open the mouth"),
}

# The payroll's status of a month (server.payments.service.payroll).
PAYMENT_STATUS_LABELS = {
    "payable": _l("Payable"),
    "open": _l("Window still open"),
    "suspended": _l("Suspended (proof of life)"),
    "restored": _l("Restored: paid as back-pay"),
    "case_suspended": _l("Case suspended"),
}

VISIT_KIND_LABELS = {
    "initial_survey": _l("Initial survey"),
    "periodic_review": _l("Periodic review"),
    "assisted_proof_of_life": _l("Assisted proof of life"),
    "revisit": _l("Revisit after a rejection"),
}

# A visit's review (server.visits.models.ReviewStatus).
REVIEW_STATUS_LABELS = {
    "received": _l("Received"),
    "has_issues": _l("Has issues"),
    "approved": _l("Approved"),
    "rejected": _l("Rejected: to revisit"),
}
# The buttons that move a visit's review there.
REVIEW_MOVE_LABELS = {
    "has_issues": _l("Mark: has issues"),
    "approved": _l("Approve the visit"),
    "rejected": _l("Reject: send back for a revisit"),
}

# What a back-check found (server.visits.models.BackCheckOutcome).
BACK_CHECK_OUTCOME_LABELS = {
    "confirmed": _l("Confirmed"),
    "not_at_home": _l("Nobody at home"),
    "discrepancy": _l("Discrepancy"),
    "fabricated": _l("Visit fabricated"),
}

POL_STATUS_LABELS = {
    "pending": _l("Pending"),
    "passed": _l("Passed"),
    "failed": _l("Failed"),
    "review": _l("Under review"),
    "exempt": _l("Exempt"),
    "missed": _l("Missed"),
}

# What stopped a recipient's attempt (docs/proof-of-life.md, "Exclusion made visible"):
# a guided step whose time ran out, a page left, or the verdict's first reason.
POL_STOP_LABELS = {
    "face": _l("Time ran out: showing the face"),
    "turn_left": _l("Time ran out: turning left"),
    "turn_right": _l("Time ran out: turning right"),
    "blink": _l("Time ran out: blinking"),
    "open_mouth": _l("Time ran out: opening the mouth"),
    "left_page": _l("Left the page"),
    "undecodable_frame": _l("A picture could not be read"),
    "too_few_frames": _l("Too few pictures"),
    "no_face": _l("No face seen"),
    "many_faces": _l("More than one person"),
    "replayed_frames": _l("Pictures of an earlier attempt"),
    "static_frames": _l("No movement"),
    "planar_motion": _l("Moved like a flat picture"),
    "challenge_not_done": _l("A movement not seen"),
    "challenge_order": _l("Movements out of order"),
    "no_template": _l("No enrolled face"),
    "face_mismatch": _l("Face does not match"),
    "face_uncertain": _l("Face match uncertain"),
}


# The exceptions inbox's kinds (server/console/exceptions.py).
EXCEPTION_KIND_LABELS = {
    "overdue_decision": _l("Decision overdue"),
    "overdue_review": _l("Periodic review overdue"),
    "open_flag": _l("Visit flag open"),
    "pol_review": _l("Proof of life under review"),
    "undelivered": _l("Reminder not delivered"),
    "contact_task": _l("Caseworker contact task"),
}

# The worklist's kinds (server/console/worklist.py); a visit's kind has its own label.
WORK_KIND_LABELS = {
    "decision": _l("Decision"),
    "pol_decision": _l("Proof-of-life decision"),
    "visit": _l("Visit"),
    "contact_task": _l("Contact task"),
    "objection": _l("Objection"),
}

# server.cases.objection_models.ObjectionStatus
OBJECTION_STATUS_LABELS = {
    "open": _l("Being looked into"),
    "unfounded": _l("Unfounded: the case goes on"),
    "resurvey": _l("Survey again: the case goes back to the survey"),
}

# Why a member must be contacted or helped (proof_of_life.models.ContactReason, and the
# reasons of an assisted proof-of-life visit due).
CONTACT_REASON_LABELS = {
    "no_phone": _l("No mobile number"),
    "opted_out": _l("Unsubscribed from SMS"),
    "wrong_number": _l("Number cannot receive SMS"),
    "not_delivered": _l("SMS not delivered"),
    "review": _l("Under review"),
    "missed": _l("Missed"),
    "assistance_requested": _l("Asked for help"),
    "failed": _l("SMS failed"),
}

# The audit log's actions (server/audit); a case's move is ``case.<action>``.
AUDIT_ACTION_LABELS = {
    "auth.login": _l("Signed in"),
    "auth.login_failed": _l("Sign-in failed"),
    "user.create": _l("Account created"),
    "user.role_changed": _l("Account's role or area changed"),
    "user.deactivated": _l("Account deactivated"),
    "user.activated": _l("Account reactivated"),
    "user.password_link_issued": _l("Password link issued"),
    "user.password_set": _l("Password set by link"),
    "standard.scheduled": _l("Class standard change scheduled"),
    "member.read_personal": _l("Personal data read"),
    "member.reveal_personal": _l("ID number and phone revealed"),
    "export.downloaded": _l("Export downloaded"),
    "map.viewed": _l("Map of visits viewed"),
    "payroll.exported": _l("Payroll exported"),
    "seed": _l("Demo data loaded"),
    "payment.suspended": _l("Payment suspended"),
    "payment.restored": _l("Payment restored"),
    "payment.month_closed": _l("Payment month closed"),
    "pol.link_revoked": _l("Proof-of-life link revoked"),
    "pol.month_to_review": _l("Proof of life sent to review"),
    "pol.session_started": _l("Proof-of-life attempt started"),
    "pol.frames_judged": _l("Proof-of-life attempt judged"),
    "pol.month_decided": _l("Proof-of-life month decided"),
    "pol.frames_purged": _l("Proof-of-life pictures deleted"),
    "pol.contact_task": _l("Contact task created"),
    "pol.contact_tasks": _l("Contact tasks created"),
    "pol.attempt_incomplete": _l("Proof-of-life attempt incomplete"),
    "pol.assistance_requested": _l("Help requested"),
    "device.token_issued": _l("Tablet signed in"),
    "device.token_revoked": _l("Tablet signed out"),
    "survey.received": _l("Visit received"),
    "face.enrolled": _l("Face enrolled"),
    "visit.flag_cleared": _l("Visit flag cleared"),
    "photo.read": _l("Photo viewed"),
    "backup.created": _l("Backup made"),
    "backup.restored": _l("Backup restored"),
    "store.gc": _l("Unused photo files deleted"),
    "case_change.proposed": _l("Change to a case proposed"),
    "case_change.approved": _l("Change to a case approved"),
    "case_change.rejected": _l("Change to a case rejected"),
    "case_change.withdrawn": _l("Change to a case withdrawn"),
    "case_change.read": _l("Changes to a case read"),
    "case_change.reveal_personal": _l("ID number and phone of a change revealed"),
    "pol.link_resent": _l("Proof-of-life link re-sent"),
    "sms.readdressed": _l("Waiting messages sent to the corrected phone"),
    "objection.received": _l("Objection received"),
    "objection.read": _l("Objection read"),
    "objection.decided": _l("Objection decided"),
}

# What an audit row is about (its ``object_type``).
AUDIT_OBJECT_LABELS = {
    "household": _l("Case"),
    "member": _l("Member"),
    "user": _l("Account"),
    "survey": _l("Visit"),
    "survey_photo": _l("Visit photo"),
    "survey_flag": _l("Visit flag"),
    "visit_list": _l("Visits due"),
    "pol_month": _l("Proof-of-life month"),
    "pol_attempt": _l("Proof-of-life attempt"),
    "device_token": _l("Tablet"),
    "export": _l("Export"),
    "payroll": _l("Payroll"),
    "payment_month": _l("Payment month"),
    "case_change": _l("Change to a case"),
    "class_standard": _l("Class standard"),
}


def audit_action_label(action: str) -> str:
    """The label of an audit row's action: a case's move by its action label."""
    if action.startswith("case."):
        found = ACTION_LABELS.get(action.removeprefix("case."))
        if found is not None:
            return str(found)
    return str(AUDIT_ACTION_LABELS.get(action, action))


# Our own sentence for an HTTP error shown on a page, instead of Werkzeug's English one.
HTTP_ERROR_LABELS = {
    400: _l("The request was not understood."),
    403: _l("You may not open this page."),
    404: _l("There is no such page."),
    405: _l("This page cannot be used that way."),
    413: _l("What was sent is too large."),
    500: _l("Something went wrong on our side. Please try again later."),
}


def http_error_message(status: int, description: str | None, default: str | None) -> str | None:
    """The page's sentence for an HTTP error: a description of ours (one a view gave to
    ``abort``) as it is, Werkzeug's default English one replaced by ours."""
    if description and description != default:
        return description
    label = HTTP_ERROR_LABELS.get(status)
    return str(label) if label is not None else description


# "Not found" of objects other than cases (permissions.not_found's message).
NOT_FOUND_LABELS = {
    "no such user": _l("No such account."),
    "no such tablet": _l("No such tablet login."),
}


def error_message(exc: DomainError) -> str:
    """The user's-language sentence for a domain error shown on a page."""
    details = exc.details
    if "notice_ends_on" in details:
        return str(_l("The public notice runs until %(date)s.", date=details["notice_ends_on"]))
    if "per_capita_income" in details:
        return str(
            _l(
                "Per-capita income (%(income)s) reaches the standard: reject instead.",
                income=details["per_capita_income"],
            )
        )
    if details.get("field") == "reason" and "max_length" in details:
        return str(
            _l(
                "A reason may be at most %(max)s characters long; this one has %(length)s. "
                "Nothing was saved.",
                max=details["max_length"],
                length=details["length"],
            )
        )
    if exc.code == "not_permitted" and details.get("action") == "reveal_personal_data":
        return str(_l("Your role sees ID numbers and phones masked."))
    if isinstance(exc, ReasonRequired) and details.get("action") == "approve":
        return str(_l("A flagged case needs the county's own visit recorded in the reason."))
    if exc.code == "visit_has_open_flags":
        return str(_l("Clear the visit's open flags (or reject it) before approving it."))
    if details.get("action") == "review_visit":
        review = {
            "illegal_transition": _l("The visit's review cannot move that way."),
            "reason_required": _l("Saying a visit has issues or rejecting it needs a reason."),
            "not_permitted": _l("Your role does not review visits."),
        }
        if exc.code in review:
            return str(review[exc.code])
    if details.get("action") == "record_back_check":
        back_check = {
            "reason_required": _l("A back-check that did not confirm the visit needs a note."),
            "not_permitted": _l("Your role does not record back-checks."),
            "illegal_transition": _l("Unknown back-check outcome."),
        }
        if exc.code in back_check:
            return str(back_check[exc.code])
    if exc.code == "not_found" and exc.message in NOT_FOUND_LABELS:
        return str(NOT_FOUND_LABELS[exc.message])
    generic = {
        "illegal_transition": _l("This case cannot be moved that way from its current state."),
        "reason_required": _l("This decision needs a written reason."),
        "not_permitted": _l("Your role may not make this decision."),
        "not_found": _l("No such case."),
        "validation_failed": _l("Some of the data is not valid."),
    }
    return str(generic.get(exc.code, exc.message))


def _lookup(table: dict[Any, Any]) -> Any:
    def label(key: Any) -> str:
        return str(table.get(key, key))

    return label


def _list_lookup(table: dict[Any, Any]) -> Any:
    """Labels of a comma-separated list of codes (or a list), joined for a page."""

    def labels(codes: str | list[str] | None) -> str:
        items = codes.split(",") if isinstance(codes, str) else (codes or [])
        separator = "、" if is_chinese() else ", "
        return separator.join(str(table.get(c, c)) for c in items if c)

    return labels


def is_chinese() -> bool:
    locale = get_locale()
    return locale is not None and locale.language == "zh"


def _points(value: float) -> str:
    return f"{value:g}"


def risk_part_text(part: Any) -> str:
    """One part of a score (``server.visits.integrity.risk.Part``) in the user's
    language: "Same photo as in another household x2: 10"."""
    if part.code in RISK_MONTH_PART_LABELS:
        what = str(RISK_MONTH_PART_LABELS[part.code]) % {"n": part.times}
    else:
        what = str(FLAG_LABELS.get(part.code, part.code))
        if part.cleared:
            what = _(
                "%(what)s x%(n)s, %(cleared)s cleared",
                what=what,
                n=part.times,
                cleared=part.cleared,
            )
        elif part.times > 1:
            what = f"{what} x{part.times}"
    return _("%(what)s: %(points)s", what=what, points=_points(part.points))


def risk_parts_text(score: Any) -> str:
    """What made a score (``server.visits.integrity.risk.Score``), biggest first."""
    separator = "；" if is_chinese() else "; "
    return separator.join(risk_part_text(p) for p in score.parts)


def risk_band_label(band: str) -> str:
    return str(RISK_BAND_LABELS.get(band, band))


def risk_text(score: Any) -> str:
    """ "Risk 7.5 (medium): ..." for a page."""
    head = _(
        "Risk %(total)s (%(band)s)",
        total=_points(score.total),
        band=risk_band_label(score.band),
    )
    if not score.parts:
        return head
    return f"{head}{'：' if is_chinese() else ': '}{risk_parts_text(score)}"


def register(app: Flask) -> None:
    app.jinja_env.filters["local_time"] = local_time  # every time shown on a staff page
    app.jinja_env.filters["mask_id_number"] = mask_id_number
    app.jinja_env.filters["mask_phone"] = mask_phone
    app.jinja_env.globals.update(
        is_chinese=is_chinese,
        max_reason_length=MAX_REASON_LENGTH,
        state_label=_lookup(STATE_LABELS),
        role_label=_lookup(ROLE_LABELS),
        relation_label=_lookup(RELATION_LABELS),
        action_label=_lookup(ACTION_LABELS),
        change_kind_label=_lookup(CHANGE_KIND_LABELS),
        change_status_label=_lookup(CHANGE_STATUS_LABELS),
        flag_label=_lookup(FLAG_LABELS),
        visit_kind_label=_lookup(VISIT_KIND_LABELS),
        # Keys are str enums: an enum member looks up like its value.
        pol_status_label=_lookup(POL_STATUS_LABELS),
        pol_stop_label=_lookup(POL_STOP_LABELS),
        pol_stop_labels=_list_lookup(POL_STOP_LABELS),
        challenge_labels=_list_lookup(CHALLENGE_LABELS),
        flag_labels=_list_lookup(FLAG_LABELS),
        payment_status_label=_lookup(PAYMENT_STATUS_LABELS),
        review_status_label=_lookup(REVIEW_STATUS_LABELS),
        review_move_label=_lookup(REVIEW_MOVE_LABELS),
        back_check_outcome_label=_lookup(BACK_CHECK_OUTCOME_LABELS),
        exception_kind_label=_lookup(EXCEPTION_KIND_LABELS),
        work_kind_label=_lookup(WORK_KIND_LABELS),
        objection_status_label=_lookup(OBJECTION_STATUS_LABELS),
        contact_reason_labels=_list_lookup(CONTACT_REASON_LABELS),
        audit_action_label=audit_action_label,
        risk_text=risk_text,
        risk_band_label=risk_band_label,
    )
