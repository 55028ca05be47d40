"""`dlopt new`: a TA's starting point is a working assignment, checked as generated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import assignment as assignments
from autograder.authoring import scaffold

REPO = Path(__file__).resolve().parents[1]


def _dlopt(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DLOPT_ASSIGNMENTS_DIR"}
    return subprocess.run([sys.executable, "-m", "autograder.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_dlopt_new_then_check_with_examples_passes(tmp_path):
    made = _dlopt("new", "demo_slug", cwd=tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    checked = _dlopt("check", "demo_slug", "--examples", cwd=tmp_path)
    out = checked.stdout + checked.stderr
    assert checked.returncode == 0, out
    for line in ("reference: test_reference.py passed", "master: 10 / 10", "released stub: 0 / 10",
                 "correct_alternative.py: 10 / 10", "bug_old_velocity.py: 0 / 10", "bug_in_place.py: 9 / 10",
                 "check passed"):
        assert line in out, (line, out)


def test_the_generated_toml_names_every_key_of_the_schema(tmp_path):
    folder = scaffold.write("every_key", tmp_path)
    text = (folder / "assignment.toml").read_text()
    assignments.read_config(folder / "assignment.toml")
    for key, sub in assignments.SCHEMA.items():
        assert f"{key} =" in text or f"[{key}]" in text, key
        if isinstance(sub, dict):
            for inner, kind in sub.items():
                if isinstance(kind, assignments.TableOf):  # [forbidden.functions.NAME]: a table per name
                    assert f"[{key}.{inner}." in text, f"{key}.{inner}"
                    continue
                assert f"{inner} =" in text, f"{key}.{inner}"


def test_dlopt_new_refuses_an_existing_folder_or_a_bad_slug(tmp_path):
    scaffold.write("taken", tmp_path)
    with pytest.raises(FileExistsError):
        scaffold.write("taken", tmp_path)
    for bad in ("Bad", "9lives", "a-b", "../up", "x"):
        with pytest.raises(ValueError):
            scaffold.write(bad, tmp_path)
    again = _dlopt("new", "taken", "--dir", str(tmp_path), cwd=tmp_path)
    assert again.returncode == 2 and "exists already" in again.stdout
