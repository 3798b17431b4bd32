"""The OpenAPI 3.1 document of the tablet and phone API, served at /api/openapi.json.

Written by hand next to the endpoints; tests check that every /api route appears
here and that the document is valid OpenAPI.
"""

from __future__ import annotations

from typing import Any

from server.proof_of_life.pipeline import REASONS as PIPELINE_REASONS

ERROR = {"$ref": "#/components/responses/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dibao tablet and phone API",
            "version": "1",
            "description": (
                "Every error is JSON: {error: {code, message, details}}. Tablets send "
                "'Authorization: Bearer <device token>'."
            ),
        },
        "components": {
            "securitySchemes": {"device": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message", "details"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "details": {"type": "object"},
                            },
                        }
                    },
                },
                "SurveyStatus": {
                    "type": "object",
                    "required": ["survey_id", "client_uuid", "status", "missing_photos", "flags"],
                    "properties": {
                        "survey_id": {"type": "integer"},
                        "household_id": {"type": "integer"},
                        "case_code": {"type": "string"},
                        "client_uuid": {"type": "string", "format": "uuid"},
                        "status": {"enum": ["awaiting_photos", "complete"]},
                        "missing_photos": {"type": "array", "items": {"type": "string"}},
                        "flags": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "code": {"type": "string"},
                                    "severity": {"enum": ["info", "warning", "critical"]},
                                    "value": {},
                                    "threshold": {},
                                    "detail": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "Survey": {
                    "type": "object",
                    "description": "The survey JSON of the contract (docs/api.md has every field).",
                    "required": ["client_uuid", "kind", "started_at", "finished_at", "gps"],
                    "properties": {
                        "client_uuid": {"type": "string", "format": "uuid"},
                        "household_id": {
                            "type": "integer",
                            "description": "the visited household; or send new_household",
                        },
                        "new_household": {
                            "type": "object",
                            "description": (
                                "an application taken at the home (kind initial_survey; "
                                "members then need client_ref, name, id_number, birth_date, "
                                "relation, exactly one head)"
                            ),
                            "required": ["village_code", "address", "class_code"],
                            "properties": {
                                "village_code": {"type": "string"},
                                "address": {"type": "string", "maxLength": 200},
                                "location": {
                                    "type": "object",
                                    "properties": {
                                        "lat": {"type": "number"},
                                        "lon": {"type": "number"},
                                    },
                                },
                                "class_code": {"type": "string"},
                                "conflict_of_interest": {"type": "boolean"},
                                "conflict_note": {"type": "string", "maxLength": 500},
                                "special_case": {"type": "boolean"},
                            },
                        },
                        "kind": {
                            "enum": ["initial_survey", "periodic_review", "assisted_proof_of_life"]
                        },
                        "started_at": {"type": "string", "format": "date-time"},
                        "finished_at": {"type": "string", "format": "date-time"},
                        "gps": {
                            "type": "object",
                            "required": ["lat", "lon"],
                            "properties": {
                                "lat": {"type": "number", "minimum": -90, "maximum": 90},
                                "lon": {"type": "number", "minimum": -180, "maximum": 180},
                                "accuracy_m": {"type": "number", "minimum": 0},
                                "altitude_m": {"type": "number"},
                                "fix_at": {"type": "string", "format": "date-time"},
                                "provider": {"type": "string", "maxLength": 20},
                                "is_mock": {"type": "boolean"},
                            },
                        },
                        "track": {"type": "array", "maxItems": 10000},
                        "members": {"type": "array", "maxItems": 30},
                        "housing": {"type": "object"},
                        "income": {"type": "object"},
                        "photos": {
                            "type": "array",
                            "maxItems": 60,
                            "items": {
                                "type": "object",
                                "required": ["photo_id", "kind", "sha256", "bytes"],
                                "properties": {
                                    "photo_id": {
                                        "type": "string",
                                        "pattern": "^[A-Za-z0-9_-]{1,64}$",
                                    },
                                    "kind": {
                                        "enum": ["member_portrait", "housing", "document", "other"]
                                    },
                                    "member_ref": {"type": "string"},
                                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                    "bytes": {"type": "integer", "minimum": 1},
                                    "taken_at": {"type": "string", "format": "date-time"},
                                },
                            },
                        },
                        "notes": {"type": "string", "maxLength": 4000},
                    },
                },
                "DueVisit": {
                    "type": "object",
                    "required": [
                        "household_id",
                        "case_code",
                        "kind",
                        "due_by",
                        "village",
                        "village_code",
                        "address",
                        "location",
                        "members",
                    ],
                    "properties": {
                        "household_id": {"type": "integer"},
                        "case_code": {"type": "string"},
                        "kind": {
                            "enum": ["initial_survey", "periodic_review", "assisted_proof_of_life"]
                        },
                        "due_by": {"type": "string", "format": "date"},
                        "village": {"type": "string"},
                        "village_code": {"type": "string"},
                        "address": {"type": "string"},
                        "location": {
                            "type": "object",
                            "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                        },
                        "reasons": {
                            "type": "array",
                            "description": "assisted_proof_of_life only: why",
                            "items": {
                                "enum": [
                                    "review",
                                    "missed",
                                    "no_phone",
                                    "opted_out",
                                    "wrong_number",
                                    "not_delivered",
                                ]
                            },
                        },
                        "members": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "member_id": {"type": "integer"},
                                    "name": {"type": "string"},
                                    "relation": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
            "responses": {
                "Error": _json({"$ref": "#/components/schemas/Error"}, "an error"),
                "SurveyStatus": _json(
                    {"$ref": "#/components/schemas/SurveyStatus"}, "the survey's state"
                ),
            },
        },
        "paths": {
            "/api/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI document"}},
                }
            },
            "/api/v1/version": {
                "get": {
                    "summary": "API version and server time (no login)",
                    "responses": {"200": {"description": "version"}},
                }
            },
            "/api/v1/auth/device-tokens": {
                "post": {
                    "summary": "Log a tablet in (caseworkers only)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["username", "password", "device_id"],
                                    "properties": {
                                        "username": {"type": "string", "maxLength": 64},
                                        "password": {"type": "string", "maxLength": 256},
                                        "device_id": {"type": "string", "maxLength": 100},
                                        "device_name": {"type": "string", "maxLength": 100},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": _json(
                            {
                                "type": "object",
                                "required": ["token", "expires_at", "user"],
                                "properties": {
                                    "token": {"type": "string"},
                                    "token_prefix": {"type": "string"},
                                    "expires_at": {"type": "string", "format": "date-time"},
                                    "user": {"type": "object"},
                                },
                            },
                            "the token; store it in the tablet's secure storage",
                        ),
                        "401": ERROR,
                        "403": ERROR,
                        "422": ERROR,
                        "429": ERROR,
                    },
                }
            },
            "/api/v1/surveys": {
                "post": {
                    "summary": "Upload one field visit (idempotent on client_uuid)",
                    "description": (
                        "multipart/form-data with a 'survey' part (the JSON) and one file part "
                        "per photo, named by its photo_id; or the JSON alone, photos sent later "
                        "with PUT. 201 on first receipt, 200 with the same body on an identical "
                        "replay, 409 client_uuid_conflict when the uuid was used for other "
                        "content. A reply is sent only after everything is durably stored."
                    ),
                    "security": [{"device": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Survey"}},
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["survey"],
                                    "properties": {"survey": {"type": "string"}},
                                    "additionalProperties": {"type": "string", "format": "binary"},
                                }
                            },
                        },
                    },
                    "responses": {
                        "201": {"$ref": "#/components/responses/SurveyStatus"},
                        "200": {"$ref": "#/components/responses/SurveyStatus"},
                        "401": ERROR,
                        "404": ERROR,
                        "409": ERROR,
                        "413": ERROR,
                        "415": ERROR,
                        "422": ERROR,
                    },
                }
            },
            "/api/v1/surveys/{client_uuid}": {
                "get": {
                    "summary": "A survey's state: missing photos, flags",
                    "security": [{"device": []}],
                    "parameters": [
                        {
                            "name": "client_uuid",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {"$ref": "#/components/responses/SurveyStatus"},
                        "401": ERROR,
                        "404": ERROR,
                    },
                }
            },
            "/api/v1/surveys/{client_uuid}/photos/{photo_id}": {
                "put": {
                    "summary": "One photo's bytes (idempotent; checked against the manifest)",
                    "security": [{"device": []}],
                    "parameters": [
                        {
                            "name": "client_uuid",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "photo_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                            "image/png": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "responses": {
                        "200": {"$ref": "#/components/responses/SurveyStatus"},
                        "401": ERROR,
                        "404": ERROR,
                        "413": ERROR,
                        "415": ERROR,
                        "422": ERROR,
                    },
                }
            },
            "/api/v1/meta": {
                "get": {
                    "summary": "Limits, server time, API version",
                    "security": [{"device": []}],
                    "responses": {"200": {"description": "metadata"}, "401": ERROR},
                }
            },
            "/api/v1/visits/due": {
                "get": {
                    "summary": "Households this caseworker must visit, soonest first",
                    "security": [{"device": []}],
                    "parameters": [
                        {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "items": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/DueVisit"},
                                    }
                                },
                            },
                            "the due visits (with an ETag)",
                        ),
                        "304": {"description": "unchanged since the ETag sent"},
                        "401": ERROR,
                    },
                }
            },
            **_proof_of_life_paths(),
            **_public_paths(),
        },
    }


# The verdict's reason codes, in the order they are listed (docs/proof-of-life.md).
REASONS = list(PIPELINE_REASONS)


def _proof_of_life_paths() -> dict[str, Any]:
    session = {
        "type": "object",
        "required": ["session_id", "challenges", "nonce", "expires_at", "frames", "capture"],
        "properties": {
            "session_id": {"type": "string"},
            "challenges": {
                "type": "array",
                "minItems": 2,
                "maxItems": 2,
                "items": {"enum": ["blink", "turn_left", "turn_right", "open_mouth"]},
                "description": "in the order the person must perform them; one is a head turn",
            },
            "nonce": {"type": "string", "description": "send it back with the frames"},
            "expires_at": {"type": "string", "format": "date-time"},
            "month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
            "frames": {
                "type": "object",
                "properties": {
                    "min": {"type": "integer"},
                    "max": {"type": "integer"},
                    "max_bytes": {"type": "integer"},
                },
            },
            "capture": {
                "type": "object",
                "properties": {
                    "count": {"type": "integer"},
                    "interval_ms": {"type": "integer"},
                    "width": {"type": "integer"},
                    "height": {"type": "integer"},
                },
            },
            "flags": {
                "type": "array",
                "items": {"enum": ["gps_far_from_home"]},
                "description": "assisted sessions: the tablet's fix is far from the home",
            },
        },
    }
    return {
        "/api/v1/proof-of-life/sessions": {
            "post": {
                "summary": "Start a proof-of-life attempt (a recipient's link, or a "
                "caseworker's tablet at the member's home)",
                "security": [{}, {"device": []}],
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    {
                                        "type": "object",
                                        "required": ["link_token"],
                                        "properties": {"link_token": {"type": "string"}},
                                    },
                                    {
                                        "type": "object",
                                        "required": ["household_id", "member_id", "gps"],
                                        "properties": {
                                            "household_id": {"type": "integer"},
                                            "member_id": {"type": "integer"},
                                            "gps": {
                                                "type": "object",
                                                "required": ["lat", "lon"],
                                                "properties": {
                                                    "lat": {"type": "number"},
                                                    "lon": {"type": "number"},
                                                    "accuracy_m": {"type": "number"},
                                                },
                                            },
                                        },
                                    },
                                ]
                            }
                        }
                    }
                },
                "responses": {
                    "201": _json(session, "the session: challenges, nonce, limits"),
                    "401": ERROR,
                    "404": ERROR,
                    "409": ERROR,
                    "410": ERROR,
                    "422": ERROR,
                    "429": ERROR,
                },
            }
        },
        "/api/v1/proof-of-life/sessions/{session_id}/frames": {
            "post": {
                "summary": "Send the captured frames; judged within the request",
                "parameters": [
                    {
                        "name": "session_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["nonce", "frames"],
                                "properties": {
                                    "nonce": {"type": "string"},
                                    "offsets_ms": {
                                        "type": "string",
                                        "description": "JSON list of capture times (ms)",
                                    },
                                    "frames": {
                                        "type": "array",
                                        "items": {"type": "string", "format": "binary"},
                                        "description": "JPEG parts, all named frames, in order",
                                    },
                                },
                            }
                        }
                    }
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["outcome", "reasons", "attempts_left", "month"],
                            "properties": {
                                "outcome": {"enum": ["passed", "failed", "review"]},
                                "reasons": {"type": "array", "items": {"enum": REASONS}},
                                "attempts_left": {"type": "integer"},
                                "month": {"type": "string"},
                            },
                        },
                        "the verdict",
                    ),
                    "403": ERROR,
                    "404": ERROR,
                    "409": ERROR,
                    "410": ERROR,
                    "413": ERROR,
                    "422": ERROR,
                },
            }
        },
        "/api/v1/members/{member_id}/face-templates": {
            "post": {
                "summary": "Enroll a member's face from one photo taken by the caseworker",
                "security": [{"device": []}],
                "parameters": [
                    {
                        "name": "member_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer"},
                    }
                ],
                "requestBody": {
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["photo"],
                                "properties": {"photo": {"type": "string", "format": "binary"}},
                            }
                        }
                    }
                },
                "responses": {
                    "201": _json(
                        {
                            "type": "object",
                            "properties": {
                                "face_template_id": {"type": "integer"},
                                "member_id": {"type": "integer"},
                                "model_name": {"type": "string"},
                                "model_version": {"type": "string"},
                                "warnings": {
                                    "type": "array",
                                    "items": {"type": "object"},
                                    "description": "face_in_other_household matches",
                                },
                            },
                        },
                        "the template made",
                    ),
                    "401": ERROR,
                    "403": ERROR,
                    "404": ERROR,
                    "413": ERROR,
                    "415": ERROR,
                    "422": ERROR,
                },
            }
        },
        "/api/v1/proof-of-life/status": {
            "get": {
                "summary": "This month's status for a link",
                "parameters": [
                    {
                        "name": "link_token",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "month": {"type": "string"},
                                "status": {
                                    "enum": ["pending", "passed", "failed", "review", "exempt"]
                                },
                                "window_closes_at": {"type": "string", "format": "date-time"},
                                "attempts_left": {"type": "integer"},
                            },
                        },
                        "the month's status",
                    ),
                    "404": ERROR,
                    "410": ERROR,
                },
            }
        },
    }


def _public_paths() -> dict[str, Any]:
    """Open data (docs/public.md): no login, ETag and a per-address rate limit."""
    place = {
        "type": ["object", "null"],
        "properties": {"code": {"type": "string"}, "name": {"type": "string"}},
        "description": "null where generalized away (fewer than k cases alike)",
    }
    case = {
        "type": "object",
        "required": ["case_code", "county", "township", "village", "status"],
        "properties": {
            "case_code": {"type": "string"},
            "county": place,
            "township": place,
            "village": place,
            "class": {"type": ["string", "null"]},
            "household_size": {"type": ["string", "null"], "examples": ["1", "3-4", "5+"]},
            "status": {"type": "string"},
            "monthly_amount": {
                "type": ["string", "null"],
                "description": "exact (523.40), banded (500-600) or null, per region",
            },
            "masked_name": {
                "type": ["string", "null"],
                "description": "only if the region shows them",
            },
            "status_changes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"status": {"type": "string"}, "month": {"type": "string"}},
                },
            },
            "proof_of_life": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "month": {"type": "string"},
                        "result": {"enum": ["passed", "missed", "pending"]},
                    },
                },
            },
        },
    }

    def query(name: str, description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "schema": {"type": "string"},
            "description": description,
        }

    return {
        "/api/v1/public/cases": {
            "get": {
                "summary": "Published cases, 50 per page, in case-code order (no login)",
                "security": [],
                "parameters": [
                    query("township", "township area code"),
                    query("village", "village area code"),
                    query("status", "case status"),
                    query("class", "class code"),
                    query("limit", "1-100 (default 50)"),
                    query("after", "the cursor from a previous page's next"),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["items", "next", "total"],
                            "properties": {
                                "items": {"type": "array", "items": case},
                                "next": {"type": ["string", "null"]},
                                "total": {"type": "integer"},
                                "as_of": {"type": ["string", "null"], "format": "date-time"},
                            },
                        },
                        "a page of cases",
                    ),
                    "304": {"description": "If-None-Match matched: nothing changed"},
                    "400": ERROR,
                    "429": ERROR,
                },
            }
        },
        "/api/v1/public/cases/{case_code}": {
            "get": {
                "summary": "One published case (no login)",
                "security": [],
                "parameters": [
                    {
                        "name": "case_code",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _json(case, "the case"),
                    "304": {"description": "If-None-Match matched: nothing changed"},
                    "404": ERROR,
                    "429": ERROR,
                },
            }
        },
        "/api/v1/public/stats": {
            "get": {
                "summary": "Aggregates per township and month (no login)",
                "security": [],
                "responses": {
                    "200": _json({"type": "object"}, "households, persons, money, proof of life"),
                    "304": {"description": "If-None-Match matched: nothing changed"},
                    "429": ERROR,
                },
            }
        },
    }
