"""Notebooks in and out: intake of submissions, release of student versions.

Intake turns a notebook (nbformat 4, from Jupyter, VS Code or Colab; older versions
are converted) or a `.py` file into the code the child will load, with a map from
each line back to its cell. In the default `definitions` mode it keeps what defines
things (imports, functions, classes, constant assignments) and drops top-level work
(training loops, plots, magics, shell escapes); `all` keeps every statement. A cell
with a syntax error is dropped with a note; nothing here raises on bad input: an
unreadable file comes back with `fatal` set.

Release turns a master notebook into the student's: each region between solution
markers (nbgrader's `### BEGIN SOLUTION` / `### END SOLUTION`, otter's
`# BEGIN SOLUTION` / `# END SOLUTION`) becomes a stub raising NotImplementedError,
hidden-test regions and outputs are removed.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from autograder.authoring.formats import (  # noqa: F401  (ReleaseError: raised here, and importers catch it here)
    ReleaseError,
    detect,
    leak_check,
    release_nbgrader,
    release_otter,
    strip_unreferenced,
)

MAX_SUBMISSION_BYTES = 20 << 20  # a notebook file, outputs included
MAX_SOURCE_BYTES = 2 << 20       # the code itself: a .py file, or all code cells of a notebook together
MAX_CELLS = 10_000
# Intake runs in a process of its own with these bounds (extract_bounded): a file built to
# make the parser spin or swell costs that process, never the grader or the batch.
INTAKE_SECONDS = 60
INTAKE_MEMORY_BYTES = 2 << 30

BEGIN_SOLUTION = re.compile(r"^(\s*)#{1,3}\s*BEGIN SOLUTION\b.*$")
END_SOLUTION = re.compile(r"^\s*#{1,3}\s*END SOLUTION\b.*$")
BEGIN_HIDDEN = re.compile(r"^\s*#{1,3}\s*BEGIN HIDDEN TESTS\b.*$")
END_HIDDEN = re.compile(r"^\s*#{1,3}\s*END HIDDEN TESTS\b.*$")
MD_BEGIN = re.compile(r"<!--\s*BEGIN SOLUTION\s*-->")
MD_END = re.compile(r"<!--\s*END SOLUTION\s*-->")
HELP_QUERY = re.compile(r"^\s*(\?{1,2}[\w.]+|[\w.]+\?{1,2})\s*$")  # IPython's `obj?` help
HINT = re.compile(r"^\s*#\s*HINT:\s*(.*)$")

# Module roots whose plain calls count as constant-building (torch.device("cpu"), math.sqrt(2)).
CONSTANT_CALL_ROOTS = {"torch", "math", "np", "numpy"}
# Builtins that only build values (NEG = float("-inf"), SIZES = tuple(range(4))).
CONSTANT_BUILTINS = {"float", "int", "bool", "complex", "str", "bytes", "tuple", "list", "dict", "set",
                     "frozenset", "range", "abs", "min", "max", "round", "pow", "len", "sorted", "slice",
                     "divmod", "sum", "reversed", "zip", "enumerate"}


@dataclass
class Cell:
    index: int | None  # 1-based position among all cells; None for a .py file
    source: str


@dataclass
class ExtractedCode:
    source: str = ""
    line_map: list = field(default_factory=list)  # per line of source: [cell, line in cell]
    notes: list[str] = field(default_factory=list)  # what was dropped and why
    fatal: str | None = None  # set when the file cannot be read at all
    kind: str = "python"
    metadata: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"source": self.source, "line_map": self.line_map, "notes": self.notes,
                "fatal": self.fatal, "kind": self.kind, "metadata": self.metadata}


# -- reading ---------------------------------------------------------------------------
def read_cells(path: Path) -> tuple[list[Cell], str, dict]:
    """Cells of a submission; raises ValueError with a student-readable reason."""
    raw = path.read_bytes()
    if len(raw) > MAX_SUBMISSION_BYTES:
        raise ValueError(f"the file is {len(raw) >> 20} MB; the limit is {MAX_SUBMISSION_BYTES >> 20} MB "
                         "(clear the notebook's outputs and submit again)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"the file is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if path.suffix == ".py":
        if len(raw) > MAX_SOURCE_BYTES:
            raise ValueError(f"the file holds {len(raw) / 2**20:.1f} MB of code; the limit is "
                             f"{MAX_SOURCE_BYTES >> 20} MB")
        return [Cell(None, text)], "python", {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"the notebook is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                         "was it saved completely?") from None
    if not isinstance(data, dict) or "cells" not in data and "worksheets" not in data:
        raise ValueError("the file is JSON but not a Jupyter notebook (no cells)")
    major = data.get("nbformat")
    if major not in (3, 4):
        raise ValueError(f"unsupported notebook format version {major!r} (expected 4, as Jupyter, "
                         "VS Code and Colab save)")
    if major == 4:
        # nbformat 4 is plain JSON: its cells are read directly (nbformat's schema validation
        # took 21 s on a notebook of 52k cells, and grading needs only the code).
        nb = data
        if not isinstance(nb.get("cells"), list):
            raise ValueError("the notebook could not be read: `cells` is not a list")
    else:
        try:
            import nbformat  # here, not at the top: GPU workers grade without the Jupyter stack
        except ImportError:
            raise ValueError("nbformat 3 notebooks need the nbformat package to be converted") from None
        try:
            nb = nbformat.reads(text, as_version=4)
        except Exception as e:  # noqa: BLE001  (nbformat raises many kinds on odd files)
            raise ValueError(f"the notebook could not be read: {str(e)[:200]}") from None
    if len(nb.get("cells", [])) > MAX_CELLS:
        raise ValueError(f"the notebook has {len(nb['cells']):,} cells; the limit is {MAX_CELLS:,}")
    cells, total = [], 0
    for i, cell in enumerate(nb.get("cells", []), start=1):
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            src = cell.get("source", "")
            if isinstance(src, list):
                src = "".join(x for x in src if isinstance(x, str))
            elif not isinstance(src, str):
                src = ""
            total += len(src)
            if total > MAX_SOURCE_BYTES:
                raise ValueError(f"the notebook's code cells hold more than {MAX_SOURCE_BYTES >> 20} MB "
                                 "of code together, which is the limit")
            cells.append(Cell(i, src))
    nb_meta = nb.get("metadata")
    meta = nb_meta.get("dlopt") if isinstance(nb_meta, dict) else None
    return cells, "notebook", dict(meta) if isinstance(meta, dict) else {}


# -- extraction ------------------------------------------------------------------------
SHELL_ASSIGN = re.compile(r"^\s*[\w.,\s\[\]()*]+=\s*[!%]")  # IPython's `files = !ls`, `t = %timeit f()`


def _strip_magics(src: str) -> tuple[str | None, int]:
    """Replace IPython's line magics, shell escapes (`!pip ...`, `files = !ls`) and help
    queries by `pass` at their indentation (a magic inside a block keeps the block valid),
    with the lines they continue onto (a trailing backslash, as IPython reads them) blanked,
    so line numbers stay those of the cell. None: a cell magic (%%...), which IPython runs
    as a whole and we cannot."""
    lines = src.split("\n")
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    if first.startswith("%%"):
        return None, 0
    out, n, i = [], 0, 0
    while i < len(lines):
        ln = lines[i]
        s = ln.lstrip()
        if s.startswith(("%", "!")) or HELP_QUERY.match(ln) or SHELL_ASSIGN.match(ln):
            out.append(ln[: len(ln) - len(s)] + "pass")
            n += 1
            while lines[i].rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                out.append("")
        else:
            out.append(ln)
        i += 1
    return "\n".join(out), n


def _is_static(node: ast.AST) -> bool:
    """An expression that only builds a constant: literals, names, and calls of torch/math."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            if isinstance(sub.func, ast.Name) and sub.func.id in CONSTANT_BUILTINS:
                continue
            root = sub.func
            while isinstance(root, ast.Attribute):
                root = root.value
            if not (isinstance(root, ast.Name) and root.id in CONSTANT_CALL_ROOTS
                    and isinstance(sub.func, ast.Attribute)):
                return False
        elif isinstance(sub, ast.Lambda | ast.Await | ast.Yield | ast.YieldFrom | ast.NamedExpr):
            return False
    return True


def _keep(node: ast.stmt) -> bool:
    if isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
                  | ast.Pass):
        return True
    if isinstance(node, ast.Assign):
        return all(isinstance(t, ast.Name | ast.Tuple) for t in node.targets) and _is_static(node.value)
    if isinstance(node, ast.AnnAssign):
        return isinstance(node.target, ast.Name) and (node.value is None or _is_static(node.value))
    if isinstance(node, ast.Try):
        body = node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
        return all(_keep(s) or isinstance(s, ast.Pass) for s in body)
    if isinstance(node, ast.If):
        return _is_static(node.test) and all(_keep(s) or isinstance(s, ast.Pass) for s in node.body + node.orelse)
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
        return True  # docstrings
    return False


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *[d.lineno for d in decorators]])


def extract(path: str | Path, mode: str = "definitions") -> ExtractedCode:
    """Extract the gradeable code of a submission; never raises on bad input."""
    path = Path(path)
    result = ExtractedCode(kind="notebook" if path.suffix == ".ipynb" else "python")
    try:
        _extract_into(result, path, mode)
    except (OSError, ValueError) as e:
        result.fatal = str(e)
    except RecursionError:
        result.fatal = "the file is nested too deeply to be read"
    except MemoryError:
        result.fatal = "the file needs too much memory to be read"
    except Exception as e:  # noqa: BLE001  (whatever the file holds, it ends as a reason)
        result.fatal = f"the file could not be read ({type(e).__name__}: {str(e)[:200]})"
    if result.fatal:
        result.source, result.line_map = "", []
    return result


def _extract_into(result: ExtractedCode, path: Path, mode: str) -> None:
    cells, result.kind, result.metadata = read_cells(path)
    out_lines: list[str] = []
    dropped_work = 0
    for cell in cells:
        label = f"cell {cell.index}" if cell.index is not None else "the file"
        src, _ = _strip_magics(cell.source)
        if src is None:
            result.notes.append(f"{label}: a cell magic (%%...); the cell was not run")
            continue
        try:
            tree = ast.parse(src)
        except SyntaxError as e:
            result.notes.append(f"{label}: syntax error at line {e.lineno}: {e.msg}; "
                                "nothing in this cell was graded")
            continue
        except (RecursionError, MemoryError, ValueError) as e:
            result.notes.append(f"{label}: the code is nested too deeply to be read ({type(e).__name__}); "
                                "nothing in this cell was graded")
            continue
        lines = src.split("\n")
        for node in tree.body:
            if mode == "definitions" and not _keep(node):
                dropped_work += 1
                continue
            start, end = _first_line(node), node.end_lineno or node.lineno
            for k in range(start, end + 1):
                out_lines.append(lines[k - 1])
                result.line_map.append([cell.index, k])
    if dropped_work:
        result.notes.append(f"{dropped_work} top-level statement(s) that do work (calls, loops, "
                            "plots) were not run; only definitions are graded")
    result.source = "\n".join(out_lines) + "\n"


def _intake_limits() -> None:  # pragma: no cover - runs in the intake process
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (INTAKE_MEMORY_BYTES, INTAKE_MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (INTAKE_SECONDS, INTAKE_SECONDS + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def extract_bounded(path: str | Path, mode: str = "definitions") -> ExtractedCode:
    """`extract` in a process of its own, bounded in time (INTAKE_SECONDS of CPU, twice
    that of wall time) and memory (INTAKE_MEMORY_BYTES): a hostile file ends as that
    file's `fatal` reason, never as a stalled or swollen grader. The child sets the bounds
    on itself as it starts (no preexec_fn: a process with threads, as the server and a
    pool of judges are, can deadlock in one)."""
    import subprocess
    import sys

    path = Path(path)
    kind = "notebook" if path.suffix == ".ipynb" else "python"
    try:
        size = path.stat().st_size
    except OSError as e:
        return ExtractedCode(kind=kind, fatal=f"the file could not be read ({e.strerror})")
    limit = MAX_SUBMISSION_BYTES if kind == "notebook" else MAX_SOURCE_BYTES
    if size > limit:  # refused before anything parses it
        return ExtractedCode(kind=kind, fatal=f"the file is {size / 2**20:.1f} MB; the limit is "
                             f"{limit >> 20} MB" + (" (clear the notebook's outputs and submit again)"
                                                    if kind == "notebook" else ""))
    try:
        proc = subprocess.run([sys.executable, "-m", "autograder.authoring.notebook", "extract", str(path), mode],
                              capture_output=True, timeout=2 * INTAKE_SECONDS, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return ExtractedCode(kind=kind, fatal=f"reading the file took more than {2 * INTAKE_SECONDS} s; "
                             "it is too large or too deeply nested to grade")
    if proc.returncode != 0:
        return ExtractedCode(kind=kind, fatal="reading the file needed more time or memory than a submission "
                             f"may use ({INTAKE_SECONDS} s, {INTAKE_MEMORY_BYTES >> 30} GiB); it is too large "
                             "or too deeply nested to grade")
    try:
        data = json.loads(proc.stdout)
        return ExtractedCode(**{k: data[k] for k in ("source", "line_map", "notes", "fatal", "kind", "metadata")})
    except (ValueError, KeyError, TypeError):
        return ExtractedCode(kind=kind, fatal="the file could not be read (the reader's output was malformed)")


# -- release ---------------------------------------------------------------------------
def _enclosing_function(lines: list[str], index: int, indent: int) -> str | None:
    for k in range(index - 1, -1, -1):
        m = re.match(r"^(\s*)(?:async\s+)?def\s+(\w+)|^(\s*)class\s+(\w+)", lines[k])
        if m:
            ind = len(m.group(1) if m.group(1) is not None else m.group(3))
            if ind < indent:
                return m.group(2) or m.group(4)
    return None


def strip_solutions(src: str, where: str = "cell") -> str:
    """Replace each solution region by a stub; remove hidden-test regions."""
    lines = src.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if BEGIN_HIDDEN.match(line):
            j = i + 1
            while j < len(lines) and not END_HIDDEN.match(lines[j]):
                j += 1
            if j == len(lines):
                raise ReleaseError(f"{where}: BEGIN HIDDEN TESTS without END HIDDEN TESTS")
            i = j + 1
            continue
        m = BEGIN_SOLUTION.match(line)
        if m:
            indent = m.group(1)
            j = i + 1
            hints = []
            while j < len(lines) and not END_SOLUTION.match(lines[j]):
                if BEGIN_SOLUTION.match(lines[j]):
                    raise ReleaseError(f"{where}: nested BEGIN SOLUTION")
                h = HINT.match(lines[j])
                if h:
                    hints.append(h.group(1).strip())
                j += 1
            if j == len(lines):
                raise ReleaseError(f"{where}: BEGIN SOLUTION without END SOLUTION")
            func = _enclosing_function(lines, i, len(indent.expandtabs()))
            message = f"implement {func}" if func else "fill in this part"
            for h in hints:
                out.append(f"{indent}# HINT: {h}")
            out.append(f"{indent}raise NotImplementedError({message!r})")  # the stub students fill in
            i = j + 1
            continue
        if END_SOLUTION.match(line):
            raise ReleaseError(f"{where}: END SOLUTION without BEGIN SOLUTION")
        out.append(line)
        i += 1
    return "\n".join(out)


def strip_markdown_solutions(src: str) -> str:
    out, pos = [], 0
    while True:
        b = MD_BEGIN.search(src, pos)
        if not b:
            out.append(src[pos:])
            break
        e = MD_END.search(src, b.end())
        if not e:
            raise ReleaseError("markdown: BEGIN SOLUTION without END SOLUTION")
        out.append(src[pos:b.start()] + "_Type your answer here._")
        pos = e.end()
    return "".join(out)


def release_notebook(master: Path, slug: str):
    """The student version of a master notebook (an nbformat.NotebookNode)."""
    import nbformat

    nb = nbformat.read(str(master), as_version=4)
    dialect = detect(nb)
    if dialect == "nbgrader":
        nb = release_nbgrader(nb)
    elif dialect == "otter":
        nb = release_otter(nb)[0]
    else:
        _release_dlopt(nb)
    strip_unreferenced(nb)
    nb.metadata["dlopt"] = {"slug": slug, "released": True, "from": dialect}
    leak_check(nb)  # nothing of a solution or a hidden test may be left, in any dialect
    return nb


def _release_dlopt(nb) -> None:
    """This project's own markers (### BEGIN SOLUTION with hints, <!-- BEGIN SOLUTION -->)."""
    for k, cell in enumerate(nb.cells, start=1):
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source, where=f"cell {k}")
            cell.outputs = []
            cell.execution_count = None
        elif cell.cell_type == "markdown":
            cell.source = strip_markdown_solutions(cell.source)
        for key in ("nbgrader", "otter"):
            cell.metadata.pop(key, None)


if __name__ == "__main__":  # `python -m autograder.authoring.notebook extract PATH MODE`: the bounded intake
    import sys

    if len(sys.argv) == 4 and sys.argv[1] == "extract":
        _intake_limits()  # the bounds on this process, before any file is read
        sys.stdout.write(json.dumps(extract(sys.argv[2], sys.argv[3]).as_dict()))
    else:
        sys.exit("usage: python -m autograder.authoring.notebook extract PATH MODE")
