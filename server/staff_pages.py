"""The staff pages of a course of hundreds: the flag review (the source shown, the flagged
lines marked, a decision taken), the students who fail one test grouped by message,
extensions and overrides from a student's page, the release of hidden feedback, and the
roster's new tokens as a CSV downloaded once.

Server-rendered; every form carries its CSRF value; the source is highlighted on the
server (Pygments, CSS classes only: the CSP allows no inline style)."""

from __future__ import annotations

import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from autograder.authoring.notebook import read_cells
from autograder.text import visible
from server import decisions
from server.db import SessionDep, begin_write, releases_session
from server.pages import StaffPageUser, _csrf, render
from server.policy import tz_from_offset
from server.schemas import Slug, SubmissionId
from server.security import LOGIN_PATTERN, csv_text
from server.service import (
    TOKEN_CSV_SECONDS,
    final_runs,
    get_assignment,
    load_submission,
    score_table,
)

staff_pages = APIRouter(include_in_schema=False)
Login = Annotated[str, PathParam(max_length=64, pattern=LOGIN_PATTERN)]


def _error(request: Request, user, e: HTTPException, back: str, title: str) -> HTMLResponse:
    return render(request, "error.html", status=e.status_code, user=user, message=e.detail, back=back, title=title)


# -- the source of a submission, flags marked -------------------------------------------------
def source_cells(data: bytes, kind: str, flags: list[dict]) -> list[dict]:
    """The submission's code cells as highlighted HTML, each flagged line marked (a flag's
    `cell` and `line` are where the student sees it)."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("s.ipynb" if kind == "ipynb" else "s.py")
        path.write_bytes(data)
        try:
            cells, _, _ = read_cells(path)
        except ValueError as e:
            return [{"index": None, "html": Markup("<p class='error'>{}</p>").format(str(e)), "flagged": [],
                     "anchor": "cell-none"}]
    out = []
    for cell in cells:
        marked = sorted({int(f["line"]) for f in flags if f.get("cell") == cell.index and isinstance(f.get("line"), int)})
        anchor = f"cell-{cell.index if cell.index is not None else 'file'}"
        fmt = HtmlFormatter(linenos="inline", hl_lines=marked, lineanchors=anchor, anchorlinenos=True)
        out.append({"index": cell.index, "anchor": anchor, "flagged": marked,
                    # control characters and bidi overrides shown as escapes (Trojan Source): the
                    # TA reads the code as Python does, not as a renderer reorders it
                    "html": Markup(highlight(visible(cell.source[:400_000]), PythonLexer(), fmt))})
    return out


@staff_pages.get("/ui/ta/{slug}/flags", response_class=HTMLResponse)
@releases_session
def flag_queue_page(slug: Slug, request: Request, user: StaffPageUser, session: SessionDep, all: bool = False):
    a = get_assignment(session, slug)
    entries = decisions.flag_queue(session, a, unreviewed_only=not all)
    return render(request, "flags.html", user=user, staff=True, a=a, entries=entries, all=all)


@staff_pages.get("/ui/ta/submissions/{sub_id}/review", response_class=HTMLResponse)
@releases_session
def review_page(sub_id: SubmissionId, request: Request, user: StaffPageUser, session: SessionDep):
    sub = load_submission(session, sub_id, user)
    entry = decisions.flag_entry(session, sub)
    data = request.app.state.store.get(sub.content_hash)
    graded = decisions.function_points(session, sub.assignment)
    flagged = {str(f.get("function") or "").split(".")[0] for f in entry["flags"]}
    # the graded functions, those the flags name first
    functions = sorted(graded, key=lambda fn: (fn not in flagged, fn))
    return render(request, "review.html", user=user, staff=True, sub=sub, a=sub.assignment, entry=entry,
                  functions=functions, cells=source_cells(data, sub.kind, entry["flags"]))


@staff_pages.post("/ui/ta/submissions/{sub_id}/review")
@releases_session
def review_post(sub_id: SubmissionId, request: Request, user: StaffPageUser, session: SessionDep,
                action: Annotated[str, Form(pattern="^(cleared|zeroed|note)$")],
                reason: Annotated[str, Form(max_length=2000)] = "", function: Annotated[str, Form(max_length=200)] = "",
                csrf: Annotated[str, Form()] = ""):
    _csrf(request, csrf)
    sub = load_submission(session, sub_id, user)
    slug = sub.assignment.slug
    try:
        begin_write(session)
        decisions.review_flags(session, user, sub, action, reason, function)
        session.commit()
    except HTTPException as e:
        session.rollback()
        return _error(request, user, e, f"/ui/ta/submissions/{sub_id}/review", "Review not recorded")
    return RedirectResponse(f"/ui/ta/{slug}/flags?reviewed={sub_id}", 303)


# -- who fails a test ---------------------------------------------------------------------------
@staff_pages.get("/ui/ta/{slug}/tests/{name:path}", response_class=HTMLResponse)
@releases_session
def test_page(slug: Slug, name: Annotated[str, PathParam(max_length=300)], request: Request, user: StaffPageUser,
              session: SessionDep):
    a = get_assignment(session, slug)
    return render(request, "test_failures.html", user=user, staff=True, a=a,
                  report=decisions.test_failures(final_runs(session, score_table(session, a)), name))


# -- extensions, overrides, releases ------------------------------------------------------------
def _local_deadline(value: str, offset: str) -> datetime | None:
    """A `datetime-local` value, read in the course's zone (the form says so)."""
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(422, f"{value!r} is not a date and time") from None
    return at if at.tzinfo else at.replace(tzinfo=tz_from_offset(offset))


def _student_decision(request: Request, user, session, slug: str, login: str, done: str, decide,
                      bad_number: str) -> Response:
    """One decision from a student's page: `decide(assignment, student)` in a write
    transaction; an error page (nothing changed) if it is refused; back to the page else."""
    back = f"/ui/ta/{slug}/students/{login}"
    try:
        a = get_assignment(session, slug)
        student = decisions.student(session, login)
        begin_write(session)
        decide(a, student)
        session.commit()
    except ValueError:
        session.rollback()
        return _error(request, user, HTTPException(422, bad_number), back, "Not changed")
    except HTTPException as e:
        session.rollback()
        return _error(request, user, e, back, "Not changed")
    return RedirectResponse(f"{back}?done={done}", 303)


@staff_pages.post("/ui/ta/{slug}/students/{login}/extension")
@releases_session
def extension_post(slug: Slug, login: Login, request: Request, user: StaffPageUser, session: SessionDep,
                   deadline: Annotated[str, Form(max_length=40)] = "", late_days: Annotated[str, Form(max_length=6)] = "",
                   reason: Annotated[str, Form(max_length=2000)] = "", withdraw: Annotated[str, Form()] = "",
                   csrf: Annotated[str, Form()] = ""):
    _csrf(request, csrf)

    def decide(a, student):
        when = None if withdraw else _local_deadline(deadline, a.timezone)
        days = None if withdraw or not late_days.strip() else int(late_days)
        if not withdraw and when is None and days is None:
            raise HTTPException(422, "give a new deadline or a number of late days")
        decisions.grant_extension(session, user, a, student, deadline=when, late_days=days, reason=reason)

    return _student_decision(request, user, session, slug, login, "extension", decide,
                             "late days must be a whole number")


@staff_pages.post("/ui/ta/{slug}/students/{login}/override")
@releases_session
def override_post(slug: Slug, login: Login, request: Request, user: StaffPageUser, session: SessionDep,
                  score: Annotated[str, Form(max_length=20)] = "", function: Annotated[str, Form(max_length=200)] = "",
                  reason: Annotated[str, Form(max_length=2000)] = "", withdraw: Annotated[str, Form()] = "",
                  csrf: Annotated[str, Form()] = ""):
    _csrf(request, csrf)

    def decide(a, student):
        decisions.set_override(session, user, a, student, score=None if withdraw else float(score), reason=reason,
                               function=function.strip())

    return _student_decision(request, user, session, slug, login, "override", decide, f"{score!r} is not a number")


@staff_pages.post("/ui/ta/{slug}/release")
@releases_session
def release_post(slug: Slug, request: Request, user: StaffPageUser, session: SessionDep,
                 released: Annotated[str, Form(pattern="^[01]$")], reason: Annotated[str, Form(max_length=2000)] = "",
                 csrf: Annotated[str, Form()] = ""):
    _csrf(request, csrf)
    a = get_assignment(session, slug)
    begin_write(session)
    decisions.set_release(session, user, a, released == "1", reason)
    session.commit()
    return RedirectResponse(f"/ui/ta/{slug}?done={'released' if released == '1' else 'hidden'}", 303)


@staff_pages.post("/ui/ta/{slug}/extensions.csv")
@releases_session
def extensions_csv_post(slug: Slug, request: Request, user: StaffPageUser, session: SessionDep,
                        file: Annotated[UploadFile, File()], reason: Annotated[str, Form(max_length=2000)] = "",
                        csrf: Annotated[str, Form()] = ""):
    _csrf(request, csrf)
    try:
        made = decisions.import_extensions(session, user, get_assignment(session, slug), csv_text(file), reason)
    except HTTPException as e:
        session.rollback()
        return _error(request, user, e, f"/ui/ta/{slug}", "Extensions refused")
    return RedirectResponse(f"/ui/ta/{slug}?done=extensions&n={len(made)}", 303)


# -- the roster's new tokens, once -----------------------------------------------------------
@staff_pages.get("/ui/roster/tokens/{key}.csv")
@releases_session
def tokens_csv(key: Annotated[str, PathParam(max_length=64)], request: Request, user: StaffPageUser,
               session: SessionDep):
    held = request.app.state.__dict__.setdefault("token_csvs", {})
    at, owner, text = held.get(key, (None, None, None))
    if owner != user.id:  # only the member of staff who imported the roster
        at, text = None, None
    else:
        held.pop(key, None)
    if text is None or time.monotonic() - at > TOKEN_CSV_SECONDS:
        raise HTTPException(404, "these tokens were downloaded already or are older than 15 minutes; reissue them "
                                 "from the roster (the server keeps only their hashes)")
    return Response("\ufeff" + text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="tokens.csv"', "Cache-Control": "no-store"})
