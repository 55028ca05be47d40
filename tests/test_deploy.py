"""The deployment files: the compose file validates (Podman's compose, the engine-free
`config`) and says what a course needs; the sandbox image holds nothing of the course."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker" / "compose.yaml"


def compose_config() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    exe = shutil.which("podman-compose") or str(Path(sys.executable).parent / "podman-compose")
    if not Path(exe).exists():
        pytest.skip("podman-compose is not installed (pip install podman-compose): the compose file cannot be validated")
    r = subprocess.run([exe, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return yaml.safe_load(r.stdout)


def test_the_compose_file_validates_and_holds_a_course():
    cfg = compose_config()
    services = cfg["services"]
    assert {"server", "postgres", "redis", "worker-cpu", "worker-gpu"} <= set(services)
    assert {"db", "store"} <= set(cfg["volumes"])
    gpu = services["worker-gpu"]
    (dev,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert dev["driver"] == "nvidia" and dev["capabilities"] == ["gpu"]
    assert "gpu" in gpu["command"] and "cpu" in services["worker-cpu"]["command"]
    for name in ("server", "worker-cpu", "worker-gpu"):
        env = services[name]["environment"]
        assert env["DLOPT_BROKER_URL"].startswith("redis://") and env["DLOPT_DATABASE_URL"].startswith("postgresql")
    assert any(v.endswith(":/var/lib/dlopt") for v in services["server"]["volumes"])


def test_the_sandbox_image_holds_nothing_of_the_course():
    text = (REPO / "docker" / "runner.Dockerfile").read_text()
    copies = [line for line in text.splitlines() if line.strip().upper().startswith(("COPY", "ADD"))]
    assert copies == []  # the runtime is mounted read-only at run time; suites and references never enter
    assert "USER 61000:61000" in text
