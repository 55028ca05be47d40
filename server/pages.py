"""Server-rendered web pages: sign in with a token, upload, a live status and results view;
for staff, a dashboard per assignment (score table, histogram, failed runs, regrades).

The token lives in an HttpOnly, SameSite=Strict cookie; every form carries a CSRF field
derived from it. The pages call the same service functions as the API.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from autograder.judge.results import harmless_note
from autograder.text import visible
from server import auth, charts, decisions
from server.db import SessionDep, begin_write, releases_session
from server.models import AssignmentRow, GradingRun, Submission, User, utcnow
from server.policy import tz_from_offset
from server.schemas import Slug, SubmissionId
from server.security import LOGIN_PATTERN, csv_text, same_origin
from server.service import (
    assignment_out,
    batch_submit,
    csv_response,
    final_runs,
    get_assignment,
    gradescope_zip,
    hold_tokens_csv,
    import_roster,
    load_submission,
    regrade,
    score_table,
    scores_csv,
    submission_out,
    submit,
)

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _finalize(value):
    """Every `{{ ... }}` of every page: a string (a submission's file name, error, notes,
    feedback: text a student wrote) has its control characters and bidi overrides shown as
    escapes (`\x1b`), before autoescaping; markup built by the server (charts) is kept."""
    return value if isinstance(value, Markup) or not isinstance(value, str) else visible(value)


def zone_name(offset: str) -> str:
    """A course zone as a page names it: UTC, or UTC-05:00."""
    return "UTC" if offset in ("", "UTC", "Z", "+00:00", "-00:00") else f"UTC{offset}"


def when(at, offset: str = "UTC") -> Markup:
    """A time as a page shows it: in the course's zone, named (the server's text), which
    /static/localtime.js replaces by the reader's own local time with its zone named."""
    if at is None:
        return Markup("none")
    local = at.astimezone(tz_from_offset(offset))
    return Markup('<time datetime="{}" data-local>{} {}</time>').format(at.isoformat(), f"{local:%Y-%m-%d %H:%M}",
                                                                      zone_name(offset))


def countdown(at, prefix: str = "in", after: str = "now") -> Markup:
    if at is None:
        return Markup("")
    return Markup('<span data-countdown="{}" data-prefix="{}" data-after="{}"></span>').format(at.isoformat(),
                                                                                            prefix, after)


templates.env.finalize = _finalize  # before any template is compiled: finalize is compiled in
templates.env.globals.update(when=when, countdown=countdown, zone_name=zone_name)
pages = APIRouter(include_in_schema=False)


def page_user(request: Request, session: SessionDep) -> User:
    user = auth.user_for_session(session, request.cookies.get(auth.COOKIE))
    session.commit()  # end the lookup's transaction
    if user is None:
        raise HTTPException(303, headers={"Location": "/"})
    return user


PageUser = Annotated[User, Depends(page_user)]


def staff_page_user(user: PageUser) -> User:
    if not auth.is_staff(user):
        raise HTTPException(403, "course staff only")
    return user


StaffPageUser = Annotated[User, Depends(staff_page_user)]


def _same_origin(request: Request) -> None:
    """A form post must come from a page of this server (Origin, else Referer); a browser
    that sends neither is judged by the CSRF value alone."""
    headers = {k.lower().encode("latin-1"): v.encode("latin-1") for k, v in request.headers.items()}
    if same_origin(headers, request.url.scheme, request.app.state.settings.public_url) is False:
        raise HTTPException(403, "this form was posted from another site; open the page on this server and try again")


def _csrf(request: Request, csrf: str | None) -> None:
    _same_origin(request)
    if not auth.check_csrf(request.cookies.get(auth.COOKIE, ""), csrf):
        raise HTTPException(403, "the form is stale or forged (CSRF check failed); reload the page")


def _secure(request: Request) -> bool:
    setting = request.app.state.settings.cookie_secure
    return request.url.scheme == "https" if setting == "auto" else bool(setting)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def render(request: Request, name: str, status: int = 200, **ctx) -> HTMLResponse:
    secret = request.cookies.get(auth.COOKIE, "")
    return templates.TemplateResponse(request, name, {"csrf": auth.csrf_for(secret) if secret else "", **ctx},
                                      status_code=status)


def _login_form(request: Request, status: int = 200, error: str | None = None) -> HTMLResponse:
    """The sign-in form with a fresh login-CSRF value, also set as a cookie of its own."""
    value = secrets.token_urlsafe(24)
    resp = render(request, "login.html", status=status, user=None, error=error, login_csrf=value)
    resp.set_cookie(auth.LOGIN_COOKIE, value, httponly=True, samesite="strict", secure=_secure(request),
                    max_age=60 * 60, path="/login")
    return resp


@pages.get("/", response_class=HTMLResponse)
@releases_session
def login_page(request: Request, session: SessionDep):
    if auth.user_for_session(session, request.cookies.get(auth.COOKIE)):
        return RedirectResponse("/ui", 303)
    return _login_form(request)


@pages.get("/login", response_class=HTMLResponse)
def login_get(request: Request):
    return RedirectResponse("/", 303)


@pages.post("/login")
@releases_session
def login(request: Request, session: SessionDep, token: Annotated[str, Form(max_length=200)],
          login_csrf: Annotated[str, Form(max_length=100)] = ""):
    """Sign in (login CSRF: the posting page must be ours and carry the value of its cookie,
    which another site can neither read nor send, as the cookie is SameSite=Strict)."""
    _same_origin(request)
    cookie = request.cookies.get(auth.LOGIN_COOKIE, "")
    if not cookie or not login_csrf or not secrets.compare_digest(cookie, login_csrf):
        return _login_form(request, 403, "the sign-in form had expired or came from elsewhere; sign in again here")
    settings = request.app.state.settings
    token, address = token.strip(), _client(request)
    window = timedelta(minutes=settings.failed_sign_in_minutes)
    user = auth.user_for_token(session, token)
    if user is None:
        # The bound slows guessing (already hopeless against 256-bit tokens) and a flood of
        # bad tokens; a valid token always signs in, so nobody behind the same address (a
        # proxy, a campus NAT) can lock the others out.
        # Per address, and per account for the bad tokens that name one (a revoked token).
        named = auth.login_of_token(session, token)
        if auth.sign_in_blocked(session, address, named, settings.max_failed_sign_ins, window):
            session.rollback()
            return _login_form(request, 429, "too many failed sign-ins from your address or for this account; "
                                             f"try again in {settings.failed_sign_in_minutes:g} minutes")
        begin_write(session)
        auth.record_failed_sign_in(session, address, token, window)
        session.commit()
        return _login_form(request, 401, "that token is not valid")
    begin_write(session)
    secret = auth.start_session(session, user, settings.session_hours)
    session.commit()
    resp = RedirectResponse("/ui", 303)
    # Lax: a link from the LMS arrives signed in; every form is guarded by its CSRF value and
    # the origin check, so a cross-site post still gets nothing.
    resp.set_cookie(auth.COOKIE, secret, httponly=True, samesite="lax", secure=_secure(request),
                    max_age=int(settings.session_hours * 3600))
    resp.delete_cookie(auth.LOGIN_COOKIE, path="/login")
    return resp


@pages.post("/logout")
@releases_session
def logout(request: Request, session: SessionDep, csrf: Annotated[str, Form()] = ""):
    """Signing out ends the session in the database, not only in this browser."""
    _csrf(request, csrf)
    begin_write(session)
    auth.end_session(session, request.cookies.get(auth.COOKIE))
    session.commit()
    resp = RedirectResponse("/", 303)
    resp.delete_cookie(auth.COOKIE)
    return resp


@pages.get("/ui", response_class=HTMLResponse)
@releases_session
def home(request: Request, user: PageUser, session: SessionDep):
    """The assignment list: deadline, state and the student's own latest score per row;
    each row opens the assignment's page (upload, history, latest result)."""
    now = utcnow()
    rows = session.scalars(select(AssignmentRow).where(AssignmentRow.active).order_by(AssignmentRow.slug)).all()
    subs = session.scalars(select(Submission).where(Submission.user_id == user.id)
                           .options(selectinload(Submission.runs)).order_by(Submission.id.desc()).limit(100)).all()
    outs = [submission_out(s, user, now) for s in subs]
    latest = {}
    for o in outs:
        latest.setdefault(o.assignment, o)
    return render(request, "home.html", user=user, staff=auth.is_staff(user), latest=latest,
                  assignments=[assignment_out(session, a, user, now) for a in rows], submissions=outs[:10])


@pages.get("/ui/assignments/{slug}", response_class=HTMLResponse)
@releases_session
def assignment_page(slug: Slug, request: Request, user: PageUser, session: SessionDep):
    now = utcnow()
    a = get_assignment(session, slug)
    subs = session.scalars(select(Submission).where(Submission.user_id == user.id, Submission.assignment_id == a.id)
                           .options(selectinload(Submission.runs).selectinload(GradingRun.tests))
                           .order_by(Submission.id.desc()).limit(200)).all()
    outs = [submission_out(s, user, now) for s in subs]
    latest = outs[0] if outs else None
    mine = decisions.overrides(session, a, [user.id]).get(user.id, {})
    from server.service import board_specs

    return render(request, "assignment.html", user=user, staff=auth.is_staff(user), a=assignment_out(session, a, user, now),
                  submissions=outs, latest=latest, view=result_view(latest) if latest else None,
                  my_overrides=[mine[k] for k in sorted(mine)], has_boards=bool(board_specs(request.app, a)))


@pages.get("/ui/assignments/{slug}/boards", response_class=HTMLResponse)
@releases_session
def boards_page(slug: Slug, request: Request, user: PageUser, session: SessionDep):
    from server import boards
    from server.models import BoardName
    from server.service import board_specs

    a = get_assignment(session, slug)
    specs = board_specs(request.app, a)
    staff = auth.is_staff(user)
    tables = boards.tables(session, a, user, staff, [b["name"] for b in specs])
    my_name = session.scalar(select(BoardName.name).where(BoardName.user_id == user.id))
    frozen = a.deadline is not None and utcnow() > a.deadline
    return render(request, "boards.html", user=user, staff=staff, a=a, specs=specs, tables=tables, my_name=my_name,
                  frozen=frozen, name_max=boards.NAME_MAX)


@pages.post("/ui/assignments/{slug}/boards/name")
@releases_session
def board_name_post(slug: Slug, request: Request, user: PageUser, session: SessionDep,
                    name: Annotated[str, Form(max_length=200)] = "", csrf: Annotated[str, Form()] = ""):
    from server import boards

    _csrf(request, csrf)
    get_assignment(session, slug)
    begin_write(session)
    boards.set_name(session, user, visible(name))
    session.commit()
    return RedirectResponse(f"/ui/assignments/{slug}/boards", 303)


@pages.post("/ui/ta/submissions/{sub_id}/board")
@releases_session
def board_staff_post(sub_id: SubmissionId, request: Request, user: StaffPageUser, session: SessionDep,
                     board: Annotated[str, Form(max_length=100)], action: Annotated[str, Form(pattern="^(remove|restore|retime)$")],
                     reason: Annotated[str, Form(max_length=2000)] = "", csrf: Annotated[str, Form()] = ""):
    """Take a submission off a board or put it back (a reason required), or time it again
    (a regrade: a new run, timed on the worker's GPU)."""
    from server import boards

    _csrf(request, csrf)
    sub = load_submission(session, sub_id, user)
    slug = sub.assignment.slug
    if action == "retime":
        regrade(request.app, session, [sub])
        return RedirectResponse(f"/ui/assignments/{slug}/boards?retimed={sub_id}", 303)
    if not reason.strip():
        raise HTTPException(400, "a reason is required to take a submission off a board or put it back")
    begin_write(session)
    boards.remove(session, user, sub, board, reason.strip(), removed=action == "remove")
    session.commit()
    return RedirectResponse(f"/ui/assignments/{slug}/boards", 303)


@pages.post("/ui/assignments/{slug}/submit")
@releases_session
def upload(slug: Slug, request: Request, user: PageUser, session: SessionDep,
                 file: Annotated[UploadFile, File()], csrf: Annotated[str, Form()] = "",
                 accept_days_late: Annotated[int, Form(ge=0, le=10000)] = 0):
    """A late upload needs the lateness the page stated to be confirmed (the checkbox); one
    that became later meanwhile is refused with the new penalty, nothing counted."""
    _csrf(request, csrf)
    data = file.file.read(request.app.state.settings.max_upload_bytes + 1)
    a = get_assignment(session, slug)
    try:
        sub = submit(request.app, session, user, a, file.filename, data, accept_days_late=accept_days_late)
    except HTTPException as e:
        return render(request, "error.html", status=e.status_code, user=user, message=e.detail,
                      back=f"/ui/assignments/{slug}")
    return RedirectResponse(f"/ui/submissions/{sub.id}", 303)


@pages.get("/ui/submissions/{sub_id}", response_class=HTMLResponse)
@releases_session
def submission_page(sub_id: SubmissionId, request: Request, user: PageUser, session: SessionDep):
    sub = submission_out(load_submission(session, sub_id, user), user, utcnow())
    return render(request, "submission.html", user=user, staff=auth.is_staff(user), sub=sub, view=result_view(sub))


@pages.get("/ui/submissions/{sub_id}/status.json")
@releases_session
def submission_status(sub_id: SubmissionId, user: PageUser, session: SessionDep):
    sub = submission_out(load_submission(session, sub_id, user), user, utcnow())
    return JSONResponse({"status": sub.status, "score": sub.score, "max_score": sub.max_score})


def result_view(sub) -> dict:
    """What a result page shows first: the score, the tests whose feedback this viewer may
    read, the notes that matter; then, folded, the hidden tests and the harmless notes."""
    run = sub.run
    if run is None:
        return {"visible": [], "hidden": [], "hidden_points": (0, 0), "notes": [], "minor_notes": []}
    shown = [t for t in run.tests if t.feedback is not None and not (t.name == "forbidden_api_check"
                                                                     and t.max_points == 0 and t.status == "passed")]
    hidden = [t for t in run.tests if t.feedback is None]
    notes = list(dict.fromkeys(str(n) for n in run.notes))
    return {"visible": shown, "hidden": hidden,
            "hidden_points": (sum(t.points for t in hidden), sum(t.max_points for t in hidden)),
            "notes": [n for n in notes if not harmless_note(n)],
            "minor_notes": [n for n in notes if harmless_note(n)]}


def test_pass_rates(runs: list[GradingRun]) -> list[dict]:
    by_name: dict[str, dict] = {}
    for run in runs:
        for t in run.tests:
            if t.max_points <= 0:
                continue
            d = by_name.setdefault(t.name, {"name": t.name, "passed": 0, "total": 0, "points": 0.0})
            d["total"] += 1
            d["passed"] += t.status == "passed"
            d["points"] += t.points / t.max_points
    rates = [dict(d, mean=d["points"] / d["total"]) for d in by_name.values()]
    return sorted(rates, key=lambda d: (d["passed"] / d["total"], d["name"]))


STUDENT_FILTERS = {
    "all": ("everyone", lambda r: True),
    "none": ("no submission", lambda r: r.submissions == 0),
    "late": ("late", lambda r: r.late),
    "flagged": ("flagged", lambda r: r.flagged > 0),
    "unreviewed": ("flags unreviewed", lambda r: r.unreviewed > 0),
    "pending": ("grading pending", lambda r: r.pending > 0),
    "extended": ("extension", lambda r: r.extended),
    "overridden": ("score set by hand", lambda r: r.override is not None or bool(r.function_overrides)),
}
STUDENT_SORTS = {
    "login": lambda r: r.login,
    "name": lambda r: (r.name or "").lower(),
    "score": lambda r: r.score,
    "submissions": lambda r: r.submissions,
    "late": lambda r: r.days_late,
}
PAGE_SIZE = 50


def student_rows(rows: list, q: str, show: str, sort: str, desc: bool, page: int) -> tuple[list, int, int]:
    """The student table as asked: searched, filtered, sorted, one page; (rows, matches, pages)."""
    needle = q.strip().lower()[:64]
    keep = STUDENT_FILTERS.get(show, STUDENT_FILTERS["all"])[1]
    rows = [r for r in rows if keep(r) and (not needle or needle in r.login.lower() or needle in (r.name or "").lower())]
    key = STUDENT_SORTS.get(sort, STUDENT_SORTS["login"])
    # students without a value (no score yet) come last either way
    rows = (sorted((r for r in rows if key(r) is not None), key=key, reverse=desc)
            + [r for r in rows if key(r) is None])
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    page = min(max(1, page), pages)
    return rows[(page - 1) * PAGE_SIZE: page * PAGE_SIZE], len(rows), pages


@pages.get("/ui/ta/{slug}", response_class=HTMLResponse)
@releases_session
def dashboard(slug: Slug, request: Request, user: StaffPageUser, session: SessionDep, q: str = "",
              show: str = "all", sort: str = "login", desc: bool = False,
              page: Annotated[int, Query(ge=1, le=100000)] = 1):
    a = get_assignment(session, slug)
    table = score_table(session, a)
    scored = [r.score for r in table.rows if r.score is not None]
    failed = session.scalars(
        select(GradingRun).join(Submission).where(Submission.assignment_id == a.id)
        .where((GradingRun.status == "failed") | (GradingRun.error.is_not(None)))
        .order_by(GradingRun.id.desc()).limit(100)).all()
    pending = session.scalar(select(GradingRun.id).join(Submission).where(
        Submission.assignment_id == a.id, GradingRun.status.in_(("queued", "running"))).limit(1))
    flags = decisions.flag_queue(session, a, unreviewed_only=False)
    times = list(session.scalars(select(Submission.created_at).where(Submission.assignment_id == a.id)))
    rows, matches, pages_n = student_rows(list(table.rows), q, show, sort, desc, page)
    released = decisions.feedback_released(session, a)
    return render(request, "dashboard.html", user=user, staff=True, a=a, table=table, rows=rows, q=q[:64],
                  show=show if show in STUDENT_FILTERS else "all", sort=sort if sort in STUDENT_SORTS else "login",
                  desc=desc, page=min(page, pages_n), pages=pages_n, matches=matches, filters=STUDENT_FILTERS,
                  sorts=list(STUDENT_SORTS), flagged=flags[:200], unreviewed=sum(not f["reviewed"] for f in flags),
                  graded=len(scored), failed=failed, busy=pending is not None, released=released,
                  extensions=len(decisions.extensions(session, a)),
                  mean=(sum(scored) / len(scored)) if scored else None,
                  histogram=charts.histogram(scored, a.points),
                  pass_rates=charts.pass_rates(test_pass_rates(final_runs(session, table)),
                                               link=lambda name: f"/ui/ta/{a.slug}/tests/{quote(name, safe='')}"),
                  timeline=charts.timeline(times, a.deadline, utcnow()))


@pages.get("/ui/ta/{slug}/students/{login}", response_class=HTMLResponse)
@releases_session
def student_history(slug: Slug, login: Annotated[str, PathParam(max_length=64, pattern=LOGIN_PATTERN)],
                    request: Request, user: StaffPageUser, session: SessionDep):
    a = get_assignment(session, slug)
    student = session.scalar(select(User).where(User.login == login))
    if student is None:
        raise HTTPException(404, f"no student {login!r}")
    now = utcnow()
    subs = session.scalars(select(Submission).where(Submission.user_id == student.id, Submission.assignment_id == a.id)
                           .options(selectinload(Submission.runs)).order_by(Submission.id.desc())).all()
    row = next((r for r in score_table(session, a).rows if r.login == login), None)
    return render(request, "student.html", user=user, staff=True, a=a, student=student, row=row,
                  submissions=[submission_out(s, user, now) for s in subs],
                  view=assignment_out(session, a, student, now), events=decisions.history(session, a, student),
                  overrides=decisions.overrides(session, a, [student.id]).get(student.id, {}))


@pages.get("/ui/ta/{slug}/gradescope.zip")
@releases_session
def dashboard_gradescope(slug: Slug, user: StaffPageUser, session: SessionDep):
    a = get_assignment(session, slug)
    return Response(gradescope_zip(session, a), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{a.slug}-gradescope.zip"'})


@pages.post("/ui/ta/{slug}/batch")
@releases_session
def batch_page(slug: Slug, request: Request, user: StaffPageUser, session: SessionDep,
               file: Annotated[UploadFile, File()], csrf: Annotated[str, Form()] = ""):
    _csrf(request, csrf)
    a = get_assignment(session, slug)
    limit = request.app.state.settings.max_batch_bytes
    data = file.file.read(limit + 1)
    try:
        if len(data) > limit:
            raise HTTPException(413, f"the archive is larger than {limit} bytes")
        made = batch_submit(request.app, session, user, a, data)
    except HTTPException as e:
        return render(request, "error.html", status=e.status_code, user=user, message=e.detail,
                      back=f"/ui/ta/{slug}", title="Batch refused")
    return render(request, "batch.html", user=user, staff=True, a=a, made=made.made, skipped=made.skipped)


@pages.get("/ui/roster", response_class=HTMLResponse)
@releases_session
def roster_page(request: Request, user: StaffPageUser, session: SessionDep):
    users = session.scalars(select(User).order_by(User.role.desc(), User.login)).all()
    return render(request, "roster.html", user=user, staff=True, users=users, tokens=None)


@pages.post("/ui/roster", response_class=HTMLResponse)
@releases_session
def roster_import_page(request: Request, user: StaffPageUser, session: SessionDep,
                       file: Annotated[UploadFile, File()], csrf: Annotated[str, Form()] = "",
                       reissue: Annotated[str, Form()] = ""):
    _csrf(request, csrf)
    try:
        out = import_roster(session, user, csv_text(file, "the roster"), reissue=bool(reissue))
    except HTTPException as e:
        return render(request, "error.html", status=e.status_code, user=user, message=e.detail, back="/ui/roster",
                      title="Roster refused")
    users = session.scalars(select(User).order_by(User.role.desc(), User.login)).all()
    return render(request, "roster.html", user=user, staff=True, users=users, tokens=out.tokens, result=out,
                  tokens_csv=hold_tokens_csv(request.app, out.tokens, users, user))


@pages.get("/ui/ta/{slug}/scores.csv")
@releases_session
def dashboard_csv(slug: Slug, user: StaffPageUser, session: SessionDep, format: str = "generic",
                  lms_id: Annotated[str | None, Query(pattern="^[0-9A-Za-z_-]{1,32}$")] = None):
    a = get_assignment(session, slug)
    return csv_response(scores_csv(score_table(session, a), format, a.title, lms_id), a.slug, format)


@pages.post("/ui/ta/submissions/{sub_id}/regrade")
@releases_session
def regrade_page(sub_id: SubmissionId, request: Request, user: StaffPageUser, session: SessionDep,
                 csrf: Annotated[str, Form()] = ""):
    _csrf(request, csrf)
    sub = load_submission(session, sub_id, user)
    slug = sub.assignment.slug
    regrade(request.app, session, [sub])
    return RedirectResponse(f"/ui/ta/{slug}?regraded={sub_id}", 303)


@pages.post("/ui/ta/{slug}/regrade")
@releases_session
def regrade_assignment_page(slug: Slug, request: Request, user: StaffPageUser, session: SessionDep,
                            csrf: Annotated[str, Form()] = "", only_failed: Annotated[str, Form()] = ""):
    _csrf(request, csrf)
    a = get_assignment(session, slug)
    subs = session.scalars(select(Submission).where(Submission.assignment_id == a.id)
                           .options(selectinload(Submission.runs))).all()
    if only_failed:
        subs = [s for s in subs if s.runs and (s.runs[-1].status == "failed" or s.runs[-1].error)]
    runs = regrade(request.app, session, subs)
    return RedirectResponse(f"/ui/ta/{slug}?regraded={len(runs)}", 303)


# -- error pages ---------------------------------------------------------------------------
def _wants_html(request: Request) -> bool:
    """People get pages, programs JSON: the API (/api/) always answers JSON; elsewhere a
    browser (Accept: text/html) gets a page."""
    if request.url.path.startswith("/api/"):
        return False
    return "text/html" in request.headers.get("accept", "")


def install_error_pages(app) -> None:
    from fastapi.exception_handlers import (
        http_exception_handler,
        request_validation_exception_handler,
    )
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    titles = {400: "Bad request", 401: "Not signed in", 403: "Not allowed", 404: "Not found",
              405: "Not allowed", 413: "Too large", 415: "Wrong kind of file", 422: "Not understood",
              429: "Too many requests"}

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code < 400 or not _wants_html(request):
            return await http_exception_handler(request, exc)
        detail = exc.detail if isinstance(exc.detail, str) else "the request could not be served"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"there is no page at {request.url.path}"
        return render(request, "error.html", status=exc.status_code, user=None, message=detail,
                      title=titles.get(exc.status_code, "Error"), back="/ui")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        if not _wants_html(request):
            return await request_validation_exception_handler(request, exc)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x not in ("body", "query", "path"))
        return render(request, "error.html", status=422, user=None, title="Not understood", back="/ui",
                      message=f"{where or 'the request'}: {first.get('msg', 'not valid')}")
