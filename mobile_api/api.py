"""The tablet API under /api/v1 (contract: docs/api.md and /api/openapi.json)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from mobile_api.auth import current_caseworker, current_device, device_required
from mobile_api.openapi import openapi_document
from mobile_api.schemas import DeviceLogin, parse
from server.cases.workflow import local_today
from server.devices.service import issue_device_token
from server.extensions import csrf, db, limiter
from server.visits.queries import due_visits

API_VERSION = "1"

bp = Blueprint("api", __name__, url_prefix="/api")
csrf.exempt(bp)  # token-authenticated clients, no cookies


def _login_rate() -> str:
    return str(current_app.config["DIBAO_LOGIN_RATE_LIMIT"])


def _username_key() -> str:
    payload = request.get_json(silent=True)
    username = payload.get("username", "") if isinstance(payload, dict) else ""
    return "device-login-user:" + str(username).strip().lower()


def _json_body() -> Any:
    payload = request.get_json(silent=True)
    if payload is None:
        from server.errors import ValidationFailed

        raise ValidationFailed("the request body must be JSON (Content-Type: application/json)")
    return payload


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())


@bp.get("/v1/version")
def version() -> Response:
    return jsonify({"api_version": API_VERSION, "server_time": datetime.now(UTC).isoformat()})


@bp.post("/v1/auth/device-tokens")
@limiter.limit(_login_rate)
@limiter.limit(_login_rate, key_func=_username_key)
def create_device_token() -> tuple[Response, int]:
    login = parse(DeviceLogin, _json_body())
    issued = issue_device_token(
        username=login.username,
        password=login.password,
        device_id=login.device_id,
        device_name=login.device_name,
    )
    db.session.commit()
    user = issued.record.user
    body = {
        "token": issued.token,
        "token_prefix": issued.record.token_prefix,
        "expires_at": issued.record.expires_at.isoformat(),
        "user": {
            "username": user.username,
            "role": user.role.value,
            "area": {"code": user.area.code, "name": user.area.name},
        },
    }
    return jsonify(body), 201


@bp.get("/v1/meta")
@device_required
def meta() -> Response:
    config = current_app.config
    device = current_device()
    body = {
        "api_version": API_VERSION,
        "server_time": datetime.now(UTC).isoformat(),
        "limits": {
            "max_photo_bytes": config["DIBAO_MAX_PHOTO_BYTES"],
            "max_request_bytes": config["DIBAO_MAX_REQUEST_BYTES"],
            "recommended_batch_bytes": min(8 * 1024 * 1024, config["DIBAO_MAX_REQUEST_BYTES"]),
        },
        "device": {
            "device_id": device.device_id,
            "token_expires_at": device.expires_at.isoformat(),
        },
    }
    db.session.commit()  # last_used_at
    return jsonify(body)


@bp.get("/v1/visits/due")
@device_required
def visits_due() -> Response:
    visits = due_visits(
        current_caseworker(),
        today=local_today(),
        window_days=current_app.config["DIBAO_DUE_WINDOW_DAYS"],
    )
    items = [
        {
            "household_id": v.household_id,
            "case_code": v.case_code,
            "kind": v.kind.value,
            "due_by": v.due_by.isoformat(),
            "village": v.village,
            "village_code": v.village_code,
            "address": v.address,
            "location": {"lat": v.lat, "lon": v.lon},
            "members": [
                {"member_id": m.member_id, "name": m.name, "relation": m.relation}
                for m in v.members
            ],
        }
        for v in visits
    ]
    payload = json.dumps({"items": items}, ensure_ascii=False, sort_keys=True).encode("utf-8")
    etag = hashlib.sha256(payload).hexdigest()[:32]
    if etag in request.if_none_match:
        # Nothing was sent, so nothing personal was read: drop the audit row.
        db.session.rollback()
        response = Response(status=304)
    else:
        db.session.commit()
        response = Response(payload, mimetype="application/json")
    response.set_etag(etag)
    response.headers["Cache-Control"] = "private, no-cache"
    return response
