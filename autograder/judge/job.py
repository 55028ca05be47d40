"""One submission's grading job: what the judge is asked to do, built once and passed on
unchanged.

`GradingJob.build` (called by `autograder.grading`, for the CLI and the server alike)
takes the assignment's contract and limits, the extracted code, the device, the suite,
the runner kind and the sandbox strength, and freezes them. The job crosses into the
judge process as JSON under a schema of its own (`to_json` / `from_json`: every field
named and type-checked on receipt, never pickle), and the judge never loads the
assignment again: the plugin, `StudentCode` and the runner read the job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from autograder.assignment import Assignment, guard_spec
from autograder.judge.forbidden import validate
from autograder.sandbox.limits import Limits
from autograder.settings import RUNNERS

SCHEMA = "dlopt.grading-job/1"
_VALIDATED: set = set()  # assignments whose forbidden lists were checked in this process
SUITES = ("hidden", "public")


class JobError(ValueError):
    """A job that does not follow the schema: the engine's bug, never the student's."""


def _str(v):
    return isinstance(v, str)


def _opt_str(v):
    return v is None or isinstance(v, str)


def _bool(v):
    return isinstance(v, bool)


def _strs(v):
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _line_map(v):
    return isinstance(v, list) and all(
        x is None or (isinstance(x, list) and len(x) == 2 and all(y is None or isinstance(y, int) for y in x))
        for x in v)


def _opt_dict(v):
    return v is None or isinstance(v, dict)


def _limits(v):
    names = {f.name for f in fields(Limits)}
    return isinstance(v, dict) and set(v) <= names


# Each field of the job as JSON, and the check its value must pass.
_CHECKS = {
    "assignment": _str, "root": _str, "tests": _strs, "label": _str, "out": _str,
    "source": _str, "line_map": _line_map, "notes": _strs, "fatal": _opt_str,
    "limits": _limits, "forbidden": _strs, "allow_imports": _strs, "flags_cost_points": _bool,
    "guard": _opt_dict, "function_rules": _opt_dict, "harness": _opt_str,
    "device": lambda v: v == "cpu" or (isinstance(v, str) and v.startswith("cuda")),
    "suite": lambda v: v in SUITES, "keyword": _opt_str,
    "runner": lambda v: v in RUNNERS, "weak": _bool,
    "boards": lambda v: isinstance(v, list) and all(isinstance(b, dict) for b in v), "flags_cleared": _bool,
}


@dataclass(frozen=True)
class GradingJob:
    assignment: str            # the slug, for the result
    root: str                  # the assignment's folder: pytest's rootdir (its own conftest files only)
    tests: tuple[str, ...]     # the suite's files
    label: str                 # the submission as the results name it
    out: str                   # where the judge writes its result
    source: str                # the extracted code (autograder.authoring.notebook.ExtractedCode)
    line_map: tuple = ()       # extracted line -> (cell, line) in the notebook
    notes: tuple[str, ...] = ()
    fatal: str | None = None   # the submission could not be read: every test fails with this
    limits: Limits = Limits()
    forbidden: tuple[str, ...] = ()
    allow_imports: tuple[str, ...] = ()
    flags_cost_points: bool = False
    guard: dict | None = None  # [forbidden] runtime + block_autograd: made to raise in the child
    function_rules: dict | None = None  # [forbidden.functions.NAME]: rules of one function only
    harness: str | None = None
    device: str = "cpu"
    suite: str = "hidden"
    keyword: str | None = None  # pytest -k: a subset of the suite (the audit's mutants)
    runner: str = "local"
    weak: bool = False          # the weak sandbox by request (tests of the engine)
    boards: tuple = ()          # [[boards]] (judge/boards.py): timed after the suite; the timing precheck applies
    flags_cleared: bool = False  # a TA cleared the submission's flags: its boards are timed despite them

    @classmethod
    def build(cls, a: Assignment, extracted: dict, *, label: str, out: str, device: str, suite: str,
              runner: str, weak: bool, keyword: str | None = None, flags_cleared: bool = False) -> GradingJob:
        """The one place a job is made. Checks the assignment's forbidden lists name
        something (a misspelt entry would forbid nothing, silently)."""
        key = (str(a.root), tuple(a.forbidden), tuple(a.runtime_forbidden), repr(sorted(a.function_rules.items())))
        if key not in _VALIDATED:  # 70 ms of name resolution in torch: once per assignment and process
            validate(a)
            _VALIDATED.add(key)
        return cls(
            assignment=a.slug, root=str(a.root), tests=tuple(str(p) for p in a.suite(suite)), label=label, out=out,
            source=extracted.get("source", ""), line_map=_line_tuples(extracted.get("line_map", [])),
            notes=tuple(extracted.get("notes", [])), fatal=extracted.get("fatal"),
            limits=a.limits, forbidden=tuple(a.forbidden), allow_imports=tuple(a.allow_imports),
            flags_cost_points=a.flags_cost_points, guard=a.guard, function_rules=dict(a.function_rules) or None,
            harness=str(a.harness) if a.harness else None,
            device=device, suite=suite, keyword=keyword, runner=runner, weak=weak,
            boards=tuple(a.boards), flags_cleared=flags_cleared)

    @property
    def timed(self) -> bool:
        return bool(self.boards)

    @property
    def gpu(self) -> bool:
        return self.device != "cpu"

    @property
    def function_guards(self) -> dict:
        """The guard of the child that runs each function with runtime rules of its own:
        the assignment's guard plus the function's."""
        base = self.guard or {}
        out = {}
        for name, rules in (self.function_rules or {}).items():
            if rules.get("runtime") or rules.get("block_autograd"):
                out[name] = guard_spec([*base.get("patterns", []), *rules.get("runtime", [])],
                                       bool(base.get("block_autograd")) or bool(rules.get("block_autograd")))
        return out

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": SCHEMA}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.as_dict() if isinstance(v, Limits) else list(map(_plain, v)) if isinstance(v, tuple) else v
        return out

    def dumps(self) -> str:
        return json.dumps(self.as_json())

    @classmethod
    def from_json(cls, data: Any) -> GradingJob:
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise JobError(f"not a grading job of schema {SCHEMA}")
        body = {k: v for k, v in data.items() if k != "schema"}
        unknown, missing = set(body) - set(_CHECKS), {"assignment", "root", "tests", "label", "out", "source"} - set(body)
        if unknown or missing:
            raise JobError(f"grading job: unknown fields {sorted(unknown)}, missing {sorted(missing)}")
        bad = [k for k, v in body.items() if not _CHECKS[k](v)]
        if bad:
            raise JobError(f"grading job: malformed {', '.join(sorted(bad))}")
        kw: dict[str, Any] = {}
        for k, v in body.items():
            if k == "limits":
                kw[k] = Limits(**v)
            elif k == "line_map":
                kw[k] = _line_tuples(v)
            elif isinstance(v, list):
                kw[k] = tuple(v)
            else:
                kw[k] = v
        return cls(**kw)

    @classmethod
    def load(cls, path: str | Path) -> GradingJob:
        return cls.from_json(json.loads(Path(path).read_text()))


def _line_tuples(line_map) -> tuple:
    return tuple(tuple(x) if x is not None else None for x in line_map)


def _plain(v):
    return list(v) if isinstance(v, tuple) else v
