"""The student's command line for a course server: `dlopt login URL`, `dlopt submit SLUG
FILE [--wait]`, `dlopt status [SLUG]`. Standard library only (urllib), so a student's
install needs nothing of the server's.

The token is stored in the user's config folder (`$XDG_CONFIG_HOME/dlopt/credentials.json`,
default `~/.config/dlopt/`; `DLOPT_CONFIG_DIR` overrides), the folder mode 700 and the file
mode 600, written atomically. `DLOPT_SERVER` and `DLOPT_TOKEN` override what is stored.
"""

from __future__ import annotations

import getpass
import json
import mimetypes
import os
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from autograder import settings
from autograder.text import visible

console = Console()
TIMEOUT = 60.0
FINISHED = ("done", "failed")


class ClientError(Exception):
    """A message for the student; the command exits with status 2."""


def shown(text) -> str:
    """What the server sends back (file names, feedback, errors, notes: text a submission
    wrote) made safe to print: control characters and escape sequences visible, rich
    markup escaped."""
    return escape(visible(text))


# -- credentials ------------------------------------------------------------------------
def config_dir() -> Path:
    return settings.current().config_dir


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def save_credentials(url: str, token: str) -> Path:
    folder = config_dir()
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = credentials_path()
    tmp = folder / f".credentials.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token}, f)
    os.replace(tmp, path)
    return path


def load_credentials() -> tuple[str, str]:
    config = settings.current()
    url, token = config.server, config.token
    if not (url and token):
        try:
            stored = json.loads(credentials_path().read_text())
        except FileNotFoundError:
            stored = {}
        except (OSError, ValueError) as e:
            raise ClientError(f"cannot read {credentials_path()}: {e}; run `dlopt login URL` again") from None
        url, token = url or stored.get("url"), token or stored.get("token")
    if not (url and token):
        raise ClientError("not signed in: run `dlopt login URL` with your course server's address")
    return url.rstrip("/"), token


# -- HTTP -----------------------------------------------------------------------------
class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is refused, not followed: following would send the token to wherever it
    points (another host, plain http) and turn an upload into a GET."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise ClientError(f"the server redirected {req.full_url} to {newurl}: run `dlopt login` with the "
                          "address it names (https, and the right path) if that is your course's server")


_OPENER = urllib.request.build_opener(_NoRedirects)


def request(url: str, token: str, method: str = "GET", body: bytes | None = None,
            content_type: str | None = None) -> dict | list:
    headers = {"Accept": "application/json", "User-Agent": "dlopt-client"}
    if content_type:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    req.add_unredirected_header("Authorization", f"Bearer {token}")
    try:
        with _OPENER.open(req, timeout=TIMEOUT) as resp:
            data = json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("detail")
        except (ValueError, AttributeError):
            detail = None
        if isinstance(detail, list):  # FastAPI's validation errors
            detail = "; ".join(str(d.get("msg", d)) for d in detail)
        if e.code == 401:
            raise ClientError(f"the server refused the token ({detail or 'invalid'}): run `dlopt login` "
                              "again with the token your course staff sent") from None
        raise ClientError(f"{e.code}: {detail or e.reason}") from None
    except urllib.error.URLError as e:
        raise ClientError(f"cannot reach {url}: {e.reason}") from None
    except (TimeoutError, OSError) as e:
        raise ClientError(f"cannot reach {url}: {e}") from None
    except ValueError:
        raise ClientError(f"{url} did not answer with JSON: is this the course server's address?") from None
    return data


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "dlopt" + secrets.token_hex(16)
    ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    # As browsers send it (WHATWG): the UTF-8 name with ", CR and LF percent-escaped.
    quoted = filename.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{quoted}\"\r\n"
            f"Content-Type: {ctype}\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# -- commands ---------------------------------------------------------------------------
def cmd_login(args) -> int:
    url = args.url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = "https://" + url
    if url.startswith("http://") and not url.startswith(("http://127.0.0.1", "http://localhost")):
        console.print("[yellow]warning: this server is not on HTTPS; your token travels in the clear[/yellow]")
    token = (sys.stdin.readline() if args.token_stdin else getpass.getpass("API token: ")).strip()
    if not token:
        raise ClientError("no token given")
    me = request(f"{url}/api/v1/me", token)
    path = save_credentials(url, token)
    console.print(f"signed in to {shown(url)} as [bold]{shown(me['login'])}[/bold] ({shown(me['role'])}); "
                  f"the token is in {path} (readable by you only)")
    return 0


def _result_table(sub: dict) -> Table:
    run = sub.get("run") or {}
    title = f"{sub['assignment']} · submission {sub['id']} · {sub['filename']}"
    table = Table(title=shown(title), show_lines=False)
    table.add_column("test")
    table.add_column("points", justify="right")
    table.add_column("feedback")
    for t in run.get("tests", []):
        if t["name"] == "forbidden_api_check" and t["max_points"] == 0 and t["status"] == "passed":
            continue
        text = t["feedback"] if t.get("feedback") is not None else (
            "(hidden until the deadline)" if t["visibility"] == "after_deadline" else "(hidden test)")
        style = {"passed": "green", "partial": "yellow"}.get(t["status"], "red")
        table.add_row(shown(t["name"]), f"[{style}]{t['points']:g} / {t['max_points']:g}[/{style}]",
                      shown((text or "").strip()[:600]))
    return table


def _print_result(sub: dict) -> None:
    run = sub.get("run") or {}
    if run.get("tests"):
        console.print(_result_table(sub))
    if run.get("error"):
        console.print(f"[red]{shown(run['error'])}[/red]")
    for note in run.get("notes", [])[:5]:
        console.print(f"[dim]note: {shown(str(note)[:300])}[/dim]")
    if sub.get("score") is not None:
        final = sub.get("final_score")
        late = f" (after the late penalty: {final:g})" if final is not None and final != sub["score"] else ""
        console.print(f"[bold]score: {sub['score']:g} / {sub['max_score']:g}[/bold]{late}")
    elif sub.get("status") == "failed":
        console.print("[red]grading failed; your course staff can see why and regrade it[/red]")


def wait_for(url: str, token: str, sub_id: int, timeout: float, poll: float) -> dict:
    """Poll until the run is finished, showing its state (queued, running, done)."""
    end = time.monotonic() + timeout
    sub = request(f"{url}/api/v1/submissions/{sub_id}", token)
    with console.status(f"submission {sub_id}: {sub['status']}") as status:
        started = time.monotonic()
        while sub["status"] not in FINISHED:
            if time.monotonic() > end:
                raise ClientError(f"submission {sub_id} is still {sub['status']} after {timeout:g} s; "
                                  f"see it later with `dlopt status {sub['assignment']}`")
            time.sleep(poll)
            sub = request(f"{url}/api/v1/submissions/{sub_id}", token)
            status.update(f"submission {sub_id}: {sub['status']} ({time.monotonic() - started:.0f} s)")
    return sub


def cmd_submit(args) -> int:
    url, token = load_credentials()
    path = Path(args.file)
    if not path.is_file():
        raise ClientError(f"{path}: no such file")
    body, ctype = multipart("file", path.name, path.read_bytes())
    out = request(f"{url}/api/v1/assignments/{urllib.parse.quote(args.slug)}/submissions", token, "POST", body, ctype)
    sub = out["submission"]
    console.print(shown(out.get("message", f"submission {sub['id']} received")))
    if not args.wait:
        console.print(f"see the result with `dlopt status {shown(args.slug)}` (or submit with --wait)")
        return 0
    sub = wait_for(url, token, sub["id"], args.timeout, args.poll)
    _print_result(sub)
    return 0 if sub["status"] == "done" else 1


def cmd_status(args) -> int:
    url, token = load_credentials()
    if args.slug is None:
        table = Table(title="assignments")
        for col in ("assignment", "title", "deadline", "points", "today"):
            table.add_column(col, justify="right" if col in ("points", "today") else "left")
        for a in request(f"{url}/api/v1/assignments", token):
            limit = a.get("daily_submission_limit")
            today = f"{a['submissions_today']}/{limit}" if limit else str(a["submissions_today"])
            table.add_row(shown(a["slug"]), shown(a["title"]), shown((a.get("deadline") or "none")[:16]) +
                          (" (closed)" if a.get("closed") else ""), f"{a['points']:g}", today)
        console.print(table)
        return 0
    subs = request(f"{url}/api/v1/submissions?assignment={urllib.parse.quote(args.slug)}&limit=20", token)
    if not subs:
        console.print(f"no submissions of {shown(args.slug)} yet")
        return 0
    table = Table(title=f"my submissions of {shown(args.slug)}")
    for col in ("id", "submitted", "file", "status", "score"):
        table.add_column(col, justify="right" if col in ("id", "score") else "left")
    for s in subs:
        score = "" if s["score"] is None else f"{s['score']:g} / {s['max_score']:g}"
        table.add_row(str(s["id"]), shown(s["created_at"][:19].replace("T", " ")), shown(s["filename"]),
                      shown(s["status"]) + (f" (late {s['days_late']} d)" if s.get("late") else ""), score)
    console.print(table)
    latest = request(f"{url}/api/v1/submissions/{subs[0]['id']}", token)
    if latest["status"] in FINISHED:
        _print_result(latest)
    return 0


def register(sub) -> None:
    lg = sub.add_parser("login", help="(students) sign in to a course server; the token is kept for you only")
    lg.add_argument("url", help="the server's address, e.g. https://dlopt.example.edu")
    lg.add_argument("--token-stdin", action="store_true", help="read the token from standard input")
    lg.set_defaults(fn=_guarded(cmd_login))

    sm = sub.add_parser("submit", help="(students) submit a notebook to the course server")
    sm.add_argument("slug", help="the assignment, e.g. adam")
    sm.add_argument("file", help="your notebook (.ipynb) or Python file (.py)")
    sm.add_argument("--wait", action="store_true", help="follow the grading and show the result")
    sm.add_argument("--timeout", type=float, default=1800.0, help="seconds --wait waits (default 1800)")
    sm.add_argument("--poll", type=float, default=2.0, help="seconds between status checks (default 2)")
    sm.set_defaults(fn=_guarded(cmd_submit))

    st = sub.add_parser("status", help="(students) the assignments, or your submissions of one and its result")
    st.add_argument("slug", nargs="?", default=None)
    st.set_defaults(fn=_guarded(cmd_status))


def _guarded(fn):
    def run(args) -> int:
        try:
            return fn(args)
        except ClientError as e:
            console.print(f"[red]{shown(str(e))}[/red]")
            return 2
        except KeyboardInterrupt:
            console.print("interrupted: a submission already sent is still graded (see `dlopt status`)")
            return 130
    return run
