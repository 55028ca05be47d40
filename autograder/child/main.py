"""The sandboxed child: load student code, then serve calls and harness tasks.

Started by the sandbox runner as `python -I main.py`; reads requests on fd 3 and
writes replies on fd 4; its stdout and stderr go to a log the judge reads only as
text. Before any student code is read it applies its resource limits and, when
started as root, drops to an unprivileged uid.
"""

from __future__ import annotations

import os
import sys

RUNTIME = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, RUNTIME)



def _apply_limits(cfg: dict) -> None:
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-long writes fail instead of killing
    lim = cfg.get("limits", {})
    pairs = {
        "cpu_seconds": resource.RLIMIT_CPU,
        "memory_bytes": resource.RLIMIT_AS,
        "file_bytes": resource.RLIMIT_FSIZE,
        "open_files": resource.RLIMIT_NOFILE,
        "processes": resource.RLIMIT_NPROC,
    }
    for key, which in pairs.items():
        value = lim.get(key)
        if value:
            soft, hard = resource.getrlimit(which)
            value = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
            resource.setrlimit(which, (value, value))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    uid = cfg.get("uid")
    if uid is not None and os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


# What every child imports before it reads student code: the child zygote imports it
# once for all its forks (sandbox/child_zygote.py); a container imports it before it connects,
# so that one waiting in the docker runner's pool (sandbox/pool.py) is ready to serve.
PRELOAD = ("torch", "torch.optim", "torch._dynamo", "torch.nn.functional", "numpy",
           "autograder.protocol", "autograder.protocol.codec", "autograder.protocol.framing",
           "autograder.protocol.specs", "autograder.protocol.shm", "autograder.child.server", "autograder.child.forbidden",
           "autograder.child.watch", "autograder.child.guard", "autograder.child.main")


def preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001  (what this machine lacks, a child imports for itself)
            pass


def main() -> None:
    import json

    cfg = json.loads(sys.argv[1])
    if cfg.get("socket"):
        # The docker runner: the judge listens on a Unix socket in a mounted folder.
        import socket

        preload()

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(cfg["socket"])
        cfg["req_fd"] = sock.detach()
        cfg["rep_fd"] = os.dup(cfg["req_fd"])
    run(cfg)


def run(cfg: dict) -> None:
    """Limits, then torch, then serve: what every child does, however it was started (a
    new interpreter here, or a fork of the child zygote: sandbox/child_zygote.py)."""
    _apply_limits(cfg)
    os.chdir(cfg.get("workdir", "/tmp"))

    import torch  # noqa: F401  (imported before student code so limits count it once)

    # Here, not at the top: the rlimits above must bind before torch and the server (with
    # everything they import) are loaded, so the limits count them (a new interpreter).
    from autograder.child.server import serve

    serve(cfg["req_fd"], cfg["rep_fd"], cfg)


if __name__ == "__main__":
    main()
