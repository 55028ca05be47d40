"""The database: engine, sessions, and migrations to the newest schema at start."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # As many connections as the threadpool has threads (40), so no request thread waits for one.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=40, max_overflow=10)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            # WAL: readers never wait for the writer; FULL sync: a committed row survives a power cut.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
            dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" listener below issues BEGIN

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn) -> None:
            # A transaction that will write takes the write lock at BEGIN (`begin_write`): a
            # deferred one that reads, then writes after another writer committed, fails at once
            # with SQLITE_BUSY instead of waiting. Readers stay deferred: under WAL they never
            # block, and a request's session may stay open until FastAPI tears it down.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("dlopt_write") else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=30)


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (a no-op when it is there)."""
    from alembic import command

    cfg = alembic_config(str(engine.url.render_as_string(hide_password=False)))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def begin_write(session: Session) -> None:
    """End the session's current transaction and start one that will write (SQLite: BEGIN
    IMMEDIATE, waiting for the lock up to the busy timeout). Loaded objects stay usable."""
    session.commit()
    session.connection(execution_options={"dlopt_write": True})


def serialize_on(session: Session, key1: int, key2: int) -> None:
    """Within a write transaction: wait until no other transaction holds (key1, key2), and
    hold it until this one ends. PostgreSQL: a transaction-level advisory lock (its read
    committed isolation would let two transactions both read a count, then both insert).
    SQLite: nothing to do, BEGIN IMMEDIATE already lets one writer in at a time."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": key1, "b": key2})


def releases_session(fn):
    """Route decorator: close the request's session when the route returns.

    FastAPI validates a sync route's response, and tears down its dependencies, only after
    the route returns, and the validation needs a threadpool thread. A session left open
    until then keeps its connection: under load (hundreds of requests, 40 threads) every
    thread can end up waiting for a connection held by a finished route whose response
    is waiting for a thread. Routes build their whole answer before returning, so the
    session is not needed after."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            session = kwargs.get("session")
            if session is not None:
                session.close()

    return wrapper


async def request_session(request: Request) -> AsyncIterator[Session]:
    """FastAPI dependency: one session per request, shared by its dependencies.

    Async on purpose: its teardown (closing the session, which hands the connection back)
    runs on the event loop. As a sync dependency it would wait for a thread of the
    threadpool, and under load every thread can be waiting for a connection that only a
    teardown would give back."""
    s = request.app.state.db.sessions()
    try:
        yield s
    finally:
        s.close()


class Database:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as s:
            yield s

    def migrate(self) -> None:
        migrate(self.engine)


SessionDep = Annotated[Session, Depends(request_session)]
