"""`dlopt`: grade, test, release, check and demo from the command line (thin: the work
lives in autograder.grading, autograder.authoring.notebook and autograder.authoring.release)."""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import entry_points
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from autograder import assignment as assignments
from autograder import settings
from autograder.authoring import scaffold
from autograder.authoring.notebook import ReleaseError, extract
from autograder.judge.results import SubmissionResult
from autograder.text import visible, visible_all

from . import client, staff

console = Console()
if not console.is_terminal:
    console = Console(width=140)  # logs and CI: room for whole file names


def shown(text) -> str:
    """Text a submission wrote (errors, feedback, notes, file names, flags), made safe to
    print: control characters and escape sequences visible (autograder.text), rich markup
    escaped."""
    return escape(visible(text))


def _grade_many(a: assignments.Assignment, paths: list[Path], jobs: int, **kw) -> list[SubmissionResult]:
    # the engine (torch) loads in the commands that grade; the HTTP ones (staff, submit) stay light
    from autograder.grading import grade
    results: list[SubmissionResult | None] = [None] * len(paths)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=not console.is_terminal) as progress:
        task = progress.add_task(f"grading {a.slug}", total=len(paths))

        def one(i: int) -> None:
            results[i] = grade(a, paths[i], **kw)
            progress.advance(task)

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(one, range(len(paths))))
    return [r for r in results if r is not None]


def _status(r: SubmissionResult) -> str:
    if r.error:
        return f"[red]{shown(r.error)}[/red]"
    if r.grader_errors:
        return "[red]grader error[/red]"
    failed = sum(t.status in ("failed", "partial") for t in r.tests)
    extra = "" if r.sandbox.get("strong", True) else " [yellow](weak sandbox)[/yellow]"
    if r.flags:
        extra += f" [magenta]flagged for review ({len(r.flags)}: {shown(r.flags[0]['construct'])}, " \
                 f"{shown(r.flags[0]['where'])})[/magenta]"
    return (f"{failed} test(s) lost points" if failed else "all tests passed") + extra


def _summary(results: list[SubmissionResult], title: str, expected: dict | None = None) -> Table:
    table = Table(title=title)
    table.add_column("submission")
    table.add_column("score", justify="right")
    if expected is not None:
        table.add_column("expected", justify="right")
    table.add_column("time", justify="right")
    table.add_column("status")
    for r in results:
        row = [shown(Path(r.submission).name), f"{r.score:g} / {r.max_score:g}"]
        if expected is not None:
            want = expected.get(Path(r.submission).name)
            ok = want is not None and abs(want - r.score) < 1e-6
            row.append(f"[{'green' if ok else 'red'}]{want if want is not None else '?'}[/]")
        row += [f"{r.duration:.1f}s", _status(r)]
        table.add_row(*row)
    return table


def _test_table(r: SubmissionResult, show_hidden: bool) -> Table:
    table = Table(show_lines=False)
    table.add_column("test")
    table.add_column("points", justify="right")
    table.add_column("feedback")
    for t in r.tests:
        fb = t.feedback if (show_hidden or t.visibility == "public") else ("" if t.status == "passed" else "(hidden test)")
        color = {"passed": "green", "partial": "yellow"}.get(t.status, "red")
        table.add_row(shown(t.name), f"[{color}]{t.points:g} / {t.max_points:g}[/]", shown(fb))
    return table


def cmd_grade(args) -> int:
    # the engine (torch) loads in the commands that grade; the HTTP ones (staff, submit) stay light
    from autograder.grading import find_submissions
    a = assignments.load(args.assignment)
    paths = find_submissions(args.submissions)
    if not paths:
        console.print("[red]no submissions found[/red]")
        return 2
    results = _grade_many(a, paths, args.jobs, suite="public" if args.public else "hidden",
                          device=args.device, force_weak=args.weak_sandbox, runner=args.runner)
    console.print(_summary(results, f"{a.title} ({len(results)} submissions)"))
    if args.verbose:
        for r in results:
            console.print(f"[bold]{shown(r.submission)}[/bold]")
            console.print(_test_table(r, show_hidden=True))
            for n in r.notes:
                console.print(f"  note: {shown(n)}")
            for f in r.flags:
                console.print(f"  [magenta]flagged for review[/magenta]: {shown(f['construct'])} in "
                              f"{shown(f['function'])} ({shown(f['where'])})")
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{"path": r.submission, **{k: v for k, v in r.as_dict().items() if k != "submission"}} for r in results],
            indent=1))
    if args.gradescope:
        out = Path(args.gradescope)
        if len(results) == 1 and out.suffix == ".json":
            out.write_text(json.dumps(visible_all(results[0].gradescope()), indent=1))
        else:
            out.mkdir(parents=True, exist_ok=True)
            for r in results:
                (out / f"{Path(r.submission).stem}.results.json").write_text(
                    json.dumps(visible_all(r.gradescope()), indent=1))
    return 0 if all(not r.grader_errors for r in results) else 1


def cmd_test(args) -> int:
    # the engine (torch) loads in the commands that grade; the HTTP ones (staff, submit) stay light
    from autograder.grading import grade
    nb = Path(args.notebook)
    slug = args.assignment or extract(nb).metadata.get("slug")
    if not slug:
        console.print("[red]which assignment? pass --assignment SLUG[/red]")
        return 2
    # A released folder (notebook beside assignment.toml) has the public tests; else the course repo.
    here = nb.resolve().parent
    a = assignments.load(here if (here / "assignment.toml").exists() else slug)
    r = grade(a, nb, suite="public", device=args.device)
    for n in r.notes:
        console.print(f"[yellow]note:[/yellow] {shown(n)}")
    if r.error:
        console.print(f"[red]{shown(r.error)}[/red]")
    console.print(_test_table(r, show_hidden=False))
    console.print(f"public tests: {r.score:g} / {r.max_score:g} (the hidden suite checks much more)")
    return 0 if r.score == r.max_score and not r.error else 1


def cmd_release(args) -> int:
    # the engine (torch) loads in the commands that grade; the HTTP ones (staff, submit) stay light
    from autograder.authoring.release import release
    a = assignments.load(args.assignment)
    written = release(a, Path(args.out), server=args.server)
    for p in written:
        console.print(f"wrote {p}")
    return 0


def cmd_check(args) -> int:
    # the engine (torch) loads in the commands that grade; the HTTP ones (staff, submit) stay light
    from autograder.authoring.release import check_many
    slugs = args.assignments or assignments.all_slugs(finished_only=True)
    ok = True
    # One pool for all the assignments: each report is printed as soon as its jobs are done.
    for report in check_many([assignments.load(slug) for slug in slugs], examples=args.examples, jobs=args.jobs,
                             runner=args.runner):
        for line in report.lines:
            console.print(line)
        ok &= report.ok
    console.print("[green]check passed[/green]" if ok else "[red]check FAILED[/red]")
    return 0 if ok else 1


def cmd_new(args) -> int:

    root = Path(args.dir or settings.current().assignments_dir or "assignments")
    try:
        folder = scaffold.write(args.slug, root, args.title)
    except (ValueError, FileExistsError) as e:
        console.print(f"[red]{escape(str(e))}[/red]")
        return 2
    console.print(f"wrote {folder}: assignment.toml, {args.slug}.ipynb (the master), reference.py, harness.py, "
                  "tests/ (public, hidden, the reference's own test), examples/ with scores.toml")
    console.print(f"next: dlopt check {args.slug} --examples   (and docs/authoring.md)")
    return 0


def cmd_audit(args) -> int:
    # the engine (torch) loads in the commands that grade; the HTTP ones (staff, submit) stay light
    from autograder.authoring import audit
    a = assignments.load(args.assignment)
    if args.list:
        for m in audit.mutants(audit.master_source(a), audit._graded_names(a)):
            console.print(escape(f"line {m.line}: {m.key}"))
        return 0
    total = len(audit.mutants(audit.master_source(a), audit._graded_names(a)))
    n = min(total, args.budget) if args.budget is not None else total
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=not console.is_terminal) as progress:
        task = progress.add_task(f"auditing {a.slug} ({n} of {total} mutants)", total=n)
        report = audit.audit(a, budget=args.budget, jobs=args.jobs, progress=lambda: progress.advance(task),
                             fresh=args.fresh)
    if report.cached:
        console.print(f"{report.cached} mutant(s) graded before with this suite and engine, taken from the cache "
                      "(--fresh grades them again)")
    shown = 0
    for f in report.functions.values():
        for m in f.survived:
            if shown < args.show:
                console.print(f"[yellow]survived[/yellow] {escape(m.key)} (line {m.line})")
                console.print(escape(m.diff(report.original)))
            shown += 1
    for line in report.lines():
        console.print(escape(line))
    rate = report.overall()
    console.print(f"kill rate {100 * rate:.1f}% of {sum(f.counted for f in report.functions.values())} mutants"
                  if rate is not None else "no mutants graded")
    path = audit.write_record(a, report, args.budget)
    console.print(escape(f"recorded in {path}: mark a survivor that is no mistake as [[equivalent]] "
                         'with key = "..." and reason = "..."'))
    return 0


def _demo_pick(paths: list[Path]) -> list[Path]:
    """A representative few: the correct alternative, one bug, one hostile or forbidden
    submission (else a second bug)."""
    by = {p.name: p for p in paths}
    pick = [by[n] for n in ("correct_alternative.py",) if n in by]
    bugs = sorted(n for n in by if n.startswith("bug_"))
    attacks = sorted(n for n in by if n.startswith(("hostile_", "forbidden_")))
    pick += [by[n] for n in bugs[:1]]
    pick += [by[n] for n in (attacks[:1] or bugs[1:2])]
    return pick or paths[:3]


def cmd_demo(args) -> int:
    """The main job on the embedded default: grade a few example submissions of every
    finished assignment (all of them with --all) and compare with their expected scores."""
    import time
    import tomllib

    # the engine (torch) loads in the commands that grade; the HTTP ones (staff, submit) stay light
    from autograder.grading import find_submissions, grade

    started = time.monotonic()
    plan, expected_of = [], {}
    for slug in assignments.all_slugs(finished_only=True):
        a = assignments.load(slug)
        paths = find_submissions([a.examples_dir])
        expected_file = a.examples_dir / "scores.toml"
        expected_of[slug] = tomllib.loads(expected_file.read_text()) if expected_file.exists() else {}
        plan += [(a, p) for p in (paths if args.all else _demo_pick(paths))]
    results: list[SubmissionResult | None] = [None] * len(plan)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=not console.is_terminal) as progress:
        task = progress.add_task("grading example submissions", total=len(plan))

        def one(i: int) -> None:
            results[i] = grade(plan[i][0], plan[i][1], runner=args.runner)
            progress.advance(task)

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(one, range(len(plan))))
    ok = good = 0
    for slug in expected_of:
        mine = [r for (a, _), r in zip(plan, results) if a.slug == slug and r is not None]
        expected = expected_of[slug]
        console.print(_summary(mine, f"{slug}: example submissions", expected))
        for r in mine:
            good += abs(expected.get(Path(r.submission).name, -1) - r.score) < 1e-6
    ok = good == len(plan)
    console.print(f"[{'green' if ok else 'red'}]{good} of {len(plan)} submissions scored as expected[/] in "
                  f"{time.monotonic() - started:.0f} s"
                  + ("" if args.all else " (a few per assignment; `dlopt demo --all` grades every example)"))
    return 0 if ok else 1


def cmd_import(args) -> int:
    # the engine (torch) loads in the commands that grade; the HTTP ones (staff, submit) stay light
    from autograder.authoring.importer import import_master
    try:
        report = import_master(args.tool, Path(args.master), Path(args.folder))
    except (ReleaseError, OSError, ValueError) as e:
        console.print(f"[red]{escape(str(e))}[/red]")
        return 2
    console.print(f"wrote {escape(str(report.folder))}: {report.public} public and {report.hidden} hidden test(s)"
                  + (f"; {len(report.by_hand)} to write by hand (see its README.md)" if report.by_hand else ""))
    console.print(f"next: dlopt check {escape(str(report.folder))}")
    return 0


def cmd_doctor(args) -> int:
    import torch

    # the engine (torch) loads in the commands that grade; the HTTP ones (staff, submit) stay light
    from autograder.sandbox import sandbox_report

    console.print({"sandbox": sandbox_report(), "torch": torch.__version__, "cuda": torch.cuda.is_available()})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dlopt", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    g = sub.add_parser("grade", help="grade submissions (files or folders) against the hidden suite")
    g.add_argument("assignment")
    g.add_argument("submissions", nargs="+")
    g.add_argument("--jobs", "-j", type=int, default=1, help="submissions graded in parallel")
    g.add_argument("--json", help="write a list of results (path, score, max_score, tests) here")
    g.add_argument("--gradescope", help="write Gradescope results.json (a file for one submission, else a folder)")
    g.add_argument("--device", default=None, help="cpu, cuda or auto (default: by the assignment)")
    g.add_argument("--public", action="store_true", help="run only the public tests")
    g.add_argument("--weak-sandbox", action="store_true", help=argparse.SUPPRESS)
    g.add_argument("--runner", choices=["local", "docker"], default=None,
                   help="local (default) or docker: a container per submission (DOCKER_HOST, DLOPT_DOCKER_IMAGE)")
    g.add_argument("--verbose", "-v", action="store_true", help="print every test's feedback")
    g.set_defaults(fn=cmd_grade)

    t = sub.add_parser("test", help="run the public tests on your notebook")
    t.add_argument("notebook")
    t.add_argument("--assignment")
    t.add_argument("--device", default=None)
    t.set_defaults(fn=cmd_test)

    r = sub.add_parser("release", help="write the student version of an assignment")
    r.add_argument("assignment")
    r.add_argument("out")
    r.add_argument("--server", default=None, help="the course server's address, for the handout's SUBMIT.md "
                                                 "(default: a placeholder)")
    r.set_defaults(fn=cmd_release)

    c = sub.add_parser("check", help="CI: masters get full marks, released stubs get zero")
    c.add_argument("assignments", nargs="*")
    c.add_argument("--examples", action="store_true", help="also check the example submissions' scores")
    c.add_argument("--jobs", "-j", type=int, default=2)
    c.add_argument("--runner", choices=["local", "docker"], default=None, help="as for grade")
    c.set_defaults(fn=cmd_check)

    d = sub.add_parser("demo", help="grade the example submissions of every finished assignment")
    d.add_argument("--jobs", "-j", type=int, default=2)
    d.add_argument("--all", action="store_true", help="every example submission, not a few per assignment")
    d.add_argument("--runner", choices=["local", "docker"], default=None, help="as for grade")
    d.set_defaults(fn=cmd_demo)

    sub.add_parser("doctor", help="what sandbox and devices this machine offers").set_defaults(fn=cmd_doctor)

    n = sub.add_parser("new", help="write a working assignment folder to start from (docs/authoring.md)")
    n.add_argument("slug")
    n.add_argument("--dir", default=None, help="where (default: $DLOPT_ASSIGNMENTS_DIR, else ./assignments)")
    n.add_argument("--title", default=None)
    n.set_defaults(fn=cmd_new)

    au = sub.add_parser("audit", help="mutation testing: which mistakes in the master does the hidden suite miss?")
    au.add_argument("assignment")
    au.add_argument("--budget", type=int, default=None, help="grade at most this many mutants (a fixed sample)")
    au.add_argument("--jobs", "-j", type=int, default=2)
    au.add_argument("--show", type=int, default=20, help="survivors whose diff is printed")
    au.add_argument("--list", action="store_true", help="list the mutants without grading them")
    au.add_argument("--fresh", action="store_true",
                    help="grade every mutant again (default: reuse outcomes graded with this suite and engine)")
    au.set_defaults(fn=cmd_audit)

    im = sub.add_parser("import", help="turn an nbgrader or otter-grader master into an assignment folder")
    im.add_argument("tool", choices=["nbgrader", "otter"])
    im.add_argument("master")
    im.add_argument("folder", help="the new assignment folder (its name is the slug)")
    im.set_defaults(fn=cmd_import)

    # A student's commands for a course server (standard library only).
    client.register(sub)
    staff.register(sub)

    # Commands of other packages (the server's serve, worker, token) register themselves
    # through the `dlopt.commands` entry point: the engine never imports the server.
    for ep in entry_points(group="dlopt.commands"):
        try:
            ep.load()(sub)
        except ImportError as e:  # the server's extra is not installed
            missing = sub.add_parser(ep.name, help=f"(unavailable: {e.name or e} is not installed)")
            missing.set_defaults(fn=lambda _a, e=e, name=ep.name: (console.print(
                f"[red]{name} needs the server's packages: pip install -e '.[server]' ({e})[/red]"), 2)[1])

    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except assignments.AssignmentError as e:
        console.print(f"[red]{e}[/red]")
        return 2


if __name__ == "__main__":
    sys.exit(main())
