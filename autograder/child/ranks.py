"""Process groups inside the sandbox, for harnesses of multi-process assignments
(`ring_allreduce`, `compression`): trusted code that runs in the sandboxed child.

`run_ranks` forks `world` processes from the child (the student's functions are already
loaded there); each joins a process group of its own making (gloo over loopback inside
the sandbox's network namespace, rendezvous through a file in the private /tmp; NCCL when
there is one GPU per rank), runs a list of cases through the harness's `run_case`, and
sends back its results, the bytes it sent through send/isend/batch_isend_irecv (in all
and per destination rank), and any error. Collectives other than `barrier` are replaced
in each rank by a function that raises, except those a case is allowed (`allow(case)`),
so a forbidden call fails cleanly and is reported; a rank that does not finish in time
(a deadlock) is killed and reported. The judge sees only tensors and strings, and counts
the bytes that matter from the kernel's count of the sandbox's loopback.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import tempfile
import time
import traceback

import torch

COLLECTIVES = ["all_reduce", "reduce_scatter", "reduce_scatter_tensor", "all_gather", "all_gather_into_tensor",
               "all_gather_object", "broadcast", "broadcast_object_list", "reduce", "all_to_all",
               "all_to_all_single", "gather", "scatter", "all_reduce_coalesced", "_reduce_scatter_base",
               "_all_gather_base"]


class ForbiddenCollective(RuntimeError):
    pass


def _never(case) -> frozenset:
    return frozenset()


class _Instruments:
    """Counts bytes where every send ends: ProcessGroup.send, which send, isend and
    batch_isend_irecv all call, however the student imported them (`from
    torch.distributed import isend` before this runs, `dist.P2POp(dist.isend, ...)`, whose
    op must stay torch's own function); and swaps each collective for one that raises,
    case by case."""

    def __init__(self, dist):
        self.dist = dist
        self.sent = 0
        self.sent_to: dict[int, int] = {}
        pg_class = torch._C._distributed_c10d.ProcessGroup
        orig_pg_send = pg_class.send
        counts = self

        def pg_send(pg, tensors, *a, **k):
            n = sum(t.numel() * t.element_size() for t in tensors)
            dst = int(a[0] if a else k.get("dstRank", -1))
            counts.sent += n
            counts.sent_to[dst] = counts.sent_to.get(dst, 0) + n
            return orig_pg_send(pg, tensors, *a, **k)

        pg_class.send = pg_send
        self.originals = {name: getattr(dist, name) for name in COLLECTIVES if hasattr(dist, name)}

    def allow(self, names) -> None:
        for name, orig in self.originals.items():
            if name in names:
                setattr(self.dist, name, orig)
            else:
                def forbidden(*a, _name=name, **k):
                    raise ForbiddenCollective(f"torch.distributed.{_name} is forbidden here: move data with "
                                              "send/recv/isend/irecv/batch_isend_irecv")
                setattr(self.dist, name, forbidden)


def _send(conn, obj) -> None:
    # torch.save, not multiprocessing's pickling: that moves tensors through /dev/shm,
    # which the sandbox does not have.
    buf = io.BytesIO()
    torch.save(obj, buf)
    conn.send_bytes(buf.getvalue())


def _host(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, list | tuple):
        return [_host(v) for v in value]
    if isinstance(value, dict):
        return {k: _host(v) for k, v in value.items()}
    return value


def _rank_main(ns, rank, world, init_file, cases, conn, device, run_case, allow):
    try:
        import torch.distributed as dist

        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(rank)
            device = f"cuda:{rank}"
        dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
        tools = _Instruments(dist)
        if backend == "gloo":
            # From here on the ranks can exchange data only through the process group, where
            # the judge counts it: no file can be written anywhere or read in the shared /tmp
            # and /dev/shm, no abstract socket reached (the kernel's Landlock; NCCL ranks keep
            # /dev/shm, where NCCL's own buffers live).
            from autograder.child import execlock

            execlock.confine_files(["/tmp", "/dev/shm"])
        out = []
        for case in cases:
            tools.allow(allow(case[rank]))
            before, before_to = tools.sent, dict(tools.sent_to)
            try:
                value = _host(run_case(ns, case[rank], device))
                out.append({"returned": True, "value": value, "sent": tools.sent - before,
                            "sent_to": {d: n - before_to.get(d, 0) for d, n in tools.sent_to.items()
                                        if n != before_to.get(d, 0)}})
            except BaseException as e:  # noqa: BLE001  (the student's failure, reported)
                tb = [f"{fs.name}: {fs.line}" for fs in traceback.extract_tb(e.__traceback__)
                      if fs.filename == "submission.py"][-2:]
                out.append({"returned": False, "error": f"{type(e).__name__}: {e}"[:500], "where": tb,
                            "sent": tools.sent - before})
                if isinstance(e, ForbiddenCollective):
                    break
        _send(conn, out)
        if backend != "gloo":
            # (A confined gloo rank skips this: its FileStore would reopen the rendezvous
            # file and fail; os._exit below ends everything anyway.)
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001
                pass
    except BaseException as e:  # noqa: BLE001
        _send(conn, [{"returned": False, "error": f"process group: {type(e).__name__}: {e}"[:500], "sent": 0}])
    finally:
        conn.close()
        os._exit(0)


def _receive(conn) -> list:
    try:
        return torch.load(io.BytesIO(conn.recv_bytes()), weights_only=True)
    except Exception:  # noqa: BLE001 - a dead rank, or a value the safe loader refuses
        return [{"returned": False, "error": "the rank's process died, or sent back something other than tensors "
                                       "and numbers", "sent": 0}]


def run_ranks(ns, world, cases, run_case, timeout=30.0, device="cpu", allow=_never):
    """cases: a list of per-rank lists (case[rank] = {"op": ..., ...}); `run_case(ns, case,
    device)` runs one in a rank and returns what the judge reads; `allow(case)`: the
    collectives that case may call. Returns {"results": [per rank: [per case: {"returned",
    "value" | "error", "sent", "sent_to"}]], "error": str | None, "device", "backend"}."""
    if device.startswith("cuda") and (torch.cuda.device_count() < world or torch.cuda.is_initialized()):
        # NCCL needs a GPU per rank, and ranks forked from a process that has already
        # initialised CUDA cannot use it: those run on gloo, on the CPU.
        device = "cpu"
    # Ranks get CPU copies made here: a forked rank must not touch CUDA it did not start.
    cases = _host(cases)
    ctx = mp.get_context("fork")
    init_file = tempfile.mktemp(prefix="dlopt-pg-", dir="/tmp")
    procs, conns = [], []
    for rank in range(world):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_rank_main, args=(ns, rank, world, init_file, cases, child, device, run_case, allow),
                        daemon=True)
        p.start()
        child.close()
        procs.append(p)
        conns.append(parent)
    deadline = time.monotonic() + timeout
    results: list = [None] * world
    error = None
    for rank, conn in enumerate(conns):
        left = deadline - time.monotonic()
        if left > 0 and conn.poll(left):
            results[rank] = _receive(conn)
        else:
            # What the ranks that did finish raised is usually why the others wait.
            for r, conn_r in enumerate(conns):
                if results[r] is None and conn_r.poll(0):
                    results[r] = _receive(conn_r)
            raised = [f"rank {r}: {c.get('error')}" for r, res in enumerate(results) if res
                      for c in res if not c.get("returned")]
            error = (f"timeout: rank {rank} (and maybe others) did not finish within {timeout:.0f} s: "
                     "a deadlock? (every rank blocked in send or recv at the same time)"
                     + (f"; meanwhile {raised[0]}" if raised else ""))
            break
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(1)
    try:
        os.unlink(init_file)
    except OSError:
        pass
    return {"results": results, "error": error, "device": device,
            "backend": "nccl" if device.startswith("cuda") else "gloo"}
