"""`dlopt staff ...`: the course staff's command line against a running course server, so a
TA never needs curl. It signs in as `dlopt login` does (a staff token) and calls the API:

    dlopt staff scores SLUG [--format canvas] [-o FILE]
    dlopt staff regrade SLUG [--submission ID] [--only-failed]
    dlopt staff extend SLUG LOGIN (--deadline ISO | --late-days N | --withdraw) --reason TEXT
    dlopt staff extend SLUG --csv accommodations.csv [--reason TEXT]
    dlopt staff override SLUG LOGIN (SCORE | --withdraw) [--function NAME] --reason TEXT
    dlopt staff flags SLUG [--all]
    dlopt staff review SUBMISSION (cleared|zeroed|note) --reason TEXT [--function NAME]
    dlopt staff release SLUG [--hide] [--reason TEXT]
    dlopt staff history SLUG LOGIN
    dlopt staff failures SLUG TEST
    dlopt staff similarity SLUG [--top N]
    dlopt staff tokens-csv ROSTER.csv [--reissue] [-o tokens.csv]

Standard library only (the student client's `Server`); every string the server sends back
is printed through `visible` (escapes shown, never obeyed).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

from dlopt_submit.api import ClientError, Server, load_credentials, quote
from dlopt_submit.cli import line, points, table
from dlopt_submit.text import visible

from . import client

PROG = "dlopt"


def _server() -> Server:
    url, token = load_credentials(client.config(), PROG)
    return Server(url, token, PROG)


def _post(server: Server, path: str, data: dict):
    return server.request(path, "POST", json.dumps(data).encode(), "application/json")


def _write(text: str, out: str | None, private: bool = False) -> None:
    if not out or out == "-":
        sys.stdout.write(text)
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    print(f"wrote {out}", file=sys.stderr)


def cmd_scores(args, s: Server) -> int:
    base = f"/api/v1/assignments/{quote(args.slug)}"
    if args.format:
        text = s.request(f"{base}/scores.csv?format={quote(args.format)}", raw=True).decode("utf-8-sig")
        _write(text, args.output)
        return 0
    t = s.get(f"{base}/scores")
    rows = [[r["login"], r["name"], points(r["score"]),
             "" if r.get("override") is None and not r.get("function_overrides") else f"graded {points(r.get('graded_score'))}",
             f"{r['days_late']}d" if r["late"] else "", r["submissions"], r.get("unreviewed") or ""]
            for r in t["rows"]]
    print(table(["login", "name", f"score / {t['points']:g}", "override", "late", "subs", "flags"], rows, (2, 5)))
    return 0


def cmd_regrade(args, s: Server) -> int:
    if args.submission:
        runs = _post(s, f"/api/v1/submissions/{args.submission}/regrade", {})["runs"]
    else:
        q = "?only_failed=true" if args.only_failed else ""
        runs = _post(s, f"/api/v1/assignments/{quote(args.slug)}/regrade{q}", {})["runs"]
    print(f"{len(runs)} regrade(s) queued" if runs else "nothing to regrade")
    return 0


def cmd_extend(args, s: Server) -> int:
    base = f"/api/v1/assignments/{quote(args.slug)}"
    if args.csv:
        made = s.upload(f"{base}/extensions.csv", Path(args.csv).name, Path(args.csv).read_bytes(),
                        {"reason": args.reason} if args.reason else None)
        print(f"{len(made)} extension(s) recorded")
        for e in made:
            print(line(f"  {e['login']}: deadline {e['deadline']} ({e['reason']})"))
        return 0
    if not args.login:
        raise ClientError("name a student (LOGIN) or give --csv FILE")
    body = {"login": args.login, "reason": args.reason or ""}
    if args.deadline:
        body["deadline"] = args.deadline
    elif args.late_days:
        body["late_days"] = args.late_days
    elif not args.withdraw:
        raise ClientError("give --deadline, --late-days or --withdraw")
    e = _post(s, f"{base}/extensions", body)
    print(line(f"{e['login']}: deadline now {e['deadline'] or 'none'} (by {e['by']}: {e['reason']})"))
    return 0


def cmd_override(args, s: Server) -> int:
    if args.score is None and not args.withdraw:
        raise ClientError("give a SCORE, or --withdraw")
    o = _post(s, f"/api/v1/assignments/{quote(args.slug)}/overrides",
              {"login": args.login, "score": None if args.withdraw else args.score, "function": args.function or "",
               "reason": args.reason or ""})
    what = f"{o['function']}'s tests" if o["function"] else "the assignment"
    print(line(f"{o['login']}: {what} {'override withdrawn' if o['score'] is None else 'set to ' + points(o['score'])}; "
               f"final score {points(o['final_score'])} (graded {points(o['graded_score'])})"))
    return 0


def cmd_flags(args, s: Server) -> int:
    q = "?unreviewed=false" if args.all else ""
    items = s.get(f"/api/v1/assignments/{quote(args.slug)}/flags{q}")
    if not items:
        print("nothing to review" if not args.all else "no flagged submission")
        return 0
    rows = []
    for f in items:
        first = f["flags"][0] if f["flags"] else {}
        rows.append([f["submission_id"], f["login"], points(f["score"]),
                     f"{first.get('construct', '')} in {first.get('function', '')} ({first.get('where', '')})"
                     + (f" +{len(f['flags']) - 1}" if len(f["flags"]) > 1 else ""),
                     f["reviews"][-1]["action"] if f["reviews"] else "unreviewed"])
    print(table(["submission", "login", "score", "flagged", "review"], rows, (0, 2)))
    print(f"\nreview one: {PROG} staff review SUBMISSION cleared|zeroed|note --reason TEXT [--function NAME]")
    return 0


def cmd_review(args, s: Server) -> int:
    f = _post(s, f"/api/v1/submissions/{args.submission}/review",
              {"action": args.action, "reason": args.reason or "", "function": args.function or ""})
    print(line(f"submission {f['submission_id']} ({f['login']}): {args.action}"
               + (f" ({args.function})" if args.function else "")))
    return 0


def cmd_release(args, s: Server) -> int:
    r = _post(s, f"/api/v1/assignments/{quote(args.slug)}/release", {"released": not args.hide,
                                                                     "reason": args.reason or ""})
    print(f"{args.slug}: hidden tests' feedback {'released to students' if r['released'] else 'hidden again'}")
    return 0


def cmd_history(args, s: Server) -> int:
    events = s.get(f"/api/v1/assignments/{quote(args.slug)}/students/{quote(args.login)}/history")
    rows = [[e["at"][:16].replace("T", " "), e["kind"], e["what"], e["by"], e["reason"]] for e in events]
    print(table(["when (UTC)", "kind", "what", "by", "why"], rows) if rows else "no decision recorded")
    return 0


def cmd_failures(args, s: Server) -> int:
    r = s.get(f"/api/v1/assignments/{quote(args.slug)}/tests/{quote(args.test)}/failures")
    print(line(f"{r['test']}: {r['passed']} of {r['total']} final submissions pass"))
    for g in r["groups"]:
        print(line(f"\n{g['count']} student(s): {g['message']}"))
        print(line("  " + ", ".join(x["login"] for x in g["students"][:40])))
    return 0


def cmd_similarity(args, s: Server) -> int:
    r = s.get(f"/api/v1/assignments/{quote(args.slug)}/similarity", limit=args.top)
    if not r.get("computed_at"):
        print(f"no report yet: run `dlopt similarity {args.slug}` on the server, or press the button on "
              "its similarity page")
        return 1
    rows = [[p["rank"], p["a"], p["b"], f"{100 * p['similarity']:.0f}%", p["tokens"]] for p in r["pairs"]]
    print(line(f"{r['assignment']}: {r['submissions']} final submissions, computed {r['computed_at']}"))
    print(table(["rank", "a", "b", "similar", "tokens"], rows, (0, 3, 4)))
    return 0


def _cell(value) -> str:
    """A CSV cell a spreadsheet shows as text: escapes visible, a leading = + - @ or a tab
    quoted away (what the server's exports do: server/security.py csv_cell)."""
    text = visible(str(value or "")).replace("\n", " ")
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def cmd_tokens_csv(args, s: Server) -> int:
    data = Path(args.roster).read_bytes()
    q = "?reissue=true" if args.reissue else ""
    out = s.upload(f"/api/v1/roster{q}", Path(args.roster).name, data)
    rows = {r["login"]: r for r in csv.DictReader(io.StringIO(data.decode("utf-8-sig")))}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["login", "name", "email", "token"])
    for login, token in sorted(out["tokens"].items()):
        r = rows.get(login, {})
        w.writerow([_cell(login), _cell(r.get("name", "")), _cell(r.get("email", "")), _cell(token)])
    print(f"created {len(out['created'])}, updated {len(out['updated'])}; {len(out['tokens'])} new token(s) "
          "(shown once: the server keeps only their hashes)", file=sys.stderr)
    _write(buf.getvalue(), args.output, private=True)
    return 0


COMMANDS = {"scores": cmd_scores, "regrade": cmd_regrade, "extend": cmd_extend, "override": cmd_override,
            "flags": cmd_flags, "review": cmd_review, "release": cmd_release, "history": cmd_history,
            "failures": cmd_failures, "similarity": cmd_similarity, "tokens-csv": cmd_tokens_csv}


def register(sub) -> None:
    st = sub.add_parser("staff", help="(course staff) scores, regrades, extensions, overrides, flags, similarity and "
                                      "tokens on the course server (`dlopt login` with a staff token first)")
    ss = st.add_subparsers(dest="staff_command", required=True, metavar="COMMAND")
    p = ss.add_parser("scores", help="the final scores (a table, or --format CSV for an LMS)")
    p.add_argument("slug")
    p.add_argument("--format", choices=("generic", "canvas", "blackboard", "moodle"), help="CSV instead of a table")
    p.add_argument("-o", "--output", help="write the CSV here (default: standard output)")
    p = ss.add_parser("regrade", help="regrade an assignment (or one submission)")
    p.add_argument("slug")
    p.add_argument("--submission", type=int, help="only this submission")
    p.add_argument("--only-failed", action="store_true", help="only submissions whose last run failed")
    p = ss.add_parser("extend", help="a student's own deadline, or an accommodation list (--csv)")
    p.add_argument("slug")
    p.add_argument("login", nargs="?")
    p.add_argument("--deadline", help="ISO 8601 with its offset, e.g. 2026-12-12T23:59:00-05:00")
    p.add_argument("--late-days", type=int, help="the course deadline moved by N days")
    p.add_argument("--withdraw", action="store_true", help="back to the course deadline")
    p.add_argument("--csv", help="CSV: login, deadline or late_days, reason")
    p.add_argument("--reason", help="kept with the decision, shown in the student's history")
    p = ss.add_parser("override", help="set a student's score by hand (kept beside the graded score)")
    p.add_argument("slug")
    p.add_argument("login")
    p.add_argument("score", type=float, nargs="?")
    p.add_argument("--function", help="only this function's tests")
    p.add_argument("--withdraw", action="store_true")
    p.add_argument("--reason", help="the student reads it")
    p = ss.add_parser("flags", help="flagged submissions waiting for review")
    p.add_argument("slug")
    p.add_argument("--all", action="store_true", help="reviewed ones too")
    p = ss.add_parser("review", help="review a flagged submission")
    p.add_argument("submission", type=int)
    p.add_argument("action", choices=("cleared", "zeroed", "note"))
    p.add_argument("--function", help="(zeroed) the function whose tests score 0")
    p.add_argument("--reason", help="kept; for zeroed, the student reads it")
    p = ss.add_parser("release", help="release the hidden tests' feedback to students (--hide: hide again)")
    p.add_argument("slug")
    p.add_argument("--hide", action="store_true")
    p.add_argument("--reason")
    p = ss.add_parser("history", help="every decision about one student")
    p.add_argument("slug")
    p.add_argument("login")
    p = ss.add_parser("failures", help="who fails one test, grouped by message")
    p.add_argument("slug")
    p.add_argument("test")
    p = ss.add_parser("similarity", help="the similarity report's top pairs")
    p.add_argument("slug")
    p.add_argument("--top", type=int, default=20)
    p = ss.add_parser("tokens-csv", help="import a roster and write the new tokens as CSV (mode 600)")
    p.add_argument("roster")
    p.add_argument("--reissue", action="store_true", help="new tokens for everyone listed")
    p.add_argument("-o", "--output", help="the CSV's path (default: standard output)")
    st.set_defaults(fn=run)


def run(args) -> int:
    try:
        return COMMANDS[args.staff_command](args, _server())
    except ClientError as e:
        print(visible(str(e)), file=sys.stderr)
        return 2
