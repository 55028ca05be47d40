"""The static forbidden-API check: aliases, helpers, getattr, and no false alarms."""

from __future__ import annotations

from autograder.judge.forbidden import scan

PATTERNS = ["torch.optim.SGD", "torch.optim.AdamW", "torch._foreach_*", "torch._fused_*"]


def found(src):
    return {(f.api, f.function) for f in scan(src, PATTERNS)}


def test_direct_alias_and_from_imports():
    src = ("import torch\nimport torch.optim as opt\nfrom torch.optim import AdamW as A\n"
           "def a(p):\n    return torch.optim.SGD([p], lr=1)\n"
           "def b(p):\n    return opt.SGD([p], lr=1)\n"
           "class C(torch.optim.Optimizer):\n    def step(self):\n        return A\n")
    assert found(src) == {("torch.optim.SGD", "a"), ("torch.optim.SGD", "b"), ("torch.optim.AdamW", "C"),
                          ("torch.optim.AdamW", "A")}  # the name A is bound to it


def test_helpers_propagate_to_the_graded_function():
    src = ("import torch\ndef _h(xs):\n    torch._foreach_add_(xs, 1)\n"
           "def _h2(xs):\n    return _h(xs)\ndef adam_step(p):\n    return _h2([p])\n")
    assert ("torch._foreach_add_", "adam_step") in found(src)


def test_getattr_with_a_constant_name():
    src = "import torch\ndef f(p):\n    return getattr(torch, '_fused_adamw_')(p)\n"
    assert found(src) == {("torch._fused_adamw_", "f")}


def test_names_built_from_constant_pieces():
    # getattr with a name joined from pieces, and a dotted name built as a string (for
    # importlib): both fold to the constant they spell. A string built from pieces that
    # names nothing forbidden (a label) is no finding, and never a crash of the scan.
    src = ("import torch\ndef f(p):\n    return getattr(torch.optim, ''.join(['Ad', 'amW']))([p])\n"
           "def g():\n    return ''.join(['torch.optim.', 'SGD'])\n"
           "def h():\n    return ''.join(['a', 'b']), chr(97) + 'x', 'loss: ' + 'ok'\n")
    assert found(src) == {("torch.optim.AdamW", "f"), ("torch.optim.SGD", "g")}


def test_allowed_uses_are_not_flagged():
    src = ("import torch\nclass AdamW(torch.optim.Optimizer):\n    pass\n"
           "def f(p):\n    return torch.add(p, 1), torch.optim.Optimizer, torch.foreach\n"
           "SGD = 3\ndef g():\n    return SGD\n")
    assert found(src) == set()


def test_unused_module_level_import_is_still_reported():
    assert found("from torch.optim import SGD\n") == {("torch.optim.SGD", "SGD")}
    assert found("import torch.optim as o\nx = 1\n") == set()


def test_a_graded_name_bound_to_a_forbidden_object_uses_it():
    # issue 13: a file with no AdamW class, only torch's imported under the graded name.
    assert ("torch.optim.AdamW", "AdamW") in found("from torch.optim import AdamW\n")
    assert ("torch.optim.AdamW", "AdamW") in found("import torch\nAdamW = torch.optim.AdamW\n")
    assert ("torch.optim.AdamW", "AdamW") in found("import torch.optim as o\nclass AdamW(o.AdamW):\n    pass\n")
    # rebound by the student's own class afterwards: their class is what is graded
    src = "from torch.optim import AdamW\nimport torch\nclass AdamW(torch.optim.Optimizer):\n    pass\n"
    assert ("torch.optim.AdamW", "AdamW") not in found(src)


def test_syntax_errors_do_not_crash_the_scan():
    assert scan("def (:\n", PATTERNS) == []


def test_dynamic_check_sees_direct_calls_only():
    """The child's tracer: a forbidden call made by the student's code (through a helper)
    is attributed to the graded function; one torch makes internally (zero_grad's
    _foreach_zero_) is not the student's."""
    import torch

    from autograder.judge.student import StudentCode
    from autograder.sandbox import Limits

    src = ("import torch\n"
           "def helper(xs):\n    torch._foreach_add_(xs, 1.0)\n"
           "def f(x):\n    xs = [x.clone()]\n    helper(xs)\n    return xs[0]\n"
           "class Opt(torch.optim.Optimizer):\n    def __init__(self, ps):\n"
           "        super().__init__(ps, {'foreach': True})\n    def step(self):\n        self.zero_grad()\n"
           "def g(x):\n    p = torch.nn.Parameter(x.clone())\n    p.grad = torch.ones_like(p)\n"
           "    Opt([p]).step()\n    return x\n")
    code = StudentCode(src, Limits(), forbidden_patterns=PATTERNS)
    try:
        assert torch.equal(code.call("f", torch.ones(2)).value, torch.full((2,), 2.0))
        assert code.forbidden_found == [{"api": "torch._foreach_add_", "function": "f", "line": 3, "source_line": 3,
                                         "cell": None, "where": "line 3"}]  # located as the student sees it
        code.forbidden_found.clear()
        code.call("g", torch.ones(2))
        assert code.forbidden_found == []
    finally:
        code.close()


def test_a_misspelt_forbidden_name_is_an_error_with_the_file(tmp_path):
    import shutil

    import pytest

    from autograder import assignment
    from autograder.judge.forbidden import validate

    root = tmp_path / "probe"
    shutil.copytree(assignment.REPO_ROOT / "tests" / "fixtures" / "trust", root)
    toml = root / "assignment.toml"
    good = toml.read_text()
    validate(assignment.load(root))  # as shipped: every name resolves
    for bad, key in (('apis = ["torch.optim.AdamWW"]', "apis"), ('runtime = ["aten::_foreach_ad_*"]', "runtime"),
                     ('apis = ["*.backwards"]', "apis")):
        toml.write_text(good.replace('apis = ["torch._foreach_*"]', bad if key == "apis" else 'apis = []')
                        .replace('runtime = ["aten::_foreach_*"]', bad if key == "runtime" else 'runtime = []'))
        with pytest.raises(assignment.AssignmentError, match=f"assignment.toml.*{key}"):
            validate(assignment.load(root))
    toml.write_text(good + "\nflags_cost_point = true\n")  # misspelt key, in [forbidden]
    with pytest.raises(assignment.AssignmentError, match=r"unknown key 'forbidden.flags_cost_point' in \[forbidden\] \(did you mean 'forbidden.flags_cost_points'\?\)"):
        assignment.load(root)
