"""`dlopt import nbgrader|otter MASTER DIR`: a master of either tool becomes an assignment
folder that `dlopt check` accepts (the master earns full marks, its released stub zero),
with its public and hidden tests rewritten to call the student's functions on the
judge's side, and a README naming what has to be written by hand."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output, new_raw_cell

from autograder import assignment as assignments
from autograder.authoring.release import check


def nbg(cell, **flags):
    cell.metadata["nbgrader"] = {"schema_version": 3, "grade": False, "solution": False, "locked": False,
                                 "task": False, **flags}
    return cell


def write(path, cells):
    nbformat.write(new_notebook(cells=cells), str(path))
    return path


def run_import(tool, master, folder):
    r = subprocess.run([sys.executable, "-m", "autograder.cli", "import", tool, str(master), str(folder)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_an_nbgrader_master_imports_into_a_folder_check_accepts(tmp_path):
    master = write(tmp_path / "squares.ipynb", [
        new_markdown_cell("# Squares and cubes"),
        nbg(new_code_cell("def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION"),
            solution=True, grade_id="square"),
        nbg(new_code_cell("def cube(x):\n    return x ** 3"), solution=True, grade_id="cube"),
        nbg(new_code_cell("TABLE = [1, 4, 9]"), solution=True, grade_id="table"),
        nbg(new_code_cell("assert square(2) == 4\n### BEGIN HIDDEN TESTS\nassert square(-3) == 9\n"
                          "### END HIDDEN TESTS"), grade=True, locked=True, points=2, grade_id="t_square"),
        nbg(new_code_cell("assert cube(2) == 8"), grade=True, locked=True, points=1, grade_id="t_cube"),
        nbg(new_code_cell("assert TABLE[2] == 9"), grade=True, locked=True, points=1, grade_id="t_table"),
    ])
    folder = tmp_path / "squares_hw"
    out = run_import("nbgrader", master, folder)
    assert "2 public and 1 hidden" in out and "1 to write by hand" in out
    cfg = tomllib.loads((folder / "assignment.toml").read_text())
    assert cfg["points"] == 3 and cfg["title"] == "Squares and cubes" and cfg["finished"] is False
    public = (folder / "tests" / "test_public.py").read_text()
    hidden = (folder / "tests" / "test_hidden.py").read_text()
    assert "student.call('square', 2).value == 4" in public and "-3" not in public
    assert "student.call('square', -3).value == 9" in hidden
    readme = (folder / "README.md").read_text()
    assert "t_table" in readme and "TABLE" in readme
    report = check(assignments.load(folder))
    assert report.ok, report.lines


def test_an_otter_master_imports_into_a_folder_check_accepts(tmp_path):
    def ran(source, text):
        return new_code_cell(source, execution_count=1,
                             outputs=[new_output("execute_result", data={"text/plain": text}, execution_count=1)])

    master = write(tmp_path / "hw.ipynb", [
        new_raw_cell("# ASSIGNMENT CONFIG\nname: hw"),
        new_markdown_cell("# Otter homework"),
        new_raw_cell("# BEGIN QUESTION\nname: q1\npoints: 4"),
        new_markdown_cell("Write `square`."),
        new_raw_cell("# BEGIN SOLUTION"),
        new_code_cell("def square(x):\n    return x * x # SOLUTION"),
        new_raw_cell("# END SOLUTION"),
        new_raw_cell("# BEGIN TESTS"),
        ran("square(2) == 4", "True"),
        ran("# HIDDEN\nsquare(5)", "25"),
        new_raw_cell("# END TESTS"),
        new_raw_cell("# END QUESTION"),
    ])
    folder = tmp_path / "otter_hw"
    out = run_import("otter", master, folder)
    assert "1 public and 1 hidden" in out
    assert "student.call('square', 5).value == 25" in (folder / "tests" / "test_hidden.py").read_text()
    assert tomllib.loads((folder / "assignment.toml").read_text())["points"] == 4
    report = check(assignments.load(folder))
    assert report.ok, report.lines


def test_import_refuses_a_master_of_the_other_tool(tmp_path):
    master = write(tmp_path / "plain.ipynb", [new_code_cell("def f():\n    return 1")])
    r = subprocess.run([sys.executable, "-m", "autograder.cli", "import", "otter", str(master), str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not an otter master" in r.stdout


def test_helpers_of_tests_stay_the_tests_and_split_points_add_up(tmp_path):
    """A helper a test cell defines is called as the test's own, not the student's; a
    question of 1 point with 3 tests is worth exactly 1; an unrun master's expression tests
    go to the README instead of passing whatever the student returns."""
    def ran(source, text):
        return new_code_cell(source, execution_count=1,
                             outputs=[new_output("execute_result", data={"text/plain": text}, execution_count=1)])

    master = write(tmp_path / "hw.ipynb", [
        new_raw_cell("# BEGIN QUESTION\nname: q1\npoints: 1"),
        new_raw_cell("# BEGIN SOLUTION"),
        new_code_cell("def square(x):\n    return x * x # SOLUTION"),
        new_raw_cell("# END SOLUTION"),
        new_raw_cell("# BEGIN TESTS"),
        ran("def close(a, b):\n    return abs(a - b) < 1e-9\nclose(square(2), 4)", "True"),
        ran("square(3) == 9", "True"),
        ran("# HIDDEN\nsquare(4)", "16"),
        new_raw_cell("# END TESTS"),
        new_raw_cell("# END QUESTION"),
        new_raw_cell("# BEGIN QUESTION\nname: q2\npoints: 1"),
        new_raw_cell("# BEGIN TESTS"),
        new_code_cell("square(5) == 25"),  # never run: no recorded output
        new_raw_cell("# END TESTS"),
        new_raw_cell("# END QUESTION"),
    ])
    folder = tmp_path / "hw_split"
    run_import("otter", master, folder)
    public = (folder / "tests" / "test_public.py").read_text()
    assert "close(student.call('square', 2).value, 4)" in public and "student.call('close'" not in public
    assert "was not run" in (folder / "README.md").read_text()
    assert tomllib.loads((folder / "assignment.toml").read_text())["points"] == 1.0  # 3 x 1/3, exactly
    report = check(assignments.load(folder))
    assert report.ok, report.lines
