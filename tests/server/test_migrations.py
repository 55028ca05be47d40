"""The migrations build exactly the schema the models describe, up and down, on SQLite
and PostgreSQL; a model change without its migration fails here."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from server.db import alembic_config, migrate
from server.models import Base

# The behaviour here rests on the database: SQLite and PostgreSQL both (conftest.py).
pytestmark = pytest.mark.every_database


def test_migrations_match_the_models_and_go_down_again(database_url):
    engine = create_engine(database_url)
    if database_url.startswith("sqlite"):
        from pathlib import Path
        Path(database_url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    migrate(engine)
    migrate(engine)  # a second start is a no-op
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
        assert set(inspect(conn).get_table_names()) >= {"users", "api_tokens", "assignments", "submissions",
                                                        "grading_runs", "test_results", "alembic_version"}
    cfg = alembic_config(database_url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    engine.dispose()
