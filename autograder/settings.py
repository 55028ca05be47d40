"""The engine's settings: every `DLOPT_*` variable (and the few others it reads) is read
here and nowhere else; the server has its own (`server/config.py`, pydantic), and hands
the engine what it chose as arguments (the runner kind travels in the `GradingJob`).

Nothing in the engine writes the environment to steer itself. The processes it starts
get theirs from `environment()` (a copy with overrides), and a forked process that
becomes another program (a judge forked from the judge zygote, a child forked from the
child zygote) takes its environment with `become()`. The child inside the sandbox reads
nothing here: what it needs comes in its config (`child/main.py`).

| variable | default | what |
| --- | --- | --- |
| `DLOPT_RUNNER` | local | the sandbox runner: local (bubblewrap) or docker |
| `DLOPT_ZYGOTE` | 1 | 0: start judges and children as new interpreters (no fork servers) |
| `DLOPT_JUDGE_ZYGOTE` | (set for judges forked from the judge zygote) | its socket |
| `DLOPT_SHARED_TMP` | the system's temporary folder | where parallel judges share uid locks |
| `DLOPT_ASSIGNMENTS_DIR` | ./assignments | where assignments are found by slug |
| `DLOPT_TRUTH_CACHE` | $XDG_CACHE_HOME/dlopt/truth | values the judge computed itself |
| `DLOPT_CONFIG_DIR` | $XDG_CONFIG_HOME/dlopt | the student client's credentials |
| `DLOPT_SERVER`, `DLOPT_TOKEN` | (none) | the student client's server and token |
| `DLOPT_DOCKER_IMAGE` | dlopt-runner:latest | the docker runner's image |
| `DLOPT_DOCKER_PYTHON` | python3 | the interpreter inside it |
| `DLOPT_DOCKER_CPUS` | 2 | CPUs per container |
| `DLOPT_DOCKER_POOL` | 2 | warm containers per spec (0: none) |
| `DLOPT_DOCKER_MOUNTS`, `DLOPT_DOCKER_ULIMITS`, `DLOPT_GPU_DEVICES` | (none) | comma lists |
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

RUNNERS = ("local", "docker")
# What the docker runner's pool process needs of its parent's environment.
DOCKER_KEYS = ("DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "DLOPT_DOCKER_IMAGE", "DLOPT_DOCKER_PYTHON",
               "DLOPT_DOCKER_MOUNTS", "DLOPT_DOCKER_ULIMITS", "DLOPT_DOCKER_CPUS", "DLOPT_GPU_DEVICES")


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


@dataclass(frozen=True)
class Settings:
    runner: str = "local"
    zygote: bool = True
    judge_zygote: str | None = None
    shared_tmp: Path = Path(tempfile.gettempdir())
    assignments_dir: str | None = None
    truth_cache: Path = Path.home() / ".cache" / "dlopt" / "truth"
    config_dir: Path = Path.home() / ".config" / "dlopt"
    server: str | None = None
    token: str | None = None
    docker_image: str = "dlopt-runner:latest"
    docker_python: str = "python3"
    docker_cpus: float = 2.0
    docker_pool: int = 2
    docker_mounts: tuple[str, ...] = ()
    docker_ulimits: tuple[str, ...] = ()
    gpu_devices: tuple[str, ...] = ()

    @classmethod
    def from_environment(cls, env: dict[str, str] | os._Environ) -> Settings:
        home = Path.home()
        cache = Path(env.get("XDG_CACHE_HOME") or home / ".cache")
        config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
        try:
            cpus = float(env.get("DLOPT_DOCKER_CPUS", cls.docker_cpus))
        except ValueError:
            cpus = cls.docker_cpus
        runner = env.get("DLOPT_RUNNER") or cls.runner
        if runner not in RUNNERS:
            raise ValueError(f"DLOPT_RUNNER={runner!r}: the runners are {', '.join(RUNNERS)}")
        d = cls()  # the defaults, spelled once (the fields above)
        return cls(
            runner=runner,
            zygote=env.get("DLOPT_ZYGOTE", "1") != "0",
            judge_zygote=env.get("DLOPT_JUDGE_ZYGOTE") or None,
            shared_tmp=Path(env.get("DLOPT_SHARED_TMP") or tempfile.gettempdir()),
            assignments_dir=env.get("DLOPT_ASSIGNMENTS_DIR") or None,
            truth_cache=Path(env["DLOPT_TRUTH_CACHE"]) if env.get("DLOPT_TRUTH_CACHE") else cache / "dlopt" / "truth",
            config_dir=Path(env["DLOPT_CONFIG_DIR"]) if env.get("DLOPT_CONFIG_DIR") else config / "dlopt",
            server=env.get("DLOPT_SERVER") or None,
            token=env.get("DLOPT_TOKEN") or None,
            docker_image=env.get("DLOPT_DOCKER_IMAGE") or d.docker_image,
            docker_python=env.get("DLOPT_DOCKER_PYTHON") or d.docker_python,
            docker_cpus=cpus,
            docker_pool=max(0, _int(env.get("DLOPT_DOCKER_POOL"), d.docker_pool)),
            docker_mounts=_list(env.get("DLOPT_DOCKER_MOUNTS")),
            docker_ulimits=_list(env.get("DLOPT_DOCKER_ULIMITS")),
            gpu_devices=_list(env.get("DLOPT_GPU_DEVICES")),
        )


def current() -> Settings:
    """The settings as this process's environment has them now (read on every call: it is
    cheap, and a test or an operator's shell may change a variable between two grades)."""
    return Settings.from_environment(os.environ)


def environment(**overrides: str) -> dict[str, str]:
    """A copy of this process's environment with `overrides`: what a process the engine
    starts is given."""
    return {**os.environ, **overrides}


def passthrough(keys: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The variables of `keys` this process has (handed on to a child process)."""
    return {k: os.environ[k] for k in keys if k in os.environ}


def become(env: dict) -> None:
    """In a forked process becoming another program: its environment is `env`, exactly."""
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in env.items()})
