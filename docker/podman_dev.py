"""A Docker-compatible engine for development and CI on a machine without Docker:
Podman's API service on a private socket, and a sandbox test image.

    python docker/podman_dev.py run -- dlopt check --examples --runner docker
    python docker/podman_dev.py env          # starts the service and prints export lines

The test image is an empty root file system; the sandbox mounts the host's system and
Python directories read-only into it (DLOPT_DOCKER_MOUNTS), the way the local runner's
bubblewrap does. On a real GPU host build docker/runner.Dockerfile instead (README,
"Deploying a course"). This host's limits cannot be raised, so containers get
`nofile=1024:1024,nproc=1024:1024`.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

IMAGE_REPO, IMAGE_TAG = "localhost/dlopt-test-empty", "latest"
IMAGE = f"{IMAGE_REPO}:{IMAGE_TAG}"
ULIMITS = "nofile=1024:1024,nproc=1024:1024"


class EngineUnavailable(RuntimeError):
    pass


def start(workdir: Path) -> tuple[subprocess.Popen, dict]:
    """Start the service, make the image, check a container runs; (service, env for the runner)."""
    podman = shutil.which("podman")
    if podman is None:
        raise EngineUnavailable("podman is not installed (apt-get install podman runc)")
    try:
        import docker
    except ImportError as e:
        raise EngineUnavailable("the Docker SDK is not installed (pip install docker)") from e
    workdir.mkdir(parents=True, exist_ok=True)
    sock = workdir / "podman.sock"
    runtime = ["--runtime", "runc"] if shutil.which("runc") else []
    service = subprocess.Popen([podman, *runtime, "system", "service", "--time=0", f"unix://{sock}"],
                               stdout=open(workdir / "service.log", "w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.1)
        client = docker.DockerClient(base_url=f"unix://{sock}", timeout=120)
        client.version()
        buf = io.BytesIO()
        with tempfile.TemporaryDirectory() as d, tarfile.open(fileobj=buf, mode="w") as tar:
            for sub in ("tmp", "proc", "dev", "sys", "etc", "sandbox", "io"):
                (Path(d) / sub).mkdir()
            tar.add(d, arcname=".")
        client.api.import_image_from_data(buf.getvalue(), repository=IMAGE_REPO, tag=IMAGE_TAG)
        # merged-/usr symlinks (/lib, /lib64) bind their targets
        mounts = [p for p in ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache")
                  if os.path.exists(p)]
        mounts += sorted({sys.base_prefix, sys.prefix} - {"/usr"})
        ulimits = [docker.types.Ulimit(name=n, soft=1024, hard=1024) for n in ("nofile", "nproc")]
        client.containers.run(IMAGE, [sys.executable, "-c", "pass"], remove=True, network_mode="none",
                              volumes={p: {"bind": p, "mode": "ro"} for p in mounts}, ulimits=ulimits)
    except Exception as e:  # noqa: BLE001
        service.kill()
        raise EngineUnavailable(f"podman cannot run containers here ({type(e).__name__}: {str(e)[:300]}); "
                                f"see {workdir / 'service.log'}") from e
    env = {"DLOPT_RUNNER": "docker", "DOCKER_HOST": f"unix://{sock}", "DLOPT_DOCKER_IMAGE": IMAGE,
           "DLOPT_DOCKER_PYTHON": sys.executable, "DLOPT_DOCKER_MOUNTS": ",".join(mounts),
           "DLOPT_DOCKER_ULIMITS": ULIMITS}
    return service, env


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "env"):
        print(__doc__)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="dlopt-podman-"))
    try:
        service, env = start(workdir)
    except EngineUnavailable as e:
        print(f"no engine: {e}", file=sys.stderr)
        return 3
    if argv[0] == "env":
        for k, v in env.items():
            print(f"export {k}={v}")
        print(f"# podman service pid {service.pid}; stop it with: kill {service.pid}")
        return 0
    cmd = argv[1:]
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    try:
        return subprocess.call(cmd, env=dict(os.environ, **env))
    finally:
        service.terminate()
        service.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
