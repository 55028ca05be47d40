"""`dlopt audit`: mutation testing of a master through the real engine."""

from __future__ import annotations

import tomllib

from autograder import assignment as assignments
from autograder.authoring import audit, scaffold
from autograder.authoring.release import check

TOY = '''
import torch

def f(x, w, n):
    y = x.clone()
    for i in range(n):
        y = y * w + 1.0
        y.add_(x[1:3].sum(dim=-1, keepdim=True))
    if n > 2 and not w.isnan().any():
        y = -y
    y = torch.maximum(y, x)
    return torch.mean(y.double(), dim=0), torch.float64

def untouched(x):
    return x + 1
'''


def test_every_rule_makes_mutants_and_only_of_graded_functions():
    found = audit.mutants(TOY, ["f"])
    ops = {m.operator for m in found}
    assert ops >= {"arithmetic", "comparison", "constant", "sign", "boolean", "drop statement", "swap arguments",
                   "off by one", "reduction", "reduction dim", "no clone", "in place", "cast"}, ops
    assert all(m.function == "f" for m in found)
    for m in found:  # each mutant is a program that differs from the master in one place
        compile(m.source, "mutant", "exec")
        assert m.source != TOY


def test_the_helpers_a_graded_function_uses_are_mutated_too():
    src = ("def _scale(x):\n    return x * 2.0\n\ndef _twice(x):\n    return _scale(x) - 1\n\n"
           "def g(x):\n    return _twice(x) + 1\n\ndef unused(x):\n    return x - 1\n")
    assert audit.reached(__import__("ast").parse(src), ["g"]) == ["g", "_twice", "_scale"]
    assert {m.function for m in audit.mutants(src, ["g"])} == {"g", "_twice", "_scale"}


def test_keys_stay_the_same_when_the_code_around_moves():
    before = {m.key for m in audit.mutants(TOY, ["f"])}
    after = {m.key for m in audit.mutants("# a comment\nimport math\n" + TOY, ["f"])}
    assert before == after


def test_an_audit_kills_the_scaffolds_mutants_records_equivalents_and_goes_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("DLOPT_TRUTH_CACHE", str(tmp_path / "cache" / "truth"))
    folder = scaffold.write("audited", tmp_path)
    a = assignments.load(folder)
    report = audit.audit(a, jobs=2)
    assert report.cached == 0
    (f,) = report.functions.values()
    assert f.name == "heavy_ball_step" and f.counted == 6 and f.killed == 6 and not f.survived
    audit.write_record(a, report, None)
    key = audit.mutants(audit.master_source(a), ["heavy_ball_step"])[0].key
    path = folder / "audit.toml"
    path.write_text(path.read_text() + f'\n[[equivalent]]\nkey = "{key}"\nreason = "for the test"\n')
    again = audit.audit(a, jobs=2)
    assert again.functions["heavy_ball_step"].equivalent == 1 and again.functions["heavy_ball_step"].counted == 5
    # the same suite and engine: every outcome comes from the judge's cache, none graded again
    assert again.cached == 5 and again.functions["heavy_ball_step"].killed == 5
    assert audit.audit(a, jobs=2, fresh=True).cached == 0
    audit.write_record(a, again, None)
    kept = tomllib.loads(path.read_text())
    assert kept["equivalent"] == [{"key": key, "reason": "for the test"}]  # a new run keeps the equivalents
    assert audit.stale(a) is None
    suite = folder / "tests" / "test_hidden.py"
    suite.write_text(suite.read_text() + "\n# changed\n")
    assert "older than the suite" in audit.stale(a)
    assert any("older than the suite" in line for line in check(a).lines)
