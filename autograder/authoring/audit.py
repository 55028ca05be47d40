"""`dlopt audit SLUG`: mutation testing of the master solution against the hidden suite.

Each graded function of the master (named by a suite's `function` marker) is mutated
one change at a time by rules that model the mistakes students make; each mutant is a
submission graded through the real engine (the same sandbox, zygotes and suite as a
student's). A mutant with full marks **survived**: the suite cannot tell that mistake
from the solution. The report gives the kill rate per function and the diff of every
survivor. A survivor that is no mistake at all (an equivalent program: `x * 2.0` for
`x + x`) is recorded in the folder's `audit.toml` with a reason; every other survivor is
a hole in the suite, to close with a sharper test (and an example, when students make
that mistake).

Rules (`OPERATORS`): arithmetic and comparison operators, constants nudged (ints +-1,
floats x2 and /2), a unary minus dropped, and/or swapped, a statement dropped, the
first two positional arguments swapped, ranges and slices off by one, mean <-> sum,
reduction dims changed, clone/detach/contiguous removed, in-place <-> out-of-place
methods, casts removed and float64 -> float32. Not modelled: state shared across
objects or calls (a class attribute for per-instance state), which needs a person's
reading of the class.
"""

from __future__ import annotations

import ast
import copy
import difflib
import hashlib
import random
import tempfile
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from autograder.assignment import Assignment
from autograder.authoring.notebook import extract
from autograder.grading import grade
from autograder.judge.suite import truth_cache_dir

AUDIT_FILE = "audit.toml"
INPLACE = {"add_", "sub_", "mul_", "div_", "addcmul_", "addcdiv_", "lerp_", "clamp_", "sqrt_", "copy_", "zero_",
           "neg_", "pow_", "exp_", "mul", "add", "sub", "div", "addcmul", "addcdiv", "lerp", "clamp"}
ARITH = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.Pow: ast.Mult,
         ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv}
COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
           ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is}


@dataclass
class Mutant:
    function: str
    operator: str
    line: int
    before: str
    after: str
    source: str
    index: int  # which occurrence of (function, operator, before -> after): keys stay stable as lines move

    @property
    def key(self) -> str:
        return f"{self.function} | {self.operator} | {self.before} -> {self.after} | #{self.index}"

    def diff(self, original: str) -> str:
        return "".join(difflib.unified_diff(original.splitlines(True), self.source.splitlines(True),
                                            "master", "mutant", n=1))


@dataclass
class FunctionReport:
    name: str
    killed: int = 0
    survived: list = field(default_factory=list)
    equivalent: int = 0
    invalid: int = 0

    @property
    def counted(self) -> int:
        return self.killed + len(self.survived)

    @property
    def kill_rate(self) -> float | None:
        return self.killed / self.counted if self.counted else None


# -- finding the sites ---------------------------------------------------------------------
def _graded_names(a: Assignment) -> list[str]:
    names: list[str] = []
    for path in a.suite("hidden"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "function"
                    and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "mark"):
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value not in names:
                        names.append(arg.value)
    return names


def _parents(tree: ast.AST) -> dict:
    out = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            out[child] = node
    return out


def _replace(parents: dict, node: ast.AST, new: ast.AST) -> None:
    parent = parents[node]
    for name, value in ast.iter_fields(parent):
        if value is node:
            setattr(parent, name, new)
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                if item is node:
                    value[i] = new
                    return


def _sites(node: ast.AST, parents: dict) -> list[tuple[str, Callable[[], None]]]:
    """(operator, apply) for every mutation of this node; `apply` changes the tree in place."""
    out: list[tuple[str, Callable[[], None]]] = []
    if isinstance(node, ast.BinOp) and type(node.op) in ARITH:
        out.append(("arithmetic", lambda: setattr(node, "op", ARITH[type(node.op)]())))
    if isinstance(node, ast.AugAssign) and type(node.op) in ARITH:
        out.append(("arithmetic", lambda: setattr(node, "op", ARITH[type(node.op)]())))
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in COMPARE:
                out.append(("comparison", lambda i=i: node.ops.__setitem__(i, COMPARE[type(node.ops[i])]())))
    if isinstance(node, ast.Constant) and type(node.value) in (int, float) and not isinstance(node.value, bool):
        v = node.value
        if isinstance(v, int):
            out += [("constant", lambda: setattr(node, "value", v + 1)), ("constant", lambda: setattr(node, "value", v - 1))]
        else:
            out += [("constant", lambda: setattr(node, "value", v * 2 if v else 1.0)),
                    ("constant", lambda: setattr(node, "value", v / 2 if v else -1.0))]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.Not):
        out.append(("sign", lambda: _replace(parents, node, node.operand)))
    if isinstance(node, ast.BoolOp):
        out.append(("boolean", lambda: setattr(node, "op", ast.Or() if isinstance(node.op, ast.And) else ast.And())))
    if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Expr) and not (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
        out.append(("drop statement", lambda: _replace(parents, node, ast.Pass())))
    if isinstance(node, ast.Call):
        pos = [x for x in node.args if not isinstance(x, ast.Starred)]
        if len(pos) >= 2 and len(pos) == len(node.args) and ast.dump(node.args[0]) != ast.dump(node.args[1]):
            out.append(("swap arguments", lambda: node.args.__setitem__(slice(0, 2), [node.args[1], node.args[0]])))
        if isinstance(node.func, ast.Name) and node.func.id == "range" and node.args:
            out.append(("off by one", lambda: node.args.__setitem__(
                -1 if len(node.args) < 3 else 1, ast.BinOp(node.args[-1 if len(node.args) < 3 else 1], ast.Sub(),
                                                           ast.Constant(1)))))
            if len(node.args) >= 2:
                out.append(("off by one", lambda: node.args.__setitem__(0, ast.BinOp(node.args[0], ast.Add(),
                                                                                     ast.Constant(1)))))
        if isinstance(node.func, ast.Attribute):
            attr = node.func.attr
            if attr in ("mean", "sum"):
                out.append(("reduction", lambda: setattr(node.func, "attr", "sum" if attr == "mean" else "mean")))
            if attr in ("clone", "detach", "contiguous", "double", "float") and not node.args and not node.keywords:
                out.append(("no clone" if attr in ("clone", "detach", "contiguous") else "cast",
                            lambda: _replace(parents, node, node.func.value)))
            if attr in INPLACE:
                out.append(("in place", lambda: setattr(node.func, "attr", attr[:-1] if attr.endswith("_")
                                                        else attr + "_")))
        for kw in node.keywords:
            if kw.arg in ("dim", "axis") and isinstance(kw.value, ast.Constant | ast.UnaryOp):
                out.append(("reduction dim", lambda kw=kw: setattr(kw, "value", ast.Constant(0 if _int(kw.value) != 0
                                                                                             else -1))))
            if kw.arg == "keepdim" and isinstance(kw.value, ast.Constant):
                out.append(("reduction dim", lambda kw=kw: setattr(kw, "value", ast.Constant(not kw.value.value))))
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
        s = node.slice
        if s.lower is not None:
            out.append(("off by one", lambda: setattr(s, "lower", ast.BinOp(s.lower, ast.Add(), ast.Constant(1)))))
        if s.upper is not None:
            out.append(("off by one", lambda: setattr(s, "upper", ast.BinOp(s.upper, ast.Sub(), ast.Constant(1)))))
    if isinstance(node, ast.Attribute) and node.attr == "float64" and isinstance(node.value, ast.Name):
        out.append(("cast", lambda: setattr(node, "attr", "float32")))
    return out


def _int(node: ast.AST) -> int | None:
    try:
        return int(ast.literal_eval(node))
    except (ValueError, TypeError, SyntaxError):
        return None


def _segment(source: str, node: ast.AST) -> str:
    text = ast.get_source_segment(source, node) or ast.unparse(node)
    return " ".join(text.split())[:80]


def reached(tree: ast.Module, names: list[str]) -> list[str]:
    """`names` and the top-level functions and classes they use, transitively (a graded
    function's helpers: a mistake in `_attend` is a mistake in prefill)."""
    top = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    wanted, frontier = list(dict.fromkeys(names)), list(names)
    while frontier:
        node = top.get(frontier.pop())
        for ref in ast.walk(node) if node is not None else ():
            if isinstance(ref, ast.Name) and ref.id in top and ref.id not in wanted:
                wanted.append(ref.id)
                frontier.append(ref.id)
    return wanted


def mutants(source: str, names: list[str]) -> list[Mutant]:
    """Every single-change mutant of the top-level functions and classes in `names` and of
    the helpers they use."""
    tree = ast.parse(source)
    names = reached(tree, names)
    targets = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name in names]
    plan = []  # (function, node ordinal in the walk of the tree, site ordinal at the node, operator)
    order = {id(n): i for i, n in enumerate(ast.walk(tree))}
    for top in targets:
        body_nodes = [n for n in ast.walk(top) if n is not top and not isinstance(n, ast.arg)]
        parents = _parents(tree)
        for node in body_nodes:
            for k, (op, _) in enumerate(_sites(node, parents)):
                plan.append((top.name, order[id(node)], k, op, getattr(node, "lineno", top.lineno),
                             _segment(source, node)))
    out: list[Mutant] = []
    seen: dict = {}
    for fn, ordinal, k, op, line, before in plan:
        fresh = copy.deepcopy(tree)
        nodes = list(ast.walk(fresh))
        node = nodes[ordinal]
        parents = _parents(fresh)
        sites = _sites(node, parents)
        if k >= len(sites):
            continue
        sites[k][1]()
        ast.fix_missing_locations(fresh)
        try:
            text = ast.unparse(fresh)
        except Exception:  # noqa: BLE001  (a mutation the unparser cannot write: not a program)
            continue
        if text == ast.unparse(tree):
            continue
        after_node = node if node in set(ast.walk(fresh)) else None
        after = " ".join(ast.unparse(after_node).split())[:80] if after_node is not None else "(removed)"
        ident = (fn, op, before, after)
        seen[ident] = seen.get(ident, 0) + 1
        out.append(Mutant(fn, op, line, before, after, text, seen[ident]))
    return out


# -- running them --------------------------------------------------------------------------
def suite_digest(a: Assignment) -> str:
    """What an audit's outcomes depend on in the assignment's folder: the hidden suite, the
    master, the harness and every other trusted Python file there (checks a suite loads,
    like sgd_sampling's stats_checks.py), not the examples."""
    trusted = {p for p in a.root.rglob("*.py") if "examples" not in p.relative_to(a.root).parts}
    h = hashlib.sha256()
    for p in sorted({*a.suite("hidden"), *(x for x in [a.master, a.harness] if x), *trusted}):
        h.update(str(p.relative_to(a.root) if p.is_relative_to(a.root) else p.name).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def load_record(a: Assignment) -> dict:
    path = a.root / AUDIT_FILE
    return tomllib.loads(path.read_text()) if path.exists() else {}


def master_source(a: Assignment) -> str:
    return extract(a.master, a.extraction).source


@dataclass
class AuditReport:
    slug: str
    functions: dict
    original: str
    total: int
    sampled: int
    cached: int = 0

    def lines(self) -> list[str]:
        out = []
        for f in self.functions.values():
            rate = f"{100 * f.kill_rate:.1f}%" if f.kill_rate is not None else "n/a"
            out.append(f"{self.slug}.{f.name}: {f.killed} of {f.counted} killed ({rate}); "
                       f"{f.equivalent} equivalent, {f.invalid} not runnable, {len(f.survived)} survived")
        return out

    def overall(self) -> float | None:
        killed = sum(f.killed for f in self.functions.values())
        counted = sum(f.counted for f in self.functions.values())
        return killed / counted if counted else None


def _engine_digest() -> str:
    root = Path(__file__).resolve().parents[1]  # the engine: autograder/
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


class OutcomeCache:
    """Each mutant's outcome, kept by the judge (never in a sandbox) for the suite, master,
    harness and engine it was graded with: a run again (after recording equivalents, or
    after an interruption) grades only what it has not seen. Written as it goes."""

    def __init__(self, a: Assignment, fresh: bool = False):
        import json
        import threading

        self.path = truth_cache_dir().parent / "audit" / f"{a.slug}-{suite_digest(a)}-{_engine_digest()}.json"
        self.lock = threading.Lock()
        self.seen: dict[str, str] = {}
        if not fresh and self.path.exists():
            try:
                self.seen = dict(json.loads(self.path.read_text()))
            except (OSError, ValueError):
                self.seen = {}

    @staticmethod
    def _id(m: Mutant) -> str:
        return hashlib.sha256(m.source.encode()).hexdigest()[:24]

    def get(self, m: Mutant) -> str | None:
        return self.seen.get(self._id(m))

    def put(self, m: Mutant, outcome: str) -> None:
        import json
        import os

        with self.lock:
            self.seen[self._id(m)] = outcome
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.seen))
            os.replace(tmp, self.path)


def _outcome(r) -> str:
    if r.error and r.score == 0 and "could not be read" in (r.error or ""):
        return "invalid"
    if r.grader_errors:
        return "invalid"
    return "survived" if r.score >= r.max_score - 1e-9 else "killed"


def audit(a: Assignment, budget: int | None = None, jobs: int = 2, seed: int = 0, progress=None,
          fresh: bool = False) -> AuditReport:
    source = master_source(a)
    names = reached(ast.parse(source), _graded_names(a))  # the graded functions and their helpers
    every = mutants(source, names)
    picked = every
    if budget is not None and len(every) > budget:
        rng = random.Random(seed)
        picked = sorted(rng.sample(every, budget), key=every.index)
    record = load_record(a)
    equivalent = {e.get("key"): e.get("reason", "") for e in record.get("equivalent", [])}
    functions = {n: FunctionReport(n) for n in names if any(m.function == n for m in every)}
    cache = OutcomeCache(a, fresh)
    todo, outcomes = [], {}
    for m in picked:
        if m.key in equivalent:
            functions[m.function].equivalent += 1
        elif cache.get(m) is not None:
            outcomes[m.key] = cache.get(m)
        else:
            todo.append(m)
    with tempfile.TemporaryDirectory(prefix=f"dlopt-audit-{a.slug}-") as tmp:
        paths = []
        for i, m in enumerate(todo):
            p = Path(tmp) / f"mutant_{i:04d}.py"
            p.write_text(m.source)
            paths.append(p)

        def one(i: int):
            outcome = _outcome(grade(a, paths[i], label=f"mutant {todo[i].key}"))
            cache.put(todo[i], outcome)
            if progress:
                progress()
            return outcome

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for m, outcome in zip(todo, pool.map(one, range(len(todo)))):
                outcomes[m.key] = outcome
    for m in picked:
        if m.key not in outcomes:
            continue
        f = functions[m.function]
        outcome = outcomes[m.key]
        if outcome == "invalid":
            f.invalid += 1
        elif outcome == "survived":
            f.survived.append(m)
        else:
            f.killed += 1
    # Diffs against the master as the mutants are written (unparsed: no comments, one style).
    return AuditReport(a.slug, functions, ast.unparse(ast.parse(source)), len(every), len(picked),
                       len(picked) - len(todo) - sum(f.equivalent for f in functions.values()))


def write_record(a: Assignment, report: AuditReport, budget: int | None) -> Path:
    """audit.toml: the equivalents (kept), the last run's figures and the suite it ran on."""
    record = load_record(a)
    lines = ["# dlopt audit's record: mutants recorded as equivalent (with why), and the last run.",
             "# `dlopt check` warns when the suite, the master or the harness changed since.",
             f'suite = "{suite_digest(a)}"', f"mutants = {report.total}", f"graded = {report.sampled}",
             f"budget = {budget if budget is not None else report.total}", ""]
    for name, f in report.functions.items():
        rate = f.kill_rate if f.kill_rate is not None else 1.0
        lines.append(f'[functions.{name}]\nkilled = {f.killed}\nsurvived = {len(f.survived)}\n'
                     f'equivalent = {f.equivalent}\nkill_rate = {rate:.4f}\n')
    for e in record.get("equivalent", []):
        lines.append("[[equivalent]]")
        lines.append(f"key = {_toml_str(e.get('key', ''))}")
        lines.append(f"reason = {_toml_str(e.get('reason', ''))}")
        lines.append("")
    path = a.root / AUDIT_FILE
    path.write_text("\n".join(lines))
    return path


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def stale(a: Assignment) -> str | None:
    """Why the audit record is out of date (None: current, or no record to judge)."""
    record = load_record(a)
    if not record:
        return None
    if record.get("suite") != suite_digest(a):
        return f"{a.slug}: audit.toml is older than the suite, master or harness: run `dlopt audit {a.slug}` again"
    return None
