"""Release an assignment to students, and check it for CI.

`release` writes what a student gets: the notebook with every solution replaced by a
stub, the public tests, the harness they call, an assignment.toml naming only those, and
SUBMIT.md: how to install the student client (`dlopt-submit`, from the course server's
`/client`) and submit. `check` proves the master solution earns full marks and the released stub
earns zero with no grader error (and, optionally, that each example scores as its
`examples/scores.toml` says).
"""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from rich.markup import escape

from autograder.assignment import Assignment, read_config
from autograder.authoring.audit import stale
from autograder.authoring.notebook import ReleaseError, release_notebook
from autograder.distribution import engine_wheel_name
from autograder.grading import find_submissions, grade
from autograder.judge.forbidden import validate
from autograder.text import visible
from dlopt_submit.build import wheel_name

PLACEHOLDER_SERVER = "https://COURSE-SERVER"


def release(a: Assignment, out: Path, server: str | None = None) -> list[Path]:
    """The handout of `a` in `out`; `server`: the course server's address for SUBMIT.md
    (else a placeholder the student replaces)."""
    validate(a)  # a misspelt forbidden name is an error here, not a rule that forbids nothing
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if a.master is None:
        raise ValueError(f"{a.slug} has no master notebook")
    import nbformat

    nb = release_notebook(a.master, a.slug)
    target = out / f"{a.slug}.ipynb"
    nbformat.write(nb, str(target))
    written.append(target)
    (out / "tests").mkdir(exist_ok=True)
    for p in a.public_tests:
        _refuse_hidden_in_public(p)
        dest = out / "tests" / p.name
        shutil.copy(p, dest)
        written.append(dest)
    if a.harness is not None:
        dest = out / a.harness.name
        shutil.copy(a.harness, dest)
        written.append(dest)

    cfg = read_config(a.root / "assignment.toml")
    public = {k: cfg[k] for k in ("slug", "title", "gpu", "extraction", "deadline", "limits", "forbidden")
              if k in cfg}
    public["points"] = 0  # the released folder knows only its public tests
    public["harness"] = a.harness.name if a.harness else ""
    public["public_tests"] = [f"tests/{p.name}" for p in a.public_tests]
    public["hidden_tests"] = []
    (out / "assignment.toml").write_text(_toml(public))
    written.append(out / "assignment.toml")
    (out / "SUBMIT.md").write_text(submit_steps(a.slug, target.name, server))
    written.append(out / "SUBMIT.md")
    return written


def submit_steps(slug: str, notebook: str, server: str | None = None) -> str:
    """The handout's SUBMIT.md: install the student client from the course server, sign
    in, test, submit. The client holds no course material (client/ in this repository)."""
    base = (server or PLACEHOLDER_SERVER).rstrip("/")
    steps = [(f"install the client, once ({base}/client shows the newest)",
              f"python -m pip install {base}/client/{wheel_name()}"),
             ("to run the public tests on your machine, the grading engine too (Python 3.11+, brings torch; "
              "no hidden test or reference is in it)",
              f"python -m pip install {base}/client/{wheel_name()} {base}/client/{engine_wheel_name()}"),
             ("sign in: asks for your token once, kept in ~/.config/dlopt (mode 600)", f"dlopt-submit login {base}"),
             ("the public tests in tests/, on your machine (with the engine installed; it says what is missing)",
              f"dlopt-submit test {notebook}"),
             ("submit: upload, follow the grading, print your score and feedback",
              f"dlopt-submit submit {slug} {notebook} --wait"),
             (f"your submissions of {slug} and the latest result", f"dlopt-submit status {slug}")]
    where = "" if server else (f"\n`{PLACEHOLDER_SERVER}` stands for your course server's address: your course "
                               "staff sent it with your token.\n")
    return (f"# Submitting {slug}\n\nYour work goes to the course server with `dlopt-submit`, a small command "
            f"line (Python 3.9 or newer, nothing else needed).\n{where}\n```sh\n"
            + "\n".join(f"# {why}\n{cmd}\n" for why, cmd in steps)
            + "```\n\nThe hidden tests run only on the server: each submission shows the public tests' "
            f"feedback and the hidden tests' points. Submit the notebook itself (`{notebook}`, or a `.py` "
            "file with the same functions).\n")


def _refuse_hidden_in_public(path: Path) -> None:
    """A public test file goes to students as it is: one that carries a hidden-tests region
    or an otter-style `# HIDDEN` line is refused, with the line."""
    import re

    marks = re.compile(r"\b(BEGIN|END)[\s_]*HIDDEN|^\s*#\s*HIDDEN(\s+TESTS?)?\s*$|^\s*hidden:\s*true\b", re.I)
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if marks.search(line):
            raise ReleaseError(f"{path}, line {i}: a public test file holds hidden material ({line.strip()[:80]!r})")


def _toml(data: dict) -> str:
    """A small TOML writer for the released config (strings, numbers, lists, one level of tables)."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if hasattr(v, "isoformat"):
            return v.isoformat()
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"{k} = {val(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {val(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


@dataclass
class CheckReport:
    ok: bool = True
    lines: list[str] = field(default_factory=list)

    def fail(self, msg: str) -> None:
        self.ok = False
        self.lines.append(f"[red]FAIL[/red] {msg}")

    def good(self, msg: str) -> None:
        self.lines.append(f"[green]ok[/green]   {msg}")


def _reference_test(a: Assignment) -> tuple[bool, str] | None:
    """tests/test_reference.py, where the assignment has one: its trusted reference against
    an independent formulation, in a process of its own. (passed, the line to report)."""
    import subprocess
    import sys

    test = a.root / "tests" / "test_reference.py"
    if not test.exists():
        return None
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(a.root),
                           "--import-mode=importlib", "-o", "addopts=", str(test)], capture_output=True, text=True,
                          cwd=a.root)
    if proc.returncode == 0:
        return True, f"{a.slug} reference: {test.name} passed"
    return False, f"{a.slug} reference: {test.name} failed: {proc.stdout[-1500:]}"


def check(a: Assignment, examples: bool = False, jobs: int = 2, runner: str | None = None) -> CheckReport:
    reports = check_many([a], examples=examples, jobs=jobs, runner=runner)
    try:
        return next(reports)
    finally:
        reports.close()


def check_many(items: list[Assignment], examples: bool = False, jobs: int = 2, runner: str | None = None):
    """`check` of several assignments through one pool of `jobs` workers (each reference
    test and each submission a job, so no assignment waits for the last job of the one
    before): yields each assignment's CheckReport, in order, as soon as its jobs are done.
    `runner`: as for `grading.grade`."""
    from contextlib import ExitStack

    with ExitStack() as stack, ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        plans = []
        for a in items:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"dlopt-check-{a.slug}-"))
            out = Path(tmp) / "release"
            release(a, out)
            jobs_list = [("master", a.master), ("released stub", out / f"{a.slug}.ipynb")]
            expected: dict = {}
            if examples:
                expected_file = a.examples_dir / "scores.toml"
                expected = tomllib.loads(expected_file.read_text()) if expected_file.exists() else {}
                for p in find_submissions([a.examples_dir]):
                    jobs_list.append((f"example {p.name}", p))
            reference = pool.submit(_reference_test, a)
            graded = [pool.submit(grade, a, path, runner=runner) for _, path in jobs_list]
            plans.append((a, reference, jobs_list, graded, expected))
        for a, reference, jobs_list, graded, expected in plans:
            report = CheckReport()
            ref = reference.result()
            if ref is not None:
                (report.good if ref[0] else report.fail)(ref[1])
            why = stale(a)
            if why:
                report.lines.append(f"[yellow]warn[/yellow] {why}")
            for (label, path), future in zip(jobs_list, graded):
                _judge(a, report, label, path, future.result(), expected)
            yield report


def board_expectation(label: str, path: Path, expected: dict) -> str | None:
    """What examples/scores.toml's [boards] table wants of a submission's boards: "ranked"
    (every board timed) or "none" (no board timed); the master is always "ranked"."""
    if label == "master":
        return "ranked"
    return (expected.get("boards") or {}).get(path.name)


def board_mismatch(want: str | None, boards: list[dict]) -> str | None:
    """Why `boards` (a result's) is not what `want` says, or None."""
    if want is None or not boards:
        return None
    timed = [b for b in boards if b.get("seconds") is not None]
    if want == "ranked" and len(timed) != len(boards):
        miss = next(b for b in boards if b.get("seconds") is None)
        return f"board {miss['board']} has no time: {miss.get('reason')}"
    if want == "none" and timed:
        return f"board {timed[0]['board']} gave it a time ({timed[0]['seconds']:.3g} s): a cheat ranked"
    return None


def _judge_boards(a: Assignment, report: CheckReport, label: str, path: Path, r, expected: dict) -> None:
    why = board_mismatch(board_expectation(label, path, expected), r.boards)
    if why:
        report.fail(f"{a.slug} {label}: " + escape(visible(why)))
    elif r.boards and board_expectation(label, path, expected):
        report.good(f"{a.slug} {label}: boards as expected ("
                    + ", ".join(f"{b['board']}: {'time' if b.get('seconds') is not None else 'none'}"
                                for b in r.boards) + ")")


def _judge(a: Assignment, report: CheckReport, label: str, path: Path, r, expected: dict) -> None:
    errors = [t.name for t in r.tests if t.status == "error"]
    if r.error or r.grader_errors or errors:
        # the error and the grader's messages may quote the submission: shown, never obeyed
        report.fail(f"{a.slug} {label}: grader error: "
                    + escape(visible(f"{r.error or ''} {errors} {r.grader_errors[:1]}")))
        return
    if label == "master":
        want = r.max_score
        if abs(r.max_score - a.points) > 1e-6:
            report.fail(f"{a.slug}: the suite is worth {r.max_score:g} points, assignment.toml says {a.points:g}")
    elif label == "released stub":
        want = 0.0
        if any(t.status == "passed" and t.max_points > 0 for t in r.tests):
            report.fail(f"{a.slug} stub: tests passed on a stub: "
                        f"{[t.name for t in r.tests if t.status == 'passed' and t.max_points > 0]}")
    else:
        want = expected.get(path.name)
        if want is None:
            report.fail(f"{a.slug} {label}: no expected score in examples/scores.toml")
            return
    _judge_boards(a, report, label, path, r, expected)
    if abs(r.score - want) > 1e-6:
        lost = [f"{t.name} ({t.points:g}/{t.max_points:g})" for t in r.tests if t.points < t.max_points][:6]
        report.fail(f"{a.slug} {label}: {r.score:g} / {r.max_score:g}, expected {want:g}; " + escape(visible(lost)))
    else:
        report.good(f"{a.slug} {label}: {r.score:g} / {r.max_score:g} ({r.duration:.1f}s)")
