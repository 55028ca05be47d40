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


# -- the docker runner, through Podman's Docker-compatible API ---------------------------
@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory):
    """Environment that makes the engine grade through the docker runner: a Podman API
    service on a private socket and a test image (an empty root file system; the host's
    system and Python are mounted read-only, the way the local runner's bubblewrap does).
    Skips, saying why, where Podman is missing or cannot run containers."""
    import os
    import shutil
    import subprocess
    import sys
    import tarfile
    import time

    podman = shutil.which("podman")
    if podman is None:
        pytest.skip("podman is not installed (apt-get install podman runc); the docker runner cannot be tested")
    pytest.importorskip("docker", reason="the Docker SDK is not installed (pip install docker)")
    import docker

    d = tmp_path_factory.mktemp("podman")
    sock = d / "podman.sock"
    runtime = ["--runtime", "runc"] if shutil.which("runc") else []
    service = subprocess.Popen([podman, *runtime, "system", "service", "--time=0", f"unix://{sock}"],
                               stdout=open(d / "service.log", "w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.1)
        client = docker.DockerClient(base_url=f"unix://{sock}", timeout=120)
        client.version()
        root = d / "rootfs"
        for sub in ("tmp", "proc", "dev", "sys", "etc", "sandbox", "io"):
            (root / sub).mkdir(parents=True)
        with tarfile.open(d / "rootfs.tar", "w") as tar:
            tar.add(root, arcname=".")
        image = "localhost/dlopt-test-empty:latest"
        with open(d / "rootfs.tar", "rb") as f:
            client.api.import_image_from_data(f.read(), repository="localhost/dlopt-test-empty", tag="latest")
        client.containers.run(image, ["/bin/true"], remove=True, network_mode="none",
                              volumes={p: {"bind": p, "mode": "ro"} for p in ("/usr", "/bin", "/lib", "/lib64")
                                       if os.path.isdir(p)},
                              ulimits=[docker.types.Ulimit(name="nofile", soft=1024, hard=1024),
                                       docker.types.Ulimit(name="nproc", soft=1024, hard=1024)])
    except Exception as e:  # noqa: BLE001
        service.kill()
        pytest.skip(f"podman cannot run containers here ({type(e).__name__}: {str(e)[:300]}); "
                    f"see {d / 'service.log'}")
    mounts = [p for p in ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache")
              if os.path.exists(p)]  # merged-/usr symlinks (/lib, /lib64) bind their targets
    mounts += sorted({sys.base_prefix, sys.prefix} - {"/usr"})
    env = {"DLOPT_RUNNER": "docker", "DOCKER_HOST": f"unix://{sock}", "DLOPT_DOCKER_IMAGE": image,
           "DLOPT_DOCKER_PYTHON": sys.executable, "DLOPT_DOCKER_MOUNTS": ",".join(mounts),
           "DLOPT_DOCKER_ULIMITS": "nofile=1024:1024,nproc=1024:1024"}
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
