from __future__ import annotations

from pathlib import Path

import pytest

from autograder import assignment as assignments
from autograder.sandbox.local import bwrap_path

REPO = Path(__file__).resolve().parents[1]
ADAM_EXAMPLES = REPO / "assignments" / "adam" / "examples"

needs_bwrap = pytest.mark.skipif(
    bwrap_path() is None, reason="bubblewrap is missing or cannot create namespaces on this machine "
                                 "(apt-get install bubblewrap); the strong sandbox cannot be tested")


@pytest.fixture(scope="session")
def adam():
    return assignments.load("adam")


@pytest.fixture(scope="session")
def correct_source() -> str:
    """A correct adam solution, written differently from the master's."""
    return (ADAM_EXAMPLES / "correct_alternative.py").read_text()


@pytest.fixture(scope="session")
def buggy_source() -> str:
    """An adam solution without bias correction: honest score 48."""
    return (ADAM_EXAMPLES / "bug_no_bias_correction.py").read_text()
