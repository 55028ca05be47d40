"""Fixtures for the server: a course folder, a database (SQLite always; the loopback
PostgreSQL where one answers), an app, users with tokens, and a client."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server's packages are not installed (pip install -e '.[server]')")

from fastapi.testclient import TestClient  # noqa: E402

from server.app import create_app  # noqa: E402
from server.config import Settings  # noqa: E402

from server_course import Course  # noqa: E402

HERE = Path(__file__).resolve().parent
PROBE = HERE.parent / "fixtures" / "probe"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def write_assignment(root: Path, slug: str, *, deadline: datetime | None, limit: int | None = None,
                     late: str = "", extra: str = "", gpu: str = "none") -> None:
    """A course assignment made of the engine's probe suite (10 points)."""
    d = root / slug
    shutil.copytree(PROBE / "tests", d / "tests")
    lines = [f'slug = "{slug}"', f'title = "Probe {slug}"', "points = 10", f'gpu = "{gpu}"',
             "public_tests = []", 'hidden_tests = ["tests/test_probe.py"]', "finished = true"]
    if deadline is not None:
        lines.append(f'deadline = "{deadline.isoformat()}"')
    if limit is not None:
        lines.append(f"daily_submission_limit = {limit}")
    lines.append(extra)
    lines += ["[limits]", "call_seconds = 5", "submission_seconds = 60"]
    if late:
        lines += ["[late_policy]", late]
    (d / "assignment.toml").write_text("\n".join(lines) + "\n")


@pytest.fixture
def course(tmp_path) -> Path:
    """Five assignments: open (limit 3/day), late (deadline 2.5 days ago, 10%/day, 3 days max),
    closed (5 days ago, 2 days max), past_last (an hour ago; score policy last, feedback after
    the deadline) and gpu_only (needs a GPU: the gpu queue)."""
    root = tmp_path / "assignments"
    now = datetime.now(UTC)
    write_assignment(root, "open", deadline=now + timedelta(days=7), limit=3)
    write_assignment(root, "late", deadline=now - timedelta(days=2.5),
                     late="grace_minutes = 15\npenalty_per_day = 0.10\nmax_days_late = 3")
    write_assignment(root, "closed", deadline=now - timedelta(days=5),
                     late="penalty_per_day = 0.10\nmax_days_late = 2")
    write_assignment(root, "past_last", deadline=now - timedelta(hours=1),
                     late="grace_minutes = 0\npenalty_per_day = 0.25\nmax_days_late = 10",
                     extra='score_policy = "last"\nfeedback_after_deadline = true')
    write_assignment(root, "gpu_only", deadline=now + timedelta(days=7), gpu="required")
    return root


def _postgres_url() -> str | None:
    try:
        import psycopg
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=2, autocommit=True) as c:
            name = "dlopt_test_" + uuid.uuid4().hex[:12]
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    except Exception:  # noqa: BLE001 - no server here: the PostgreSQL variant is skipped
        return None


def _drop_postgres(url: str) -> None:
    import psycopg
    name = url.rsplit("/", 1)[1]
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_generate_tests(metafunc):
    """The database a server test runs on: SQLite always; PostgreSQL too for the tests
    whose behaviour rests on the database (queries, transactions, leases, migrations:
    modules marked `every_database`). Routing, access control and pages are the same
    code on both, and run once."""
    if "database_url" in metafunc.fixturenames:
        both = metafunc.definition.get_closest_marker("every_database") is not None
        metafunc.parametrize("database_url", ["sqlite", "postgresql"] if both else ["sqlite"], indirect=True)


@pytest.fixture
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'dlopt.sqlite3'}"
        return
    url = _postgres_url()
    if url is None:
        pytest.skip("no PostgreSQL answers on 127.0.0.1:5432 (user postgres, trust auth); the SQLite variant ran")
    yield url
    _drop_postgres(url)


@pytest.fixture
def settings_for(tmp_path, course, database_url):
    def make(**kw) -> Settings:
        base = dict(data_dir=tmp_path / "data", database_url=database_url, assignments_dir=course, workers=0,
                    grade_function="server_fakes:grade", poll_seconds=0.1, lease_seconds=5.0)
        base.update(kw)
        return Settings(_env_file=None, **base)
    return make


@pytest.fixture
def make_course(settings_for):
    made = []

    def make(**kw) -> Course:
        app = create_app(settings_for(**kw))
        client = TestClient(app)
        client.__enter__()
        made.append(client)
        return Course(app, client)

    yield make
    for c in made:
        c.__exit__(None, None, None)
        c.app.state.db.engine.dispose()


@pytest.fixture
def course_app(make_course) -> Course:
    return make_course()


@pytest.fixture
def graded(make_course) -> Course:
    """A course whose one embedded worker grades with the scripted grader."""
    return make_course(workers=1)
