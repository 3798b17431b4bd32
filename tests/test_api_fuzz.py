"""The OpenAPI fuzzer: schemathesis drives every operation of /api/openapi.json in-process,
with and without a device token, with data that fits the document and data that does
not. No answer may be a 5xx, and every answer must be one the document describes
(status, content type, JSON schema). Fixed seed (derandomize): the same run every time.

Run it alone with ``pytest tests/test_api_fuzz.py -s`` to see what it did (docs/api.md).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server.cases.models import CaseState
from server.devices.service import issue_device_token
from server.extensions import db
from tests import factories

# Examples per operation, per token (none / valid) and per mode (positive / negative).
MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


@dataclass
class Run:
    calls: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    unsatisfiable: list[str] = field(default_factory=list)


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    headers: dict[str, str],
    label: str,
    app: Flask,
    client: FlaskClient,
    run: Run,
) -> None:
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        # Failures are reported as found: shrinking would multiply the requests.
        phases=[Phase.explicit, Phase.generate],
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def test(case: Any) -> None:
        run.calls[operation.label] += 1
        response = case.call(app=app, session=client, headers=headers)
        run.statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    try:
        test()
    except Unsatisfiable:
        # Nothing in this operation's document can be made invalid (no parameters, or
        # only free-form strings): the positive run covers it.
        run.unsatisfiable.append(f"{operation.label} [{label}, {mode.value}]")
    except (Exception, BaseExceptionGroup) as exc:
        found = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
        for failure in found:
            run.failures.append(f"{operation.label} [{label}, {mode.value}]: {failure}")


@pytest.mark.slow
def test_no_operation_answers_a_5xx_or_off_its_document(app: Flask, client: FlaskClient) -> None:
    # Something to find: a household with members in the caseworker's township.
    factories.make_household(state=CaseState.APPROVED)
    issued = issue_device_token(
        username="caseworker_a",
        password=factories.PASSWORD,
        device_id="fuzz-tablet",
        device_name="fuzz",
    )
    token = issued.token
    db.session.commit()
    document = client.get("/api/openapi.json").get_json()
    schema = schemathesis.openapi.from_dict(document, config=schemathesis.Config())

    run = Run()
    started, cpu = time.monotonic(), time.process_time()
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for label, headers in (
            ("no token", {}),
            ("device token", {"Authorization": f"Bearer {token}"}),
        ):
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz_operation(operation, mode, headers, label, app, client, run)
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu

    print(
        f"\nfuzzer: {len(operations)} operations, {sum(run.calls.values())} requests "
        f"in {elapsed:.1f} s ({cpu:.1f} s CPU); statuses {dict(sorted(run.statuses.items()))}"
    )
    for operation_label, count in sorted(run.calls.items()):
        print(f"  {count:5d}  {operation_label}")
    for failure in run.failures:
        print("FAILURE", failure)
    assert not run.failures, "\n\n".join(run.failures)
