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
from autograder.judge import boards
from autograder.judge.compare import GradingFailure, PartialCredit
from autograder.judge.forbidden import scan, scan_flags, scan_functions
from autograder.judge.job import GradingJob
from autograder.judge.results import VISIBILITIES, SubmissionResult, TestResult
from autograder.judge.student import (
    HostOverloaded,
    StudentCode,
    StudentFailure,
    SubmissionLoadError,
    located,
    where_in,
)
from autograder.judge.suite import load_module
from autograder.protocol.messages import Failure

MAX_FEEDBACK_LINES = 12


class _FatalStudent:
    """Stands in for student code that could not even be read: every call fails."""

    def __init__(self, reason: str):
        self.reason = reason
        self.forbidden_found: list = []
        self.sandbox: dict = {}
        self.names: list[str] = []

    def call(self, fn, *a, **k):
        raise SubmissionLoadError("reading your submission", Failure("Error", self.reason))

    task = call

    def close(self):
        pass


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
        self.static_findings = [located(f.as_dict(), line_map) for f in
                                [*scan(job.source, list(job.forbidden)),
                                 *scan_functions(job.source, job.function_rules or {})]]
        self.result.flags = [located(f.as_dict(), line_map)
                             for f in scan_flags(job.source, list(job.allow_imports), timing=job.timed)]
        self._student = None
        self._outcomes: list[tuple[TestResult, scoring.Outcome, bool]] = []
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
                     "function(*names): the student functions the test grades",
                     "title(text): the test's readable title for students (default: its docstring's first line)"):
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
        tmark = item.get_closest_marker("title")
        title = str(tmark.args[0]) if tmark and tmark.args else (doc[0].strip() if doc else "")
        test = TestResult(name=item.name, points=0.0, max_points=max_points, visibility=visibility,
                          duration=round(rep.duration, 4), function=functions,
                          description=doc[0] if doc else "", title=title[:200])
        fraction, overloaded = None, False
        if rep.skipped:
            status = "skipped"
            feedback = str(rep.longrepr[-1]) if isinstance(rep.longrepr, tuple) else "skipped"
        elif rep.passed:
            status, feedback = "passed", ""
        else:
            exc = call.excinfo.value if call.excinfo else None
            if isinstance(exc, PartialCredit):
                status, fraction, feedback = scoring.partial_status(exc.fraction), exc.fraction, str(exc)
            elif isinstance(exc, HostOverloaded):
                status, feedback, overloaded = "error", "", True
                self.result.error = scoring.OVERLOADED
                self.result.grader_errors.append(f"{item.nodeid}: host overloaded: {exc}")
            elif isinstance(exc, StudentFailure):
                status, feedback = "failed", exc.feedback()
            elif isinstance(exc, AssertionError):
                status = "failed"
                feedback = str(exc) or "a check of your output failed"
                if not isinstance(exc, GradingFailure):
                    feedback = feedback.split("\nassert ")[0]
            else:
                status = "error"
                feedback = "the grader hit an internal error on this test; the course staff will see it"
                tb = "".join(traceback.format_exception(exc)) if exc else str(rep.longrepr)
                self.result.grader_errors.append(f"{item.nodeid}: {tb[-3000:]}")
        # Points are decided at the end, with the evidence of the whole run (scoring.decide).
        test.status, test.feedback = status, feedback if status == "skipped" else _shorten(feedback)
        self._outcomes.append((test, scoring.Outcome(status, max_points, fraction, feedback), overloaded))
        self.result.tests.append(test)

    def pytest_collectreport(self, report):
        if report.failed:
            self.result.grader_errors.append(f"collection of {report.nodeid}: {str(report.longrepr)[-3000:]}")
            self.result.error = "the grader could not load its test suite (staff have been told)"

    def pytest_sessionfinish(self, session, exitstatus):
        student = self._student
        dynamic = list(getattr(student, "forbidden_found", []) or [])
        if student is not None and not self.cfg.timed:
            self._close_student(student)
        findings = self._forbidden_findings(self.static_findings + dynamic)
        for test, outcome, overloaded in self._outcomes:
            verdict = scoring.decide(outcome, scoring.Evidence(
                functions=tuple(test.function), forbidden=tuple(findings), flags=tuple(self.result.flags),
                flags_cost_points=self.cfg.flags_cost_points, overloaded=overloaded))
            test.status, test.points = verdict.status, verdict.points
            if verdict.reasons:
                test.feedback = _shorten("\n".join([*verdict.reasons, outcome.feedback]))
        if self.cfg.timed and self.cfg.suite == "hidden":
            self._time_boards(findings)
            if student is not None:
                self._close_student(student)
        if self._forbids_anything:
            self.result.tests.insert(0, self._forbidden_check(findings))
        self.result.total()
        self.result.duration = round(time.perf_counter() - self._started, 3)

    def _close_student(self, student) -> None:
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

    def _time_boards(self, findings: list[dict]) -> None:
        """Each board of the assignment: timed (judge/boards.py) when every test of the
        functions it needs passed in full and none of them used a forbidden routine; else
        a result that says why not. On CPUs only the board's cpu_shapes, checks only."""
        harness = load_module(self.cfg.harness, "board_harness") if self.cfg.harness else None
        for cfg in self.cfg.boards:
            board = boards.Board.from_config(cfg)
            out = boards.BoardResult(board.name, "cpu" if self.cfg.device == "cpu" else self.cfg.device)
            needs = set(board.requires or [board.function])
            tests = [t for t in self.result.tests if needs & set(t.function)]
            covered = {f for t in tests for f in t.function} >= needs
            bad = [t.name for t in tests if t.status != "passed"]
            used = sorted({f["function"] for f in findings if f.get("function") in needs})
            if self.result.error or not covered or bad or used:
                out.reason = (self.result.error or ("its tests did not run" if not covered else
                              f"its tests did not all pass ({', '.join(bad[:3])})" if bad else
                              f"a forbidden routine in {', '.join(used)}"))
            elif self.result.flags and not self.cfg.flags_cleared:
                # the timing precheck (judge/forbidden.py, TIMING_PATHS) and every other flag
                f = self.result.flags[0]
                out.reason = (f"flagged for a TA's review ({f['construct']}, {f.get('where') or f['function']}): "
                              "timed once a TA has cleared it")
            elif harness is None or not hasattr(harness, "board_harness"):
                out.reason = "the assignment's harness has no board_harness (staff have been told)"
                self.result.grader_errors.append(out.reason)
            elif self.cfg.device == "cpu" and not board.cpu_shapes:
                out.reason = "timed on GPU workers only"
            else:
                if self.cfg.device == "cpu":
                    board.shapes, board.loops, board.reveal = list(board.cpu_shapes), 2, 2  # every output checked
                    board.max_iterations, board.seconds_per_loop = 2, 0.0
                student = self._student
                if student is None:
                    student = self._student = StudentCode.for_job(self.cfg)
                student.current_functions = [board.function]
                out = boards.time_board(student, board, boards.Harness(**harness.board_harness(board.name)),
                                        self.cfg.device)
            self.result.boards.append(out.to_dict())

    @property
    def _forbids_anything(self) -> bool:
        return bool(self.cfg.forbidden or self.cfg.function_rules)

    def _forbidden_findings(self, findings: list[dict]) -> list[dict]:
        """Each (routine, function) once; none where the assignment forbids nothing."""
        if not self._forbids_anything:
            return []
        unique, seen = [], set()
        for f in findings:
            key = (f.get("api"), f.get("function"))
            if key not in seen:
                seen.add(key)
                unique.append(f)
        self.result.forbidden = unique
        return unique

    def _forbidden_check(self, unique: list[dict]) -> TestResult:
        """The 0-point test that lists what was found (or says nothing was)."""
        forbidden_test = TestResult(name="forbidden_api_check", points=0.0, max_points=0.0,
                                    visibility="public", status="passed",
                                    description="the submission does not use the library routines it must build")
        if unique:
            forbidden_test.status = "failed"
            forbidden_test.feedback = "\n".join(
                f"{f['api']} used in {f['function']} ({f.get('where') or where_in([], f.get('line'))})"
                for f in unique[:10])
        else:
            forbidden_test.feedback = "no forbidden library routine found"
        lock = str((self.result.sandbox or {}).get("exec_lock") or "")
        if lock.startswith("none"):
            # A second interpreter could have run the forbidden routines unguarded.
            forbidden_test.feedback += (f"\n(unenforced: this sandbox could not refuse new programs, {lock}; "
                                        "the runtime guard held only in your code's own process)")
        return forbidden_test
