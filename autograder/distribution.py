"""The grading engine as a wheel for students' machines: `autograder/` and nothing else
(no reference, no assignment, no hidden suite, no server), so `dlopt-submit test` can run a
handout's public tests locally the way the server does. The course server builds it with
the student client's standard-library builder (`dlopt_submit.build.pure_wheel`) and serves
it beside the client at `/client`."""

from __future__ import annotations

from pathlib import Path

from autograder import __version__
from dlopt_submit import __version__ as client_version
from dlopt_submit.build import pure_wheel, wheel_name

NAME = "dlopt-engine"
# The project's own dependencies (pyproject.toml's [project] dependencies; a test keeps the
# two the same), and the client whose code the engine shares.
REQUIRES = ("torch>=2.4", "nbformat>=5.9", "pytest>=8", "rich>=13", "numpy>=1.26", "pyyaml>=6",
            f"dlopt-submit=={client_version}")
SUMMARY = "The dlopt grading engine, to run a handout's public tests locally (no course material)."


def engine_wheel_name() -> str:
    return wheel_name(NAME.replace("-", "_"), __version__)


def engine_wheel() -> tuple[str, bytes]:
    """(file name, bytes) of the engine's wheel: the `autograder` package's .py files."""
    return pure_wheel(NAME, __version__, {"autograder": Path(__file__).resolve().parent}, summary=SUMMARY,
                      requires_python=">=3.11", requires=REQUIRES, scripts={"dlopt": "autograder.cli:main"})
