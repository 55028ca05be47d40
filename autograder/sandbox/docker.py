"""The docker runner: one container per submission, through the Docker SDK for Python
(`docker` on PyPI), against a Docker engine or Podman's Docker-compatible API.

The container gets no network, memory / CPU / process limits, a read-only root, a
private tmpfs at /tmp, no capabilities, no new privileges and a non-root uid; the
child's runtime (the protocol and child packages, the assignment's harness) is mounted
read-only at /sandbox, and nothing else of the project. The judge talks to the child
through a Unix socket in a folder mounted at /io: the same frames as the local
runner's pipes. On a GPU worker the assignment's GPUs (`DLOPT_GPU_DEVICES`, one worker
slot's devices) are passed as the engine understands them (`gpu_attach`): NVIDIA device
requests to Docker, a CDI device request to Podman 5.4+, the device nodes to older
Podman, whose compatible API ignores device requests. The container is killed and removed
after the submission, with everything it started.

Configuration (environment, read where the judge runs):
- `DLOPT_RUNNER=docker` selects this runner (`dlopt grade --runner docker`).
- `DOCKER_HOST`: the engine (e.g. unix:///run/podman/podman.sock); default the SDK's.
- `DLOPT_DOCKER_IMAGE`: the runner image (default `dlopt-runner:latest`, docker/runner.Dockerfile).
- `DLOPT_DOCKER_PYTHON`: the Python inside the image (default `python3`).
- `DLOPT_DOCKER_MOUNTS`: extra read-only mounts `host[:container],...` (tests: an empty
  image that borrows the host's system and Python, read-only).
- `DLOPT_DOCKER_ULIMITS`: `nofile=1024:1024,nproc=1024:1024` where the host's limits cannot be raised.
- `DLOPT_GPU_DEVICES`: device ids for this worker slot (e.g. `0` or `0,1`); default all.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from autograder import settings
from autograder.sandbox import forkserver

from . import seccomp
from .local import ChildHandle, LocalRunner, loopback_payload_bytes
from .memwatch import ContainerMemoryWatch, CpuWatch
from .runner import Runner, SandboxSpec

SOCKET_NAME = "judge.sock"
START_SECONDS = 120.0  # image start and the child's first imports


def parse_mounts(spec: list[str]) -> dict:
    out = {}
    for item in spec:
        host, _, inside = item.partition(":")
        out[host] = {"bind": inside or host, "mode": "ro"}
    return out


def parse_ulimits(spec: list[str]):
    import docker

    out = []
    for item in spec:
        name, _, values = item.partition("=")
        soft, _, hard = values.partition(":")
        out.append(docker.types.Ulimit(name=name, soft=int(soft), hard=int(hard or soft)))
    return out


def gpu_device_requests(gpu: bool, device_ids: list[str] | None = None):
    """The SDK's request for the GPUs of this worker slot (all of them when none named):
    Docker with NVIDIA's container toolkit."""
    if not gpu:
        return []
    import docker

    if device_ids:
        return [docker.types.DeviceRequest(device_ids=list(device_ids), capabilities=[["gpu"]])]
    return [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]


def podman_version(version: dict) -> tuple[int, ...] | None:
    """Podman's own version from the engine's /version answer (None for Docker)."""
    for comp in version.get("Components") or []:
        if "podman" in str(comp.get("Name", "")).lower():
            try:
                return tuple(int(x) for x in str(comp.get("Version", "")).split("-")[0].split(".")[:3])
            except ValueError:
                return (0,)
    return (0,) if "podman" in json.dumps(version).lower() else None


def gpu_attach(gpu: bool, device_ids: list[str] | None, podman: tuple[int, ...] | None,
               dev: Path = Path("/dev")) -> dict:
    """How a container gets the slot's GPUs, by engine, as create() options:
    - Docker: NVIDIA device requests (the container toolkit);
    - Podman 5.4 and later: a CDI device request (`nvidia.com/gpu=ID`, or `=all`), read
      from the CDI specification on its host (/etc/cdi or /var/run/cdi);
    - older Podman: its Docker-compatible API ignores device requests of either kind
      (containers/podman#25171), so the device nodes themselves: the GPUs' /dev/nvidiaN and
      the driver's control nodes (the driver's libraries come with the image or its mounts).
    """
    if not gpu:
        return {}
    if podman is None:
        return {"device_requests": gpu_device_requests(True, device_ids)}
    if podman >= (5, 4):
        import docker

        ids = [f"nvidia.com/gpu={i}" for i in device_ids] if device_ids else ["nvidia.com/gpu=all"]
        return {"device_requests": [docker.types.DeviceRequest(driver="cdi", device_ids=ids)]}
    gpus = ([f"nvidia{i}" for i in device_ids] if device_ids else
            sorted(p.name for p in dev.glob("nvidia[0-9]*")))
    control = [p.name for p in sorted(dev.glob("nvidia*")) if not p.name[len("nvidia"):].isdigit()]
    nodes = [str(dev / n) for n in gpus + control if (dev / n).exists() and not (dev / n).is_dir()]
    if not any(str(dev / g) in nodes for g in gpus):
        raise RuntimeError(f"no GPU device node under {dev} for GPUs {gpus or 'all'}: this Podman "
                           f"({'.'.join(map(str, podman))}) can only pass device nodes")
    return {"devices": [f"{n}:{n}:rwm" for n in nodes]}


class _ContainerProcess:
    """What the judge needs of a child process (poll, wait, returncode), for a container."""

    pid = None

    def __init__(self, container) -> None:
        self.container = container
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.container.reload()
                state = self.container.attrs.get("State", {})
                if state.get("Status") in ("exited", "dead", "stopped"):
                    self.returncode = int(state.get("ExitCode", -1))
            except Exception:  # noqa: BLE001 - gone: treat as dead
                self.returncode = -9
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        try:
            status = self.container.wait(timeout=timeout)
            self.returncode = int(status.get("StatusCode", -1))
        except Exception as e:  # noqa: BLE001 - the SDK raises its transport's timeout
            if self.poll() is None:
                raise subprocess.TimeoutExpired("container", timeout) from e
        return self.returncode


class ContainerHandle(ChildHandle):
    container_pid: int | None = None  # the container's first process, seen from the host

    def loopback_tx_bytes(self) -> int | None:
        if not self.container_pid:
            return None
        return loopback_payload_bytes(Path(f"/proc/{self.container_pid}/net/dev"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            self.proc.container.kill()
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.proc.poll()
        self._close_fds()

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return self.proc.container.logs(tail=200).decode("utf-8", "replace")[-limit:]
        except Exception:  # noqa: BLE001
            return ""

    def cleanup(self) -> None:
        self.kill()
        try:
            self.proc.container.remove(force=True)
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(self.staging, ignore_errors=True)


class DockerRunner(LocalRunner):
    """A container per child (start() -> a handle the judge talks through, as the local
    runner's); it shares the local runner's staging and environment, not its sandbox."""

    name = "docker"
    labels: dict = {}  # more labels for its containers (the pool's owner label)

    def __init__(self, spec: SandboxSpec, *, client=None, image: str | None = None):
        Runner.__init__(self, spec)  # not LocalRunner's: no bubblewrap to look for
        import docker

        self.client = client or docker.from_env(timeout=int(START_SECONDS))
        config = settings.current()
        self.image = image or config.docker_image
        self.python = config.docker_python
        self.extra_mounts = parse_mounts(list(config.docker_mounts))
        self.ulimits = parse_ulimits(list(config.docker_ulimits))
        self.gpu_ids = list(config.gpu_devices) or None
        self.cpus = config.docker_cpus
        try:
            self.podman_version = podman_version(self.client.version())
        except Exception:  # noqa: BLE001 - no engine to ask (unit tests): assume Docker
            self.podman_version = None
        self.podman = self.podman_version is not None
        self.report = {"kind": "docker", "strong": True, "image": self.image, "network": "none",
                       "read_only_root": True, "capabilities": "none", "unprivileged_uid": True}

    def _seccomp_option(self, staging: Path) -> str:
        """Our seccomp profile (no namespaces or mounts inside): Docker's API takes the
        profile itself, Podman's a path on its host (the engine runs beside this judge)."""
        profile = seccomp.docker_profile()
        if not self.podman:
            return "seccomp=" + profile
        path = staging / "seccomp.json"
        path.write_text(profile)
        os.chmod(path, 0o644)
        return f"seccomp={path}"

    def container_options(self, staging: Path, cfg: dict) -> dict:
        """Everything the container is created with (a function of its own for the tests)."""
        lim = self.limits
        volumes = {**self.extra_mounts,
                   str(staging / "runtime"): {"bind": "/sandbox", "mode": "ro"},
                   str(staging / "io"): {"bind": "/io", "mode": "rw"}}
        env = self._env()
        if self.gpu and self.gpu_ids:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(self.gpu_ids)))
        return dict(
            image=self.image, command=[self.python, "-I", "-B", "/sandbox/autograder/child/main.py", json.dumps(cfg)],
            detach=True, network_mode="none", read_only=True, user="61000:61000", working_dir="/tmp",
            # Podman 4 ignores a tmpfs mode; its U option gives /tmp to the container's user instead.
            tmpfs={"/tmp": f"rw,size={lim.tmp_bytes() >> 20}m,mode=1777" + (",U" if self.podman else "")},
            cap_drop=["ALL"], security_opt=["no-new-privileges", self._seccomp_option(staging)], environment=env, volumes=volumes,
            mem_limit=f"{lim.memory_mb}m", memswap_limit=f"{lim.memory_mb}m",
            nano_cpus=int(self.cpus * 1e9),
            pids_limit=lim.processes + 32, ulimits=self.ulimits or None,
            # NCCL (ranks of a multi-GPU assignment) keeps buffers in /dev/shm: Docker's
            # 64 MiB is too little for several ranks; it counts against the memory limit.
            shm_size=f"{lim.tmp_bytes() >> 20}m" if self.gpu else None,
            labels={"dlopt.role": "sandbox", **self.labels}, stdin_open=False, tty=False,
            **({"device_requests": None} | gpu_attach(self.gpu, self.gpu_ids, self.podman_version)))

    # -- starting a container: launch (the engine starts it), then connect (its child,
    # with torch imported, connects to the judge's socket) --------------------------
    def pool_key(self) -> dict:
        """What this runner's containers are made from (the pool's key, see sandbox/pool.py)."""
        harness = None
        if self.harness is not None:
            st = os.stat(self.harness)
            harness = [str(self.harness), st.st_mtime_ns, st.st_size]
        return {"limits": self.limits.as_dict(), "device": self.device, "forbidden": list(self.spec.forbidden),
                "guard": self.spec.guard, "harness": harness, "image": self.image}

    def launch(self) -> Launched:
        """Stage the runtime, listen, create and start the container (it connects when
        its child has imported what every child needs)."""
        staging = self._stage()
        io_dir = staging / "io"
        io_dir.mkdir(mode=0o777)
        os.chmod(io_dir, 0o777)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(io_dir / SOCKET_NAME))
        os.chmod(io_dir / SOCKET_NAME, 0o777)
        listener.listen(1)
        limits = self.limits.rlimits(self.gpu)
        limits.pop("memory_bytes", None)  # the container's memory limit is the cgroup's
        cfg = self.spec.child_config(uid=None, workdir="/tmp", xfer="/io", runtime="/sandbox", rlimits=limits,
                                     socket=f"/io/{SOCKET_NAME}")
        container = None
        try:
            container = self.client.containers.create(**self.container_options(staging, cfg))
            container.start()
        except BaseException:
            listener.close()
            if container is not None:
                _remove(container)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return Launched(container, staging, listener)

    def connect(self, launched: Launched) -> tuple[int, int]:
        """Wait for the launched container's child: (connection fd, its first process's
        host pid). Removes the container when it does not come."""
        proc = _ContainerProcess(launched.container)
        try:
            launched.listener.settimeout(1.0)
            deadline = time.monotonic() + START_SECONDS
            while True:
                try:
                    conn, _ = launched.listener.accept()
                    break
                except TimeoutError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        tail = ContainerHandle(proc, -1, -1, launched.staging / "log.txt", launched.staging).log_tail(1500)
                        raise RuntimeError("the sandbox container did not start: " + tail) from None
            conn.setblocking(True)
            launched.container.reload()
            pid = int(launched.container.attrs.get("State", {}).get("Pid") or 0)
        except BaseException:
            _remove(launched.container)
            shutil.rmtree(launched.staging, ignore_errors=True)
            raise
        finally:
            launched.listener.close()
        return conn.detach(), pid

    def handle(self, container, staging: Path, fd: int, pid: int) -> ContainerHandle:
        """The judge's handle on a connected container."""
        handle = ContainerHandle(_ContainerProcess(container), fd, os.dup(fd), staging / "log.txt", staging,
                                 xfer=staging / "io")
        if pid > 0:
            handle.container_pid = pid
            # The container's CPU time from its process tree (the limits count it, see
            # CpuWatch), from now: what its child spent importing torch is not the
            # student's; its memory limit is the container's own.
            handle.cpu = CpuWatch(proc_only=True)
            handle.cpu.attach(pid)
            handle.cpu.start_now()
            if self.limits.watch_memory:
                handle.memory = ContainerMemoryWatch(pid)
                self.report["memory_watch"] = handle.memory.method
        return handle

    def start(self) -> ChildHandle:
        """A container no other submission has used: one the pool started ahead for this
        runner's spec (sandbox/pool.py), else one started now."""
        taken = take_from_pool(self)
        if taken is not None:
            return taken
        launched = self.launch()
        fd, pid = self.connect(launched)
        return self.handle(launched.container, launched.staging, fd, pid)



# -- the container pool, the judge's side (the pool process: sandbox/pool.py) -------------
POOL_LABEL = "dlopt.pool"


def pool_depth() -> int:
    """Containers kept started ahead per spec (DLOPT_DOCKER_POOL)."""
    return settings.current().docker_pool


_ENDPOINTS: dict = {}


def _endpoint(env: dict) -> forkserver.Endpoint | None:
    """The container pool (sandbox/pool.py) of this judge's zygote (None outside one: a judge that is a process of
    its own would pay for containers it never takes)."""
    zygote = settings.current().judge_zygote
    if not zygote or pool_depth() == 0:
        return None
    key = (zygote, tuple(sorted(env.items())))
    if key not in _ENDPOINTS:
        answer = forkserver.Endpoint(zygote).ask({"op": "container-pool", "env": env})
        _ENDPOINTS[key] = forkserver.Endpoint(answer["path"])
    return _ENDPOINTS[key]


def pool_env() -> dict:
    """The environment the pool's docker client needs (what the judge's runner reads)."""
    return settings.passthrough(("PATH", "HOME", "DLOPT_DOCKER_POOL", *settings.DOCKER_KEYS))


def take_from_pool(runner):
    """A handle on a container the pool started for `runner`'s spec, or None (no pool,
    none ready, or the pool is gone: the runner starts one itself)."""
    try:
        endpoint = _endpoint(pool_env())
        if endpoint is None:
            return None
        answer, fds = endpoint.ask_fds({"op": "take", "spec": runner.pool_key()}, timeout=30)
    except forkserver.ServerLost as e:
        runner.report["pool"] = f"none: {str(e)[:200]}"
        _ENDPOINTS.clear()
        return None
    if answer.get("empty") or len(fds) != 1:
        forkserver._close_all(fds)
        runner.report["pool"] = "none ready: started one"
        return None
    try:
        container = runner.client.containers.get(answer["container"])
    except Exception as e:  # noqa: BLE001 - gone between the pool and here
        forkserver._close_all(fds)
        runner.report["pool"] = f"lost: {type(e).__name__}"
        return None
    runner.report["pool"] = "started ahead"
    return runner.handle(container, Path(answer["staging"]), fds[0], int(answer.get("pid") or 0))


@dataclass
class Launched:
    container: object
    staging: Path
    listener: socket.socket


def _remove(container) -> None:
    try:
        container.remove(force=True)
    except Exception:  # noqa: BLE001 - already gone
        pass
