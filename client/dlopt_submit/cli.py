"""The commands: `dlopt-submit login URL`, `submit SLUG FILE [--wait]`, `status [SLUG]`,
`test NOTEBOOK`.

Everything the server sends back (file names, feedback, errors, notes: text a submission
wrote) is printed through `visible`: control characters and escape sequences are shown as
escapes, never obeyed. Errors go to standard error; a command that fails exits with 2, a
grading that failed with 1. The grading engine's `dlopt login/submit/status` are these
same commands (`add_commands`), named `dlopt` in their advice.
"""

from __future__ import annotations

import argparse
import getpass
import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from dlopt_submit import __version__
from dlopt_submit.api import (
    ClientError,
    Config,
    Server,
    in_the_clear,
    load_credentials,
    quote,
    save_credentials,
    server_url,
)
from dlopt_submit.text import visible

PROG = "dlopt-submit"
FINISHED = ("done", "failed")
FEEDBACK_CHARS = 600


def out(*parts) -> None:
    print(*parts, flush=True)


def line(text) -> str:
    """One cell of a table: visible, on one line."""
    return visible(text).replace("\n", " ").replace("\t", " ")


def table(headers: list[str], rows: list[list], right: tuple[int, ...] = ()) -> str:
    cells = [[line(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def fmt(row):
        cols = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
        return "  ".join(cols).rstrip()

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells])


def points(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else line(value)


# -- results -----------------------------------------------------------------------------
def print_result(sub: dict) -> None:
    """A finished submission: each test the student may see (hidden ones as points only),
    the run's error and notes, the score."""
    run = sub.get("run") or {}
    tests = [t for t in run.get("tests") or []
             if not (t.get("name") == "forbidden_api_check" and t.get("max_points") == 0
                     and t.get("status") == "passed")]
    if tests:
        out(line(f"{sub.get('assignment')} · submission {sub.get('id')} · {sub.get('filename')}"))
        width = max(len(line(t.get("name"))) for t in tests)
        for t in tests:
            score = f"{points(t.get('points'))} / {points(t.get('max_points'))}"
            out(f"  {line(t.get('status')):<8} {score:>11}  {line(t.get('name')).ljust(width)}".rstrip())
            if t.get("feedback") is not None:
                text = (t.get("feedback") or "").strip()[:FEEDBACK_CHARS]
            else:
                text = "(hidden until the deadline)" if t.get("visibility") == "after_deadline" else "(hidden test)"
            for fb in visible(text).splitlines():
                out("      " + fb)
    if run.get("error"):
        out("error: " + visible(run["error"]))
    for note in (run.get("notes") or [])[:5]:
        out("note: " + visible(str(note)[:300]))
    if sub.get("score") is not None:
        final = sub.get("final_score")
        late = f" (after the late penalty: {final:g})" if final is not None and final != sub["score"] else ""
        out(f"score: {points(sub['score'])} / {points(sub.get('max_score'))}{late}")
    elif sub.get("status") == "failed":
        out("grading failed; your course staff can see why and regrade it")


def wait_for(server: Server, sub_id: int, timeout: float, poll: float) -> dict:
    """Poll until the run is finished, saying each state it passes (queued, running)."""
    started = time.monotonic()
    sub = server.get(f"/api/v1/submissions/{sub_id}")
    said = None
    while sub["status"] not in FINISHED:
        if sub["status"] != said:
            said = sub["status"]
            out(f"submission {sub_id}: {line(said)} ({time.monotonic() - started:.0f} s)")
        if time.monotonic() - started > timeout:
            raise ClientError(f"submission {sub_id} is still {visible(sub['status'])} after {timeout:g} s; "
                              f"see it later with `{server.prog} status {visible(sub.get('assignment'))}`")
        time.sleep(poll)
        sub = server.get(f"/api/v1/submissions/{sub_id}")
    return sub


# -- commands ------------------------------------------------------------------------------
def cmd_login(args, config: Config, prog: str) -> int:
    url = server_url(args.url)
    if in_the_clear(url):
        print("warning: this server is not on HTTPS; your token travels in the clear", file=sys.stderr)
    if args.token is not None:
        token = args.token
    elif args.token_stdin:
        token = sys.stdin.readline()
    else:
        token = getpass.getpass("API token: ")
    token = token.strip()
    if not token:
        raise ClientError("no token given")
    me = Server(url, token, prog).get("/api/v1/me")
    path = save_credentials(config, url, token)
    out(f"signed in to {line(url)} as {line(me.get('login'))} ({line(me.get('role'))}); "
        f"the token is in {path} (readable by you only)")
    return 0


def cmd_submit(args, config: Config, prog: str) -> int:
    server = Server(*load_credentials(config, prog), prog)
    path = Path(args.file)
    if not path.is_file():
        raise ClientError(f"{path}: no such file")
    late = server.get(f"/api/v1/assignments/{quote(args.slug)}")
    if late.get("state") == "late" and not args.late_ok:
        # as the upload page does: the penalty first, then a confirmation
        warning = (f"your deadline for {line(args.slug)} has passed: a submission now is {late.get('days_late_now')} "
                   f"day(s) late and loses {100 * float(late.get('penalty_now') or 0):.0f}% of its score "
                   f"({line(late.get('partial_days') or '')})")
        if not sys.stdin.isatty():
            raise ClientError(warning + f"; to submit anyway: `{prog} submit {line(args.slug)} {line(path)} --late-ok`")
        out(warning)
        if input("submit late? [y/N] ").strip().lower() not in ("y", "yes"):
            out("not submitted")
            return 1
    answer = server.upload(f"/api/v1/assignments/{quote(args.slug)}/submissions", path.name, path.read_bytes())
    sub = answer["submission"]
    out(visible(answer.get("message") or f"submission {sub['id']} received"))
    if not args.wait:
        out(f"see the result with `{prog} status {line(args.slug)}` (or submit with --wait)")
        return 0
    sub = wait_for(server, sub["id"], args.timeout, args.poll)
    print_result(sub)
    return 0 if sub["status"] == "done" else 1


def _submission_rows(subs: list[dict], with_assignment: bool) -> list[list]:
    rows = []
    for s in subs:
        score = "" if s.get("score") is None else f"{points(s['score'])} / {points(s.get('max_score'))}"
        status = line(s.get("status")) + (f" (late {s.get('days_late')} d)" if s.get("late") else "")
        when = str(s.get("created_at") or "")[:19].replace("T", " ")
        rows.append(([s.get("assignment")] if with_assignment else []) +
                    [s.get("id"), when, s.get("filename"), status, score])
    return rows


def cmd_status(args, config: Config, prog: str) -> int:
    server = Server(*load_credentials(config, prog), prog)
    if args.slug is None:
        rows = []
        for a in server.get("/api/v1/assignments"):
            limit = a.get("daily_submission_limit")
            today = f"{a.get('submissions_today')}/{limit}" if limit else str(a.get("submissions_today"))
            deadline = str(a.get("deadline") or "none")[:16] + (" (closed)" if a.get("closed") else "")
            rows.append([a.get("slug"), a.get("title"), deadline, points(a.get("points")), today])
        out(table(["assignment", "title", "deadline", "points", "today"], rows, right=(3, 4)))
        subs = server.get("/api/v1/submissions", limit=10)
        if subs:
            out("\nmy latest submissions (newest first)")
            out(table(["assignment", "id", "submitted", "file", "status", "score"],
                      _submission_rows(subs, True), right=(1, 5)))
        return 0
    subs = server.get("/api/v1/submissions", assignment=args.slug, limit=20)
    if not subs:
        out(f"no submissions of {line(args.slug)} yet")
        return 0
    out(f"my submissions of {line(args.slug)} (newest first)")
    out(table(["id", "submitted", "file", "status", "score"], _submission_rows(subs, False), right=(0, 4)))
    latest = server.get(f"/api/v1/submissions/{subs[0]['id']}")
    if latest.get("status") in FINISHED:
        out("")
        print_result(latest)
    return 0


# -- test: the handout's public tests ------------------------------------------------------
def read_handout(toml: Path) -> dict:
    """The released assignment.toml's top-level keys (tomllib where Python has it; the
    handout's simple `key = value` lines otherwise)."""
    text = toml.read_text(encoding="utf-8")
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import ast

        found = {}
        for raw in text.splitlines():
            if raw.strip().startswith("["):
                break
            key, eq, value = raw.partition("=")
            if eq:
                try:
                    found[key.strip()] = ast.literal_eval(value.strip())
                except (ValueError, SyntaxError):
                    pass
        return found
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ClientError(f"{toml}: {e}") from None


def find_handout(notebook: Path) -> Path | None:
    """The released folder: the notebook's own, or one above it, holding assignment.toml."""
    for folder in [notebook.resolve().parent, *notebook.resolve().parent.parents][:3]:
        if (folder / "assignment.toml").is_file():
            return folder
    return None


def engine_missing() -> list[str]:
    missing = []
    for module, what in (("pytest", "pytest"), ("autograder.judge.plugin", "the grading engine (autograder)")):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(what)
    return missing


def cmd_test(args, config: Config, prog: str) -> int:
    nb = Path(args.notebook)
    if not nb.is_file():
        raise ClientError(f"{nb}: no such file")
    folder = find_handout(nb)
    if folder is None:
        raise ClientError(f"no assignment.toml beside {nb}: run `{prog} test` on the notebook in the folder "
                          "your course handed out (where the notebook, assignment.toml and tests/ are)")
    handout = read_handout(folder / "assignment.toml")
    slug = str(handout.get("slug") or folder.name)
    tests = [folder / t for t in handout.get("public_tests") or [] if (folder / t).is_file()]
    after = (f"The hidden tests run only on the server: `{prog} submit {line(slug)} {line(nb)} --wait` "
             "shows the public and hidden tests' points, and the feedback you may see.")
    if not tests:
        out(f"{line(slug)}: this handout has no public tests. {after}")
        return 0
    out(f"{line(slug)}: the public tests {', '.join(line(t.relative_to(folder)) for t in tests)}")
    missing = engine_missing()
    if missing:
        verb = "are" if len(missing) > 1 else "is"
        advice = [f"cannot run them here: {' and '.join(missing)} {verb} not installed in this Python "
                  f"({sys.executable}). The public tests run with pytest on the course's grading engine, which "
                  "loads your functions as the server does."]
        if "pytest" in missing:
            advice.append("- pytest: python -m pip install pytest")
        if any(m.startswith("the grading engine") for m in missing):
            advice.append("- the grading engine: the course server's /client page serves it (dlopt_engine-...whl, "
                          "Python 3.11 or newer; see SUBMIT.md in your handout). Without it, the server runs these "
                          "same public tests on every submission and shows you their feedback.")
        print("\n".join(advice + [after]), file=sys.stderr)
        return 2
    out(after)
    cmd = [sys.executable, "-m", "autograder.cli", "test", str(nb), "--assignment", slug]
    if args.device:
        cmd += ["--device", args.device]
    return subprocess.call(cmd)


# -- the parser ---------------------------------------------------------------------------
COMMANDS = ("login", "submit", "status", "test")


def add_commands(sub, prog: str, config: Callable[[], Config], names=COMMANDS) -> None:
    """Add the commands named to an argparse subparsers object; each looks `config` up when
    it runs, and names `prog` in its advice."""

    def guarded(fn):
        def run(args) -> int:
            try:
                return fn(args, config(), prog)
            except ClientError as e:
                print(visible(str(e)), file=sys.stderr)
                return 2
            except KeyboardInterrupt:
                print(f"interrupted: a submission already sent is still graded (see `{prog} status`)",
                      file=sys.stderr)
                return 130
        return run

    who = "" if prog == PROG else "(students) "  # the engine's `dlopt` has staff commands too
    if "login" in names:
        lg = sub.add_parser("login", help=who + "sign in to a course server; the token is kept for you only")
        lg.add_argument("url", help="the server's address, e.g. https://dlopt.example.edu")
        how = lg.add_mutually_exclusive_group()
        how.add_argument("--token", help="the token (else it is asked for, unechoed; "
                                         "on the command line it stays in your shell's history)")
        how.add_argument("--token-stdin", action="store_true", help="read the token from standard input")
        lg.set_defaults(fn=guarded(cmd_login))
    if "submit" in names:
        sm = sub.add_parser("submit", help=who + "submit a notebook to the course server")
        sm.add_argument("slug", help="the assignment, e.g. adam")
        sm.add_argument("file", help="your notebook (.ipynb) or Python file (.py)")
        sm.add_argument("--wait", action="store_true", help="follow the grading and show the result")
        sm.add_argument("--timeout", type=float, default=1800.0, help="seconds --wait waits (default 1800)")
        sm.add_argument("--poll", type=float, default=2.0, help="seconds between status checks (default 2)")
        sm.add_argument("--late-ok", action="store_true",
                        help="after the deadline: submit without asking (the penalty is stated first otherwise)")
        sm.set_defaults(fn=guarded(cmd_submit))
    if "status" in names:
        st = sub.add_parser("status", help=who + "the assignments and your latest submissions, "
                                           "or your submissions of one and its result")
        st.add_argument("slug", nargs="?", default=None)
        st.set_defaults(fn=guarded(cmd_status))
    if "test" in names:
        ts = sub.add_parser("test", help=who + "the public tests of the handout, on this machine")
        ts.add_argument("notebook", help="your notebook (.ipynb) or Python file (.py), in the handout's folder")
        ts.add_argument("--device", default=None, help="cpu or cuda (default: cuda where there is one)")
        ts.set_defaults(fn=guarded(cmd_test))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Submit your work to the course's dlopt server and see your results.",
        epilog="DLOPT_SERVER and DLOPT_TOKEN override what `login` stored; DLOPT_CONFIG_DIR moves the folder "
               "it is stored in (default $XDG_CONFIG_HOME/dlopt, or ~/.config/dlopt).")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{login,submit,status,test}")
    add_commands(sub, PROG, Config.from_env)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return args.fn(args)
