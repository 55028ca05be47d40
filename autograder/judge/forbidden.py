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
    # Module-level imports that no function uses still count as a finding of their own.
    used_apis = {f.api for f in out}
    out += [f for f in module_findings if f.api not in used_apis]
    return sorted(set(out), key=lambda f: (f.function, f.line, f.api))


def _reach(refs: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for n in refs.get(stack.pop(), set()):
            if n in refs and n not in seen:
                seen.add(n)
                stack.append(n)
    return seen
