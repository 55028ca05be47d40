"""The FastAPI application: `create_app(settings)`; `dlopt serve` runs it with uvicorn."""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from autograder import __version__
from server import auth, catalog
from server.config import Settings
from server.db import Database, begin_write
from server.models import User
from server.queue import EmbeddedPool, GradingQueue
from server.storage import Store

log = logging.getLogger("dlopt.server")


def bootstrap_admin(db: Database, settings: Settings) -> str | None:
    """A fresh database gets one admin; its token is written to data_dir/admin-token (mode 600)."""
    with db.session() as s:
        begin_write(s)
        if s.scalar(select(User).where(User.role == "admin")) is not None:
            return None
        admin = s.scalar(select(User).where(User.login == "admin")) or User(login="admin", name="Administrator")
        admin.role, admin.active = "admin", True
        s.add(admin)
        s.flush()
        token = auth.issue_token(s, admin)
        s.commit()
    path = settings.data_dir / "admin-token"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    log.warning("created the admin account; its API token is in %s", path.resolve())
    return token


def create_app(settings: Settings | None = None, *, workers: bool = True) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = None
        if settings.broker_url:
            from server.celery_app import broker_dispatcher

            app.state.queue.dispatcher = broker_dispatcher(settings)
        elif workers and settings.workers > 0:
            pool = EmbeddedPool(app.state.queue, settings.workers)
            pool.start()
        app.state.pool = pool
        yield
        if pool:
            pool.stop()

    app = FastAPI(title="dlopt course server", version=__version__, lifespan=lifespan,
                  description="Submissions, scores and grading runs of the course's assignments. "
                              "Authenticate with `Authorization: Bearer <token>` (tokens come from the roster import).")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database)
    db.migrate()
    with db.session() as s:
        begin_write(s)
        catalog.sync(s, settings.assignments_dir, settings.include_unfinished)
        s.commit()
    bootstrap_admin(db, settings)
    store = Store(settings.store)
    app.state.settings, app.state.db, app.state.store = settings, db, store
    app.state.queue = GradingQueue(settings, db, store)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        # Refuse an oversized body before reading it (routes check again while reading).
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return JSONResponse({"detail": "bad Content-Length"}, status_code=400)
            if int(length) > settings.max_batch_bytes + 1024 * 1024:
                return JSONResponse({"detail": "the request body is too large"}, status_code=413)
        return await call_next(request)

    from server.pages import pages
    from server.routes import api

    app.include_router(api)
    app.include_router(pages)
    return app
