"""Intake of notebooks and .py files, and release of student versions."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder.authoring.notebook import ReleaseError, extract, strip_solutions
from autograder.authoring.release import release

REPO = Path(__file__).resolve().parents[1]


def write_nb(path: Path, cells, **meta) -> Path:
    nb = new_notebook(cells=cells, metadata=meta)
    nbformat.write(nb, str(path))
    return path


def test_definitions_mode_keeps_definitions_and_drops_work(tmp_path):
    nb = write_nb(tmp_path / "s.ipynb", [
        new_markdown_cell("# hi"),
        new_code_cell("import torch\nfrom math import sqrt as s\nEPS = 1e-8\nDEV = torch.device('cpu')\n"
                      "NAMES = ['a', 'b']\nNEG = float('-inf')\nSIZES = tuple(range(4))\nX = make_data()"),
        new_code_cell("!pip install foo\n%matplotlib inline\ndef f(x):\n    return x + EPS\nf?"),
        new_code_cell("model = train()\nfor i in range(10**9):\n    pass\nprint('hi')"),
        new_code_cell("%%bash\necho hi"),
        new_code_cell("class A:\n    pass\ntry:\n    import triton\nexcept ImportError:\n    triton = None"),
    ])
    out = extract(nb)
    assert out.fatal is None
    for kept in ("import torch", "EPS = 1e-8", "DEV = torch.device", "NAMES =", "def f(x):", "class A:",
                 "import triton", "NEG = float('-inf')", "SIZES = tuple(range(4))"):
        assert kept in out.source
    for dropped in ("pip", "matplotlib", "train()", "range(10**9)", "print('hi')", "echo", "f?", "make_data()"):
        assert dropped not in out.source
    assert any("cell magic" in n for n in out.notes)
    # Every extracted line maps back to its cell and line there.
    line = out.source.splitlines().index("def f(x):")
    assert out.line_map[line] == [3, 3]


def test_ipython_syntax_is_read_as_ipython_reads_it(tmp_path):
    """A backslash-continued `!pip install` (one command to IPython), `files = !ls`, a line
    magic inside a loop: none of them makes the cell a syntax error, and the functions of
    the cell are graded, at their own line numbers."""
    nb = write_nb(tmp_path / "s.ipynb", [
        new_code_cell("!pip install torch \\\n    numpy \\\n    tqdm\nfiles = !ls\nfor i in range(2):\n    %time x = i\n"
                      "def f(x):\n    return x % 2\n"),
    ])
    out = extract(nb)
    assert not any("syntax error" in n for n in out.notes), out.notes
    assert "def f(x):" in out.source and "return x % 2" in out.source
    assert "numpy" not in out.source and "!ls" not in out.source and "%time" not in out.source
    assert out.line_map[out.source.splitlines().index("def f(x):")] == [1, 7]  # cell 1, line 7


def test_all_mode_keeps_top_level_work(tmp_path):
    p = tmp_path / "s.py"
    p.write_text("import torch\nX = torch.randn(3)\nprint(X)\n")
    assert "print(X)" in extract(p, mode="all").source
    assert "print(X)" not in extract(p).source


def test_a_syntax_error_costs_only_its_cell(tmp_path):
    nb = write_nb(tmp_path / "s.ipynb", [
        new_code_cell("def good():\n    return 1"),
        new_code_cell("def broken(:\n    return 2"),
    ])
    out = extract(nb)
    assert "def good" in out.source and "broken" not in out.source
    assert any("cell 2: syntax error at line 1" in n for n in out.notes)


@pytest.mark.parametrize("content,reason", [
    (b"{not json", "not valid JSON"),
    (b'{"cells": [], "nbformat": 2, "nbformat_minor": 0, "metadata": {}}', "unsupported notebook format"),
    (b'{"cells": [], "nbformat": 7, "nbformat_minor": 0, "metadata": {}}', "unsupported notebook format"),
    (b'[1, 2, 3]', "not a Jupyter notebook"),
    (b"\xff\xfe\x00bad", "not UTF-8"),
    (b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": 5}', "could not be read"),
])
def test_unreadable_files_end_as_a_reason_not_an_exception(tmp_path, content, reason):
    p = tmp_path / "s.ipynb"
    p.write_bytes(content)
    out = extract(p)
    assert out.fatal is not None and reason in out.fatal


def test_nbformat3_notebooks_are_converted(tmp_path):
    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {"name": ""}, "worksheets": [{"cells": [
        {"cell_type": "code", "input": "def f():\n    return 3", "language": "python", "outputs": []}]}]}
    p = tmp_path / "old.ipynb"
    p.write_text(json.dumps(v3))
    assert "def f():" in extract(p).source


def test_vscode_and_colab_metadata_and_list_sources(tmp_path):
    """VS Code writes sources as lists of lines and its own metadata; Colab adds ids."""
    data = {"nbformat": 4, "nbformat_minor": 2,
            "metadata": {"colab": {"provenance": []}, "vscode": {"interpreter": {"hash": "x"}}},
            "cells": [{"cell_type": "code", "execution_count": None, "metadata": {"id": "abc"},
                       "outputs": [], "source": ["def f(x):\n", "    return x\n"]}]}
    p = tmp_path / "v.ipynb"
    p.write_text(json.dumps(data))
    out = extract(p)
    assert out.fatal is None and "def f(x):" in out.source


def test_strip_solutions_both_dialects_with_hint():
    src = ("def f(x):\n    ### BEGIN SOLUTION\n    # HINT: square it\n    return x * x\n    ### END SOLUTION\n"
           "def g(x):\n    # BEGIN SOLUTION\n    return -x\n    # END SOLUTION\n"
           "### BEGIN HIDDEN TESTS\nassert f(2) == 4\n### END HIDDEN TESTS\n")
    out = strip_solutions(src)
    assert "x * x" not in out and "-x" not in out and "assert" not in out
    assert "raise NotImplementedError('implement f')" in out  # the released stub
    assert "raise NotImplementedError('implement g')" in out  # the released stub
    assert "# HINT: square it" in out
    compile(out, "x", "exec")


@pytest.mark.parametrize("src", ["### BEGIN SOLUTION\nx = 1\n", "x = 1\n# END SOLUTION\n",
                                 "# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION\n"])
def test_unpaired_markers_are_author_errors(src):
    with pytest.raises(ReleaseError):
        strip_solutions(src)


def test_release_leaks_no_solution_hidden_test_or_reference(adam, tmp_path):
    out = tmp_path / "release"
    written = release(adam, out)
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert names == {"adam.ipynb", "tests/test_public.py", "harness.py", "assignment.toml", "SUBMIT.md"}, names
    assert {p.relative_to(out).as_posix() for p in written} == names
    released_text = "\n".join(p.read_text() for p in out.rglob("*") if p.is_file())
    # Every line of every solution region of the master is absent from everything released.
    master = nbformat.read(str(adam.master), as_version=4)
    solution_lines = []
    for cell in master.cells:
        inside = False
        for line in cell.source.splitlines():
            if "BEGIN SOLUTION" in line:
                inside = True
            elif "END SOLUTION" in line:
                inside = False
            elif inside and line.strip() and not line.strip().startswith("#"):
                solution_lines.append(line.strip())
    assert len(solution_lines) > 30
    notebook_code = "\n".join(c.source for c in nbformat.read(str(out / "adam.ipynb"), as_version=4).cells
                              if c.cell_type == "code")
    generic = {"else:", "continue", "loss = None", "return loss", "d = grad"}
    for line in solution_lines:
        if line not in generic:
            assert line not in {ln.strip() for ln in notebook_code.splitlines()}, line
        if len(line) >= 25:  # distinctive lines appear in no released file at all
            assert line not in released_text, line
    # No hidden test, no reference, no example.
    for hidden in adam.hidden_tests:
        assert "def test_" not in released_text or hidden.name not in names
        for fn in [ln for ln in hidden.read_text().splitlines() if ln.startswith("def test_")]:
            assert fn not in released_text
    assert "from reference" not in released_text and "import reference" not in released_text
    assert "hidden_tests = []" in (out / "assignment.toml").read_text()
    nb = nbformat.read(str(out / "adam.ipynb"), as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert nb.metadata["dlopt"] == {"slug": "adam", "released": True, "from": "dlopt"}
