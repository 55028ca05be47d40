from __future__ import annotations

from pathlib import Path

import pytest

from autograder import assignment as assignments

from sandbox_marks import needs_bwrap  # noqa: F401  (re-exported)

REPO = Path(__file__).resolve().parents[1]
ADAM_EXAMPLES = REPO / "assignments" / "adam" / "examples"


@pytest.fixture(scope="session")
def adam():
    return assignments.load("adam")


@pytest.fixture(scope="session")
def correct_source() -> str:
    """A correct adam solution, written differently from the master's."""
    return (ADAM_EXAMPLES / "correct_alternative.py").read_text()


@pytest.fixture(scope="session")
def buggy_source() -> str:
    """An adam solution without bias correction: honest score 46."""
    return (ADAM_EXAMPLES / "bug_no_bias_correction.py").read_text()


# -- the docker runner, through Podman's Docker-compatible API ---------------------------
@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory):
    """Environment that makes the engine grade through the docker runner: Podman's API on a
    private socket and a test image (docker/podman_dev.py). Skips, saying why, where Podman
    is missing or cannot run containers."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("podman_dev", REPO / "docker" / "podman_dev.py")
    podman_dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(podman_dev)
    try:
        service, env = podman_dev.start(tmp_path_factory.mktemp("podman"))
    except podman_dev.EngineUnavailable as e:
        pytest.skip(f"{e}; the docker runner cannot be tested here")
    yield env
    service.terminate()
    service.wait(10)


@pytest.fixture(params=["local", "docker"])
def runner(request, monkeypatch):
    """Run a test through each runner (docker: skipped with the reason where Podman is missing)."""
    if request.param == "docker":
        for k, v in request.getfixturevalue("docker_engine").items():
            monkeypatch.setenv(k, v)
    else:
        monkeypatch.delenv("DLOPT_RUNNER", raising=False)
    return request.param
