"""The docker runner's pool: containers started ahead, each used by one child only.

A container cannot fork children into fresh namespaces of their own without the
privileges a sandbox must not have (it runs with no capabilities and a seccomp
profile that forbids `unshare`, `mount` and `setns`), so the docker runner's "zygote"
starts whole containers ahead instead: each is made with exactly the options of
`DockerRunner.container_options`, its child imports torch and the child runtime
(`child/main.py` PRELOAD) and connects to its socket, and then it waits. A submission
takes one that no other submission has used, so a child still gets a container of its
own (fresh namespaces, the same limits, nothing of another submission's), and the
container's start (engine, runtime, `import torch`, `torch._dynamo`) is off the path
a submission waits on. The CPU time a container spent before it was taken is not
counted against the submission (`CpuWatch.start_now`).

The pool is a process of its own (`python -m autograder.sandbox.pool SOCKET`, a
`forkserver` server that answers without forking), owned by the judge zygote
(autograder/sandbox/judge_zygote.py, op "container-pool") so that every judge of a grading
process shares it. A judge asks `take` with its runner's spec; the answer is the
container's id, staging folder and pid, with the connected socket passed as a file
descriptor, or `empty` (the judge starts one itself, as without a pool). Each take
starts the next one for that spec, so up to DLOPT_DOCKER_POOL (default 2; 0: no
pool) wait per spec. When its owner goes away the pool removes every container still
waiting, with its staging folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

from autograder.sandbox import forkserver

from .docker import POOL_LABEL, DockerRunner, pool_depth
from .limits import Limits
from .runner import SandboxSpec

OWNER = f"{socket.gethostname()}:{os.getpid()}"  # the label of this pool's containers
KEEP_SECONDS = 600.0  # a spec not asked for this long has its containers removed


# -- the pool process ---------------------------------------------------------------------
class Pool:
    def __init__(self, want: int):
        self.want = want
        self.lock = threading.Lock()
        self.ready: dict[str, list[dict]] = {}  # spec key -> connected containers
        self.starting: dict[str, int] = {}
        self.asked: dict[str, float] = {}
        self.runners: dict = {}
        self.launched: dict[str, object] = {}  # containers started and not yet connected, by id
        self.closed = False

    def _runner(self, key: str, spec: dict):
        if key not in self.runners:
            harness = spec.get("harness")
            runner = DockerRunner(SandboxSpec(Limits(**spec["limits"]), device=str(spec.get("device") or "cpu"),
                                              forbidden=tuple(spec.get("forbidden") or ()), guard=spec.get("guard"),
                                              harness=Path(harness[0]) if harness else None),
                                  image=spec.get("image"))
            runner.labels = {POOL_LABEL: OWNER}
            self.runners[key] = runner
        return self.runners[key]

    def take(self, req: dict):
        spec = req.get("spec")
        if not isinstance(spec, dict):
            raise ValueError("take needs the runner's spec")
        key = json.dumps(spec, sort_keys=True)
        if not self._current(key, spec):  # the harness changed on disk since the judge asked
            self._drop(key)
            return {"empty": True}
        now = time.monotonic()
        got = None
        with self.lock:
            self.asked[key] = now
            entries = self.ready.setdefault(key, [])
            while entries and got is None:
                entry = entries.pop(0)
                if _running(entry["container"]):
                    got = entry
                else:
                    _discard(entry)
            stale = [k for k, t in self.asked.items() if now - t > KEEP_SECONDS]
        for k in stale:
            self._drop(k)
        self._refill(key)
        if got is None:
            return {"empty": True}
        answer = {"container": got["container"].id, "staging": str(got["staging"]), "pid": got["pid"]}
        return answer, [got["fd"]]

    def _current(self, key: str, spec: dict) -> bool:
        """Whether containers made now for `spec` are what it says (its harness file as it
        was when the judge asked)."""
        try:
            return json.dumps(self._runner(key, spec).pool_key(), sort_keys=True) == key
        except OSError:
            return False

    def _refill(self, key: str) -> None:
        with self.lock:
            missing = self.want - len(self.ready.get(key, [])) - self.starting.get(key, 0)
            self.starting[key] = self.starting.get(key, 0) + max(0, missing)
        for _ in range(max(0, missing)):
            threading.Thread(target=self._start_one, args=(key,), daemon=True).start()

    def _start_one(self, key: str) -> None:
        runner = self.runners[key]
        entry = None
        try:
            launched = runner.launch()
            with self.lock:
                self.launched[launched.container.id] = launched.container
                closed = self.closed
            if closed:
                raise RuntimeError("the pool closed while the container started")
            fd, pid = runner.connect(launched)
            entry = {"container": launched.container, "staging": launched.staging, "fd": fd, "pid": pid}
            if json.dumps(runner.pool_key(), sort_keys=True) != key:  # the harness changed while it was staged
                _discard(entry)
                entry = None
        except Exception as e:  # noqa: BLE001 - a judge that finds none ready starts its own
            print(f"pool: a container did not start: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr, flush=True)
        with self.lock:
            self.starting[key] -= 1
            if entry is not None:
                self.launched.pop(entry["container"].id, None)
                if self.closed or key not in self.asked:
                    _discard(entry)
                else:
                    self.ready.setdefault(key, []).append(entry)

    def _drop(self, key: str) -> None:
        with self.lock:
            entries = self.ready.pop(key, [])
            self.asked.pop(key, None)
        for entry in entries:
            _discard(entry)

    def status(self, req: dict) -> dict:
        """How many containers wait and how many are starting, per spec (for operators and tests)."""
        with self.lock:
            return {"ready": sum(len(v) for v in self.ready.values()), "starting": sum(self.starting.values()),
                    "specs": len(self.asked), "depth": self.want}

    def close(self) -> None:
        """Remove every container still waiting or still starting (a starting one's thread
        then finds it gone and cleans up after it)."""
        with self.lock:
            self.closed = True
            keys = list(self.ready)
            starting = list(self.launched.values())
        for key in keys:
            self._drop(key)
        for container in starting:
            _remove_container(container)

    def sweep(self, client) -> int:
        """Remove the containers an earlier pool of this machine left when it was killed
        (its owner label names a process that no longer exists)."""
        removed = 0
        try:
            found = client.containers.list(all=True, filters={"label": POOL_LABEL})
        except Exception:  # noqa: BLE001 - no engine yet: nothing to sweep
            return 0
        for c in found:
            host, _, pid = str(c.labels.get(POOL_LABEL, "")).rpartition(":")
            if host == OWNER.rpartition(":")[0] and pid.isdigit() and not _alive(int(pid)):
                _remove_container(c)
                removed += 1
        return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _remove_container(container) -> None:
    try:
        container.remove(force=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def _running(container) -> bool:
    try:
        container.reload()
        return container.attrs.get("State", {}).get("Status") == "running"
    except Exception:  # noqa: BLE001
        return False


def _discard(entry: dict) -> None:
    try:
        os.close(entry["fd"])
    except OSError:
        pass
    _remove_container(entry["container"])
    shutil.rmtree(entry["staging"], ignore_errors=True)


def _runtime_files() -> list[str]:
    """What the containers' staged runtime is copied from: the pool is started again when
    any of it changes (forkserver.Client.fresh)."""
    root = Path(__file__).resolve().parent.parent
    files = [root / "__init__.py"] + sorted((root / "protocol").glob("*.py")) + sorted((root / "child").glob("*.py"))
    return [str(f) for f in files]


def main() -> None:
    pool = Pool(pool_depth())
    try:
        import docker as sdk

        pool.sweep(sdk.from_env(timeout=30))
    except Exception:  # noqa: BLE001 - no engine: the first take says so
        pass
    repo = str(Path(__file__).resolve().parent.parent.parent)
    files = sorted(set(forkserver.loaded_files(repo)) | set(_runtime_files()))

    def no_forks(req: dict, fds: list[int]) -> None:
        raise SystemExit("the container pool answers `take` only")

    forkserver.serve(sys.argv[1], no_forks, {"files": files}, ops={"take": pool.take, "status": pool.status},
                      on_exit=pool.close)


if __name__ == "__main__":
    main()
