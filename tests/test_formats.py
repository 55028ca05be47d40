"""Masters written for nbgrader and otter-grader: every construct of each tool's format,
released as each tool documents its student version (nbgrader's ClearSolutions,
ClearHiddenTests, ClearMarkScheme, LockCells, ClearOutput; Otter Assign's solution
removal, test cells, prompts, ignore and seed lines), and each way a master could leak
refused with its cell and line."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output, new_raw_cell

from autograder.authoring.formats import detect, leak_check, release_otter
from autograder.authoring.notebook import ReleaseError, release_notebook


def nbg(cell, **flags):
    meta = {"schema_version": 3, "grade": False, "solution": False, "locked": False, "task": False}
    meta.update(flags)
    cell.metadata["nbgrader"] = meta
    return cell


def released(tmp_path, cells, name="m.ipynb"):
    path = tmp_path / name
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": {"language": "python", "name": "python3", "display_name": "Python 3"}}),
                   str(path))
    return release_notebook(path, "hw")


# -- nbgrader ----------------------------------------------------------------------------------
def nbgrader_master():
    ran = new_code_cell("print(square(3))", execution_count=4,
                        outputs=[new_output("stream", name="stdout", text="9\n")])
    return [
        new_markdown_cell("# Homework\nRead this."),
        nbg(new_code_cell('def square(x):\n    """x squared."""\n    ### BEGIN SOLUTION\n    return x * x\n'
                          '    ### END SOLUTION'), solution=True, grade_id="square"),
        nbg(new_code_cell("def cube(x):\n    return x ** 3"), solution=True, grade_id="cube"),
        nbg(new_code_cell("# BEGIN SOLUTION\nTABLE = [1, 2]\n# END SOLUTION\nLIMIT = 3"), solution=True,
            grade_id="table"),
        nbg(new_code_cell("assert square(2) == 4\n### BEGIN HIDDEN TESTS\nassert square(5) == 25\n"
                          "### END HIDDEN TESTS"), grade=True, locked=True, points=2, grade_id="t_square"),
        nbg(new_markdown_cell("Explain why."), grade=True, solution=True, points=1, grade_id="why"),
        nbg(new_markdown_cell("My answer:\n### BEGIN SOLUTION\nbecause it is\n### END SOLUTION"), grade=True,
            solution=True, points=1, grade_id="why2"),
        nbg(new_markdown_cell("Plot it.\n=== BEGIN MARK SCHEME ===\nfull marks for labelled axes\n"
                              "=== END MARK SCHEME ==="), task=True, locked=True, points=3, grade_id="task"),
        nbg(new_code_cell("import math"), locked=True, grade_id="setup"),
        ran,
    ]


def test_nbgrader_master_releases_as_nbgrader_documents(tmp_path):
    nb = released(tmp_path, nbgrader_master())
    src = [c.source for c in nb.cells]
    assert nb.metadata["dlopt"]["from"] == "nbgrader"
    assert src[0] == "# Homework\nRead this."
    # a region: the stub at the BEGIN line's indentation, the rest of the cell kept
    assert src[1] == 'def square(x):\n    """x squared."""\n    # YOUR CODE HERE\n    raise NotImplementedError()'
    assert src[2] == "# YOUR CODE HERE\nraise NotImplementedError()"  # a solution cell without regions: whole
    assert src[3] == "# YOUR CODE HERE\nraise NotImplementedError()\nLIMIT = 3"
    assert src[4] == "assert square(2) == 4"  # hidden tests gone, no stub
    assert src[5] == "YOUR ANSWER HERE" and src[6] == "My answer:\nYOUR ANSWER HERE"
    assert src[7] == "Plot it."  # the mark scheme gone
    assert src[8] == "import math"
    assert nb.cells[9].outputs == [] and nb.cells[9].execution_count is None
    # LockCells: tests, tasks and read-only cells locked; answers only undeletable
    meta = [c.metadata for c in nb.cells]
    assert meta[1]["deletable"] is False and "editable" not in meta[1]
    for i in (4, 7, 8):
        assert meta[i]["deletable"] is False and meta[i]["editable"] is False
    assert not any("nbgrader" in m for m in meta)  # no cell flagged as solution or grade remains


@pytest.mark.parametrize("cells,says", [
    ([nbg(new_code_cell("y = 0"), solution=True, grade_id="y"),
      new_code_cell("x = 1\n### BEGIN SOLUTION\nx = 2\n### END SOLUTION")], "cell 2, line 2: a solution region in a cell"),
    ([nbg(new_code_cell("### BEGIN HIDDEN TESTS\nassert 1\n### END HIDDEN TESTS"), solution=True, grade_id="a")],
     "hidden tests in a cell that is not"),
    ([nbg(new_markdown_cell("=== BEGIN MARK SCHEME ===\nx\n=== END MARK SCHEME ==="), grade=True, solution=True,
          points=1, grade_id="a")], "mark scheme in a cell that is not"),
    ([nbg(new_code_cell("### AUTOTEST square(3)"), grade=True, locked=True, points=1, grade_id="a")], "AUTOTEST"),
    ([nbg(new_code_cell("x"), solution=True, grade_id="a"), nbg(new_code_cell("y"), solution=True, grade_id="a")],
     "duplicate grade_id"),
    ([nbg(new_code_cell("assert 1"), grade=True, locked=True, grade_id="a")], "has no points"),
    ([nbg(new_code_cell("x"), solution=True)], "without a grade_id"),
    ([nbg(new_code_cell("def f():\n    return 1\n    ### END SOLUTION"), solution=True, grade_id="a")],
     "END SOLUTION without BEGIN SOLUTION"),
    ([nbg(new_code_cell("### BEGIN SOLUTION\nx = 1"), solution=True, grade_id="a")], "without END SOLUTION"),
    ([nbg(new_code_cell("x = 1"), solution=True, grade_id="a"),
      new_code_cell("### BEGIN SOLUTON\nanswer = 42\n### END SOLUTON")], "cell 2, line 1: a solution marker"),
])
def test_nbgrader_masters_that_would_leak_are_refused(tmp_path, cells, says):
    with pytest.raises(ReleaseError, match=says):
        released(tmp_path, cells)


# -- otter ---------------------------------------------------------------------------------------
def otter_master():
    return [
        new_raw_cell("# ASSIGNMENT CONFIG\nname: hw\nexport_cell: false"),
        new_markdown_cell("# Homework"),
        new_raw_cell("# BEGIN QUESTION\nname: q1\npoints: 3"),
        new_markdown_cell("**Question 1.** Write `square`."),
        new_raw_cell("# BEGIN SOLUTION"),
        new_code_cell("def square(x):\n    y = x * x # SOLUTION NO PROMPT\n    return y # SOLUTION\n\n"
                      "nine = square(3) # SOLUTION\nnp.random.seed(42) # SEED", execution_count=1,
                      outputs=[new_output("execute_result", data={"text/plain": "9"}, execution_count=1)]),
        new_code_cell("def cube(x):\n    # BEGIN SOLUTION\n    return x ** 3\n    # END SOLUTION"),
        new_code_cell("# BEGIN SOLUTION NO PROMPT\nHELPER = 1\n# END SOLUTION\nd['k'], t = 1, 2 # SOLUTION"),
        new_markdown_cell("**SOLUTION**: squaring"),
        new_raw_cell("# END SOLUTION"),
        new_raw_cell("# BEGIN TESTS"),
        new_code_cell("square(2) == 4"),
        new_code_cell("# HIDDEN\nsquare(3) == 9"),
        new_code_cell('""" # BEGIN TEST CONFIG\nhidden: true\npoints: 1\n""" # END TEST CONFIG\nsquare(4) == 16'),
        new_raw_cell("# END TESTS"),
        new_raw_cell("# END QUESTION"),
        new_raw_cell("# BEGIN QUESTION\nname: q2\nmanual: true\npoints: 2"),
        new_markdown_cell("**Question 2.** Why?"),
        new_raw_cell("# BEGIN SOLUTION"),
        new_markdown_cell("Because of the chain rule."),
        new_raw_cell("# END SOLUTION"),
        new_raw_cell("# END QUESTION"),
        new_markdown_cell("```otter\n# BEGIN QUESTION\nname: q3\nmanual: true\n```"),
        new_markdown_cell("**Question 3.** Discuss."),
        new_markdown_cell("```otter\n# BEGIN PROMPT\n```"),
        new_markdown_cell("_Your discussion here._"),
        new_markdown_cell("```otter\n# END PROMPT\n```"),
        new_markdown_cell("```otter\n# BEGIN SOLUTION\n```"),
        new_markdown_cell("The answer is 42."),
        new_markdown_cell("```otter\n# END SOLUTION\n```"),
        new_markdown_cell("```otter\n# END QUESTION\n```"),
        new_code_cell("# IGNORE\nrun_my_private_checks()"),
        new_code_cell("import numpy as np\nnp.seterr(all='ignore') # IGNORE\n# BEGIN IGNORE\nsecret = 1\n"
                      "# END IGNORE\nZ = 0"),
    ]


def test_otter_master_releases_as_otter_documents(tmp_path):
    nb = released(tmp_path, otter_master())
    src = [c.source for c in nb.cells]
    assert nb.metadata["dlopt"]["from"] == "otter"
    assert src == [
        "# Homework",
        "**Question 1.** Write `square`.",
        "def square(x):\n    ...\n\nnine = ...",       # NO PROMPT line and # SEED line gone
        "def cube(x):\n    ...",                       # a block: one ...
        "d['k'], t = ...",                             # NO PROMPT block gone; a tuple target kept
        "**Question 2.** Why?",
        "_Type your answer here, replacing this text._",  # manual, no prompt: otter's response cell
        "**Question 3.** Discuss.",
        "_Your discussion here._",                     # the prompt is kept, its solution removed
        "import numpy as np\nZ = 0",                   # ignore lines and block gone, # IGNORE cell gone
    ], src
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code")
    assert "otter_answer_cell" in nb.cells[2].metadata["tags"]


def test_otter_strip_solutions_from_all_cells_takes_lecture_solutions_out(tmp_path):
    """A lecture notebook: solution lines outside any question. Without the option the leak
    check refuses the release; with it they are replaced as in a solution block."""
    lecture = [new_markdown_cell("# Lecture 3"),
               new_code_cell("def lr_schedule(t):\n    return 0.1 / (1 + t) # SOLUTION\n"),
               new_code_cell("# BEGIN SOLUTION\nsecret = 42\n# END SOLUTION\nshown = 1")]
    config = "# ASSIGNMENT CONFIG\nname: lecture3\nstrip_solutions_from_all_cells: true"
    nb = released(tmp_path, [new_raw_cell(config), *lecture])
    assert [c.source for c in nb.cells] == ["# Lecture 3", "def lr_schedule(t):\n    ...\n", "...\nshown = 1"]
    with pytest.raises(ReleaseError, match="SOLUTION marker"):
        released(tmp_path, [new_raw_cell("# ASSIGNMENT CONFIG\nname: lecture3"), *lecture], name="off.ipynb")


def test_otter_tests_are_split_public_and_hidden():
    nb = new_notebook(cells=otter_master())
    _, questions = release_otter(nb)
    q1 = questions[0]
    assert [q.name for q in questions] == ["q1", "q2", "q3"] and q1.points == 3
    assert [(t["source"], t["hidden"]) for t in q1.tests] == [
        ("square(2) == 4", False), ("square(3) == 9", True), ("square(4) == 16", True)]
    assert q1.tests[2]["points"] == 1


@pytest.mark.parametrize("cells,says", [
    ([new_raw_cell("#BEGIN TESTS"), new_code_cell("secret_answer = 42")], "cell 1, line 1: an otter boundary"),
    ([new_raw_cell("# BEGIN QUESTION\nname: q"), new_raw_cell("#END QUESTION"), new_code_cell("x = 1")],
     "looks like an otter boundary"),
    ([new_raw_cell("# BEGIN QUESTION\nname: q"), new_code_cell("x = 2 # SOLUTION"), new_raw_cell("# END QUESTION")],
     "otter # SOLUTION marker"),
    ([new_raw_cell("# BEGIN QUESTION\nname: q"), new_markdown_cell("**SOLUTION** 42"), new_raw_cell("# END QUESTION")],
     r"\*\*SOLUTION\*\* answer"),
    ([new_raw_cell("# BEGIN QUESTION\nname: q"), new_raw_cell("# BEGIN SOLUTION"),
      new_code_cell("# BEGIN SOLUTION\nx = 1"), new_raw_cell("# END SOLUTION"), new_raw_cell("# END QUESTION")],
     "BEGIN SOLUTION without END SOLUTION"),
    ([new_raw_cell("# BEGIN QUESTION\nname: q"), new_raw_cell("# BEGIN TESTS"), new_markdown_cell("text"),
      new_raw_cell("# END TESTS"), new_raw_cell("# END QUESTION")], "non-code cell in a tests block"),
    ([new_raw_cell("# BEGIN QUESTION\nname: q"), new_raw_cell("# END SOLUTION")], "END SOLUTION without"),
    ([new_raw_cell("# BEGIN SOLUTION"), new_code_cell("x = 1")], "outside a question"),
    ([new_raw_cell("# BEGIN QUESTION\npoints: 1")], "without a name"),
    ([new_raw_cell("# BEGIN QUESTION\nname: q"), new_raw_cell("# BEGIN SOLUTION"), new_code_cell("x = 1")],
     "ends inside"),
])
def test_otter_masters_that_would_leak_are_refused(tmp_path, cells, says):
    with pytest.raises(ReleaseError, match=says):
        released(tmp_path, cells)


def test_dialects_are_detected():
    assert detect(new_notebook(cells=otter_master())) == "otter"
    assert detect(new_notebook(cells=nbgrader_master())) == "nbgrader"
    assert detect(new_notebook(cells=[new_code_cell("### BEGIN SOLUTION\nx\n### END SOLUTION")])) == "dlopt"


def test_the_leak_check_runs_on_our_own_masters_too(tmp_path):
    """A dlopt master with a mistyped marker ships its answer: refused, with cell and line."""
    with pytest.raises(ReleaseError, match="cell 1, line 2"):
        released(tmp_path, [new_code_cell("def f():\n    ### BEGIN SOLUTON\n    return 42\n")])
    nb = new_notebook(cells=[new_code_cell("x = 1", outputs=[new_output("stream", name="stdout", text="1")])])
    with pytest.raises(ReleaseError, match="outputs"):
        leak_check(nb)


def test_every_course_master_releases_clean():
    from autograder import assignment as assignments
    root = Path(__file__).resolve().parents[1] / "assignments"
    for d in sorted(p for p in root.iterdir() if (p / "assignment.toml").exists()):
        a = assignments.load(d)
        if a.master is not None:
            leak_check(release_notebook(a.master, a.slug))


def test_attachments_and_widget_state_of_solutions_do_not_ship(tmp_path):
    """A mark scheme's image and a solution's image leave with their text; the master's
    saved widget state (its run's outputs) leaves too; the leak check refuses either."""
    task = nbg(new_markdown_cell("Explain.\n=== BEGIN MARK SCHEME ===\nFull marks: ![](attachment:answer.png)\n"
                                 "=== END MARK SCHEME ==="), task=True, locked=True, points=1, grade_id="t")
    task["attachments"] = {"answer.png": {"image/png": "iVBORw0KGgo="}}
    md = new_markdown_cell("Figure: ![](attachment:keep.png)\n<!-- BEGIN SOLUTION -->![](attachment:sol.png)"
                           "<!-- END SOLUTION -->")
    md["attachments"] = {"keep.png": {"image/png": "AAAA"}, "sol.png": {"image/png": "BBBB"}}
    path = tmp_path / "m.ipynb"
    nb = new_notebook(cells=[task], metadata={"widgets": {"application/vnd.jupyter.widget-state+json": {"x": 42}}})
    nbformat.write(nb, str(path))
    out = release_notebook(path, "hw")
    assert "attachments" not in out.cells[0] and "widgets" not in out.metadata
    nbformat.write(new_notebook(cells=[md]), str(path))
    out = release_notebook(path, "hw")
    assert set(out.cells[0].attachments) == {"keep.png"}
    bad = new_notebook(cells=[new_markdown_cell("text")])
    bad.cells[0]["attachments"] = {"sol.png": {"image/png": "BBBB"}}
    with pytest.raises(ReleaseError, match="attachment 'sol.png'"):
        leak_check(bad)


def test_otter_hidden_tests_are_read_as_otter_reads_them(tmp_path):
    """A blank line before `# HIDDEN` still hides the test; a `# HIDDEN` further down,
    which otter would not read, is refused rather than shipped as a public test."""
    def master(test_source):
        return new_notebook(cells=[new_raw_cell("# BEGIN QUESTION\nname: q"), new_raw_cell("# BEGIN TESTS"),
                                   new_code_cell(test_source), new_raw_cell("# END TESTS"),
                                   new_raw_cell("# END QUESTION")])

    _, qs = release_otter(master("\n# HIDDEN\nsquare(3) == 9"))
    assert qs[0].tests[0]["hidden"] is True
    with pytest.raises(ReleaseError, match="looks meant to hide it"):
        release_otter(master("import numpy as np\n# HIDDEN\nsquare(3) == 9"))


@pytest.mark.parametrize("line", ["return x * x  #  SOLUTION", "K = 42 # Solution", "#BEGIN_SOLUTION",
                                  "**SOLUTION**: 42"])
def test_near_miss_markers_are_refused(line):
    with pytest.raises(ReleaseError):
        leak_check(new_notebook(cells=[new_code_cell(line)]))


@pytest.mark.parametrize("line", ["hs = append_hidden(hs, h)", "legend_hidden = True", "# prepend hidden states",
                                  "# append solution to the list", "We recommend solutions that vectorise.",
                                  "Write your **solution** in the cell below.", "# end test setup",
                                  "# hidden layer size", "Solution: see the lecture", "the end of the solution"])
def test_ordinary_course_text_is_not_refused(line):
    leak_check(new_notebook(cells=[new_code_cell(line), new_markdown_cell(line)]))


def test_a_public_test_file_with_hidden_material_is_refused(tmp_path):
    from autograder.authoring.release import _refuse_hidden_in_public
    p = tmp_path / "test_public.py"
    p.write_text("def test_a(student):\n    ### BEGIN HIDDEN TESTS\n    assert 1\n")
    with pytest.raises(ReleaseError, match="line 2"):
        _refuse_hidden_in_public(p)
