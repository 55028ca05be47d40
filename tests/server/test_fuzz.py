"""The OpenAPI document fuzzed by schemathesis against the app (ASGI, in process): random
and edge-case requests, with a TA's token, an admin's and none; no answer may be a 500,
and every answer must match the document."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install -e '.[dev]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from server.app import create_app  # noqa: E402
from server.config import Settings  # noqa: E402

from server_course import Course  # noqa: E402

# A schema-valid request may still be refused with a 4xx: a file's bytes (a CSV without a
# login column, a zip that is not a zip) are beyond what the document can describe.
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


@pytest.fixture
def fuzzed_app(tmp_path, course):
    s = Settings(_env_file=None, data_dir=tmp_path / "data", assignments_dir=course, workers=0,
                 database_url=f"sqlite:///{tmp_path / 'data' / 'db.sqlite3'}")
    app = create_app(s)
    from fastapi.testclient import TestClient
    with TestClient(app) as client:
        c = Course(app, client)
        c.submit("alice", "open")
        app.state.fuzz_tokens = c.tokens
        yield app


def test_no_request_gets_a_500_and_every_answer_matches_the_document(fuzzed_app):
    # schemathesis' own pytest plugin (from_fixture) does not load under this pytest; the
    # operations' hypothesis strategies are driven directly instead.
    api = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)
    tokens = fuzzed_app.state.fuzz_tokens
    ops = [r.ok() for r in api.get_all_operations()]
    assert len(ops) >= 17
    for op in ops:
        @given(case=op.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None, derandomize=True)
        def fuzz(case):
            for who in ("ta1", "admin", None):
                headers = {"Authorization": f"Bearer {tokens[who]}"} if who else {}
                case.call_and_validate(headers=headers, excluded_checks=EXCLUDED)

        fuzz()
