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

from autograder.assignment import AssignmentError


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


def _dotted(node: ast.AST, aliases: dict[str, str], base_of=None) -> str | None:
    """The dotted path a Name or an attribute chain on an imported name stands for
    (`base_of` resolves the chain's base, when a scanner knows more forms than these)."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        base = (base_of or (lambda n: _dotted(n, aliases)))(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


class _Scanner(ast.NodeVisitor):
    def __init__(self, patterns: list[str]):
        self.patterns = patterns
        self.aliases: dict[str, str] = {}
        self.findings: list[Finding] = []
        self.owner = "<module>"

    def dotted(self, node: ast.AST) -> str | None:
        name = _dotted(node, self.aliases, self.dotted)
        if name is not None:
            return name
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and len(node.args) >= 2):
            attr = _fold(node.args[1])  # a constant, or "".join([...]) / chr(...) of constants
            base = self.dotted(node.args[0]) if attr is not None else None
            return f"{base}.{attr}" if base else None
        return None

    def _string(self, value: str, node: ast.AST, built: bool) -> None:
        """A string built from constants that names a forbidden API (importlib's way in)."""
        name = value.strip()
        if built and name and all(p.isidentifier() for p in name.split(".")):
            self.report(name, node)

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
        folded = _fold(node)   # "".join([...]) or chr(...) of constants
        if folded is not None:
            self._string(folded, node, built=True)
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


# -- the allow-list scan: what a submission may import and reach ------------------------------
# A graded solution needs torch, numpy and a little of the standard library. Everything a
# submission imports or reaches is checked against the lists below; anything else (another
# module, a path that leaves torch's public API, a builtin that runs or finds code, a
# computed attribute name, a string built to name a module) is a flag with its cell and line
# for a TA's review, and costs the function's points where the assignment says so
# ([forbidden] flags_cost_points = true). An assignment extends the lists with
# [forbidden] allow_imports (module names or prefixes).
ALLOWED_MODULES = (
    "__future__", "math", "cmath", "numbers", "random", "statistics", "fractions", "decimal",
    "typing", "typing_extensions", "dataclasses", "functools", "itertools", "collections", "abc", "enum",
    "copy", "warnings", "time", "contextlib", "heapq", "bisect", "string", "re", "textwrap", "pprint",
    "json", "numpy", "torch", "triton", "einops",
    # Plotting and progress bars in a notebook's own cells (the grader may lack them; a
    # missing one costs nothing).
    "matplotlib", "seaborn", "tqdm", "IPython.display",
)
# Inside allowed packages: what leaves their public, computational API.
DENIED_PATHS = {
    "torch.ops": "calling operators by name (torch.ops)",
    "torch.library": "registering or replacing operator kernels (torch.library)",
    "torch.utils.cpp_extension": "compiling native code (torch.utils.cpp_extension)",
    "torch.hub": "downloading and running code (torch.hub)",
    "torch.package": "loading packaged code (torch.package)",
    "torch.multiprocessing": "starting processes (torch.multiprocessing)",
    "torch.overrides": "intercepting torch functions (torch.overrides)",
    "torch.utils.dlpack": "raw memory exchange (torch.utils.dlpack)",
    "torch.from_file": "sharing memory through files (torch.from_file)",
    "torch.load": "unpickling (torch.load)",
    "torch.save": "writing files (torch.save)",
    "numpy.ctypeslib": "raw memory access (numpy.ctypeslib)",
    "numpy.f2py": "compiling native code (numpy.f2py)",
    "numpy.load": "unpickling (numpy.load)",
    "numpy.memmap": "sharing memory through files (numpy.memmap)",
    "numpy.fromfile": "reading files (numpy.fromfile)",
}
# In an assignment with leaderboards (autograder/judge/boards.py), the constructs the known
# timing cheats need: flagged for the staff's review wherever they are (a submission with
# such a flag ranks only once a TA has cleared it). Streams and events (work or clocks
# outside the harness's), CUDA graphs (work replayed outside the window), clocks and
# benchmark timers.
TIMING_PATHS = {
    "torch.cuda.Stream": "a CUDA stream of its own (work outside the timed stream)",
    "torch.cuda.ExternalStream": "a CUDA stream of its own (work outside the timed stream)",
    "torch.cuda.stream": "switching CUDA streams (work outside the timed stream)",
    "torch.cuda.set_stream": "switching CUDA streams (work outside the timed stream)",
    "torch.cuda.streams": "CUDA streams and events (torch.cuda.streams)",
    "torch.cuda.Event": "a CUDA event (a timer object)",
    "torch.cuda.graph": "a CUDA graph (work captured and replayed)",
    "torch.cuda.graphs": "a CUDA graph (work captured and replayed)",
    "torch.cuda.CUDAGraph": "a CUDA graph (work captured and replayed)",
    "torch.cuda.make_graphed_callables": "a CUDA graph (work captured and replayed)",
    "time": "the clock (time)",
    "triton.testing": "Triton's benchmarking timers (triton.testing)",
    "torch.utils.benchmark": "torch's benchmarking timers (torch.utils.benchmark)",
    "torch.profiler": "the profiler (its timers and hooks)",
    "torch.autograd.profiler": "the profiler (its timers and hooks)",
}
# Builtins a solution may call; every other builtin (eval, exec, compile, __import__,
# globals, locals, vars, open, input, breakpoint, help, __build_class__...) is a flag
# unless the name is a function's own local or parameter.
ALLOWED_BUILTINS = frozenset({
    "abs", "aiter", "all", "anext", "any", "ascii", "bin", "bool", "bytearray", "bytes", "callable", "chr",
    "classmethod", "complex", "delattr", "dict", "divmod", "enumerate", "filter", "float", "format",
    "frozenset", "getattr", "hasattr", "hash", "hex", "id", "int", "isinstance", "issubclass", "iter",
    "len", "list", "map", "max", "memoryview", "min", "next", "object", "oct", "ord", "pow", "print",
    "property", "range", "repr", "reversed", "round", "set", "setattr", "slice", "sorted", "staticmethod",
    "str", "sum", "super", "tuple", "type", "zip", "NotImplemented", "Ellipsis", "__name__", "__doc__",
    "__debug__", "True", "False", "None",
})
# Dunder attributes an ordinary class or a repr uses; any other is a flag.
ALLOWED_DUNDERS = frozenset({
    "__init__", "__name__", "__qualname__", "__doc__", "__len__", "__call__", "__repr__", "__str__",
    "__setstate__", "__getstate__", "__enter__", "__exit__", "__iter__", "__next__", "__getitem__",
    "__setitem__", "__contains__", "__eq__", "__hash__", "__version__", "__module__", "__post_init__",
    "__add__", "__mul__", "__sub__", "__truediv__", "__neg__", "__matmul__",
})
# Attributes that reach frames, code and the interpreter's machinery on any object.
FLAG_ATTRIBUTES = {
    "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "tb_frame", "tb_next", "gi_frame", "cr_frame",
    "ag_frame", "gi_code", "_getframe", "settrace", "setprofile", "meta_path", "path_hooks",
    # memory shared with processes forked later (the ring's ranks), or files
    "share_memory_", "_share_filename_cpu_", "_share_fd_cpu_", "tofile",
}
# Strings naming these modules (after constant folding) are flagged even when nothing is
# built from pieces: their only use in a solution would be importing them by name.
DANGEROUS_MODULES = frozenset({
    "os", "sys", "subprocess", "ctypes", "_ctypes", "importlib", "code", "codeop", "runpy", "builtins", "gc",
    "inspect", "marshal", "pickle", "dill", "pty", "posix", "multiprocessing", "socket", "shutil", "mmap",
    "types", "operator", "linecache", "threading", "_thread", "signal", "autograder", "harness", "reference",
    "pathlib", "io", "tempfile", "timeit", "pdb", "doctest", "torch._C", "torch.ops", "torch.ctypes",
})


def _module_roots() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names) | {"autograder", "harness", "reference", "torch", "numpy",
                                                  "triton", "_ctypes", "dill", "cloudpickle"}


@dataclass(frozen=True)
class Flag:
    construct: str   # what was used, in words
    function: str    # the top-level def or class it sits in ("<module>" at module level)
    line: int        # line in the extracted source
    statement: str = "code"  # "import" for an import statement (its uses are flagged where they are)

    def as_dict(self) -> dict:
        return {"construct": self.construct, "function": self.function, "line": self.line,
                "statement": self.statement}


def _allowed_module(name: str, allowed: tuple[str, ...]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed)


def _fold(node: ast.AST) -> str | None:
    """The value of a string expression made of constants ("auto" + "grader",
    f"{'a'}b", "".join(["a", "b"]), "%s%s" % ("a", "b"), chr(97)), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp):
        left = _fold(node.left)
        if isinstance(node.op, ast.Add):
            right = _fold(node.right)
            return left + right if left is not None and right is not None else None
        if isinstance(node.op, ast.Mod) and left is not None:
            items = node.right.elts if isinstance(node.right, ast.Tuple) else [node.right]
            vals = [_fold(i) for i in items]
            if all(v is not None for v in vals):
                try:
                    return left % tuple(vals)
                except (TypeError, ValueError):
                    return None
        return None
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            x = _fold(v.value) if isinstance(v, ast.FormattedValue) else _fold(v)
            if x is None:
                return None
            parts.append(x)
        return "".join(parts)
    if isinstance(node, ast.Call) and not node.keywords:
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "join" and len(node.args) == 1 \
                and isinstance(node.args[0], ast.List | ast.Tuple):
            sep = _fold(f.value)
            vals = [_fold(e) for e in node.args[0].elts]
            if sep is not None and all(v is not None for v in vals):
                return sep.join(vals)
        if isinstance(f, ast.Name) and f.id == "chr" and len(node.args) == 1 \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, int):
            try:
                return chr(node.args[0].value)
            except (ValueError, OverflowError):
                return None
    return None


def _function_locals(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    """Names a function binds itself (parameters, assignments, loop and `with` targets,
    imports, nested definitions): there, `open` or `input` is the student's own."""
    a = fn.args
    names = {x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs]}
    names |= {x.arg for x in (a.vararg, a.kwarg) if x is not None}
    body = fn.body if isinstance(fn.body, list) else [fn.body]
    todo = list(body)
    while todo:
        n = todo.pop()
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(n.name)
            continue
        if isinstance(n, ast.Lambda):
            continue
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            names.add(n.id)
        elif isinstance(n, ast.Import | ast.ImportFrom):
            names |= {x.asname or x.name.split(".")[0] for x in n.names}
        elif isinstance(n, ast.ExceptHandler) and n.name:
            names.add(n.name)
        todo.extend(ast.iter_child_nodes(n))
    return names


class _FlagScanner(ast.NodeVisitor):
    def __init__(self, allowed: tuple[str, ...], timing: bool = False):
        self.allowed = allowed
        self.denied = {**DENIED_PATHS, **(TIMING_PATHS if timing else {})}
        self.aliases: dict[str, str] = {}  # local name -> module path it stands for
        self.flags: list[Flag] = []
        self.owner = "<module>"
        self.locals: list[set[str]] = []   # the enclosing functions' own names
        self.roots = _module_roots()

    def flag(self, what: str, node: ast.AST) -> None:
        kind = "import" if isinstance(node, ast.Import | ast.ImportFrom) else "code"
        self.flags.append(Flag(what, self.owner, getattr(node, "lineno", 0), kind))

    # -- module paths ---------------------------------------------------------------
    def check_path(self, path: str, node: ast.AST) -> bool:
        """Flag a dotted path that is not allowed: a module off the list, a path into a
        denied part of an allowed package, a private name, or an attribute that leaves
        the package (torch.ctypes is ctypes). True when flagged."""
        root = path.split(".")[0]
        if not _allowed_module(path, self.allowed) and not any(a.startswith(path + ".") for a in self.allowed):
            if isinstance(node, ast.Import | ast.ImportFrom):
                self.flag(f"import of {path} (not on this assignment's list of modules)", node)
            else:
                self.flag(f"{path} (the module {root} is not on this assignment's list)", node)
            return True
        for denied, why in self.denied.items():
            if path == denied or path.startswith(denied + "."):
                if denied in TIMING_PATHS or not _allowed_module(denied, self.allowed[len(ALLOWED_MODULES):]):
                    self.flag(why, node)
                    return True
        parts = path.split(".")
        for i, part in enumerate(parts[1:], 1):
            if part.startswith("_") and part not in ALLOWED_DUNDERS:
                self.flag(f"{'.'.join(parts[:i + 1])} (not {root}'s public API)", node)
                return True
        left = _leaves_package(parts)
        if left:
            self.flag(f"{'.'.join(parts[:left[0] + 1])} (it is the module {left[1]}, outside {root})", node)
            return True
        return False

    def dotted(self, node: ast.AST) -> str | None:
        return _dotted(node, self.aliases)

    # -- visitors ---------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self.check_path(a.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.flag("a relative import (the engine's package)", node)
            return
        module = node.module or ""
        if self.check_path(module, node):
            return
        for a in node.names:
            if a.name == "*":
                self.flag(f"from {module} import *", node)
            else:
                self.check_path(f"{module}.{a.name}", node)

    def visit_FunctionDef(self, node) -> None:
        for d in node.decorator_list:
            self.visit(d)
        for d in [*node.args.defaults, *node.args.kw_defaults]:
            if d is not None:
                self.visit(d)
        self.locals.append(_function_locals(node))
        for stmt in node.body:
            self.visit(stmt)
        self.locals.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.locals.append(_function_locals(node))
        self.visit(node.body)
        self.locals.pop()

    def visit_Call(self, node: ast.Call) -> None:
        folded = _fold(node)   # "".join([...]) or chr(...) of constants
        if folded is not None:
            self._string(folded, node, built=True)
        if isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr", "delattr", "hasattr") \
                and len(node.args) >= 2 and not self._local(node.func.id):
            key = _fold(node.args[1])
            if key is None:
                self.flag(f"{node.func.id} with a computed name", node)
            elif key.startswith("__") and key not in ALLOWED_DUNDERS or key in FLAG_ATTRIBUTES:
                self.flag(f"{node.func.id}(..., {key!r})", node)
            else:
                base = self.dotted(node.args[0])
                if base:
                    self.check_path(f"{base}.{key}", node)
        if isinstance(node.func, ast.Name) and node.func.id == "open" and node.args:
            target = _fold(node.args[0])
            if target and target.startswith("/proc"):
                self.flag(f"open({target!r})", node)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        path = self.dotted(node)
        if path is not None and isinstance(node.ctx, ast.Load):
            if self.check_path(path, node):
                return      # one flag per path, not one per prefix
        elif node.attr.startswith("__") and node.attr not in ALLOWED_DUNDERS:
            self.flag(f"the attribute {node.attr}", node)
        elif node.attr in FLAG_ATTRIBUTES:
            self.flag(f"the attribute {node.attr}", node)
        self.generic_visit(node)

    def _local(self, name: str) -> bool:
        return any(name in scope for scope in self.locals)

    def visit_Name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load) or node.id in self.aliases or self._local(node.id):
            return
        import builtins

        if (hasattr(builtins, node.id) or node.id.startswith("__")) and node.id not in ALLOWED_BUILTINS \
                and not (isinstance(getattr(builtins, node.id, None), type)
                         and issubclass(getattr(builtins, node.id), BaseException)) \
                and not self._module_binds(node.id):
            self.flag(f"the builtin {node.id}", node)

    def _module_binds(self, name: str) -> bool:
        return name in getattr(self, "module_names", ())

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self._string(node.value, node, built=False)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        value = _fold(node)
        if value is not None:
            self._string(value, node, built=True)
            return
        self.generic_visit(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        value = _fold(node)
        if value is not None:
            self._string(value, node, built=True)
            return
        self.generic_visit(node)

    def _string(self, value: str, node: ast.AST, built: bool) -> None:
        if " " not in value and any(s in value for s in ("autograder", "/proc/self", "harness.py")):
            self.flag(f"the string {value[:40]!r}", node)
            return
        name = value.strip()
        if not name or name == "__main__" or len(name) > 80 or not all(p.isidentifier() for p in name.split(".")):
            return
        if name in DANGEROUS_MODULES or (name.startswith("__") and name not in ALLOWED_DUNDERS and name.endswith("__")):
            self.flag(f"the string {name!r} (names {'a module' if '__' not in name else 'an attribute'})", node)
        elif built and name.split(".")[0] in self.roots and not _allowed_module(name, self.allowed):
            self.flag(f"the string {name!r}, built from pieces (names a module)", node)


def _leaves_package(parts: list[str]) -> tuple[int, str] | None:
    """(index, module) where walking `parts` from an importable root reaches a module of
    another package (torch.ctypes is ctypes, torch.os is os); None when it stays inside or
    cannot be followed (a name this install lacks)."""
    import importlib
    import types

    root = parts[0]
    try:
        obj = importlib.import_module(root)
    except Exception:  # noqa: BLE001  (not installed here: nothing to follow)
        return None
    for i, part in enumerate(parts[1:], 1):
        try:
            obj = getattr(obj, part)
        except Exception:  # noqa: BLE001
            try:
                obj = importlib.import_module(".".join(parts[:i + 1]))
            except Exception:  # noqa: BLE001
                return None
        if isinstance(obj, types.ModuleType):
            name = obj.__name__
            if name.split(".")[0] != root:
                return i, name
        elif not isinstance(obj, type):
            return None        # a function or a value: what it does is judged elsewhere
    return None


def scan_flags(source: str, allow_imports: list[str] | tuple[str, ...] = (), timing: bool = False) -> list[Flag]:
    """Everything `source` imports or reaches that is not on the allow-lists above (and
    the assignment's `allow_imports`), attributed to top-level definitions; with
    `timing` (an assignment with leaderboards), the TIMING_PATHS too."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return []
    scanner = _FlagScanner(tuple(ALLOWED_MODULES) + tuple(allow_imports), timing)
    scanner.module_names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
                            and n.id in ("input", "help", "exit", "quit")}  # a notebook's own variable
    for node in ast.walk(tree):  # aliases first, so uses anywhere resolve
        if isinstance(node, ast.Import):
            for a in node.names:
                scanner.aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            for a in node.names:
                scanner.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in tree.body:
        scanner.owner = node.name if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) \
            else "<module>"
        try:
            scanner.visit(node)
        except RecursionError:
            scanner.flag("code nested too deeply to read", node)
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


def scan_functions(source: str, rules: dict) -> list[Finding]:
    """The findings of per-function rules ({name: {"apis": [...]}}): each rule's patterns
    count in that function only (its own body and the helpers it calls, as scan attributes
    them), never elsewhere or at module level."""
    out = []
    for name, rule in rules.items():
        patterns = list(rule.get("apis", []))
        if patterns:
            out += [f for f in scan(source, patterns) if f.function == name]
    return out


def validate(a) -> None:
    """Every name in the assignment's [forbidden] lists must name something: a misspelt
    entry would otherwise forbid nothing, silently. Raises AssignmentError with the file
    and each bad entry."""
    problems = [f"apis: {why}" for p in a.forbidden if (why := check_pattern(p))]
    problems += [f"runtime: {why}" for p in a.runtime_forbidden if (why := check_pattern(p, runtime=True))]
    for name, rules in getattr(a, "function_rules", {}).items():
        problems += [f"functions.{name}.apis: {why}" for p in rules.get("apis", []) if (why := check_pattern(p))]
        problems += [f"functions.{name}.runtime: {why}" for p in rules.get("runtime", [])
                     if (why := check_pattern(p, runtime=True))]
    if problems:
        raise AssignmentError(f"{a.root / 'assignment.toml'}: [forbidden] " + "; ".join(problems))
