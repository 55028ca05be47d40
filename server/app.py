"""The FastAPI application: `create_app(settings)`; `dlopt serve` runs it with uvicorn."""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import select
from starlette.requests import cookie_parser

from autograder import __version__
from server import auth, catalog
from server.config import Settings
from server.db import Database, begin_write
from server.models import User
from server.queue import EmbeddedPool, GradingQueue
from server.security import FORM_OVERHEAD, BodyLimit, SecurityHeaders
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

    app = FastAPI(title="dlopt course server", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
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

    def body_limit(scope) -> int:
        """Who is asking decides how much body they may send; looked up before any is read."""
        headers = dict(scope.get("headers") or [])
        authz = headers.get(b"authorization", b"").decode("latin-1")
        token = authz[7:].strip() if authz[:7].lower() == "bearer " else None
        # Starlette's own parser: what the pages will read (Python's SimpleCookie stops at the
        # first cookie of another site it dislikes, and the session would look absent).
        secret = cookie_parser(headers.get(b"cookie", b"").decode("latin-1")).get(auth.COOKIE)
        with db.session() as s:
            user = auth.user_for_token(s, token) if token else auth.user_for_session(s, secret)
            role = user.role if user is not None else None
            s.rollback()
        if role is None:
            return settings.anonymous_body_bytes
        big = settings.max_batch_bytes if auth.RANK.get(role, 0) >= auth.RANK["ta"] else settings.max_upload_bytes
        return big + FORM_OVERHEAD

    from server.pages import install_error_pages, pages
    from server.routes import api
    from server.routes.client import router as student_client
    from server.similarity_pages import similarity_api, similarity_pages
    from server.staff_pages import staff_pages

    app.include_router(api)
    app.include_router(pages)
    app.include_router(similarity_pages)  # /ui/ta/{slug}/similarity: the plagiarism review (issue 27)
    app.include_router(similarity_api)    # /api/v1/assignments/{slug}/similarity
    app.include_router(staff_pages)
    app.include_router(student_client)  # /client: the student client's wheel, for anyone
    # (the more specific mount first: /static would take /static/docs/... too)
    app.mount("/static/docs", StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"),
              name="docs-static")
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    install_docs(app)
    install_error_pages(app)
    # Outermost first: headers on every answer (413s included), then the body limit.
    app.add_middleware(BodyLimit, limit_for=body_limit)
    app.add_middleware(SecurityHeaders)
    return app


def install_docs(app: FastAPI) -> None:
    """Swagger UI and ReDoc from the files of the fastapi-offline package: /docs works on a
    network with no way out."""

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} · API",
                                   swagger_js_url="/static/docs/swagger-ui-bundle.js",
                                   swagger_css_url="/static/docs/swagger-ui.css",
                                   swagger_favicon_url="/static/docs/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} · API",
                              redoc_js_url="/static/docs/redoc.standalone.js",
                              redoc_favicon_url="/static/docs/favicon.png", with_google_fonts=False)
