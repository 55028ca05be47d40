"""The static half of the forbidden-API check: read the submission's source.

Resolves import aliases (`import torch.optim as opt`, `from torch.optim import AdamW
as A`), attribute chains and `getattr(module, "name")` with a constant name, and
matches the dotted names against the assignment's patterns (fnmatch, e.g.
`torch._foreach_*`). Each finding is attributed to the top-level function or class
it sits in, and to every top-level definition that reaches it through helpers.
"""

from __future__ import annotations

import ast
import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    api: str
    function: str  # top-level def or class that uses it ("<module>" for module level)
    line: int

    def as_dict(self) -> dict:
        return {"api": self.api, "function": self.function, "line": self.line}


def _matches(name: str, patterns: list[str]) -> str | None:
    for p in patterns:
        if fnmatch.fnmatchcase(name, p) or name.startswith(p.rstrip("*") + ".") and not p.endswith("*"):
            return name
    return None


class _Scanner(ast.NodeVisitor):
    def __init__(self, patterns: list[str]):
        self.patterns = patterns
        self.aliases: dict[str, str] = {}
        self.findings: list[Finding] = []
        self.owner = "<module>"

    def dotted(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)):
            base = self.dotted(node.args[0])
            return f"{base}.{node.args[1].value}" if base else None
        return None

    def report(self, name: str | None, node: ast.AST) -> None:
        if name and _matches(name, self.patterns):
            self.findings.append(Finding(name, self.owner, getattr(node, "lineno", 0)))

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.asname:
                self.aliases[a.asname] = a.name
            else:
                self.aliases[a.name.split(".")[0]] = a.name.split(".")[0]
            self.report(a.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and not node.level:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                self.aliases[a.asname or a.name] = full
                self.report(full, node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        # "*.backward": a method of that name on anything (x.backward(), loss.backward()).
        for p in self.patterns:
            if p.startswith("*.") and node.attr == p[2:]:
                self.findings.append(Finding(f"Tensor.{node.attr}", self.owner, node.lineno))
        name = self.dotted(node)
        if name and _matches(name, self.patterns):
            self.report(name, node)
            return
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = self.dotted(node)
        if name is not None and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            self.report(name, node)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in self.aliases and isinstance(node.ctx, ast.Load):
            self.report(self.aliases[node.id], node)


def scan(source: str, patterns: list[str]) -> list[Finding]:
    """Forbidden uses in `source`, attributed to top-level definitions (and their callers)."""
    if not patterns:
        return []
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    scanner = _Scanner(patterns)
    # Imports anywhere first, so aliases are known wherever they are used.
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            scanner.visit(node)
    module_findings = list(scanner.findings)
    scanner.findings = []
    top: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            top[node.name] = node
            scanner.owner = node.name
            for sub in ast.iter_child_nodes(node):
                scanner.visit(sub)
    direct = scanner.findings
    # A graded function that calls a helper that uses a forbidden API uses it too.
    refs = {name: {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} for name, node in top.items()}
    users = {f.function for f in direct}
    changed = True
    while changed:
        changed = False
        for name, names in refs.items():
            if name not in users and names & users:
                users.add(name)
                changed = True
    out = list(direct)
    for name in users:
        for f in direct:
            if f.function != name and f.function in refs.get(name, set()) | _reach(refs, name):
                out.append(Finding(f.api, name, f.line))
    # A top-level name bound to a forbidden object (`from torch.optim import AdamW`,
    # `AdamW = torch.optim.AdamW`) is that graded name using it, unless rebound later.
    out += _bound_names(tree, scanner)
    # Module-level imports that no function uses still count as a finding of their own.
    used_apis = {f.api for f in out}
    out += [f for f in module_findings if f.api not in used_apis]
    return sorted(set(out), key=lambda f: (f.function, f.line, f.api))


def _bound_names(tree: ast.Module, scanner: _Scanner) -> list[Finding]:
    last: dict[str, tuple[ast.stmt, str | None]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            last[node.name] = (node, None)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for a in node.names:
                if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    last[a.asname or a.name] = (node, f"{node.module}.{a.name}")
                elif isinstance(node, ast.Import) and a.asname:
                    last[a.asname] = (node, a.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = scanner.dotted(node.value) if node.value is not None else None
            for t in targets:
                if isinstance(t, ast.Name):
                    last[t.id] = (node, value)
    return [Finding(full, name, node.lineno) for name, (node, full) in last.items()
            if full and _matches(full, scanner.patterns)]


def _reach(refs: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for n in refs.get(stack.pop(), set()):
            if n in refs and n not in seen:
                seen.add(n)
                stack.append(n)
    return seen


# -- constructs that exist to evade: flagged for a TA's review ----------------------------
# Reaching attributes or modules through computed names, frames, the garbage collector,
# code objects or the dispatcher, or touching the engine's own modules, has no place in
# a graded solution; each use is a flag (cell and line) a TA reviews, and an assignment
# may make flags cost the function's points ([forbidden] flags_cost_points = true).
FLAG_MODULES = {
    "importlib": "importing modules by computed name (importlib)",
    "ctypes": "raw memory access (ctypes)",
    "_ctypes": "raw memory access (ctypes)",
    "gc": "reaching objects through the garbage collector (gc)",
    "inspect": "reaching frames and code (inspect)",
    "runpy": "running code from files (runpy)",
    "marshal": "building code objects (marshal)",
    "pickle": "code execution through unpickling (pickle)",
    "dill": "code execution through unpickling (dill)",
    "builtins": "rewriting builtins (builtins)",
    "threading": "code that keeps running after a call returns (threading)",
    "_thread": "code that keeps running after a call returns (_thread)",
    "signal": "signal handlers (signal)",
    "autograder": "touching the grading engine's own modules",
    "harness": "touching the trusted harness",
    "reference": "touching the reference implementations",
    "torch.library": "registering or replacing operator kernels (torch.library)",
    "torch.utils._python_dispatch": "intercepting operators (torch.utils._python_dispatch)",
    "torch._ops": "operator internals (torch._ops)",
}
FLAG_CALLS = {
    "eval": "eval", "exec": "exec", "compile": "compile", "__import__": "__import__",
    "globals": "globals()", "vars": "vars()", "locals": "locals()", "breakpoint": "breakpoint()",
}
FLAG_ATTRIBUTES = {
    "__wrapped__", "__closure__", "__code__", "__globals__", "__builtins__", "__subclasses__",
    "__dict__", "__class__", "__bases__", "__mro__", "__getattribute__", "__self__", "__func__",
    "f_back", "f_globals", "f_locals", "f_builtins", "tb_frame", "gi_frame", "cr_frame",
    "_getframe", "modules", "settrace", "setprofile", "meta_path", "path_hooks",
}
# (module, attribute) pairs that are flags only on that module (sys.modules, os.write...).
FLAG_QUALIFIED = {
    ("sys", "modules"): "sys.modules", ("sys", "_getframe"): "sys._getframe", ("sys", "settrace"): "sys.settrace",
    ("sys", "setprofile"): "sys.setprofile", ("sys", "meta_path"): "sys.meta_path", ("sys", "argv"): "sys.argv",
    ("os", "write"): "os.write", ("os", "dup2"): "os.dup2", ("os", "fdopen"): "os.fdopen", ("os", "kill"): "os.kill",
    ("os", "fork"): "os.fork", ("os", "_exit"): "os._exit", ("os", "execv"): "os.execv", ("os", "system"): "os.system",
    ("torch", "ops"): "torch.ops", ("torch", "_C"): "torch._C", ("torch", "library"): "torch.library",
}
# Dunder attributes that ordinary classes use (super().__init__, self.__class__.__name__ is rare but
# harmless in a repr): not flagged.
BENIGN_ATTRIBUTES = {"__init__", "__name__", "__qualname__", "__doc__", "__len__", "__call__"}


@dataclass(frozen=True)
class Flag:
    construct: str   # what was used, in words
    function: str    # the top-level def or class it sits in ("<module>" at module level)
    line: int        # line in the extracted source
    statement: str = "code"  # "import" for an import statement (its uses are flagged where they are)

    def as_dict(self) -> dict:
        return {"construct": self.construct, "function": self.function, "line": self.line,
                "statement": self.statement}


class _FlagScanner(ast.NodeVisitor):
    def __init__(self):
        self.aliases: dict[str, str] = {}  # local name -> module path it stands for
        self.flags: list[Flag] = []
        self.owner = "<module>"

    def flag(self, what: str, node: ast.AST) -> None:
        kind = "import" if isinstance(node, ast.Import | ast.ImportFrom) else "code"
        self.flags.append(Flag(what, self.owner, getattr(node, "lineno", 0), kind))

    def _module_flag(self, module: str, node: ast.AST) -> None:
        for name, why in FLAG_MODULES.items():
            if module == name or module.startswith(name + "."):
                self.flag(why, node)
                return

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self.aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            self._module_flag(a.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.flag("a relative import (the engine's package)", node)
            return
        module = node.module or ""
        self._module_flag(module, node)
        for a in node.names:
            full = f"{module}.{a.name}"
            self.aliases[a.asname or a.name] = full
            self._module_flag(full, node)
            if (module, a.name) in FLAG_QUALIFIED:
                self.flag(FLAG_QUALIFIED[(module, a.name)], node)
            elif a.name == "*":
                self.flag(f"from {module} import *", node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name):
            name = node.func.id
            if name in FLAG_CALLS and name not in self.aliases:
                self.flag(FLAG_CALLS[name], node)
            if name in ("getattr", "setattr", "delattr", "hasattr") and len(node.args) >= 2:
                key = node.args[1]
                if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                    self.flag(f"{name} with a computed name", node)
                elif key.value in FLAG_ATTRIBUTES and key.value not in BENIGN_ATTRIBUTES:
                    self.flag(f"{name}(..., {key.value!r})", node)
            if name == "open" and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str) and node.args[0].value.startswith("/proc"):
                self.flag(f"open({node.args[0].value!r})", node)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        base = node.value
        if isinstance(base, ast.Name):
            module = self.aliases.get(base.id, "")
            root = module.split(".")[0]
            if (root, node.attr) in FLAG_QUALIFIED and module == root:
                self.flag(FLAG_QUALIFIED[(root, node.attr)], node)
            elif module:
                self._module_flag(f"{module}.{node.attr}", node)
        if node.attr in FLAG_ATTRIBUTES and node.attr not in ("modules", "_getframe", "settrace", "setprofile",
                                                               "meta_path"):
            self.flag(f"the attribute {node.attr}", node)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in ("__builtins__", "__loader__", "__spec__") and isinstance(node.ctx, ast.Load):
            self.flag(node.id, node)
        full = self.aliases.get(node.id)
        if full and isinstance(node.ctx, ast.Load) and "." in full:  # `from sys import modules`, used here
            module, _, attr = full.rpartition(".")
            if (module, attr) in FLAG_QUALIFIED:
                self.flag(FLAG_QUALIFIED[(module, attr)], node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and any(s in node.value for s in ("autograder", "/proc/self/fd", "harness.py")):
            self.flag(f"the string {node.value[:40]!r}", node)


def scan_flags(source: str) -> list[Flag]:
    """Constructs that exist to evade (see FLAG_*), attributed to top-level definitions."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return []
    scanner = _FlagScanner()
    for node in ast.walk(tree):  # aliases first, so uses anywhere resolve
        if isinstance(node, ast.Import | ast.ImportFrom):
            for a in node.names:
                if isinstance(node, ast.Import):
                    scanner.aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                elif not node.level:
                    scanner.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in tree.body:
        scanner.owner = node.name if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) \
            else "<module>"
        scanner.visit(node)
    seen, out = set(), []
    for f in scanner.flags:
        if (f.construct, f.function, f.line) not in seen:
            seen.add((f.construct, f.function, f.line))
            out.append(f)
    return sorted(out, key=lambda f: (f.line, f.construct))


# -- forbidden lists name objects: checked wherever an assignment is graded or released ---------
def _resolve_dotted(pattern: str) -> list[str]:
    """The dotted names `pattern` (fnmatch in its parts after the module) names now."""
    import importlib

    parts = pattern.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except Exception:  # noqa: BLE001  (not a module at this length)
            continue
        found = [(".".join(parts[:cut]), obj)]
        for part in parts[cut:]:
            nxt = []
            for name, o in found:
                keys = [k for k in dir(o) if fnmatch.fnmatchcase(k, part)] if any(c in part for c in "*?[") \
                    else [part]
                for k in keys:
                    try:
                        nxt.append((f"{name}.{k}", getattr(o, k)))
                    except Exception:  # noqa: BLE001
                        pass
            found = nxt
        return [name for name, _ in found]
    return []


def _dispatcher_ops(pattern: str) -> list[str]:
    """Operator names (ns::name) matching a `ns::glob` pattern, c10d's once it is imported."""
    import torch

    if pattern.split("::")[0].lstrip("_").startswith("c10d"):
        import torch.distributed  # noqa: F401
        try:
            import torch.distributed._functional_collectives  # noqa: F401
        except Exception:  # noqa: BLE001
            pass
    names = torch._C._dispatch_get_all_op_names()
    return [n for n in names if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(n.split(".")[0], pattern)]


def check_pattern(pattern: str, runtime: bool = False) -> str | None:
    """Why `pattern` names nothing (a typo, a routine this torch does not have), or None."""
    import torch

    if not isinstance(pattern, str) or not pattern:
        return f"{pattern!r} is not a name"
    if pattern.startswith("*."):
        if runtime:
            return f"{pattern!r}: a method of any object is a static pattern; list it under `apis`"
        return None if hasattr(torch.Tensor, pattern[2:]) else f"{pattern!r}: torch.Tensor has no {pattern[2:]!r}"
    if "::" in pattern:
        return None if _dispatcher_ops(pattern) else f"{pattern!r} matches no operator registered with the dispatcher"
    if pattern.startswith("torch.ops."):
        ns, _, rest = pattern[len("torch.ops."):].partition(".")
        return None if rest and _dispatcher_ops(f"{ns}::{rest}") else f"{pattern!r} matches no operator"
    return None if _resolve_dotted(pattern) else f"{pattern!r} names nothing in this torch ({torch.__version__})"


def validate(a) -> None:
    """Every name in the assignment's [forbidden] lists must name something: a misspelt
    entry would otherwise forbid nothing, silently. Raises AssignmentError with the file
    and each bad entry."""
    from autograder.assignment import AssignmentError

    problems = [f"apis: {why}" for p in a.forbidden if (why := check_pattern(p))]
    problems += [f"runtime: {why}" for p in a.runtime_forbidden if (why := check_pattern(p, runtime=True))]
    if problems:
        raise AssignmentError(f"{a.root / 'assignment.toml'}: [forbidden] " + "; ".join(problems))
