"""The pytest plugin that turns a hidden suite into a grade.

Suites use three markers and two fixtures:
- `@pytest.mark.points(n)`: what the test is worth (default 1);
- `@pytest.mark.visibility("public" | "hidden" | "after_deadline")` (default hidden);
- `@pytest.mark.function("adam_step", ...)`: the student functions it grades; a
  forbidden API found in one of them zeroes the test;
- fixture `student`: the sandboxed student code (`student.call(name, *args)`);
- fixture `device`: "cuda" when grading on a GPU, else "cpu".
A test earns its points when it passes, a fraction when it raises `PartialCredit`,
nothing otherwise; its feedback is the failure's message, never a traceback. An
exception that is not about the student's code is a grader error, kept for staff.
"""

from __future__ import annotations

import time
import traceback

import pytest

from autograder import __version__, scoring
from autograder.judge.compare import GradingFailure, PartialCredit
from autograder.judge.forbidden import scan, scan_flags
from autograder.judge.job import GradingJob
from autograder.judge.results import VISIBILITIES, SubmissionResult, TestResult
from autograder.judge.student import (
    OVERLOADED,
    HostOverloaded,
    StudentCode,
    StudentFailure,
    SubmissionLoadError,
)

MAX_FEEDBACK_LINES = 12


class _FatalStudent:
    """Stands in for student code that could not even be read: every call fails."""

    def __init__(self, reason: str):
        self.reason = reason
        self.forbidden_found: list = []
        self.sandbox: dict = {}
        self.names: list[str] = []

    def call(self, fn, *a, **k):
        raise SubmissionLoadError("reading your submission", {"type": "Error", "message": self.reason})

    task = call

    def close(self):
        pass


def _where(line_map: list, line: int) -> str:
    """A line of the extracted source as the student sees it: cell and line in the notebook."""
    if 0 < line <= len(line_map) and line_map[line - 1]:
        cell, cell_line = line_map[line - 1]
        return f"cell {cell}, line {cell_line}" if cell is not None else f"line {cell_line}"
    return f"line {line}"


def _shorten(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) > MAX_FEEDBACK_LINES:
        lines = lines[: MAX_FEEDBACK_LINES - 1] + [f"... ({len(lines) - MAX_FEEDBACK_LINES + 1} more lines)"]
    return "\n".join(line[:400] for line in lines)


class GradingPlugin:
    def __init__(self, job: GradingJob):
        self.cfg = job
        self.result = SubmissionResult(assignment=job.assignment, submission=job.label,
                                       engine_version=__version__, suite=job.suite, notes=list(job.notes))
        line_map = list(job.line_map)
        # Each finding names where it is in the student's notebook (cell and line), not in
        # the extracted code.
        self.static_findings = [{**f.as_dict(), "where": _where(line_map, f.line)}
                                for f in scan(job.source, list(job.forbidden))]
        self.result.flags = [{**f.as_dict(), "where": _where(line_map, f.line)}
                             for f in scan_flags(job.source, list(job.allow_imports))]
        self._student = None
        self._group = "hidden"
        self._started = time.perf_counter()

    # -- fixtures ------------------------------------------------------------------------
    @pytest.fixture(scope="session")
    def student(self):
        if self._student is None:
            if self.cfg.fatal:
                self._student = _FatalStudent(self.cfg.fatal)
            else:
                self._student = StudentCode.for_job(self.cfg)
                self._student.enter_group(self._group)
                self._student.current_functions = getattr(self, "_functions", [])
        yield self._student

    @pytest.fixture(scope="session")
    def device(self):
        return self.cfg.device

    # -- hooks -----------------------------------------------------------------------------
    def pytest_configure(self, config):
        for line in ("points(n): points of the test", "visibility(v): public, hidden or after_deadline",
                     "function(*names): the student functions the test grades"):
            config.addinivalue_line("markers", line)

    @staticmethod
    def _visibility(item) -> str:
        vis = item.get_closest_marker("visibility")
        return vis.args[0] if vis and vis.args and vis.args[0] in VISIBILITIES else "hidden"

    def pytest_collection_modifyitems(self, session, config, items):
        # Tests of one visibility run together (public first), so each visibility needs one
        # child of its own and no more (see pytest_runtest_setup).
        order = {"public": 0, "after_deadline": 1, "hidden": 2}
        items.sort(key=lambda item: order[self._visibility(item)])

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        # Hidden and public tests never share a child: whatever the student's code saw
        # in a hidden call (its inputs, logged in memory or in /tmp) cannot reach the
        # feedback of a visible test, which starts in a fresh process and sandbox.
        self._group = self._visibility(item)
        fmark = item.get_closest_marker("function")
        self._functions = list(fmark.args) if fmark else []
        if isinstance(self._student, StudentCode):
            self._student.enter_group(self._group)
            self._student.current_functions = self._functions

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        rep = outcome.get_result()
        if rep.when == "call" or (rep.when == "setup" and not rep.passed):
            self._record(item, call, rep)

    def _record(self, item, call, rep) -> None:
        pts = item.get_closest_marker("points")
        max_points = float(pts.args[0]) if pts else 1.0
        vis = item.get_closest_marker("visibility")
        visibility = vis.args[0] if vis else "hidden"
        if visibility not in VISIBILITIES:
            visibility = "hidden"
        fmark = item.get_closest_marker("function")
        functions = list(fmark.args) if fmark else []
        doc = (getattr(item.function, "__doc__", None) or "").strip().splitlines()
        test = TestResult(name=item.name, points=0.0, max_points=max_points, visibility=visibility,
                          duration=round(rep.duration, 4), function=functions,
                          description=doc[0] if doc else "")
        if rep.skipped:
            test.status = "skipped"
            test.feedback = str(rep.longrepr[-1]) if isinstance(rep.longrepr, tuple) else "skipped"
        elif rep.passed:
            test.status = "passed"
            test.points = scoring.test_points(max_points, test.status)
        else:
            exc = call.excinfo.value if call.excinfo else None
            if isinstance(exc, PartialCredit):
                test.status = scoring.partial_status(exc.fraction)
                test.points = scoring.test_points(max_points, test.status, exc.fraction)
                test.feedback = _shorten(str(exc))
            elif isinstance(exc, HostOverloaded):
                test.status = "error"
                test.feedback = "the grading machine was overloaded during this test; the submission is graded again"
                self.result.error = OVERLOADED
                self.result.grader_errors.append(f"{item.nodeid}: host overloaded: {exc}")
            elif isinstance(exc, StudentFailure):
                test.status, test.feedback = "failed", _shorten(exc.feedback())
            elif isinstance(exc, AssertionError):
                test.status = "failed"
                test.feedback = _shorten(str(exc) or "a check of your output failed")
                if not isinstance(exc, GradingFailure):
                    test.feedback = _shorten(test.feedback.split("\nassert ")[0])
            else:
                test.status = "error"
                test.feedback = "the grader hit an internal error on this test; the course staff will see it"
                tb = "".join(traceback.format_exception(exc)) if exc else str(rep.longrepr)
                self.result.grader_errors.append(f"{item.nodeid}: {tb[-3000:]}")
        self.result.tests.append(test)

    def pytest_collectreport(self, report):
        if report.failed:
            self.result.grader_errors.append(f"collection of {report.nodeid}: {str(report.longrepr)[-3000:]}")
            self.result.error = "the grader could not load its test suite (staff have been told)"

    def pytest_sessionfinish(self, session, exitstatus):
        student = self._student
        dynamic = list(getattr(student, "forbidden_found", []) or [])
        if student is not None:
            self.result.sandbox = dict(getattr(student, "sandbox", {}) or {})
            if isinstance(getattr(student, "waited", None), float):
                # Time its processes slept or blocked (charged against limits.wait_seconds).
                self.result.sandbox["waited_seconds"] = round(student.waited, 2)
            events = getattr(student, "events", None)
            if events:
                self.result.sandbox["events"] = list(events)[:50]
            for prob in getattr(student, "load_problems", []) or []:
                note = f"while loading your code, {prob}"
                if note not in self.result.notes:
                    self.result.notes.append(note)
            student.close()
        self._apply_forbidden(self.static_findings + dynamic)
        self._apply_flags()
        self.result.total()
        self.result.duration = round(time.perf_counter() - self._started, 3)

    def _apply_flags(self) -> None:
        """Flags are for a TA's review; where the assignment says so, a flagged function
        (or every function, for code at module level: a class body that patches, say)
        earns nothing. A module-level import costs nothing by itself: its uses are flagged
        in the functions that make them."""
        if not (self.cfg.flags_cost_points and self.result.flags):
            return
        for t in self.result.tests:
            hits = [f for f in self.result.flags if f["function"] in t.function
                    or (f["function"] == "<module>" and f.get("statement") != "import")]
            if hits and t.function:
                what = "; ".join(f"{h['construct']} ({h['where']})" for h in hits[:3])
                scoring.zero(t, f"no points: this assignment does not accept code that uses {what}")
                t.feedback = _shorten(t.feedback)

    def _apply_forbidden(self, findings: list[dict]) -> None:
        if not self.cfg.forbidden:
            return
        unique = []
        for f in findings:
            key = (f.get("api"), f.get("function"))
            if key not in {(u["api"], u["function"]) for u in unique}:
                unique.append(f)
        self.result.forbidden = unique
        by_function: dict[str, list[dict]] = {}
        for f in unique:
            name = str(f.get("function") or "").split(".")[0]
            by_function.setdefault(name, []).append(f)
        for t in self.result.tests:
            hits = [f for fn in t.function for f in by_function.get(fn, [])]
            if hits:
                apis = ", ".join(sorted({h["api"] for h in hits}))
                scoring.zero(t, f"no points: {', '.join(t.function)} uses {apis}, which this assignment forbids")
                t.feedback = _shorten(t.feedback)
        forbidden_test = TestResult(name="forbidden_api_check", points=0.0, max_points=0.0,
                                    visibility="public", status="passed",
                                    description="the submission does not use the library routines it must build")
        if unique:
            forbidden_test.status = "failed"
            forbidden_test.feedback = "\n".join(
                f"{f['api']} used in {f['function']} ({f.get('where') or 'line ' + str(f.get('line'))})"
                for f in unique[:10])
        else:
            forbidden_test.feedback = "no forbidden library routine found"
        lock = str((self.result.sandbox or {}).get("exec_lock") or "")
        if lock.startswith("none"):
            # A second interpreter could have run the forbidden routines unguarded.
            forbidden_test.feedback += (f"\n(unenforced: this sandbox could not refuse new programs, {lock}; "
                                        "the runtime guard held only in your code's own process)")
        self.result.tests.insert(0, forbidden_test)
