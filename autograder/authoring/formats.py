"""Masters written for nbgrader or otter-grader, released by each tool's own rules, and
the leak check every release ends with.

A master is read in the dialect it is written in (`detect`):
- **nbgrader**: cells carry `metadata.nbgrader` (solution, grade, locked, task, grade_id,
  points). As `nbgrader generate_assignment` does: in solution cells each `BEGIN SOLUTION`
  ... `END SOLUTION` region (a substring on a line, any comment prefix) becomes the stub
  (`# YOUR CODE HERE` / `raise NotImplementedError()` in code, `YOUR ANSWER HERE`
  elsewhere) at the BEGIN line's indentation, a solution cell without regions becomes the
  stub whole; `BEGIN HIDDEN TESTS` regions leave grade cells, `BEGIN MARK SCHEME` regions
  leave task cells; test and read-only cells are locked, outputs cleared. `### AUTOTEST`
  needs nbgrader's live kernel and `autotests.yml`, and its plain form writes the expected
  values into the student copy: refused, with what to do instead.
- **otter** (Otter Assign's current format; its v0 was removed in otter 5.0): raw cells
  (or a markdown cell holding one ```` ```otter ```` block) whose first line is
  `# ASSIGNMENT CONFIG` or `# BEGIN|END QUESTION|PROMPT|SOLUTION|TESTS`. Boundary cells,
  the config and test cells leave (its `strip_solutions_from_all_cells: true` takes the
  solution lines out of every code cell, as below, not only those of solution blocks);
  in a solution block code lines marked `# SOLUTION`
  become `...` (an assignment keeps its target: `x = ...`), `# BEGIN SOLUTION` ...
  `# END SOLUTION` becomes one `...`, the `NO PROMPT` forms, `# SEED` lines and the
  prompt's own marker lines go, markdown goes (kept when tagged `otter_include`; a manual
  question without a prompt gets `_Type your answer here, replacing this text._`);
  `# IGNORE` cells and lines and `# BEGIN IGNORE` ... `# END IGNORE` go everywhere. Test
  cells (a `# HIDDEN` first line, or a `# BEGIN TEST CONFIG` block with `hidden: true`)
  are returned, public and hidden apart, for `dlopt import`.
- **dlopt**: this project's own markers (autograder/authoring/notebook.py).

Whatever the dialect, `leak_check` then refuses, naming the cell and the line, any release
in which a marker, a region, a near miss of one (`BEGIN SOLUTON`, `#BEGIN TESTS`), a cell
flagged as solution or hidden, an otter boundary or an output is left.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field


class ReleaseError(ValueError):
    """A master notebook whose markers do not pair up (any dialect)."""

# -- detection ---------------------------------------------------------------------------
OTTER_BOUNDARY = re.compile(r"#\s+(begin|end)\s+(question|prompt|solution|tests)\s*", re.IGNORECASE)
OTTER_CONFIG = re.compile(r"#\s+assignment\s+config\s*", re.IGNORECASE)
OTTER_NEAR = re.compile(r"^\s*#\s*(begin|end)\s*(question|prompt|solution|tests?|test config)\b|"
                        r"^\s*#\s*assignment\s*config\b", re.IGNORECASE)


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _first_line(text: str) -> str:
    return next((ln for ln in text.split("\n")), "")


def _fenced_otter(cell) -> str | None:
    """A markdown cell that is one ```otter block stands for a raw boundary cell."""
    if cell.get("cell_type") != "markdown":
        return None
    lines = _source(cell).strip().split("\n")
    if len(lines) >= 2 and lines[0].strip() == "```otter" and lines[-1].strip() == "```":
        return "\n".join(lines[1:-1])
    return None


def _boundary_text(cell) -> str | None:
    if cell.get("cell_type") == "raw":
        return _source(cell)
    return _fenced_otter(cell)


def detect(nb) -> str:
    cells = nb.get("cells", [])
    for cell in cells:
        text = _boundary_text(cell)
        if text is not None and (OTTER_BOUNDARY.match(_first_line(text)) or OTTER_CONFIG.match(_first_line(text))):
            return "otter"
    if any(isinstance(c.get("metadata", {}).get("nbgrader"), dict) for c in cells):
        return "nbgrader"
    return "dlopt"


# -- nbgrader -------------------------------------------------------------------------------
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
TEXT_STUB = "YOUR ANSWER HERE"
NB_REGIONS = {"solution": ("BEGIN SOLUTION", "END SOLUTION"), "hidden": ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS"),
              "mark": ("BEGIN MARK SCHEME", "END MARK SCHEME")}


def _nb_flags(cell) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def _regions(lines: list[str], begin: str, end: str, where: str, what: str):
    """(start, stop) index pairs of BEGIN ... END regions (inclusive); a nested, unclosed or
    orphan delimiter is an error (nbgrader drops an orphan END silently, but it marks a
    mistyped BEGIN with the answer left above it)."""
    out, start = [], None
    for i, line in enumerate(lines):
        if begin in line:
            if start is not None:
                raise ReleaseError(f"{where}, line {i + 1}: nested {begin}")
            start = i
        elif end in line:
            if start is None:
                raise ReleaseError(f"{where}, line {i + 1}: {end} without {begin} (a mistyped BEGIN would leave "
                                   f"the {what} in the student version)")
            out.append((start, i))
            start = None
    if start is not None:
        raise ReleaseError(f"{where}, line {start + 1}: {begin} without {end}")
    return out


def _replace(lines: list[str], regions, stub: str | None) -> list[str]:
    out, i = [], 0
    for start, stop in regions:
        out += lines[i:start]
        if stub is not None:
            indent = re.match(r"\s*", lines[start]).group(0)
            out += [indent + s for s in stub.split("\n")]
        i = stop + 1
    return out + lines[i:]


def release_nbgrader(nb):
    """The student version by nbgrader's rules (see the module's docstring)."""
    nb = copy.deepcopy(nb)
    seen: dict[str, int] = {}
    for k, cell in enumerate(nb.cells, start=1):
        flags, where = _nb_flags(cell), f"cell {k}"
        src = _source(cell)
        if cell.cell_type == "code" and re.search(r"^\s*#+.*AUTOTEST", src, re.M):
            raise ReleaseError(f"{where}: nbgrader's AUTOTEST needs nbgrader's live kernel and autotests.yml, and "
                               "its plain form writes the expected values into the student notebook: expand it "
                               "first (nbgrader generate_assignment --source_with_tests) or write those checks in "
                               "the assignment's hidden suite")
        if flags.get("grade") or flags.get("solution") or flags.get("locked"):
            gid = flags.get("grade_id")
            if not gid:
                raise ReleaseError(f"{where}: an nbgrader cell without a grade_id")
            if gid in seen:
                raise ReleaseError(f"{where}: duplicate grade_id {gid!r} (also cell {seen[gid]})")
            seen[gid] = k
            if flags.get("grade") and flags.get("points") is None:
                raise ReleaseError(f"{where}: nbgrader grade cell {gid!r} has no points")
        lines = src.split("\n")
        sol = _regions(lines, *NB_REGIONS["solution"], where, "solution")
        hidden = _regions(lines, *NB_REGIONS["hidden"], where, "hidden tests")
        mark = _regions(lines, *NB_REGIONS["mark"], where, "mark scheme")
        if sol and not flags.get("solution"):
            raise ReleaseError(f"{where}, line {sol[0][0] + 1}: a solution region in a cell that is not an nbgrader "
                               "solution cell (nbgrader refuses it too)")
        if hidden and not flags.get("grade"):
            raise ReleaseError(f"{where}, line {hidden[0][0] + 1}: hidden tests in a cell that is not an nbgrader "
                               "grade (autograder tests) cell")
        if mark and not flags.get("task"):
            raise ReleaseError(f"{where}, line {mark[0][0] + 1}: a mark scheme in a cell that is not an nbgrader "
                               "task cell")
        stub = CODE_STUB if cell.cell_type == "code" else TEXT_STUB
        if flags.get("solution"):
            lines = _replace(lines, sol, stub) if sol else stub.split("\n")
        lines = _replace(lines, hidden, None)
        lines = _replace(lines, mark, None)
        cell.source = "\n".join(lines)
        _lock_nbgrader(cell, flags)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if flags.get("solution"):
            cell.pop("attachments", None)
        cell.metadata.pop("nbgrader", None)
    nb.metadata.pop("celltoolbar", None)
    return nb


def _lock_nbgrader(cell, flags: dict) -> None:
    if flags.get("solution"):
        cell.metadata["deletable"] = False
    elif flags.get("grade") or flags.get("locked") or flags.get("task"):
        cell.metadata["deletable"] = False
        cell.metadata["editable"] = False


def nbgrader_tests(nb) -> list[dict]:
    """The grade cells of an nbgrader master as tests: {grade_id, points, public (the cell
    without its hidden regions), hidden (the hidden regions' lines), cell}."""
    out = []
    for k, cell in enumerate(nb.cells, start=1):
        flags = _nb_flags(cell)
        if cell.cell_type != "code" or not flags.get("grade") or flags.get("solution"):
            continue
        lines = _source(cell).split("\n")
        hidden = _regions(lines, *NB_REGIONS["hidden"], f"cell {k}", "hidden tests")
        hidden_lines = [ln for a, b in hidden for ln in lines[a + 1:b]]
        out.append({"grade_id": flags.get("grade_id"), "points": float(flags.get("points") or 0), "cell": k,
                    "public": "\n".join(_replace(lines, hidden, None)), "hidden": "\n".join(hidden_lines)})
    return out


# -- otter ----------------------------------------------------------------------------------
OT_ONE_LINE_ASSIGN = re.compile(r"(\s*(?:[\w.]+(?=[^\w.])(?:\[['\"]?.*['\"]?\])*(?:,\s*)?)+\s*=).* ?# ?SOLUTION")
OT_ONE_LINE = re.compile(r"(\s*).* ?# ?SOLUTION")
OT_BEGIN = re.compile(r"(\s*)# BEGIN SOLUTION( NO PROMPT)?")
OT_SKIP = ("# SOLUTION NO PROMPT", "# BEGIN PROMPT", "# END PROMPT", "# SEED")
OT_IGNORE_CELL = re.compile(r"(##\s*ignore\s*##\s*|#\s*ignore\s*)", re.IGNORECASE)
OT_BEGIN_IGNORE = re.compile(r"\s*#\s*BEGIN\s*IGNORE\s*", re.IGNORECASE)
OT_HIDDEN_LINE = re.compile(r"\bhidden\b", re.IGNORECASE)
OT_TEST_CONFIG = re.compile(r'(?:.\s*=\s*)?""?"?\s*#\s*BEGIN\s*TEST\s*CONFIG')
OT_TEST_CONFIG_END = re.compile(r'""?"?\s*#\s*END\s*TEST\s*CONFIG')
OT_RESPONSE = "_Type your answer here, replacing this text._"


@dataclass
class OtterQuestion:
    name: str
    points: object = None
    manual: bool = False
    tests: list[dict] = field(default_factory=list)  # {"source", "hidden", "points", "cell"}


def _otter_ignore_lines(lines: list[str], where: str) -> list[str]:
    out, inside = [], None
    for i, line in enumerate(lines):
        if OT_BEGIN_IGNORE.match(line):
            if inside is not None:
                raise ReleaseError(f"{where}, line {i + 1}: nested BEGIN IGNORE")
            inside = i
            continue
        if line.rstrip().endswith("# END IGNORE"):
            if inside is None:
                raise ReleaseError(f"{where}, line {i + 1}: END IGNORE without BEGIN IGNORE")
            inside = None
            continue
        if inside is None and not line.rstrip().endswith("# IGNORE"):
            out.append(line)
    if inside is not None:
        raise ReleaseError(f"{where}, line {inside + 1}: BEGIN IGNORE without END IGNORE")
    return out


def otter_replace_solutions(lines: list[str], where: str) -> list[str]:
    """Otter's `replace_solutions` on the lines of a code cell in a solution block."""
    out, in_block = [], False
    for i, line in enumerate(lines):
        stripped = line.rstrip()
        if any(stripped.endswith(s) for s in OT_SKIP):
            continue
        if in_block:
            if stripped.endswith("# END SOLUTION"):
                in_block = False
            elif OT_BEGIN.match(line):
                raise ReleaseError(f"{where}, line {i + 1}: nested BEGIN SOLUTION")
            continue
        if stripped.endswith("# END SOLUTION"):
            raise ReleaseError(f"{where}, line {i + 1}: END SOLUTION without BEGIN SOLUTION")
        m = OT_BEGIN.match(line)
        if m:
            in_block = True
            if not m.group(2):
                out.append(m.group(1) + "...")
            continue
        m = OT_ONE_LINE_ASSIGN.match(line)
        if m:
            out.append(m.group(1) + " ...")
            continue
        m = OT_ONE_LINE.match(line)
        if m:
            out.append(m.group(1) + "...")
            continue
        out.append(line)
    if in_block:
        raise ReleaseError(f"{where}: BEGIN SOLUTION without END SOLUTION")
    return out


def _yaml(text: str, where: str) -> dict:
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ReleaseError(f"{where}: the YAML of this otter cell is not readable ({e})") from None
    if not isinstance(data, dict):
        raise ReleaseError(f"{where}: the YAML of this otter cell must be a mapping")
    return data


def _otter_test(cell, where: str) -> dict:
    lines = _source(cell).split("\n")
    while lines and not lines[0].strip():  # otter reads the first line; a blank one must not hide it
        lines = lines[1:]
    hidden, points, body = False, None, lines
    first = lines[0].lstrip() if lines else ""
    if first.startswith("#") and OT_HIDDEN_LINE.search(first):
        hidden, body = True, lines[1:]
    elif OT_TEST_CONFIG.match(first):
        end = next((i for i, ln in enumerate(lines[1:], start=1) if OT_TEST_CONFIG_END.match(ln.strip())), None)
        if end is None:
            raise ReleaseError(f"{where}: BEGIN TEST CONFIG without END TEST CONFIG")
        cfg = _yaml("\n".join(lines[1:end]), where)
        hidden, points, body = bool(cfg.get("hidden", False)), cfg.get("points"), lines[end + 1:]
    if not hidden:
        for i, ln in enumerate(body, start=1):
            if (ln.lstrip().startswith("#") and OT_HIDDEN_LINE.search(ln)) or OT_TEST_CONFIG.search(ln):
                raise ReleaseError(f"{where}, line {i}: this test reads as public, yet {ln.strip()!r} looks meant "
                                   "to hide it or configure it: otter reads only a test's first line for that")
    import ast
    try:
        ast.parse("\n".join(body))
    except SyntaxError as e:
        raise ReleaseError(f"{where}: a test cell that is not valid Python (line {e.lineno}: {e.msg})") from None
    return {"source": "\n".join(body).strip("\n"), "hidden": hidden, "points": points}


def release_otter(nb):
    """(the student notebook, the questions with their tests) by Otter Assign's rules."""
    import nbformat

    src_nb, out_cells = copy.deepcopy(nb), []
    questions: list[OtterQuestion] = []
    question: OtterQuestion | None = None
    block, had_prompt, had_solution, response_added = None, False, False, False
    strip_everywhere = False  # the assignment config's strip_solutions_from_all_cells
    for k, cell in enumerate(src_nb.cells, start=1):
        where, text = f"cell {k}", _boundary_text(cell)
        first = _first_line(text) if text is not None else ""
        if text is not None and OTTER_CONFIG.match(first):
            config = _yaml("\n".join(text.split("\n")[1:]), where)
            strip_everywhere = bool(config.get("strip_solutions_from_all_cells", False))
            continue
        if text is not None and OTTER_BOUNDARY.match(first):
            m = OTTER_BOUNDARY.match(first)
            edge, kind = m.group(1).lower(), m.group(2).lower()
            if kind == "question":
                if edge == "begin":
                    if question is not None:
                        raise ReleaseError(f"{where}: BEGIN QUESTION inside another question")
                    cfg = _yaml("\n".join(text.split("\n")[1:]), where)
                    if "name" not in cfg:
                        raise ReleaseError(f"{where}: BEGIN QUESTION without a name")
                    question = OtterQuestion(str(cfg["name"]), cfg.get("points"), bool(cfg.get("manual", False)))
                    questions.append(question)
                    had_prompt = had_solution = response_added = False
                else:
                    if question is None or block is not None:
                        raise ReleaseError(f"{where}: END QUESTION without BEGIN QUESTION, or inside a "
                                           f"{block} block")
                    question = None
                continue
            if question is None:
                raise ReleaseError(f"{where}: {edge.upper()} {kind.upper()} outside a question")
            if edge == "begin":
                if block is not None:
                    raise ReleaseError(f"{where}: BEGIN {kind.upper()} inside a {block} block")
                if kind == "prompt" and had_solution:
                    raise ReleaseError(f"{where}: a prompt block after a solution block")
                block = kind
                had_prompt = had_prompt or kind == "prompt"
                had_solution = had_solution or kind == "solution"
            else:
                if block != kind:
                    raise ReleaseError(f"{where}: END {kind.upper()} without BEGIN {kind.upper()}")
                block = None
            continue
        if text is not None and OTTER_NEAR.search(first) and cell.get("cell_type") == "raw":
            raise ReleaseError(f"{where}: {first.strip()!r} looks like an otter boundary but is not one (otter "
                               "needs '# BEGIN QUESTION' with a space after '#'): fix it, or the material after "
                               "it would reach students")
        src = _source(cell)
        if OT_IGNORE_CELL.match(src):
            continue
        lines = _otter_ignore_lines(src.split("\n"), where)
        if block == "tests":
            if cell.get("cell_type") != "code":
                raise ReleaseError(f"{where}: a non-code cell in a tests block")
            question.tests.append({**_otter_test(cell, where), "cell": k})
            continue
        if block == "solution":
            if cell.get("cell_type") == "code":
                cell.source = "\n".join(otter_replace_solutions(lines, where))
                cell.metadata.setdefault("tags", [])
                if "otter_answer_cell" not in cell.metadata["tags"]:
                    cell.metadata["tags"].append("otter_answer_cell")
            elif "otter_include" in cell.get("metadata", {}).get("tags", []):
                cell.source = "\n".join(lines)
            else:
                if question.manual and not had_prompt and not response_added:
                    out_cells.append(nbformat.v4.new_markdown_cell(OT_RESPONSE))
                    response_added = True
                continue
        else:
            if strip_everywhere and cell.get("cell_type") == "code":
                # a lecture notebook's solution lines outside any question, as inside one
                lines = otter_replace_solutions(lines, where)
            cell.source = "\n".join(ln for ln in lines if not ln.rstrip().endswith("# SEED"))
            if block == "prompt":
                cell.metadata.setdefault("tags", []).append("otter_answer_cell")
        if cell.get("cell_type") == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("otter", None)
        out_cells.append(cell)
    if question is not None or block is not None:
        raise ReleaseError(f"the notebook ends inside {'a ' + block + ' block' if block else 'question ' + question.name}")
    src_nb.cells = out_cells
    src_nb.metadata.pop("otter", None)
    return src_nb, questions


# -- the leak check ---------------------------------------------------------------------------
LEAKS = [
    # Markers are upper case in every tool (nbgrader matches them case-sensitively); near
    # misses ("BEGIN SOLUTON", "BEGIN_SOLUTION") are caught, prose ("append_hidden",
    # "we recommend solutions") is not.
    (re.compile(r"\b(BEGIN|END)[\s_]*SOLU"), "a solution marker"),
    (re.compile(r"\b(BEGIN|END)[\s_]*HIDDEN"), "a hidden-tests marker"),
    (re.compile(r"\b(BEGIN|END)[\s_]*MARK[\s_]*SCHEME"), "a mark-scheme marker"),
    (re.compile(r"#\s*SOLUTION\b"), "an otter # SOLUTION marker"),
    (re.compile(r"#\s*solution\s*$", re.IGNORECASE), "an otter # SOLUTION marker"),
    (re.compile(r"\*\*\s*SOLUTION\s*:?\s*\*\*|<strong>\s*SOLUTION"), "a **SOLUTION** answer"),
    (re.compile(r"\bAUTOTEST\b"), "an nbgrader AUTOTEST directive"),
    (re.compile(r"^\s*#\s*(BEGIN|END)\s*(QUESTION|PROMPT|TESTS?|SOLUTION)\s*$|^\s*#\s*ASSIGNMENT\s*CONFIG\s*$",
                re.IGNORECASE), "an otter boundary"),
    (re.compile(r"^\s*#\s*HIDDEN(\s+TESTS?)?\s*$"), "a hidden test"),
    (re.compile(r"BEGIN\s*TEST\s*CONFIG", re.IGNORECASE), "an otter test config"),
]


def strip_unreferenced(nb) -> None:
    """Attachments no remaining source refers to (a solution's image) and the notebook's
    saved widget state (outputs of the master's run) leave the student version."""
    for cell in nb.get("cells", []):
        att = cell.get("attachments")
        if isinstance(att, dict):
            src = _source(cell)
            kept = {k: v for k, v in att.items() if f"attachment:{k}" in src}
            if kept:
                cell["attachments"] = kept
            else:
                cell.pop("attachments", None)
    nb.get("metadata", {}).pop("widgets", None)


def leak_check(nb) -> None:
    """Refuse a student notebook that still holds anything of the solutions or the hidden
    tests: a marker or a near miss of one, a flagged cell, an output. Runs on every release."""
    for k, cell in enumerate(nb.get("cells", []), start=1):
        lines = _source(cell).split("\n")
        for i, line in enumerate(lines, start=1):
            for pattern, what in LEAKS:
                if pattern.search(line):
                    raise ReleaseError(f"cell {k}, line {i}: {what} is left in the student version "
                                       f"({line.strip()[:80]!r}); the release is refused")
        meta = cell.get("metadata", {})
        flags = meta.get("nbgrader") or {}
        if isinstance(flags, dict) and (flags.get("solution") or flags.get("grade")):
            raise ReleaseError(f"cell {k}: still flagged as an nbgrader solution or grade cell")
        tags = set(meta.get("tags", []) or [])
        if tags & {"otter_assign_solution_cell", "solution", "hidden", "hidden_tests"}:
            raise ReleaseError(f"cell {k}: tagged {sorted(tags)}, which marks solution or hidden material")
        if cell.get("cell_type") == "code" and cell.get("outputs"):
            raise ReleaseError(f"cell {k}: outputs are left in the student version")
        src = _source(cell)
        for name in (cell.get("attachments") or {}):
            if f"attachment:{name}" not in src:
                raise ReleaseError(f"cell {k}: attachment {name!r} is left though no text shows it (a solution's?)")
    if "widgets" in nb.get("metadata", {}):
        raise ReleaseError("the notebook's saved widget state (outputs of the master's run) is left")
