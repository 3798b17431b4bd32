"""Proof of life on the wire: the recipient's page ``/m/<token>`` and its API.

``POST /api/v1/proof-of-life/sessions`` is opened either by a link token (the
recipient's phone, no login) or by a caseworker's tablet (device token, household,
member, GPS fix: the assisted path). The frames of a session are judged within the
request (docs/proof-of-life.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, cast

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    jsonify,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import force_locale, get_locale
from pydantic import Field
from werkzeug.exceptions import BadRequest

from mobile_api.auth import current_device
from mobile_api.multipart import read_upload
from mobile_api.schemas import parse
from server import clock, safe_json
from server.devices.models import DeviceToken
from server.devices.service import InvalidToken, authenticate_device
from server.errors import ValidationFailed
from server.extensions import csrf, db, limiter
from server.faces.engine import default_engine
from server.proof_of_life import service as pol
from server.proof_of_life.analysis import CHALLENGES
from server.proof_of_life.guided import HINTS
from server.proof_of_life.models import MonthStatus, ProofOfLifeAttempt, ProofOfLifeMonth
from server.proof_of_life.pipeline import REASONS, Outcome
from server.security_headers import content_security_policy
from server.storage import BlobStore, HashingFile, blob_store
from server.validation import DbId, Text
from server.visits.schemas import GpsIn, Input
from server.wire import (
    BINARY,
    IsoDatetime,
    Multipart,
    Operation,
    Output,
    Part,
    Query,
    operation,
)

api = Blueprint("pol_api", __name__, url_prefix="/api/v1/proof-of-life")
page = Blueprint("pol_page", __name__)
csrf.exempt(api)  # no cookies: a link token or a device token


class LinkSessionIn(Input):
    link_token: Annotated[Text, Field(min_length=1, max_length=64)]
    guided: bool = False


class AssistedSessionIn(Input):
    household_id: DbId
    member_id: DbId
    gps: GpsIn
    guided: bool = False


class AbandonIn(Input):
    nonce: Annotated[Text, Field(min_length=1, max_length=64)]
    step: Annotated[int, Field(ge=0, le=99)]
    why: Literal["timeout", "left_page"]


class AssistanceIn(Input):
    link_token: Annotated[Text, Field(min_length=1, max_length=64)]
    need: Literal["cannot_move", "cannot_see", "other"]


Challenge = Literal[CHALLENGES]  # type: ignore[valid-type]
Reason = Literal[REASONS]  # type: ignore[valid-type]
SessionFlag = Literal["gps_far_from_home"]
MONTH = r"^[0-9]{4}-[0-9]{2}$"


class FramesLimitsOut(Output):
    min: int
    max: int
    max_bytes: int


class CaptureOut(Output):
    count: int
    interval_ms: int
    width: int
    height: int


StepName = Literal["face", "blink", "turn_left", "turn_right", "open_mouth"]
Hint = Literal[HINTS]  # type: ignore[valid-type]


class GuidedStepOut(Output):
    name: StepName
    interval_ms: int = Field(description="between two frames of this step")
    batch_frames: int = Field(description="frames per batch")
    seconds: int = Field(description="the page's time for this step, then a plain retry")


class GuidedFrameOut(Output):
    width: int
    height: int
    max_bytes: int


class GuidedOut(Output):
    steps: list[GuidedStepOut] = Field(description="the face, then the challenges in order")
    frame: GuidedFrameOut
    max_frames: int = Field(description="frames a guided session may take in all")
    batch_max: int = Field(description="frames one batch may carry")


class SessionOut(Output):
    """The session: challenges, nonce, limits."""

    session_id: str
    challenges: list[Challenge] = Field(
        description="in the order the person must perform them; one is a head turn"
    )
    nonce: str = Field(description="send it back with the frames")
    expires_at: IsoDatetime
    month: Annotated[str, Field(pattern=MONTH)]
    frames: FramesLimitsOut
    capture: CaptureOut
    flags: list[SessionFlag] = Field(
        description="assisted sessions: the tablet's fix is far from the home"
    )
    guided: GuidedOut | None = Field(description="guided sessions only (null otherwise)")


class StepVerdictOut(Output):
    outcome: Outcome
    reasons: list[Reason]
    attempts_left: int
    month: Annotated[str, Field(pattern=MONTH)]


class BatchOut(Output):
    """Whether the step's movement has happened yet."""

    step: int
    name: StepName
    state: Literal["continue", "done", "finished"]
    hint: Hint | None = Field(description="what to say to the person (continue only)")
    progress: float = Field(ge=0, le=1, description="how far the movement got")
    next_step: int | None = Field(description="done: the step to go on with")
    verdict: StepVerdictOut | None = Field(description="finished: the whole session judged")


class AbandonOut(Output):
    outcome: Literal["incomplete"]
    stopped_step: StepName
    attempts_left: int
    month: Annotated[str, Field(pattern=MONTH)]


class AssistanceOut(Output):
    status: MonthStatus
    month: Annotated[str, Field(pattern=MONTH)]


class VerdictOut(Output):
    """The verdict on the frames."""

    outcome: Outcome
    reasons: list[Reason] = Field(description="docs/proof-of-life.md, in this order")
    attempts_left: int
    month: Annotated[str, Field(pattern=MONTH)]


class StatusOut(Output):
    """This month's status for the link."""

    month: Annotated[str, Field(pattern=MONTH)]
    status: MonthStatus
    window_closes_at: IsoDatetime
    deadline_at: IsoDatetime = Field(
        description="later than window_closes_at for a missed month in its grace period"
    )
    attempts_left: int


def _rate() -> str:
    return str(current_app.config["DIBAO_POL_RATE_LIMIT"])


def _judged(attempt: ProofOfLifeAttempt) -> Outcome:
    outcome = attempt.outcome
    if outcome is None or outcome.value not in ("passed", "failed", "review"):
        raise RuntimeError("a judged attempt without a verdict")  # submit_* always decide
    return cast(Outcome, outcome.value)


def _guided_rate() -> str:
    # A guided session sends a batch every second or so for a few minutes.
    return str(current_app.config["DIBAO_POL_BATCH_RATE_LIMIT"])


def _now() -> datetime:
    return clock.utcnow()


def _json_body() -> Any:
    # A body over the JSON limits keeps its own error (server/safe_json.py).
    try:
        payload = request.get_json() if request.is_json else None
    except BadRequest:
        payload = None
    if not isinstance(payload, dict):
        raise ValidationFailed("the request body must be a JSON object")
    return payload


def _session_body(attempt: ProofOfLifeAttempt) -> dict[str, Any]:
    rules = pol.rules()
    return SessionOut(
        session_id=attempt.session_id,
        challenges=attempt.challenge_list,
        nonce=attempt.nonce,
        expires_at=attempt.expires_at,
        month=attempt.month_record.month,
        frames=FramesLimitsOut(
            min=rules.frames_min, max=rules.frames_max, max_bytes=rules.frame_max_bytes
        ),
        capture=CaptureOut(
            count=rules.capture_count,
            interval_ms=rules.capture_interval_ms,
            width=rules.capture_width,
            height=rules.capture_height,
        ),
        # Validated by the model: an unknown flag is an error here, not an answer.
        flags=cast(list[SessionFlag], [f for f in attempt.flags.split(",") if f]),
        guided=_guided_body(attempt) if attempt.guided else None,
    ).dump()


def _guided_body(attempt: ProofOfLifeAttempt) -> GuidedOut:
    rules = pol.rules()

    def step(name: str) -> GuidedStepOut:
        blink = name == "blink"
        return GuidedStepOut(
            name=cast(StepName, name),
            interval_ms=rules.guided_blink_interval_ms if blink else rules.guided_interval_ms,
            batch_frames=rules.guided_blink_batch_frames if blink else rules.guided_batch_frames,
            seconds=rules.guided_step_seconds,
        )

    return GuidedOut(
        steps=[step(name) for name in pol.guided_steps(attempt)],
        frame=GuidedFrameOut(
            width=rules.guided_width,
            height=rules.guided_height,
            max_bytes=rules.guided_frame_max_bytes,
        ),
        max_frames=rules.guided_max_frames,
        batch_max=rules.guided_batch_max,
    )


def _authenticate_tablet() -> DeviceToken:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("send the device token as 'Authorization: Bearer <token>'")
    device = authenticate_device(token.strip())
    g.device = device
    return device


def _assist_context(data: AssistedSessionIn) -> tuple[ProofOfLifeMonth, pol.AssistContext]:
    device = current_device()
    record = pol.assisted_month(
        device.user, household_id=data.household_id, member_id=data.member_id, now=_now()
    )
    context = pol.AssistContext(
        caseworker=device.user,
        device=device,
        lat=data.gps.lat,
        lon=data.gps.lon,
        accuracy_m=data.gps.accuracy_m,
    )
    return record, context


@api.post("/sessions")
@operation(
    Operation(
        summary="Start a proof-of-life attempt (a recipient's link, or a caseworker's "
        "tablet at the member's home)",
        description=(
            "With a link token and no Authorization header: the recipient's phone. With "
            "a device token: the assisted path (household, member, GPS fix)."
        ),
        security="either",
        json_body=(LinkSessionIn, AssistedSessionIn),
        responses={201: SessionOut},
        errors={
            401: "invalid_token (assisted path)",
            404: "link_invalid, or not_found: no such member in this household",
            409: "already_passed or not_designated",
            410: "link_expired",
            413: "the request is too large",
            422: "validation_failed",
            429: "attempts_exhausted, or too many requests",
        },
    )
)
@limiter.limit(_rate)
def start_session() -> tuple[Response, int]:
    payload = _json_body()
    now = _now()
    if request.headers.get("Authorization"):
        # The assisted path: a caseworker's tablet, at the member's home.
        _authenticate_tablet()
        record, assist = _assist_context(parse(AssistedSessionIn, payload))
        attempt = pol.start_session(
            record,
            now=now,
            assist=assist,
            challenges=current_app.config["DIBAO_POL_FIXED_CHALLENGES"],
            guided=bool(payload.get("guided") is True),
        )
    else:
        data = parse(LinkSessionIn, payload)
        record = pol.resolve_link(data.link_token, now=now)
        try:
            attempt = pol.start_session(
                record,
                now=now,
                challenges=current_app.config["DIBAO_POL_FIXED_CHALLENGES"],
                guided=data.guided,
            )
        except pol.AttemptsExhausted:
            db.session.commit()  # the month may have gone to review: keep that
            raise
    db.session.commit()
    return jsonify(_session_body(attempt)), 201


def _frames_upload(
    store: BlobStore, *, guided: bool = False
) -> tuple[str, list[HashingFile], list[int] | None]:
    rules = pol.rules()
    most = rules.guided_batch_max if guided else rules.frames_max
    body = read_upload(
        store,
        max_file_bytes=rules.guided_frame_max_bytes if guided else rules.frame_max_bytes,
        not_multipart="send the frames as multipart/form-data",
        max_field_bytes=64 * 1024,
        max_parts=most + 4,
        repeatable=frozenset({"frames"}),
    )
    frames = cast(list[HashingFile], body.repeated.get("frames", []))
    try:
        unexpected = sorted(set(body.files) | (set(body.fields) - {"nonce", "offsets_ms"}))
        if unexpected:
            raise ValidationFailed(f"unexpected part {unexpected[0]!r}", field=unexpected[0])
        nonce = body.fields.get("nonce", "")
        if not nonce:
            raise ValidationFailed("the session's nonce is required", field="nonce")
        offsets = _offsets(body.fields.get("offsets_ms"))
    except ValidationFailed:
        body.close()
        raise
    return nonce, frames, offsets


def _offsets(text: str | None) -> list[int] | None:
    if text is None or not text.strip():
        return None
    try:
        values = safe_json.loads(text)
    except safe_json.JSONRefused:
        raise
    except ValueError as exc:
        raise ValidationFailed("offsets_ms is not JSON", field="offsets_ms") from exc
    if not isinstance(values, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 600_000 for v in values
    ):
        raise ValidationFailed(
            "offsets_ms must be a list of whole milliseconds", field="offsets_ms"
        )
    return values


def _frames_parts(frames: str) -> Multipart:
    """The multipart body of frames: the session's nonce, capture times, the JPEGs."""
    return Multipart(
        parts={
            "nonce": Part({"type": "string"}, "the session's nonce", required=True),
            "offsets_ms": Part(
                {"type": "string"}, "JSON list of capture times (whole ms, 0-600000)"
            ),
            "frames": Part({"type": "array", "items": BINARY}, frames, required=True),
        }
    )


@api.post("/sessions/<token:session_id>/frames")
@operation(
    Operation(
        summary="Send the captured frames; judged within the request",
        description="An assisted session's frames come with the same device token.",
        security="either",
        multipart=_frames_parts("JPEG parts, all named frames, in capture order"),
        responses={200: VerdictOut},
        errors={
            401: "invalid_token (assisted session)",
            403: "nonce_mismatch",
            404: "session_not_found",
            409: "session_used",
            410: "session_expired",
            413: "a frame or the request is too large",
            422: "validation_failed: too few or too many frames, a bad part",
            429: "too many requests",
        },
    )
)
@limiter.limit(_rate)
def submit_frames(session_id: str) -> Response:
    # A token, when sent, is checked before the session is looked at: an assisted
    # session's frames come from the tablet that opened it.
    device = _authenticate_tablet() if request.headers.get("Authorization") else None
    attempt = pol.find_session(session_id, device)
    pol.require_open(attempt, now=_now())
    store = blob_store()
    nonce, frames, offsets = _frames_upload(store)
    try:
        result = pol.submit_frames(
            attempt,
            nonce=nonce,
            frames=frames,
            offsets_ms=offsets,
            now=_now(),
            store=store,
        )
        body = VerdictOut(
            outcome=_judged(result.attempt),
            reasons=result.attempt.reason_list,
            attempts_left=result.attempts_left,
            month=result.attempt.month_record.month,
        ).dump()
        db.session.commit()
    finally:
        for frame in frames:
            frame.close()
    return jsonify(body)


@api.post("/sessions/<token:session_id>/steps/<index:step>/frames")
@operation(
    Operation(
        summary="Guided capture: a short batch of frames for one step; answered at once",
        description=(
            "Whether the step's movement has happened yet (state continue, with a hint "
            "and the progress), is confirmed (done, next_step), or, after the last step, "
            "the verdict on the whole session (finished)."
        ),
        security="either",
        multipart=_frames_parts("1 to batch_max JPEG parts, all named frames, in capture order"),
        responses={200: BatchOut},
        errors={
            401: "invalid_token (assisted session)",
            403: "nonce_mismatch",
            404: "session_not_found",
            409: "session_used, step_mismatch (details: current_step) or not_guided",
            410: "session_expired",
            413: "a frame or the request is too large",
            422: "validation_failed (too many frames in the batch, a bad part), "
            "too_many_frames (the session's max_frames)",
            429: "too many requests",
        },
    )
)
@limiter.limit(_guided_rate)
def submit_batch(session_id: str, step: int) -> Response:
    device = _authenticate_tablet() if request.headers.get("Authorization") else None
    attempt = pol.find_session(session_id, device, lock=True)
    pol.require_open(attempt, now=_now())
    store = blob_store()
    nonce, frames, offsets = _frames_upload(store, guided=True)
    engine = default_engine()
    try:
        result = pol.submit_batch(
            attempt,
            nonce=nonce,
            step=step,
            frames=frames,
            offsets_ms=offsets,
            now=_now(),
            store=store,
            engine=engine,
            templates=lambda: pol.member_templates(attempt.member_id, engine.model_name),
        )
        verdict = None
        if result.verdict is not None:
            judged = result.verdict.attempt
            verdict = StepVerdictOut(
                outcome=_judged(judged),
                reasons=judged.reason_list,
                attempts_left=result.verdict.attempts_left,
                month=judged.month_record.month,
            )
        body = BatchOut(
            step=result.step,
            name=cast(StepName, result.name),
            state=cast(Literal["continue", "done", "finished"], result.state),
            hint=result.hint,
            progress=round(result.progress, 3),
            next_step=result.next_step,
            verdict=verdict,
        ).dump()
        db.session.commit()
    finally:
        for frame in frames:
            frame.close()
    return jsonify(body)


@api.post("/sessions/<token:session_id>/abandon")
@operation(
    Operation(
        summary="Guided capture given up (a step's time ran out, the page was left)",
        description="Recorded as incomplete with the step that stopped the person; "
        "never a failure.",
        security="either",
        json_body=(AbandonIn,),
        responses={200: AbandonOut},
        errors={
            401: "invalid_token (assisted session)",
            403: "nonce_mismatch",
            404: "session_not_found",
            409: "session_used or not_guided",
            422: "validation_failed",
            429: "too many requests",
        },
    )
)
@limiter.limit(_rate)
def abandon_session(session_id: str) -> Response:
    device = _authenticate_tablet() if request.headers.get("Authorization") else None
    attempt = pol.find_session(session_id, device, lock=True)
    data = parse(AbandonIn, _json_body())
    left = pol.abandon(attempt, nonce=data.nonce, why=data.why, now=_now())
    body = AbandonOut(
        outcome="incomplete",
        stopped_step=cast(StepName, attempt.stopped_step),
        attempts_left=left,
        month=attempt.month_record.month,
    ).dump()
    db.session.commit()
    return jsonify(body)


@api.post("/assistance")
@operation(
    Operation(
        summary="The recipient cannot do the movements: a caseworker comes to help",
        description="The month goes to review at once and the caseworker's tablet lists "
        "an assisted visit (GET /api/v1/visits/due).",
        security="none",
        json_body=(AssistanceIn,),
        responses={200: AssistanceOut},
        errors={
            404: "link_invalid",
            409: "already_passed",
            410: "link_expired",
            422: "validation_failed",
            429: "too many requests",
        },
    )
)
@limiter.limit(_rate)
def request_assistance() -> Response:
    data = parse(AssistanceIn, _json_body())
    now = _now()
    record = pol.resolve_link(data.link_token, now=now)
    pol.request_assistance(record, need=data.need, now=now)
    body = AssistanceOut(status=record.status, month=record.month).dump()
    db.session.commit()
    return jsonify(body)


@api.get("/status")
@operation(
    Operation(
        summary="This month's status for a link",
        security="none",
        query=(Query("link_token", {"type": "string"}, "the link's token", required=True),),
        responses={200: StatusOut},
        errors={
            404: "link_invalid",
            410: "link_expired",
            429: "too many requests",
        },
    )
)
@limiter.limit(_rate)
def status() -> Response:
    now = _now()
    record = pol.resolve_link(request.args.get("link_token", ""), now=now)
    body = StatusOut(
        month=record.month,
        status=record.status,
        window_closes_at=record.window_closes_at,
        # Later than the close for a missed month still in its grace period.
        deadline_at=pol.deadline(record),
        attempts_left=pol.attempts_left(record, now=now),
    ).dump()
    db.session.commit()
    return jsonify(body)


# The application's page policy, plus what the camera needs: the preview plays a
# MediaStream (a blob: URL on old browsers) and a re-encoded frame is decoded from one.
CSP = content_security_policy(img_src="'self' blob: data:", media_src="'self' blob:")


@page.get("/m/<link_token>")
@limiter.limit(_rate)
def mobile_page(link_token: str) -> tuple[str, int, dict[str, str]]:
    headers = {
        "Content-Security-Policy": CSP,
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        # The page asks for the front camera and nothing else.
        "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
    }
    # Chinese unless the person chose English on this page (?lang=en, remembered):
    # old phones often carry an English browser locale their owner never chose.
    get_locale()  # records an explicit ?lang= choice in the session
    lang = "en" if session.get("lang") == "en" else "zh_CN"
    with force_locale(lang):
        try:
            pol.resolve_link(link_token, now=_now())
        except (pol.LinkInvalid, pol.LinkExpired) as exc:
            db.session.rollback()
            return (
                render_template("proof_of_life/link_error.html", error=exc.code, lang=lang),
                exc.http_status,
                headers,
            )
        db.session.rollback()
        other = "zh_CN" if lang == "en" else "en"
        html = render_template(
            "proof_of_life/mobile.html",
            link_token=link_token,
            lang=lang,
            api_base=url_for("pol_api.start_session").rsplit("/", 1)[0],
            switch_lang_url=url_for("pol_page.mobile_page", link_token=link_token, lang=other),
            static_version=current_app.config.get("DIBAO_STATIC_VERSION", "1"),
        )
    return html, 200, headers
