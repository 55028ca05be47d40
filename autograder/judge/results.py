"""The result of grading one submission, as JSON and as Gradescope's results.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

VISIBILITIES = ("public", "hidden", "after_deadline")
_GRADESCOPE_VISIBILITY = {"public": "visible", "hidden": "hidden", "after_deadline": "after_due_date"}


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
    # modules...), each {"construct", "function", "line", "where"}: flagged for a TA's review.
    flags: list[dict] = field(default_factory=list)
    duration: float = 0.0
    engine_version: str = ""
    suite: str = "hidden"

    def total(self) -> None:
        self.score = round(sum(t.points for t in self.tests), 6)
        self.max_score = round(sum(t.max_points for t in self.tests if t.status != "skipped"), 6)

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
        """Gradescope's autograder results format (results.json)."""
        tests = []
        for t in self.tests:
            if t.status == "skipped":
                continue
            tests.append({
                "name": t.name,
                "score": t.points,
                "max_score": t.max_points,
                "status": "passed" if t.points >= t.max_points else "failed",
                "output": t.feedback,
                "visibility": _GRADESCOPE_VISIBILITY.get(t.visibility, "hidden"),
            })
        output = "\n".join(self.notes + ([self.error] if self.error else []))
        return {"score": self.score, "tests": tests, "output": output,
                "visibility": "visible", "stdout_visibility": "hidden"}
