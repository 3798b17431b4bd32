"""The OpenAPI 3.1 document of the tablet and phone API, served at /api/openapi.json.

Written by hand next to the endpoints; tests check that every /api route appears
here and that the document is valid OpenAPI.
"""

from __future__ import annotations

from typing import Any

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
        },
    }
