"""Schemathesis fuzzes the admin API's OpenAPI document in-process, over a populated
in-memory bus (held records, a genealogy): no request may yield a 5xx, and every response
must match the documented status codes and schemas. Unauthenticated calls are covered by
test_api.py (every route answers 401)."""

from __future__ import annotations

import collections

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from ostracon.api import create_app

from .test_api import TOKEN, populated

backend = populated()
statuses: collections.Counter[int] = collections.Counter()
app = create_app(backend, TOKEN)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@hypothesis.settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    database=None,
)
def test_no_request_yields_a_server_error(case: schemathesis.Case) -> None:
    response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
    statuses[response.status_code] += 1
    case.validate_response(
        response,
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
    )


def test_the_fuzzing_reached_the_handlers() -> None:
    """Runs after the fuzz cases (file order): they were not all turned away at validation."""
    if not statuses:
        pytest.skip("runs after test_no_request_yields_a_server_error, in the same session")
    assert statuses[200] >= 10, statuses
