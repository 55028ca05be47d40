"""autograder/child/ranks.py: process groups for multi-process harnesses (`ring_allreduce`,
`compression`). Run here in the test's own process (the sandbox adds its namespaces around
the same code): per-rank results, bytes per destination, collectives refused unless a case
allows them, a deadlock reported with what the finished ranks raised."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from autograder.child import execlock, ranks

pytestmark = pytest.mark.skipif(execlock.landlock_abi() < 1, reason="the ranks confine themselves with Landlock")


def pass_right(x):
    """Each rank sends x to rank + 1 and returns what rank - 1 sent."""
    r, p = dist.get_rank(), dist.get_world_size()
    got = torch.empty_like(x)
    reqs = [dist.isend(x, (r + 1) % p), dist.irecv(got, (r - 1) % p)]
    for q in reqs:
        q.wait()
    return got


def summed(x):
    dist.all_reduce(x)
    return x


def stuck(x):
    """Rank 0 raises; ranks 1 and 2 both wait to receive from each other."""
    r = dist.get_rank()
    if r == 0:
        raise ValueError("rank 0 gave up")
    dist.recv(x, 3 - r)
    return x


def run_case(ns, case, device):
    return ns[case["fn"]](case["x"].clone())


def allow_sum(case):
    return frozenset({"all_reduce"}) if case.get("allow") else frozenset()


NS = {"pass_right": pass_right, "summed": summed, "stuck": stuck}


def test_results_and_bytes_per_destination():
    world = 3
    cases = [[{"fn": "pass_right", "x": torch.full((10,), float(r))} for r in range(world)]]
    out = ranks.run_ranks(NS, world, cases, run_case, timeout=60)
    assert out["error"] is None and out["backend"] == "gloo"
    for r in range(world):
        res = out["results"][r][0]
        assert res["returned"] and torch.equal(res["value"], torch.full((10,), float((r - 1) % world)))
        assert res["sent"] == 40 and res["sent_to"] == {(r + 1) % world: 40}


def test_a_collective_raises_unless_the_case_allows_it():
    world = 2
    plain = [{"fn": "summed", "x": torch.ones(4)} for _ in range(world)]
    allowed = [dict(c, allow=True) for c in plain]
    out = ranks.run_ranks(NS, world, [allowed, plain], run_case, timeout=60, allow=allow_sum)
    for r in range(world):
        first, second = out["results"][r]
        assert first["returned"] and torch.equal(first["value"], torch.full((4,), 2.0))
        assert not second["returned"] and "all_reduce is forbidden" in second["error"]


def test_a_deadlock_is_reported_with_what_a_finished_rank_raised():
    world = 3
    cases = [[{"fn": "stuck", "x": torch.zeros(3)} for _ in range(world)]]
    out = ranks.run_ranks(NS, world, cases, run_case, timeout=5)
    assert out["error"] is not None and "did not finish" in out["error"]
    assert "rank 0 gave up" in out["error"]
