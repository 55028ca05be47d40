"""The engine's shape, as tests (issue 26): no import cycle, `child/` imports nothing of the
engine but `protocol/`, the environment is read in one module, and the grading job
crosses into the judge under a schema of its own."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from autograder import assignment as assignments
from autograder.judge.job import SCHEMA, GradingJob, JobError
from autograder.sandbox import Limits

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("autograder", "server")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (REPO / pkg).rglob("*.py"):
            parts = list(p.relative_to(REPO).with_suffix("").parts)
            if "migrations" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, known: dict) -> set[str]:
    """Every project module `name` imports, at the top or inside a function (both are
    dependencies), except under `if TYPE_CHECKING:`. `from pkg import sub` depends on
    the submodule, not on the package's __init__."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module
            subs = [f"{base}.{a.name}" for a in node.names]
            targets = [s for s in subs if s in known] or [base]
        else:
            continue
        for t in targets:
            parts = t.split(".")
            for k in range(len(parts), 0, -1):
                if ".".join(parts[:k]) in known:
                    if ".".join(parts[:k]) != name:
                        found.add(".".join(parts[:k]))
                    break
    return found


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {m: _imports(m, p, known) for m, p in known.items()}


def test_no_import_cycle_anywhere_in_the_project():
    graph = _graph()
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_walker_sees_a_cycle_where_there_is_one(tmp_path):
    """The test above can fail: two modules importing each other inside functions."""
    (tmp_path / "a.py").write_text("def f():\n    from pkg import b\n")
    (tmp_path / "b.py").write_text("from pkg.a import f\n")
    known = {"pkg.a": tmp_path / "a.py", "pkg.b": tmp_path / "b.py"}
    assert _imports("pkg.a", known["pkg.a"], known) == {"pkg.b"}
    assert _imports("pkg.b", known["pkg.b"], known) == {"pkg.a"}


def test_the_child_imports_nothing_of_the_engine_but_the_protocol():
    graph = _graph()
    for mod, deps in graph.items():
        if mod.startswith("autograder.child"):
            bad = {d for d in deps if not d.startswith(("autograder.child", "autograder.protocol"))} - {"autograder"}
            assert not bad, f"{mod} imports {sorted(bad)}: the child may import only protocol/ (DESIGN.md)"


def test_the_environment_is_read_only_by_the_settings_module():
    """Every DLOPT_* variable is read in autograder/settings.py; the child's own start-up
    (child/: it may not import the settings) is the one exception, each line commented."""
    offenders = []
    for path in (REPO / "autograder").rglob("*.py"):
        rel = path.relative_to(REPO).as_posix()
        if rel == "autograder/settings.py":
            continue
        lines = path.read_text().splitlines()
        for n, line in enumerate(lines, 1):
            if any(s in line for s in ("os.environ", "os.getenv", "os.putenv", "os.unsetenv")):
                commented = "#" in line or any("start-up" in lines[k] for k in range(max(0, n - 4), n))
                if not (rel.startswith("autograder/child/") and commented):
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# -- the grading job ------------------------------------------------------------------------
def _job(tmp_path, **kw) -> GradingJob:
    a = assignments.load("adam")
    extracted = {"source": "def f():\n    return 1\n", "line_map": [[1, 1], [1, 2]], "notes": ["a note"],
                 "fatal": None}
    base = dict(label="sub.ipynb", out=str(tmp_path / "r.json"), device="cpu", suite="hidden", runner="local",
                weak=False)
    return GradingJob.build(a, extracted, **(base | kw))


def test_a_grading_job_crosses_as_json_and_comes_back_equal(tmp_path):
    job = _job(tmp_path, keyword="adam and not flaky")
    wire = json.loads(job.dumps())
    assert wire["schema"] == SCHEMA and wire["limits"]["call_seconds"] == job.limits.call_seconds
    back = GradingJob.from_json(wire)
    assert back == job
    assert isinstance(back.limits, Limits) and back.tests and all(Path(t).exists() for t in back.tests)
    assert back.forbidden and back.harness and back.runner == "local"


@pytest.mark.parametrize("change, says", [
    ({"schema": "dlopt.grading-job/0"}, "schema"),
    ({"device": "tpu"}, "device"),
    ({"runner": "kubernetes"}, "runner"),
    ({"limits": {"call_seconds": 1, "nonsense": 2}}, "limits"),
    ({"weak": "yes"}, "weak"),
    ({"tests": "test_hidden.py"}, "tests"),
    ({"line_map": [[1, "x"]]}, "line_map"),
    ({"pickle": "gASV"}, "unknown"),
])
def test_a_malformed_grading_job_is_refused(tmp_path, change, says):
    wire = json.loads(_job(tmp_path).dumps()) | change
    with pytest.raises(JobError, match=says):
        GradingJob.from_json(wire)


def test_a_job_missing_its_code_is_refused(tmp_path):
    wire = json.loads(_job(tmp_path).dumps())
    del wire["source"]
    with pytest.raises(JobError, match="missing"):
        GradingJob.from_json(wire)


def test_the_runner_is_the_jobs_not_an_environment_variable(tmp_path, monkeypatch):
    """The CLI's --runner and the server's setting reach the judge in the job; the
    environment is only the default when neither says."""
    from autograder.judge.student import StudentCode

    monkeypatch.setenv("DLOPT_RUNNER", "docker")
    job = _job(tmp_path, runner="local")
    code = StudentCode.for_job(job)
    try:
        assert type(code.runner).__name__ == "LocalRunner"
    finally:
        code.close()


def test_the_projects_own_imports_are_at_the_top_unless_a_comment_says_why():
    """An import of the project's own modules inside a function hides a dependency: only
    where it is measured to matter, with a comment (on its line or just above) saying so."""
    bare = []
    for path in (REPO / "autograder").rglob("*.py"):
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                    own = (isinstance(node, ast.ImportFrom) and node.level > 0) or (mod or "").startswith("autograder")
                    said = any("#" in lines[k] for k in range(max(0, node.lineno - 4), node.lineno))
                    if own and not said:
                        bare.append(f"{path.relative_to(REPO)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not bare, "\n".join(bare)


def test_the_wire_format_is_spelled_only_in_the_protocols_messages():
    """The transport's keys (the shared files' envelopes, a request's flags, a reply's
    fields the judge reads) appear as strings nowhere in the engine but messages.py."""
    wire = {"ok", "args_after", "shm", "shm_reply", "reply_shm", "return_args", "inference", "problems", "h"}
    spelled = []
    for path in (REPO / "autograder").rglob("*.py"):
        if path.relative_to(REPO).as_posix() == "autograder/protocol/messages.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in wire:
                spelled.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert not spelled, "\n".join(spelled)
