"""Hidden suite of `ring_allreduce`: the collectives on world sizes 1 to 8, every size
class (fewer elements than ranks, exactly as many, not divisible), every listed dtype,
the bytes each rank sends, and average_gradients against one process's large batch.

The child forks one process per rank and makes the process group itself (gloo over
loopback inside the sandbox; NCCL when it has a GPU per rank), see `harness.py`. The
cases of one test run in one process group; a deadlock costs that test's world size.

Tolerances: int64 sums are exact. A floating sum over p ranks in any order is within
(p - 1) roundings of the exact one: |error| <= (p - 1) u sum_r |x_r| (u = 2**-24 for
float32, 2**-53 for float64, 2**-8 for bfloat16); the inputs are small integers times
a random scale, so float64 is exact and the others are held to that bound.
"""

from __future__ import annotations

import math

import pytest
import torch

from autograder.judge.compare import (
    CaseTally,
    GradingFailure,
    expect_close,
    expect_unchanged,
    first_failure,
)
from autograder.judge.suite import generator
from autograder.protocol.specs import build, mlp_spec

WORLDS = [1, 2, 3, 4, 5, 8]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.int64]
CALL_SECONDS = 90
RANK_SECONDS = 15  # the whole batch of one world size takes under 1 s with a correct ring


def sizes_for(world: int) -> list[int]:
    """Exactly as many elements as ranks, not divisible, large. Fewer elements than ranks is
    an edge case with a test of its own (test_fewer_elements_than_ranks)."""
    return sorted({world, 7 * world + 3, 1001})


def small_sizes_for(world: int) -> list[int]:
    """Fewer elements than ranks: one element, and one less than the world size."""
    return sorted({1, world - 1})


SMALL_WORLDS = [2, 3, 8]


def rank_inputs(label: str, world: int, n: int, dtype) -> list[torch.Tensor]:
    g = generator(f"{label}/{world}/{n}/{dtype}")
    ints = [torch.randint(-50, 50, (n,), generator=g) for _ in range(world)]
    if dtype == torch.int64:
        return ints
    scale = float(torch.rand((), generator=g)) + 0.5
    return [(t.double() * scale).to(dtype) for t in ints]


def tolerance(inputs: list[torch.Tensor]) -> torch.Tensor:
    dtype = inputs[0].dtype
    if not dtype.is_floating_point:
        return torch.zeros(inputs[0].shape, dtype=torch.float64)
    u = torch.finfo(dtype).eps / 2
    return (len(inputs) - 1) * u * sum(t.double().abs() for t in inputs) + 1e-300


class Deadlock(GradingFailure):
    pass


DEADLOCKED: dict[str, str] = {}  # function -> the first deadlock seen: later runs of it are not retried


class NoTraffic(GradingFailure):
    """The results are right but the data did not cross the network: it moved some other
    way (files, shared memory), which the contract rules out."""


def minimum_traffic(world: int, cases: list) -> int:
    """Bytes that any correct implementation must send between ranks for these cases: each
    element of a reduce-scatter or an all-gather must reach p - 1 other ranks (a partial sum
    may stand for several, which is why the ring is optimal: (p - 1) n in all), an
    all-reduce is both (2 (p - 1) n), average_gradients all-reduces every gradient."""
    total = 0
    for ranks in cases:
        case = ranks[0]
        op = case["op"]
        if op in ("all_reduce", "reduce_scatter"):
            t = case["input"]
            total += (2 if op == "all_reduce" else 1) * (world - 1) * t.numel() * t.element_size()
        elif op == "all_gather":
            total += (world - 1) * case["numel"] * case["input"].element_size()
        elif op == "average_gradients":
            numel = sum(v.numel() for v in case["model"]["state"].values()) if case["model"].get("state") else 0
            total += 2 * (world - 1) * numel * 4
    return total


# A correct solution's traffic is at least the minimum (gloo's headers only add to it);
# half of it leaves room for any way the process group's own setup differs from the
# baseline run. Data written to /tmp or shared memory sends nothing.
TRAFFIC_FLOOR = 0.5
_BASELINE: dict[tuple[int, int], int | None] = {}


def _baseline(student, world, device) -> int | None:
    """Loopback bytes of a run that only builds the process group, once per world size."""
    key = (id(student), world)
    if key not in _BASELINE:
        empty = student.task("run_ranks", world, [[{"op": "noop"} for _ in range(world)]], RANK_SECONDS, device,
                             timeout=CALL_SECONDS, what=f"setting up a process group of {world} ranks")
        _BASELINE[key] = empty.loopback_bytes if empty.value.get("backend") == "gloo" else None
    return _BASELINE[key]


def run(student, world, cases, device, what, inputs_after: list | None = None, edge: str = "",
        check_traffic: bool = True):
    """The ranks' results per rank and case. `inputs_after`: filled with the cases as the
    ranks left them, read back by the judge from the shared memory the ranks worked in.
    `edge`: an edge case's own test; a deadlock there skips only that test's later runs
    (a deadlock of the function's main cases skips the edge case's runs too). `check_traffic`:
    off for cases of a few bytes, whose payload is within the loopback count's noise."""
    fn = what.split(" ")[0]
    key = f"{fn} ({edge})" if edge else fn
    for k in dict.fromkeys((fn, key)):
        if k in DEADLOCKED:
            raise Deadlock(f"{what}: not run, {k} deadlocked earlier ({DEADLOCKED[k]})")
    reply = student.task("run_ranks", world, cases, RANK_SECONDS, device, timeout=CALL_SECONDS, what=what,
                         return_args=inputs_after is not None)
    if inputs_after is not None:
        inputs_after.append(reply.args_after[1] if reply.args_after else None)
    value = reply.value
    if value.get("error"):
        DEADLOCKED[key] = f"world size {world}"
        raise Deadlock(f"{what}, world size {world}: {value['error']}")
    need = minimum_traffic(world, cases)
    if check_traffic and world > 1 and need and reply.loopback_bytes is not None and value.get("backend") == "gloo":
        base = _baseline(student, world, device)
        if base is not None and reply.loopback_bytes - base < TRAFFIC_FLOOR * need:
            raise NoTraffic(f"{what}: the ranks sent {max(0, reply.loopback_bytes - base):,} bytes to each other (the "
                            f"kernel's count of the sandbox's network), but these results need at least {need:,}: "
                            "data must move between ranks with send/recv/isend/irecv, not through files or shared "
                            "memory")
    return value["results"]


def case_failure(result: dict) -> str | None:
    if result is None:
        return "no result from this rank"
    if not result.get("returned"):
        where = "; ".join(result.get("where") or [])
        return f"raised {result.get('error')}" + (f" (in {where})" if where else "")
    return None


def _compare(got, want, tol, what) -> str | None:
    """Each element within its own bound `tol` (the rounding of its own sum: `tolerance`)."""
    return first_failure(expect_close, got, want, call=what, what="the result", rtol=0.0, atol=tol)


def collective_test(student, device, op, label, worlds=WORLDS, sizes=sizes_for, edge=""):
    score = CaseTally()
    for world in worlds:
        cases, checks = [], []
        for dtype in DTYPES:
            for n in sizes(world):
                ins = rank_inputs(label, world, n, dtype)
                exact = sum(t.double() for t in ins)
                tol = tolerance(ins)
                parts = list(torch.tensor_split(exact, world))
                tparts = list(torch.tensor_split(tol, world))
                if op == "all_reduce":
                    cases.append([{"op": op, "input": ins[r]} for r in range(world)])
                    wants = [(exact.to(dtype), tol)] * world
                elif op == "reduce_scatter":
                    cases.append([{"op": op, "input": ins[r]} for r in range(world)])
                    wants = [(parts[r].to(dtype), tparts[r]) for r in range(world)]
                else:  # all_gather: rank r holds chunk r of one tensor
                    flat = ins[0]
                    chunks = list(torch.tensor_split(flat, world))
                    cases.append([{"op": op, "input": chunks[r].clone(), "numel": n} for r in range(world)])
                    wants = [(flat, torch.zeros(n, dtype=torch.float64))] * world
                checks.append((dtype, n, wants))
        if op == "reduce_scatter" and not edge:
            # Tensors of more than one dimension: chunks of the FLATTENED tensor (not of dim 0).
            for shape in ((7, 13), (3, 5, 4)):
                n = math.prod(shape)
                ins = [t.reshape(shape) for t in rank_inputs(label, world, n, torch.float64)]
                exact, tol = sum(t.double() for t in ins).reshape(-1), tolerance(ins).reshape(-1)
                parts, tparts = torch.tensor_split(exact, world), torch.tensor_split(tol, world)
                cases.append([{"op": op, "input": ins[r]} for r in range(world)])
                checks.append((torch.float64, "x".join(map(str, shape)),
                               [(parts[r], tparts[r]) for r in range(world)]))
        fn = {"all_reduce": "ring_all_reduce", "reduce_scatter": "ring_reduce_scatter",
              "all_gather": "ring_all_gather"}[op]
        try:
            results = run(student, world, cases, device, f"{fn} on {world} rank(s)", edge=edge,
                          check_traffic=not edge)
        except (Deadlock, NoTraffic) as e:
            for _ in checks:
                score.add(str(e))
            continue
        for i, (dtype, n, wants) in enumerate(checks):
            msg = None
            for rank in range(world):
                res = results[rank][i] if results[rank] and i < len(results[rank]) else None
                what = f"{fn}(...) with world size {world}, {n} elements of {dtype}, rank {rank}"
                msg = (f"{what}: {case_failure(res)}" if case_failure(res) else
                       _compare(res["value"], wants[rank][0], wants[rank][1], what))
                if msg:
                    break
            score.add(msg)
    score.finish()


@pytest.mark.function("ring_all_reduce")
@pytest.mark.points(22)
def test_ring_all_reduce(student, device):
    """ring_all_reduce on 1-8 ranks, 4 dtypes, sizes at and not divisible by the world size."""
    collective_test(student, device, "all_reduce", "ar")


@pytest.mark.function("ring_reduce_scatter")
@pytest.mark.points(13)
def test_ring_reduce_scatter(student, device):
    """ring_reduce_scatter: rank r returns chunk r (torch.tensor_split's layout) summed over ranks."""
    collective_test(student, device, "reduce_scatter", "rs")


@pytest.mark.function("ring_reduce_scatter")
@pytest.mark.points(3)
def test_ring_reduce_scatter_leaves_its_input_unchanged(student, device):
    """ring_reduce_scatter returns a new chunk and leaves its input as it was (it is not "in
    place"): each rank's input is read back by the judge from the memory the ranks shared."""
    score = CaseTally()
    for world in (2, 3, 4):
        n = 7 * world + 3
        ins = rank_inputs("rs-unchanged", world, n, torch.float64)
        before = [t.clone() for t in ins]
        left: list = []
        what = f"ring_reduce_scatter on {world} ranks"
        results = run(student, world, [[{"op": "reduce_scatter", "input": ins[r]} for r in range(world)]], device,
                      what, inputs_after=left)
        for rank in range(world):
            call = f"ring_reduce_scatter(float64[{n}]) with world size {world}, rank {rank}"
            if case_failure(results[rank][0] if results[rank] else None):
                score.add(f"{call}: {case_failure(results[rank][0] if results[rank] else None)}")
            elif left[0] is None:
                score.add(f"{call}: its input could not be read back")
            else:
                score.add(first_failure(expect_unchanged, before[rank], left[0][0][rank]["input"], call=call,
                                        name="tensor"))
    score.finish()


@pytest.mark.function("ring_all_gather")
@pytest.mark.points(12)
def test_ring_all_gather(student, device):
    """ring_all_gather: every rank ends with the whole flat tensor, chunks in tensor_split's layout."""
    collective_test(student, device, "all_gather", "ag")


EDGE_OPS = [("all_reduce", "ring_all_reduce"), ("reduce_scatter", "ring_reduce_scatter"),
            ("all_gather", "ring_all_gather")]


@pytest.mark.points(2)
@pytest.mark.parametrize("op,fn", [pytest.param(op, fn, marks=pytest.mark.function(fn), id=fn) for op, fn in EDGE_OPS])
def test_fewer_elements_than_ranks(student, device, op, fn):
    """An edge case the notebook states, a test of its own: 1 and p - 1 elements on 2, 3 and
    8 ranks (some chunks empty: skip them on both sides alike), 4 dtypes."""
    collective_test(student, device, op, f"{op}-small", worlds=SMALL_WORLDS, sizes=small_sizes_for,
                    edge="fewer elements than ranks")


@pytest.mark.function("ring_all_reduce")
@pytest.mark.points(8)
def test_ring_all_reduce_keeps_shape_in_place(student, device):
    """ring_all_reduce on a 2-D tensor: summed in place, shape kept."""
    score = CaseTally()
    for world in (2, 3):
        ins = [t.reshape(7, 13) for t in rank_inputs("shape", world, 91, torch.float64)]
        results = run(student, world, [[{"op": "all_reduce", "input": ins[r]} for r in range(world)]], device,
                      f"ring_all_reduce on {world} ranks")
        for rank in range(world):
            res = results[rank][0]
            what = f"ring_all_reduce(float64[7, 13]) with world size {world}, rank {rank}"
            score.add(f"{what}: {case_failure(res)}" if case_failure(res) else
                      _compare(res["value"], sum(ins).to(torch.float64), torch.zeros(7, 13), what))
    score.finish()


# What the sandbox's sockets send on its own loopback, by the kernel's count (read by the
# judge: bytes less 66 bytes of headers per packet, so acknowledgements and connection
# retries under load do not count), minus a run that only builds the process group.
# Measured for the master on 2-8 ranks beside 4 spinning processes: 1.004-1.05 x a ring's
# payload; all-to-all sends 1.5x (3 ranks) to 4x (8 ranks). Allowed: 1.10 x the payload
# plus 2 KiB per pair of ranks (gloo's own messages).
LOOPBACK_FACTOR = 1.10
LOOPBACK_PER_PAIR = 2048


def loopback_payload(student, world, cases, device, what):
    """(per-rank results, bytes the ranks sent on the loopback beyond the process group's own
    traffic, by the kernel's count; None where the machine gives no such count)."""
    reply = student.task("run_ranks", world, cases, RANK_SECONDS, device, timeout=CALL_SECONDS, what=what)
    value = reply.value
    if value.get("error"):
        raise Deadlock(f"{what}, world size {world}: {value['error']}")
    base = _baseline(student, world, device)
    if base is None or reply.loopback_bytes is None or value.get("backend") != "gloo":
        return value["results"], None
    return value["results"], reply.loopback_bytes - base


@pytest.mark.function("ring_all_reduce")
@pytest.mark.points(14)
def test_ring_all_reduce_sends_two_p_minus_one_over_p(student, device):
    """Bytes sent: the whole sandbox's loopback traffic (the kernel's count) within a ring's
    2 (p - 1) n, and each rank's own sends 2 (p - 1) / p of the tensor, up to chunk rounding."""
    score = CaseTally()
    for world in (2, 3, 4, 5, 8):
        n = 10_007  # prime: chunks differ by one element
        ins = rank_inputs("bytes", world, n, torch.float32)
        what = f"ring_all_reduce on {world} ranks"
        if "ring_all_reduce" in DEADLOCKED:
            raise Deadlock(f"{what}: not run, ring_all_reduce deadlocked earlier ({DEADLOCKED['ring_all_reduce']})")
        results, on_wire = loopback_payload(student, world, [[{"op": "all_reduce", "input": ins[r]}
                                                             for r in range(world)]], device, what)
        ideal = 2 * (world - 1) / world * n * 4
        failed = [case_failure(results[rank][0]) for rank in range(world) if case_failure(results[rank][0])]
        if failed:  # a rank that raised sent nothing: its traffic proves nothing either
            score.add(f"ring_all_reduce with world size {world}: no traffic to count ({failed[0]})")
        elif on_wire is not None:
            allowed = LOOPBACK_FACTOR * world * ideal + LOOPBACK_PER_PAIR * world * world
            score.add(None if on_wire <= allowed else
                      f"ring_all_reduce(float32[{n}]) with world size {world}: the ranks sent {on_wire:,} bytes in all "
                      f"(the kernel's count of the sandbox's network), more than a ring's {world * ideal:,.0f} plus "
                      f"message overhead ({allowed:,.0f}): send each chunk once, to the next rank only")
        slack = 2 * (world - 1) * 4  # one element per chunk sent, either way
        for rank in range(world):
            res = results[rank][0]
            if case_failure(res):
                score.add(f"ring_all_reduce with world size {world}, rank {rank}: {case_failure(res)}")
                continue
            sent = res["sent"]
            score.add(None if abs(sent - ideal) <= slack else
                      f"ring_all_reduce(float32[{n}]) with world size {world}: rank {rank} sent {sent:,} bytes through "
                      f"send/isend; a ring sends 2 (p - 1) / p of the tensor, {ideal:,.0f} bytes (+-{slack}): "
                      "reduce-scatter then all-gather, one chunk per step to the next rank")
    score.finish()


@pytest.mark.function("average_gradients")
@pytest.mark.points(14)
def test_average_gradients_equals_large_batch(student, device):
    """average_gradients: each rank's gradient of its shard, averaged, equals one process's gradient
    of the whole batch (float32: 8 roundings of the sum allowed)."""
    score = CaseTally()
    sizes = [6, 16, 3]
    for world in (1, 2, 4):
        g = generator(f"avg/{world}")
        model = build("mlp", {"sizes": sizes, "state": {}, "activation": "tanh", "dtype": torch.float32})
        state = {k: torch.randn(v.shape, generator=g) * 0.5 for k, v in model.state_dict().items()}
        model.load_state_dict(state)
        x, y = torch.randn(8 * world, 6, generator=g), torch.randn(8 * world, 3, generator=g)
        torch.nn.functional.mse_loss(model(x), y).backward()
        want = [p.grad.detach().clone() for p in model.parameters()]
        spec = dict(mlp_spec(sizes, state, "tanh", torch.float32).params)
        cases = [[{"op": "average_gradients", "model": spec, "x": x[8 * r:8 * (r + 1)], "y": y[8 * r:8 * (r + 1)]}
                  for r in range(world)]]
        results = run(student, world, cases, device, f"average_gradients on {world} ranks")
        for rank in range(world):
            res = results[rank][0]
            what = f"average_gradients(model) with world size {world}, rank {rank}"
            if case_failure(res):
                score.add(f"{what}: {case_failure(res)}")
                continue
            msg = None
            for (name, _), got, w in zip(model.named_parameters(), res["value"], want):
                tol = 8 * 2**-24 * (w.double().abs() + float(w.abs().max())) + 1e-7
                msg = _compare(got, w, tol, f"{what}, {name}.grad")
                if msg:
                    msg += " (the mean over ranks, not the sum)" if got is not None else ""
                    break
            score.add(msg)
    score.finish()


@pytest.mark.function("ring_all_reduce")
@pytest.mark.points(4)
def test_ring_all_reduce_int64_is_exact(student, device):
    """ring_all_reduce on int64 values near 2**60: exact, no float round trip."""
    score = CaseTally()
    world = 3
    g = generator("int64-big")
    ins = [torch.randint(2**59, 2**60, (17,), generator=g) for _ in range(world)]
    ins[1] = -ins[1]
    results = run(student, world, [[{"op": "all_reduce", "input": ins[r]} for r in range(world)]], device,
                  "ring_all_reduce on 3 ranks")
    want = ins[0] + ins[1] + ins[2]
    for rank in range(world):
        res = results[rank][0]
        if case_failure(res):
            score.add(f"rank {rank}: {case_failure(res)}")
        elif not (isinstance(res["value"], torch.Tensor) and torch.equal(res["value"], want)):
            got = res["value"]
            i = int((got != want).nonzero()[0]) if isinstance(got, torch.Tensor) and got.shape == want.shape else 0
            score.add(f"ring_all_reduce(int64[17] near 2**60) with world size 3, rank {rank}: not the exact sum; "
                      f"element {i}: expected {int(want[i])}, got {got.reshape(-1)[i].item() if isinstance(got, torch.Tensor) else got}"
                      " (a float conversion loses the low bits; and the sum goes into the tensor itself)")
        else:
            score.add(None)
    score.finish()
