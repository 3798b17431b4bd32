"""/api/openapi.json is generated from the operations next to the views and the models
they answer with (mobile_api/openapi.py); the fuzzer (test_api_fuzz.py) checks that the
answers keep to it."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from flask import Flask, jsonify
from flask.testing import FlaskClient

from mobile_api.openapi import UndocumentedRoute, api_operations, build_document
from mobile_api.schemas import MetaOut
from server.visits.schemas import SurveyIn
from server.wire import DB_ID_MAX, Operation, Output, Query, operation


def test_the_document_is_valid_openapi_and_names_every_api_route(
    app: Flask, client: FlaskClient
) -> None:
    document = client.get("/api/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(document, config=schemathesis.Config()).validate()
    operations = [
        (path, method, spec)
        for path, methods in document["paths"].items()
        for method, spec in methods.items()
    ]
    assert len(operations) == len(api_operations(app)) == 20
    for path, method, spec in operations:
        assert spec["summary"] and spec["operationId"], (path, method)
        assert spec["security"] in ([], [{"device": []}], [{}, {"device": []}])
        for status, response in spec["responses"].items():
            if status.startswith("4"):
                # Every error is the envelope.
                assert response["$ref"] == "#/components/responses/Error", (path, status)
        if spec["security"] == [{"device": []}]:
            assert "401" in spec["responses"], path


def test_answers_and_bodies_are_the_models_schemas(client: FlaskClient) -> None:
    document = client.get("/api/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    meta = document["paths"]["/api/v1/meta"]["get"]["responses"]["200"]
    assert meta["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/MetaOut"}
    assert set(schemas["MetaOut"]["properties"]) == set(MetaOut.model_fields)
    assert schemas["MetaOut"]["additionalProperties"] is False  # nothing else is answered
    survey = document["paths"]["/api/v1/surveys"]["post"]["requestBody"]["content"]
    assert survey["application/json"]["schema"] == {"$ref": "#/components/schemas/SurveyIn"}
    assert set(schemas["SurveyIn"]["properties"]) == set(SurveyIn.model_fields)
    # The multipart upload: the survey part is the same JSON, the photos are file parts.
    multipart = survey["multipart/form-data"]
    assert multipart["schema"]["properties"]["survey"]["$ref"] == "#/components/schemas/SurveyIn"
    assert multipart["encoding"] == {"survey": {"contentType": "application/json"}}
    assert multipart["schema"]["additionalProperties"]["format"] == "binary"
    # Path parameters carry their type and range from the route.
    enroll = document["paths"]["/api/v1/members/{member_id}/face-templates"]["post"]
    assert enroll["parameters"] == [
        {
            "name": "member_id",
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": DB_ID_MAX},
        }
    ]


def _document_of(answer: type[Output]) -> dict[str, Any]:
    site = Flask("site")

    @site.get("/api/v1/things/<int(min=1, max=9):thing_id>")
    @operation(
        Operation(
            summary="A thing",
            security="none",
            query=(Query("kind", {"type": "string"}, "which kind"),),
            responses={200: answer},
            errors={404: "no such thing"},
        )
    )
    def thing(thing_id: int) -> Any:
        return jsonify({})

    return build_document(site)


def test_a_field_added_to_a_model_is_in_the_document() -> None:
    class Thing(Output):
        name: str

    class Thing2(Output):
        name: str
        weight_kg: float | None

    before = _document_of(Thing)["components"]["schemas"]["Thing"]
    after = _document_of(Thing2)["components"]["schemas"]["Thing2"]
    assert set(before["properties"]) == {"name"}
    assert set(after["properties"]) == {"name", "weight_kg"}
    assert after["required"] == ["name", "weight_kg"]
    spec = _document_of(Thing)["paths"]["/api/v1/things/{thing_id}"]["get"]
    assert spec["parameters"][0]["schema"] == {"type": "integer", "minimum": 1, "maximum": 9}
    assert spec["parameters"][1]["name"] == "kind"
    # 400: an operation with a query string may refuse a value before the view runs.
    assert set(spec["responses"]) == {"200", "400", "404"}


def test_a_route_under_api_without_an_operation_is_refused() -> None:
    site = Flask("site")

    @site.get("/api/v1/secret")
    def secret() -> Any:
        return jsonify({})

    with pytest.raises(UndocumentedRoute, match="/api/v1/secret"):
        build_document(site)
