"""Harness of `ring_allreduce`: trusted code that runs in the sandboxed child.

`run_ranks` forks `world` processes from the child (the student's functions are
already loaded there), each joins a process group of its own making (gloo over
loopback inside the sandbox's network namespace, rendezvous through a file in the
private /tmp; NCCL when there is one GPU per rank), runs a list of cases with the
student's functions, and sends back its results, the bytes it sent through
send/isend/batch_isend_irecv, and any error. Collectives other than `barrier` are
replaced in each rank by a function that raises, so a forbidden call fails cleanly
and is reported; a rank that does not finish in time (a deadlock) is killed and
reported. The judge sees only tensors and strings.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import tempfile
import time
import traceback

import torch

FORBIDDEN = ["all_reduce", "reduce_scatter", "reduce_scatter_tensor", "all_gather", "all_gather_into_tensor",
             "all_gather_object", "broadcast", "broadcast_object_list", "reduce", "all_to_all",
             "all_to_all_single", "gather", "scatter", "all_reduce_coalesced", "_reduce_scatter_base",
             "_all_gather_base"]


# The child keeps the judge's tensors on the CPU: each rank moves its own inputs to its
# GPU. A child that touched CUDA before forking could not give its ranks NCCL.
HOST_TENSORS = True


class ForbiddenCollective(RuntimeError):
    pass


def _instrument(dist, sent: list[int]):
    # Bytes are counted where every send ends: ProcessGroup.send, which send, isend and
    # batch_isend_irecv all call, however the student imported them (`from
    # torch.distributed import isend` before this runs, `dist.P2POp(dist.isend, ...)`,
    # whose op must stay torch's own function).
    pg_class = torch._C._distributed_c10d.ProcessGroup
    orig_pg_send = pg_class.send

    def pg_send(self, tensors, *a, **k):
        for t in tensors:
            sent[0] += t.numel() * t.element_size()
        return orig_pg_send(self, tensors, *a, **k)

    pg_class.send = pg_send
    for name in FORBIDDEN:
        if hasattr(dist, name):
            def forbidden(*a, _name=name, **k):
                raise ForbiddenCollective(f"torch.distributed.{_name} is forbidden: move data with send/recv/"
                                          "isend/irecv/batch_isend_irecv only")
            setattr(dist, name, forbidden)


def _run_case(ns, case, device):
    op = case["op"]
    if op == "noop":  # the process group alone: the judge's baseline for loopback bytes
        return None
    if op in ("reduce_scatter", "all_gather"):
        x = case["input"].to(device)  # on the CPU: the judge's tensor itself, in the shared file
        if op == "reduce_scatter":
            value = ns["ring_reduce_scatter"](x)
        else:
            value = ns["ring_all_gather"](x, case["numel"])
        if x is not case["input"]:
            # A rank on a GPU worked on its own copy: the input goes back to the host tensor,
            # which the judge reads back (a change there is a change the student made).
            case["input"].copy_(x.detach().cpu())
        return value
    if op == "all_reduce":
        t = case["input"].to(device).clone()
        ns["ring_all_reduce"](t)  # in place: what it returns is ignored
        return t
    if op == "average_gradients":
        from autograder.protocol.specs import build

        model = build("mlp", dict(case["model"]))
        model.to(device)
        x, y = case["x"].to(device), case["y"].to(device)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        ns["average_gradients"](model)
        return [p.grad.detach().clone() if p.grad is not None else None for p in model.parameters()]
    raise ValueError(f"unknown case {op!r}")


def _send(conn, obj) -> None:
    # torch.save, not multiprocessing's pickling: that moves tensors through /dev/shm,
    # which the sandbox does not have.
    buf = io.BytesIO()
    torch.save(obj, buf)
    conn.send_bytes(buf.getvalue())


def _rank_main(ns, rank, world, init_file, cases, conn, device):
    try:
        import torch.distributed as dist

        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(rank)
            device = f"cuda:{rank}"
        dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
        sent = [0]
        _instrument(dist, sent)
        if backend == "gloo":
            # From here on the ranks can exchange data only through the process group, where
            # the judge counts it: no file can be written anywhere or read in the shared /tmp
            # and /dev/shm, no abstract socket reached (the kernel's Landlock; NCCL ranks keep
            # /dev/shm, where NCCL's own buffers live).
            from autograder.child import execlock

            execlock.confine_files(["/tmp", "/dev/shm"])
        out = []
        for case in cases:
            before = sent[0]
            try:
                value = _run_case(ns, case[rank], device)
                if isinstance(value, torch.Tensor):
                    value = value.detach().cpu()
                elif isinstance(value, list):
                    value = [v.cpu() if isinstance(v, torch.Tensor) else v for v in value]
                out.append({"ok": True, "value": value, "sent": sent[0] - before})
            except BaseException as e:  # noqa: BLE001  (the student's failure, reported)
                tb = [f"{fs.name}: {fs.line}" for fs in traceback.extract_tb(e.__traceback__)
                      if fs.filename == "submission.py"][-2:]
                out.append({"ok": False, "error": f"{type(e).__name__}: {e}"[:500], "where": tb,
                            "sent": sent[0] - before})
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
        _send(conn, [{"ok": False, "error": f"process group: {type(e).__name__}: {e}"[:500], "sent": 0}])
    finally:
        conn.close()
        os._exit(0)


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def run_ranks(ns, world, cases, timeout=30.0, device="cpu"):
    """cases: a list of per-rank lists (case[rank] = {"op": ..., ...}). Returns
    {"results": [per rank: [per case: {...}]], "error": str | None}."""
    if device.startswith("cuda") and (torch.cuda.device_count() < world or torch.cuda.is_initialized()):
        # NCCL needs a GPU per rank, and ranks forked from a process that has already
        # initialised CUDA cannot use it: those run on gloo, on the CPU.
        device = "cpu"
    # Ranks get CPU copies made here: a forked rank must not touch CUDA it did not start.
    cases = _to_cpu(cases)
    ctx = mp.get_context("fork")
    init_file = tempfile.mktemp(prefix="dlopt-pg-", dir="/tmp")
    procs, conns = [], []
    for rank in range(world):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_rank_main, args=(ns, rank, world, init_file, cases, child, device), daemon=True)
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
            try:
                results[rank] = torch.load(io.BytesIO(conn.recv_bytes()), weights_only=True)
            except (EOFError, OSError, RuntimeError):
                results[rank] = [{"ok": False, "error": "the rank's process died", "sent": 0}]
        else:
            error = (f"timeout: rank {rank} (and maybe others) did not finish within {timeout:.0f} s: "
                     "a deadlock? (every rank blocked in send or recv at the same time)")
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
