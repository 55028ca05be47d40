"""Marks shared by the engine's tests (a module of its own: `from conftest import ...`
would find tests/server/conftest.py when both folders are collected)."""

import pytest

from autograder.sandbox.local import bwrap_path

needs_bwrap = pytest.mark.skipif(
    bwrap_path() is None, reason="bubblewrap is missing or cannot create namespaces on this machine "
                                 "(apt-get install bubblewrap); the strong sandbox cannot be tested")
