"""The similarity report for staff (issue 27): a ranked list of pairs, each pair's two
submissions side by side with the matched lines marked, a button that recomputes, and
the same report as JSON in the API.

The report is computed offline (`dlopt similarity SLUG`, or the button: a thread of this
process) and read from `<data_dir>/similarity/<slug>.json` (server.similarity); a page
never recomputes it. Routers: `similarity_pages` (the pages) and `similarity_api`
(`/api/v1/assignments/{slug}/similarity`), both staff only.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup, escape
from pydantic import BaseModel, Field

from autograder.text import visible
from server.auth import StaffDep
from server.db import SessionDep, releases_session
from server.models import utcnow
from server.pages import StaffPageUser, _csrf, render
from server.schemas import Slug
from server.service import get_assignment
from server.similarity import build, load_saved, save

log = logging.getLogger("dlopt.similarity")

similarity_pages = APIRouter(include_in_schema=False)
similarity_api = APIRouter(prefix="/api/v1", tags=["staff"],
                           responses={401: {"description": "missing or invalid API token"},
                                      403: {"description": "not allowed for this role"}})
PairNumber = Annotated[int, PathParam(ge=1, le=100_000, description="the pair's rank in the report, from 1")]
_jobs_lock = threading.RLock()


# -- recomputing in the background -----------------------------------------------------------
def _jobs(app) -> dict:
    """slug -> {"started": datetime, "error": str | None, "running": bool}, per app."""
    with _jobs_lock:
        if not hasattr(app.state, "similarity_jobs"):
            app.state.similarity_jobs = {}
        return app.state.similarity_jobs


def start_recompute(app, slug: str, top: int = 200) -> bool:
    """Compute and save the report in a thread; False if one is already running."""
    jobs = _jobs(app)
    with _jobs_lock:
        if jobs.get(slug, {}).get("running"):
            return False
        jobs[slug] = {"started": utcnow(), "error": None, "running": True}

    def work() -> None:
        s = app.state.settings
        try:
            save(s.data_dir, slug, build(s, app.state.db, app.state.store, slug, top=top))
            error = None
        except Exception as e:  # noqa: BLE001 - shown on the page, logged in full
            log.exception("similarity report of %s failed", slug)
            error = f"{type(e).__name__}: {e}"
        with _jobs_lock:
            jobs[slug] = {**jobs[slug], "running": False, "error": error}

    threading.Thread(target=work, name=f"similarity-{slug}", daemon=True).start()
    return True


def job_state(app, slug: str) -> dict:
    jobs = _jobs(app)
    with _jobs_lock:
        return dict(jobs.get(slug) or {"running": False, "error": None, "started": None})


# -- code side by side --------------------------------------------------------------------
def code_lines(source: str, ranges: list) -> list[tuple[int, Markup, bool]]:
    """(line number, highlighted line, matched) for each line of `source`: pygments with
    CSS classes (no inline style), each line closed on its own; control and bidi
    characters shown as escapes (autograder.text.visible) before anything is rendered."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    text = visible(source)
    n = len(text.split("\n"))
    try:
        html = highlight(text, PythonLexer(stripnl=False), HtmlFormatter(nowrap=True)).split("\n")
    except Exception:  # noqa: BLE001 - never expected; plain escaped text then
        html = [str(escape(x)) for x in text.split("\n")]
    if len(html) < n:
        html += [""] * (n - len(html))
    matched = set()
    for r in ranges:
        if isinstance(r, list | tuple) and len(r) == 2:
            matched.update(range(int(r[0]), int(r[1]) + 1))
    if text.endswith("\n"):
        n -= 1
    return [(i, Markup(html[i - 1]), i in matched) for i in range(1, n + 1)]


def _report_or_none(request: Request, slug: str) -> dict | None:
    return load_saved(request.app.state.settings.data_dir, slug)


# -- pages --------------------------------------------------------------------------------
@similarity_pages.get("/ui/ta/{slug}/similarity", response_class=HTMLResponse)
@releases_session
def similarity_page(slug: Slug, request: Request, user: StaffPageUser, session: SessionDep):
    a = get_assignment(session, slug)
    rep = _report_or_none(request, a.slug)
    computed = datetime.fromisoformat(rep["computed_at"]) if rep and rep.get("computed_at") else None
    return render(request, "similarity.html", user=user, staff=True, a=a, report=rep, computed=computed,
                  job=job_state(request.app, a.slug))


@similarity_pages.post("/ui/ta/{slug}/similarity")
@releases_session
def similarity_recompute(slug: Slug, request: Request, user: StaffPageUser, session: SessionDep,
                         csrf: Annotated[str, Form()] = ""):
    _csrf(request, csrf)
    a = get_assignment(session, slug)
    started = start_recompute(request.app, a.slug)
    return RedirectResponse(f"/ui/ta/{a.slug}/similarity?{'started' if started else 'running'}=1", 303)


@similarity_pages.get("/ui/ta/{slug}/similarity/{number}", response_class=HTMLResponse)
@releases_session
def similarity_pair_page(slug: Slug, number: PairNumber, request: Request, user: StaffPageUser,
                         session: SessionDep):
    a = get_assignment(session, slug)
    rep = _report_or_none(request, a.slug)
    if rep is None or number > len(rep.get("pairs", [])):
        raise HTTPException(404, f"no pair {number} in the similarity report of {a.slug}")
    pair = rep["pairs"][number - 1]
    sources = rep.get("sources", {})
    students = rep.get("students", {})
    sides = [{"login": pair[k], "share": pair[f"similarity_{k}"], "info": students.get(pair[k], {}),
              "lines": code_lines(sources.get(pair[k], ""), pair.get(f"lines_{k}", []))}
             for k in ("a", "b")]
    return render(request, "similarity_pair.html", user=user, staff=True, a=a, pair=pair, number=number,
                  count=len(rep["pairs"]), sides=sides, computed_at=rep.get("computed_at"))


# -- API ----------------------------------------------------------------------------------
class SimilarPair(BaseModel):
    rank: int
    a: str = Field(description="a student's login")
    b: str
    similarity: float = Field(description="mean of similarity_a and similarity_b, 0 to 1; pairs rank by it")
    similarity_a: float = Field(description="share of a's code (the given code excluded) also found in b")
    similarity_b: float
    tokens: int = Field(description="a's tokens in the shared passages (a name counts as one)")
    submission_a: int | None = None
    submission_b: int | None = None
    lines_a: list[list[int]] = Field(description="matched line ranges of a's code as read by the grader, "
                                                 "[first, last], from 1")
    lines_b: list[list[int]]


class SimilarityOut(BaseModel):
    assignment: str
    computed_at: datetime | None = Field(None, description="when the report was computed; null: never")
    running: bool = Field(False, description="a recomputation is under way on this server")
    error: str | None = Field(None, description="why the last recomputation on this server failed")
    engine: str | None = None
    submissions: int = 0
    scored: int = Field(0, description="pairs scored: every pair of submissions")
    sharing: int = Field(0, description="pairs with any fingerprint in common")
    seconds: float | None = None
    skipped: dict[str, str] = Field(default_factory=dict, description="login: why their submission is not in it")
    pairs: list[SimilarPair] = Field(default_factory=list)
    sources: dict[str, str] | None = Field(None, description="the code of each login in the pairs (with "
                                                             "?sources=true)")


@similarity_api.get("/assignments/{slug}/similarity", response_model=SimilarityOut,
                    responses={404: {"description": "no such assignment"}},
                    summary="the saved similarity report of the final submissions (dlopt similarity SLUG), "
                            "most similar pairs first")
@releases_session
def similarity_report(slug: Slug, request: Request, user: StaffDep, session: SessionDep,
                      limit: Annotated[int, Query(ge=1, le=10_000)] = 200, sources: bool = False) -> SimilarityOut:
    a = get_assignment(session, slug)
    rep = _report_or_none(request, a.slug)
    job = job_state(request.app, a.slug)
    out = SimilarityOut(assignment=a.slug, running=bool(job.get("running")), error=job.get("error"))
    if rep is None:
        return out
    students = rep.get("students", {})
    pairs = [SimilarPair(rank=i, submission_a=students.get(p["a"], {}).get("submission_id"),
                         submission_b=students.get(p["b"], {}).get("submission_id"),
                         **{k: p[k] for k in ("a", "b", "similarity", "similarity_a", "similarity_b", "tokens",
                                              "lines_a", "lines_b")})
             for i, p in enumerate(rep.get("pairs", [])[:limit], start=1)]
    shown = {p.a for p in pairs} | {p.b for p in pairs}
    out.computed_at = datetime.fromisoformat(rep["computed_at"]) if rep.get("computed_at") else None
    out.engine = rep.get("params", {}).get("engine")
    out.submissions, out.scored, out.sharing = rep.get("submissions", 0), rep.get("scored", 0), rep.get("sharing", 0)
    out.seconds, out.skipped, out.pairs = rep.get("seconds_total"), rep.get("skipped", {}), pairs
    if sources:
        out.sources = {k: v for k, v in rep.get("sources", {}).items() if k in shown}
    return out
