"""The OpenAPI fuzzer: schemathesis drives every operation of /api/openapi.json in-process,
with and without a device token, with data that fits the document and data that does
not. No answer may be a 5xx, and every answer must be one the document describes
(status, content type, JSON schema). Fixed seed (derandomize): the same run every time.

Run it alone with ``pytest tests/mobile_api/test_api_fuzz.py -s`` to see what it did (docs/api.md).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
from sqlalchemy.engine import Connection

from server.cases.models import CaseState
from server.devices.service import issue_device_token
from server.extensions import db
from server.proof_of_life import service as pol
from server.public import changes
from tests import factories
from tests.mobile_api.test_api_devices import bearer
from tests.proof_of_life.test_proof_of_life_api import next_month
from tests.visits.test_api_surveys import jpeg, survey_json

pytestmark = pytest.mark.slow  # tests that take seconds: pytest -m 'not slow' skips them

# Examples per operation, per round (no token / token / token and known objects) and per
# mode (positive / negative).
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
    seconds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    unsatisfiable: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Round:
    """One pass over an operation: which token, and which path/query values are fixed to
    objects that exist (so that the fuzzer gets past "not found" into the view)."""

    label: str
    headers: dict[str, str]
    known: dict[str, Any] = field(default_factory=dict)


def _fuzz_operation(
    operation: Any, mode: GenerationMode, round_: Round, app: Flask, client: FlaskClient, run: Run
) -> None:
    label, headers = round_.label, round_.headers
    names = {p.name: p.location for p in operation.iter_parameters()}
    path = {k: v for k, v in round_.known.items() if names.get(k) == "path"}
    query = {k: v for k, v in round_.known.items() if names.get(k) == "query"}
    if round_.known and not (path or query):
        return  # nothing of this operation is known: the other rounds cover it
    connection = db.session.get_bind()
    assert isinstance(connection, Connection)  # the test's own (tests/conftest.py)

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
    @given(
        case=operation.as_strategy(
            generation_mode=mode, path_parameters=path or None, query=query or None
        )
    )
    def test(case: Any) -> None:
        run.calls[operation.label] += 1
        # Every example starts from the same data: what a request commits (a savepoint
        # of the test's transaction, tests/conftest.py) is rolled back after it.
        example = connection.begin_nested()
        try:
            response = case.call(app=app, session=client, headers=headers)
        finally:
            db.session.remove()
            example.rollback()
        run.statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    started = time.monotonic()
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
    finally:
        run.seconds[operation.label] += time.monotonic() - started


def _objects(client: FlaskClient) -> tuple[str, dict[str, Any]]:
    """A caseworker's device token, and objects of the caseworker's township the
    operations can find: a member designated for proof of life with this month's link
    and an open session, a survey of this device still waiting for its photo."""
    household = factories.make_household(state=CaseState.APPROVED)
    for _ in range(5):  # k alike: published cases in the open data
        factories.make_household(state=CaseState.APPROVED)
    head = household.members[0]
    head.proof_of_life_required = True
    token = issue_device_token(
        username="caseworker_a",
        password=factories.PASSWORD,
        device_id="fuzz-tablet",
        device_name="fuzz",
    ).token
    record = pol.month_record(head, next_month())
    link = pol.link_token(record)
    session = pol.start_session(record, now=datetime.now(UTC))
    known: dict[str, Any] = {
        "member_id": head.id,
        "link_token": link,
        "session_id": session.session_id,
        "case_code": household.case_code,
        "township": household.village.parent.code,
    }
    db.session.commit()
    photo = jpeg()
    survey = survey_json(household.id, {"p1": photo})
    answer = client.post("/api/v1/surveys", json=survey, headers=bearer(token))
    assert answer.status_code == 201, answer.get_json()
    known.update(client_uuid=survey["client_uuid"], photo_id="p1")
    # The open data's snapshot, built once (a request would build it again after every
    # rolled-back example otherwise).
    changes.refresh(force=True)
    db.session.commit()
    return token, known


@pytest.mark.slow
def test_no_operation_answers_a_5xx_or_off_its_document(app: Flask, client: FlaskClient) -> None:
    token, known = _objects(client)
    bearer = {"Authorization": f"Bearer {token}"}
    rounds = (
        Round("no token", {}),
        Round("device token", bearer),
        Round("device token, known objects", bearer, known),
    )
    document = client.get("/api/openapi.json").get_json()
    schema = schemathesis.openapi.from_dict(document, config=schemathesis.Config())

    run = Run()
    started, cpu = time.monotonic(), time.process_time()
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for round_ in rounds:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz_operation(operation, mode, round_, app, client, run)
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu

    print(
        f"\nfuzzer: {len(operations)} operations, {sum(run.calls.values())} requests "
        f"in {elapsed:.1f} s ({cpu:.1f} s CPU); statuses {dict(sorted(run.statuses.items()))}"
    )
    for operation_label, count in sorted(run.calls.items()):
        print(f"  {count:5d} requests {run.seconds[operation_label]:5.1f} s  {operation_label}")
    for failure in run.failures:
        print("FAILURE", failure)
    assert not run.failures, "\n\n".join(run.failures)
