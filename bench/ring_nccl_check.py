"""Does the ring_allreduce harness really run NCCL on GPUs, inside the sandbox?

For world sizes 1 to the number of visible GPUs, runs `run_ranks` (the harness of the
grading child, through the same sandbox as grading) with device="cuda" on the master
solution and on three example submissions, and prints per run: the backend the ranks
used (nccl or gloo), whether every rank's all_reduce equals the float64 sum of the
inputs, the bytes rank 0 sent against 2 (p - 1) / p of the tensor, and any error. The
deadlocking example must end as a timeout, the forbidden collective as a clean error,
and the master must still run on NCCL after both (no GPU left wedged).

Run on a machine with >= 2 GPUs: `python bench/ring_nccl_check.py` (exit 1 when a run
does not behave as described).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autograder import assignment as assignments  # noqa: E402
from autograder.authoring.notebook import extract  # noqa: E402
from autograder.judge.student import StudentCode  # noqa: E402

N = 1_000_003  # not divisible by any world size tried: uneven chunks
RANK_SECONDS = 20


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a dry run of this script (gloo only)


BATCHED = """    if ops:
        for work in dist.batch_isend_irecv(ops):
            work.wait()"""
SEPARATE = """    for op in ops:
        op.wait()"""


def separate_isend_irecv() -> str:
    """The reference with each step's isend and irecv posted as separate calls (the master
    before it moved to batch_isend_irecv): correct on gloo."""
    src = (REPO / "reference" / "ring_allreduce.py").read_text()
    for a, b in [("dist.P2POp(dist.isend, ", "dist.isend("), ("dist.P2POp(dist.irecv, ", "dist.irecv("),
                 (BATCHED, SEPARATE)]:
        assert a in src, a
        src = src.replace(a, b)
    return src


def run(a, path: Path | str, world: int) -> dict:
    source = path if isinstance(path, str) else extract(path, a.extraction).source
    student = StudentCode(source=source, limits=a.limits, device=DEVICE, gpu=DEVICE == "cuda",
                          harness=a.harness, forbidden_patterns=a.forbidden)
    g = torch.Generator().manual_seed(world)
    ins = [torch.randint(-50, 50, (N,), generator=g).float() for _ in range(world)]
    want = torch.stack([t.double() for t in ins]).sum(0)
    started = time.perf_counter()
    try:
        reply = student.task("run_ranks", world, [[{"op": "all_reduce", "input": ins[r]} for r in range(world)]],
                             RANK_SECONDS, DEVICE, timeout=RANK_SECONDS + 30, what="run_ranks").value
        log = student.log_tail()
    finally:
        student.close()
    row = {"backend": reply.get("backend"), "error": reply.get("error"), "seconds": time.perf_counter() - started,
           "log": log}
    if reply.get("error") is None:
        outs = [r[0] for r in reply["results"]]
        row["ok"] = all(o["returned"] and torch.equal(o["value"].double(), want) for o in outs)
        row["errors"] = [o.get("error") for o in outs if not o["returned"]][:1]
        row["sent_ratio"] = outs[0]["sent"] / (2 * (world - 1) / world * N * 4) if world > 1 else None
    return row


def main() -> int:
    gpus = torch.cuda.device_count()
    if gpus:
        print(f"{gpus} x {torch.cuda.get_device_name()}, torch {torch.__version__}, "
              f"NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}")
    gpus = gpus or 2
    gpu_backend = "nccl" if DEVICE == "cuda" else "gloo"
    a = assignments.load("ring_allreduce")
    ex = a.examples_dir
    plan = [(a.master, w, gpu_backend, True) for w in range(1, gpus + 1)]
    plan += [(ex / "correct_alternative.py", gpus, gpu_backend, True),
             (ex / "correct_batch_p2p.py", gpus, gpu_backend, True),
             # one rank has no neighbour to wait on: the deadlock needs two (gloo on a one-GPU host)
             (ex / "bug_receive_first_deadlock.py", max(gpus, 2), "timeout", False),
             (ex / "forbidden_dist_all_reduce.py", gpus, "forbidden", False),
             (a.master, gpus, gpu_backend, True),  # after a killed deadlock: the GPUs still work
             (a.master, gpus + 1, "gloo", True),  # more ranks than GPUs: gloo on the CPU
             # isend and irecv as separate calls with 2 MB messages: only observed, see RESULTS
             (separate_isend_irecv(), gpus, "observe", True)]
    print("| submission | world | backend | all ranks exact | rank 0 sent / (2(p-1)/p n) | error | s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    good = True
    for path, world, expect, exact in plan:
        row = run(a, path, world)
        err = row["error"] or "; ".join(e or "" for e in row.get("errors", []))
        if expect == "timeout":
            ok = bool(row["error"]) and "timeout" in row["error"]
        elif expect == "forbidden":
            ok = not row.get("ok") and "forbidden" in err
        elif expect == "observe":
            ok = True
            print(f"    observed: {err or 'exact'}; the child's log: {row['log'][-800:]}")
        else:
            ok = row["backend"] == expect and row.get("ok") is exact
        good &= ok
        ratio = f"{row['sent_ratio']:.4f}" if row.get("sent_ratio") else "-"
        name = "probe: separate isend/irecv" if isinstance(path, str) else path.stem
        print(f"| {name} | {world} | {row['backend']} | {row.get('ok', '-')} | {ratio} | {err[:90]} | "
              f"{row['seconds']:.1f} |" + ("" if ok else " UNEXPECTED"))
        if not ok:
            print(f"    full error: {err}\n    the child's log: {row['log'][-1500:]}")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
