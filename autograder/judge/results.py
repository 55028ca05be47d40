"""The result of grading one submission, as JSON and as Gradescope's results.json."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autograder.scoring import totals

VISIBILITIES = ("public", "hidden", "after_deadline")
_GRADESCOPE_VISIBILITY = {"public": "visible", "hidden": "hidden", "after_deadline": "after_due_date"}

# Notes that cost nothing and say little (a plotting or progress-bar library the grader
# does not have, top-level work that was dropped, a magic that was not run): folded in the
# pages, left out of Gradescope's student-visible output.
HARMLESS_NOTE = re.compile(r"No module named '(matplotlib|seaborn|plotly|tqdm|IPython|ipywidgets|google|wandb|"
                           r"tensorboard|pandas|sklearn)|top-level statement|cell magic|shell escape|display\(",
                           re.IGNORECASE)


def harmless_note(note: str) -> bool:
    return bool(HARMLESS_NOTE.search(note))


@dataclass
class TestResult:
    __test__ = False  # not a pytest test class

    name: str
    points: float
    max_points: float
    visibility: str = "hidden"
    status: str = "passed"  # passed | partial | failed | error (a grader error) | skipped
    feedback: str = ""
    duration: float = 0.0
    function: list[str] = field(default_factory=list)
    description: str = ""
    title: str = ""  # the `title` mark, else the docstring's first line; pages fall back to the name


@dataclass
class SubmissionResult:
    assignment: str
    submission: str
    score: float = 0.0
    max_score: float = 0.0
    tests: list[TestResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # intake notes shown to the student
    error: str | None = None  # why the submission could not be graded normally
    grader_errors: list[str] = field(default_factory=list)  # staff only
    sandbox: dict = field(default_factory=dict)
    forbidden: list[dict] = field(default_factory=list)
    # Constructs that exist to evade (computed getattr, importlib, frames, gc, the engine's
    # modules...), each {"construct", "function", "cell", "line" (as the student sees it),
    # "source_line", "where"}: flagged for a TA's review.
    flags: list[dict] = field(default_factory=list)
    # Kernel leaderboards (judge/boards.py): one BoardResult.to_dict() per board; a time
    # only where every check held (`reason` says why not).
    boards: list[dict] = field(default_factory=list)
    duration: float = 0.0
    engine_version: str = ""
    suite: str = "hidden"

    def total(self) -> None:
        self.score, self.max_score = totals(self.tests, self.error)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SubmissionResult:
        data = dict(data)
        data["tests"] = [TestResult(**t) for t in data.get("tests", [])]
        return cls(**data)

    def write_json(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2))

    def for_student(self, deadline_passed: bool = False) -> dict:
        """What a student may see: hidden tests as score only, after-deadline ones once passed."""
        out = self.as_dict()
        out.pop("grader_errors")
        out.pop("flags", None)  # for the course staff's review
        for t in out["tests"]:
            if t["visibility"] == "hidden" or (t["visibility"] == "after_deadline" and not deadline_passed):
                t["feedback"] = ""
        return out

    def gradescope(self) -> dict:
        """Gradescope's autograder results format (results.json): a test is "passed" only
        when it earned all its points and its own status is passed (a failed check worth 0
        is failed), tests are numbered in order, times are whole seconds, every output is
        plain text; the top-level output (students see it) holds the error and the notes
        that matter, never the harmless ones."""
        tests = []
        for t in self.tests:
            if t.status == "skipped":
                continue
            passed = t.status == "passed" and t.points >= t.max_points
            tests.append({
                "number": str(len(tests) + 1),
                "name": t.title or t.name,
                "score": t.points,
                "max_score": t.max_points,
                "status": "passed" if passed else "failed",
                "output": t.feedback,
                "output_format": "text",
                "visibility": _GRADESCOPE_VISIBILITY.get(t.visibility, "hidden"),
            })
        notes = list(dict.fromkeys(n for n in self.notes if not harmless_note(n)))
        output = "\n".join(([self.error] if self.error else []) + notes)
        return {"score": self.score, "execution_time": max(0, round(self.duration)), "output": output,
                "output_format": "text", "test_output_format": "text", "tests": tests,
                "visibility": "visible", "stdout_visibility": "hidden"}
