"""The docker runner: what each container is made with (from the SDK's own types), and,
through Podman, that the sandbox holds: no network, a read-only root, no capabilities,
a non-root uid, nothing of the project, and no container left after a submission."""

from __future__ import annotations

import json
import time

import pytest
import torch

docker = pytest.importorskip("docker", reason="the Docker SDK is not installed (pip install docker)")

from autograder.sandbox import Limits, SandboxSpec  # noqa: E402
from autograder.sandbox.docker import (  # noqa: E402
    DockerRunner,
    gpu_attach,
    gpu_device_requests,
    parse_mounts,
    parse_ulimits,
    podman_version,
)


class FakeClient:
    """Stands in for docker.DockerClient where no engine is needed."""


def options(monkeypatch, tmp_path, gpu=False, devices=None, **limits):
    if devices:
        monkeypatch.setenv("DLOPT_GPU_DEVICES", devices)
    r = DockerRunner(SandboxSpec(Limits(**limits), device="cuda" if gpu else "cpu"), client=FakeClient(), image="img")
    return r.container_options(tmp_path, {"socket": "/io/judge.sock"})


def test_every_container_is_locked_down(monkeypatch, tmp_path):
    o = options(monkeypatch, tmp_path, memory_mb=2048, processes=64)
    assert o["network_mode"] == "none" and o["read_only"] is True
    assert o["cap_drop"] == ["ALL"] and o["security_opt"][0] == "no-new-privileges"
    # our seccomp profile (no namespaces or mounts inside), given as Docker's API takes it
    profile = json.loads(o["security_opt"][1].removeprefix("seccomp="))
    assert {"unshare", "mount", "setns"} <= set(profile["syscalls"][0]["names"])
    assert o["user"] == "61000:61000" and not o["user"].startswith("0")
    assert o["mem_limit"] == "2048m" and o["memswap_limit"] == "2048m" and o["pids_limit"] == 64 + 32
    assert o["tmpfs"]["/tmp"].startswith("rw,size=512m")
    # only the runtime (read-only) and the socket folder are mounted from the host
    assert o["volumes"][str(tmp_path / "runtime")] == {"bind": "/sandbox", "mode": "ro"}
    assert o["volumes"][str(tmp_path / "io")]["bind"] == "/io"
    assert set(o["volumes"]) == {str(tmp_path / "runtime"), str(tmp_path / "io")}
    assert o["device_requests"] is None


def test_gpu_device_requests_per_worker_slot(monkeypatch, tmp_path):
    o = options(monkeypatch, tmp_path, gpu=True, devices="2,3")
    (req,) = o["device_requests"]
    assert isinstance(req, docker.types.DeviceRequest)
    assert req["DeviceIDs"] == ["2", "3"] and req["Capabilities"] == [["gpu"]]
    # inside, the slot's GPUs are numbered from 0
    assert o["environment"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    # NCCL ranks: room in /dev/shm, and CUDA asked through NVML so the child may fork them
    assert o["shm_size"] == "1024m"  # a quarter of the default 4096 MiB limit
    assert o["environment"]["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"
    assert options(monkeypatch, tmp_path)["shm_size"] is None
    (every,) = gpu_device_requests(True)
    assert every["Count"] == -1 and every["Capabilities"] == [["gpu"]]
    assert gpu_device_requests(False) == []


def test_gpu_attach_by_engine(tmp_path):
    """Docker: NVIDIA device requests; Podman 5.4+: a CDI request; older Podman (its
    compatible API drops device requests silently): the device nodes, and a clear error
    where there are none rather than a container without its GPU."""
    (req,) = gpu_attach(True, ["1"], None)["device_requests"]
    assert req["Capabilities"] == [["gpu"]] and req["DeviceIDs"] == ["1"]
    (cdi,) = gpu_attach(True, None, (5, 4, 0))["device_requests"]
    assert cdi["Driver"] == "cdi" and cdi["DeviceIDs"] == ["nvidia.com/gpu=all"]
    assert gpu_attach(True, ["0", "2"], (5, 6, 1))["device_requests"][0]["DeviceIDs"] == ["nvidia.com/gpu=0",
                                                                                        "nvidia.com/gpu=2"]
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"):
        (tmp_path / name).write_text("")
    (tmp_path / "nvidia-caps").mkdir()
    devices = gpu_attach(True, ["1"], (4, 3, 1), dev=tmp_path)["devices"]
    names = sorted(d.split(":")[0].rsplit("/", 1)[1] for d in devices)
    assert names == ["nvidia-uvm", "nvidia-uvm-tools", "nvidia1", "nvidiactl"]  # not nvidia0: another slot's
    assert all(d.endswith(":rwm") for d in devices)
    assert len(gpu_attach(True, None, (4, 3, 1), dev=tmp_path)["devices"]) == 5
    with pytest.raises(RuntimeError, match="no GPU device node"):
        gpu_attach(True, ["7"], (4, 3, 1), dev=tmp_path)
    assert gpu_attach(False, None, (4, 3, 1)) == {}
    assert podman_version({"Components": [{"Name": "Podman Engine", "Version": "4.3.1"}]}) == (4, 3, 1)
    assert podman_version({"Components": [{"Name": "Engine", "Version": "27.1.0"}]}) is None


def test_mount_and_ulimit_specs():
    assert parse_mounts(["/usr", "/opt/py:/py"]) == {"/usr": {"bind": "/usr", "mode": "ro"},
                                                     "/opt/py": {"bind": "/py", "mode": "ro"}}
    (u,) = parse_ulimits(["nofile=1024:2048"])
    assert isinstance(u, docker.types.Ulimit) and (u["Name"], u["Soft"], u["Hard"]) == ("nofile", 1024, 2048)


PROBE = '''
import os, socket
def probe():
    out = {"uid": os.getuid()}
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=2)
        out["network"] = "open"
    except OSError as e:
        out["network"] = type(e).__name__
    for path in ("/usr/pwned", "/etc/pwned", "/sandbox/pwned"):
        try:
            open(path, "w").write("x")
            out[path] = "written"
        except OSError:
            out[path] = "refused"
    open("/tmp/ok", "w").write("x")
    out["tmp"] = os.path.exists("/tmp/ok")
    status = open("/proc/self/status").read()
    out["cap_eff"] = [l.split()[1] for l in status.splitlines() if l.startswith("CapEff")][0]
    out["no_new_privs"] = [l.split()[1] for l in status.splitlines() if l.startswith("NoNewPrivs")][0]
    out["sees"] = sorted(os.listdir("/sandbox"))
    return out
'''


def _ours(client, monkeypatch, extra: dict | None = None):
    """A function listing the containers this test made: its runners' carry a label of
    their own (other test files may start and remove containers at the same time)."""
    import uuid

    token = uuid.uuid4().hex[:12]
    monkeypatch.setattr(DockerRunner, "labels", {"dlopt.test": token})
    filters = [{"label": f"dlopt.test={token}"}, *([{"label": f"{k}={v}"} for k, v in (extra or {}).items()])]

    def listing() -> set:
        for _ in range(10):
            try:
                return {c.id for f in filters for c in client.containers.list(all=True, filters=f)}
            except docker.errors.NotFound:  # one went between the engine's list and its details
                time.sleep(0.2)
        raise AssertionError("the container list kept changing")

    return listing


def test_the_sandbox_holds_through_podman(docker_engine, monkeypatch):
    for k, v in docker_engine.items():
        monkeypatch.setenv(k, v)
    from autograder.judge.student import StudentCode

    client = docker.DockerClient(base_url=docker_engine["DOCKER_HOST"])
    ours = _ours(client, monkeypatch)
    s = StudentCode(PROBE + "\ndef double(x):\n    return 2 * x\n", Limits())
    assert torch.equal(s.call("double", torch.arange(4.0)).value, torch.arange(4.0) * 2)
    assert len(ours()) == 1  # the child's container, found by its label
    out = s.call("probe").value
    s.close()
    assert out["uid"] == 61000
    assert out["network"] != "open"
    assert all(out[p] == "refused" for p in ("/usr/pwned", "/etc/pwned", "/sandbox/pwned"))
    assert out["tmp"] is True
    assert out["cap_eff"] == "0000000000000000" and out["no_new_privs"] == "1"
    assert out["sees"] == ["autograder"]  # the runtime only: no suite, no reference, no harness here
    assert s.sandbox["kind"] == "docker"
    assert not ours()  # gone after the submission


def test_a_fork_bomb_and_a_runaway_process_end_with_the_container(docker_engine, monkeypatch):
    for k, v in docker_engine.items():
        monkeypatch.setenv(k, v)
    from autograder.judge.student import StudentCode

    client = docker.DockerClient(base_url=docker_engine["DOCKER_HOST"])
    ours = _ours(client, monkeypatch)
    # (A runaway in a session of its own: a fork that calls setsid. No new program can start
    # in the sandbox: child/execlock.py.)
    src = ("import os, sys\n"
           "def spawn():\n"
           "    if os.fork() == 0:\n"
           "        os.setsid(); import time; time.sleep(600)\n"
           "    n = 0\n"
           "    try:\n"
           "        while True:\n"
           "            if os.fork() == 0:\n"
           "                import time; time.sleep(600)\n"
           "            n += 1\n"
           "    except OSError:\n"
           "        return n\n")
    s = StudentCode(src, Limits(processes=32))
    n = s.call("spawn").value
    used = s.handle.proc.container.id
    s.close()
    assert n < 64  # the pids limit stopped it
    # The child's container went, runaway and bomb with it, and it left none behind.
    deadline = time.monotonic() + 60
    while ours() and time.monotonic() < deadline:
        time.sleep(0.5)
    after = ours()
    assert used not in after and not after, (used, after)


MARK = '''
import os
def mark():
    seen = os.path.exists("/tmp/mark")
    open("/tmp/mark", "w").write("x")
    return seen
'''


def test_the_pool_gives_every_child_a_container_no_other_child_used(docker_engine, monkeypatch):
    """Containers started ahead (sandbox/pool.py): each child still gets one of its own
    (fresh /tmp, its own id), the CPU its container spent importing torch before it was
    taken is not the submission's, and the pool removes what still waits when its owner
    goes away."""
    import os
    import sys
    import time
    from pathlib import Path

    from autograder.judge.student import StudentCode
    from autograder.sandbox import docker as docker_runner
    from autograder.sandbox import forkserver
    from autograder.sandbox.memwatch import _tree_cpu_seconds

    for k, v in docker_engine.items():
        monkeypatch.setenv(k, v)
    repo = str(Path(__file__).resolve().parents[1])
    client = docker.DockerClient(base_url=docker_engine["DOCKER_HOST"])
    server = forkserver.Client([sys.executable, "-m", "autograder.sandbox.pool"],
                               dict(os.environ, DLOPT_DOCKER_POOL="2", PYTHONPATH=repo), "dlopt-cpool-test-")
    # This test's containers: its own runner's, and its pool's (labelled with the pool's owner).
    import socket

    ours = _ours(client, monkeypatch, {docker_runner.POOL_LABEL: f"{socket.gethostname()}:{server.proc.pid}"})
    monkeypatch.setattr(docker_runner, "_endpoint", lambda env: server)
    try:
        seen, ids, how = [], [], []
        for i in range(3):
            if i:  # wait until the pool has two ready (it started them on the first take)
                deadline = time.monotonic() + 120
                while server.ask({"op": "status"})["ready"] < 3 - i and time.monotonic() < deadline:
                    time.sleep(0.5)
            s = StudentCode(MARK, Limits())
            seen.append(s.call("mark").value)
            ids.append(s.handle.proc.container.id)
            how.append(s.sandbox.get("pool"))
            if i:
                # counted from the take: the load and one call, not the container's import of torch
                assert s.cpu_used() < 1.0 < _tree_cpu_seconds(s.handle.container_pid) - s.cpu_used()
            s.close()
        assert how == ["none ready: started one", "started ahead", "started ahead"]
        assert seen == [False, False, False]  # no child saw another's /tmp
        assert len(set(ids)) == 3
        assert server.ask({"op": "status"})["ready"] + server.ask({"op": "status"})["starting"] >= 1
    finally:
        server.close()
    # Nothing of this test's left waiting.
    deadline = time.monotonic() + 60
    while ours() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ours()
