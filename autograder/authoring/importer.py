"""`dlopt import nbgrader|otter MASTER DIR`: an nbgrader or otter-grader master becomes an
assignment folder that `dlopt check DIR` accepts:

- `assignment.toml` (title from the first heading, points from the tests, not finished:
  a TA reads it over before serving it);
- the master, markers kept (release reads its dialect: autograder/authoring/formats.py);
- `tests/test_public.py` and `tests/test_hidden.py`: each nbgrader grade cell (its hidden
  regions to the hidden suite) and each otter test case (public or hidden as the master
  says), rewritten to run on the judge's side: a call of a function the student writes,
  `square(2)`, becomes `student.call("square", 2).value`; an otter expression test checks
  the output the master recorded;
- `README.md`: what could not be rewritten (a test that reads a student's variable, a
  plot, a file) with its code, to be written by hand.
"""

from __future__ import annotations

import ast
import builtins
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder.authoring.formats import _source, detect, nbgrader_tests, release_otter
from autograder.authoring.notebook import ReleaseError


@dataclass
class ImportReport:
    folder: Path
    public: int = 0
    hidden: int = 0
    by_hand: list[str] = field(default_factory=list)


def _student_names(nb, skip: set[int]) -> set[str]:
    """Top-level functions and classes the master's cells define, test cells (`skip`,
    1-based) left out: a helper a test defines is the test's own."""
    names: set[str] = set()
    for k, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code" or k in skip:
            continue
        try:
            tree = ast.parse(re.sub(r"(?m)^\s*[%!].*$", "", _source(cell)))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
    return names


class _Rewrite(ast.NodeTransformer):
    """f(args) -> student.call("f", args).value for the student's functions; a read of any
    other name the test does not define or import makes it a test to write by hand."""

    def __init__(self, functions: set[str], known: set[str]) -> None:
        self.functions, self.known, self.unknown, self.used = functions, known, set(), set()

    def visit_Call(self, node: ast.Call):
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id in self.functions:
            self.used.add(node.func.id)
            call = ast.Call(func=ast.Attribute(value=ast.Name("student", ast.Load()), attr="call", ctx=ast.Load()),
                            args=[ast.Constant(node.func.id), *node.args], keywords=node.keywords)
            return ast.Attribute(value=call, attr="value", ctx=ast.Load())
        return node

    def visit_Name(self, node: ast.Name):
        if isinstance(node.ctx, ast.Load) and node.id not in self.functions and node.id not in self.known:
            self.unknown.add(node.id)
        elif isinstance(node.ctx, ast.Store):
            self.known.add(node.id)
        return node


SAFE_NAMES = set(dir(builtins)) | {"np", "numpy", "torch", "math", "pytest"}


def _convert(code: str, functions: set[str], expected: str | None = None) -> tuple[str | None, set[str], str]:
    """(the test body, the student functions it calls, why not) for one test's code."""
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        return None, set(), f"not valid Python ({e.msg})"
    imports = {a.asname or a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
               for a in n.names}
    known = set(SAFE_NAMES) | imports
    for n in ast.walk(tree):  # names the test defines itself
        if isinstance(n, ast.FunctionDef | ast.ClassDef):
            known.add(n.name)
        elif isinstance(n, ast.arg):
            known.add(n.arg)
    body = tree.body
    if expected == "" and body and isinstance(body[-1], ast.Expr):
        return None, set(), "the master was not run before import, so its expected output is unknown"
    if expected is not None and body and isinstance(body[-1], ast.Expr):
        # an otter (doctest) case: the last expression must print what the master printed
        try:
            value = ast.literal_eval(expected)
        except (ValueError, SyntaxError):
            return None, set(), f"its expected output {expected[:60]!r} is not a Python literal"
        test = ast.Compare(left=body[-1].value, ops=[ast.Eq()], comparators=[ast.Constant(value)])
        body[-1] = ast.Assert(test=test, msg=ast.Constant(f"expected {expected}"))
    elif body and isinstance(body[-1], ast.Expr) and not isinstance(body[-1].value, ast.Call):
        body[-1] = ast.Assert(test=body[-1].value, msg=None)
    tree.body = body
    rw = _Rewrite(functions, known)
    tree = ast.fix_missing_locations(rw.visit(tree))
    if rw.unknown:
        return None, set(), f"it reads {', '.join(sorted(rw.unknown))}, which the student's notebook defines and " \
                            "the judge cannot see: rewrite it with student.call or a harness task"
    if not rw.used:
        return None, set(), "it calls none of the student's functions"
    return ast.unparse(tree), rw.used, ""


def _test_source(name: str, points: float, functions: set[str], body: str, visibility: str) -> str:
    marks = [f"@pytest.mark.points({points!r})"]  # repr: split points must add up exactly
    if visibility != "hidden":
        marks.append(f'@pytest.mark.visibility("{visibility}")')
    marks.append("@pytest.mark.function(" + ", ".join(f'"{f}"' for f in sorted(functions)) + ")")
    indented = "\n".join("        " + ln if ln else "" for ln in body.split("\n"))
    # The test's own code works on the student's values: whatever it raises on them (None
    # where a number was due) is the student's failure, said as such, not a grader error.
    return ("\n".join(marks) + f"\ndef test_{name}(student):\n    try:\n{indented}\n"
            "    except (AssertionError, StudentFailure):\n        raise\n"
            "    except Exception as e:  # noqa: BLE001\n"
            "        raise GradingFailure(f\"the test raised {type(e).__name__}: {e} (on what your functions "
            "returned)\") from None\n")


def _ident(text: str) -> str:
    return re.sub(r"\W+", "_", str(text)).strip("_").lower() or "case"


def _title(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#+\s*(.+)$", _source(cell), re.M)
            if m:
                return m.group(1).strip()
    return fallback


HEADER = '''"""{what} of `{slug}`, imported from an {tool} master by `dlopt import` (read it
over: each test calls the student's functions through `student.call`)."""

import pytest

from autograder.judge.compare import GradingFailure
from autograder.judge.student import StudentFailure

'''


def import_master(tool: str, master: Path, out: Path) -> ImportReport:
    master, out = Path(master), Path(out)
    nb = nbformat.read(str(master), as_version=4)
    found = detect(nb)
    if found != tool:
        raise ReleaseError(f"{master} is not an {tool} master (it reads as {found})")
    slug = _ident(out.name)
    report = ImportReport(out)
    cases: list[tuple[str, float, str, str | None, bool]] = []  # name, points, code, expected, hidden
    if tool == "nbgrader":
        tests = nbgrader_tests(nb)
        functions = _student_names(nb, {t["cell"] for t in tests})
        for t in tests:
            gid = _ident(t["grade_id"])
            has_hidden = bool(t["hidden"].strip())
            share = t["points"] / 2 if has_hidden else t["points"]
            cases.append((gid, share, t["public"], None, False))
            if has_hidden:
                cases.append((f"{gid}_hidden", share, t["public"] + "\n" + t["hidden"], None, True))
    else:
        _, questions = release_otter(nb)
        functions = _student_names(nb, {t["cell"] for q in questions for t in q.tests})
        for q in questions:
            n = len(q.tests) or 1
            each = q.points if isinstance(q.points, list) else [(q.points if q.points is not None else 1) / n] * n
            for i, t in enumerate(q.tests):
                cell = nb.cells[t["cell"] - 1]
                expected = ""  # otter compares with what the master printed: nothing, if it was not run
                for o in cell.get("outputs", []):
                    text = o.get("data", {}).get("text/plain") or o.get("text") or ""
                    expected = ("".join(text) if isinstance(text, list) else text).strip() or expected
                pts = t["points"] if t["points"] is not None else (each[i] if i < len(each) else 0)
                cases.append((f"{_ident(q.name)}_{i + 1}", float(pts), t["source"], expected, t["hidden"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "tests").mkdir(exist_ok=True)
    target = out / f"{slug}.ipynb"
    shutil.copy(master, target)
    suites = {False: [], True: []}
    seen: dict[str, int] = {}
    for i, (name, points, code, expected, hidden) in enumerate(cases):
        if name in seen:  # "q1.a" and "q1-a" read the same as test names: number the second
            seen[name] += 1
            name = f"{name}_{seen[name]}"
            cases[i] = (name, points, code, expected, hidden)
        seen.setdefault(name, 1)
        body, used, why = _convert(code, functions, expected)
        if body is None:
            report.by_hand.append(f"`{name}` ({'hidden' if hidden else 'public'}, {points:g} points): {why}:\n\n"
                                  f"```python\n{code}\n```\n")
            continue
        suites[hidden].append(_test_source(name, points, used, body, "hidden" if hidden else "public"))
    report.public, report.hidden = len(suites[False]), len(suites[True])
    for hidden, fname, what in ((False, "test_public.py", "Public tests"), (True, "test_hidden.py", "Hidden tests")):
        text = HEADER.format(what=what, slug=slug, tool=tool) + "\n\n".join(suites[hidden])
        (out / "tests" / fname).write_text(text)
    points = sum(p for _, p, code, e, _h in cases if _convert(code, functions, e)[0] is not None)
    lines = [f'slug = "{slug}"', f"title = {_toml_str(_title(nb, slug))}", f"points = {points!r}", 'gpu = "none"',
             f'master = "{target.name}"', 'public_tests = ["tests/test_public.py"]',
             'hidden_tests = ["tests/test_hidden.py"]',
             "# Imported: read the tests over, then set finished = true to serve it.", "finished = false"]
    (out / "assignment.toml").write_text("\n".join(lines) + "\n")
    notes = [f"# {slug}: imported from an {tool} master", "",
             f"`dlopt import {tool} {master.name} {out.name}` wrote this folder: {report.public} public and "
             f"{report.hidden} hidden test(s) rewritten to call the student's functions through `student.call`."]
    if report.by_hand:
        notes += ["", f"## To write by hand ({len(report.by_hand)})", "",
                  "These tests could not be rewritten to run on the judge's side; they are not in the suites. "
                  "Write each in `tests/` (see docs: `student.call`, harness tasks):", ""] + report.by_hand
    (out / "README.md").write_text("\n".join(notes) + "\n")
    return report


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
