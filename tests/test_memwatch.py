"""Watched calls: the child's allocation watch and the kernel's peak-memory measure.

The outside measure needs a writable memory cgroup (root with cgroup v1 here, or a
delegated cgroup v2) or /proc/PID/clear_refs; tests of its numbers are skipped with the
reason where this machine has neither.
"""

from __future__ import annotations

import pytest
import torch

from autograder.judge.student import StudentCode
from autograder.sandbox import Limits
from autograder.sandbox.memwatch import MemoryWatch

SOURCE = '''
import torch

def big(n):
    x = torch.ones(n, n)          # n*n floats, every page touched
    return float(x.sum())

def tiled(n):
    total = 0.0
    for _ in range(n // 64):
        total += float(torch.ones(64, n).sum())
    return total

def in_numpy(n):
    import numpy as np
    return float(np.ones((n, n), dtype=np.float32).sum())

def hide(n):
    from torch.utils._python_dispatch import _pop_mode
    _pop_mode()                    # takes the grader's watch off the stack for good
    return float(torch.ones(n, n).sum())

def keep(n):
    return 1.0

def small_arg(x):
    return x * 2

def grow_and_keep(n):
    global KEPT
    KEPT = torch.ones(n, n)
    return 0.0
'''
N = 4096  # a 64 MiB float32 matrix
MiB = 1 << 20


@pytest.fixture(scope="module")
def watched():
    st = StudentCode(source=SOURCE, limits=Limits(watch_memory=True, call_seconds=60))
    yield st
    st.close()


def _outside(st: StudentCode) -> str:
    st.call("keep", 0)
    method = st.handle.memory.method if st.handle.memory else "none"
    if method == "none":
        pytest.skip("no writable memory cgroup and no /proc/PID/clear_refs here: the outside measure is off")
    return method


def test_the_watch_sees_the_largest_allocation_and_its_line(watched):
    r = watched.call("big", 512, watch_memory=True)
    big = r.memory["largest"]
    assert big["elements"] == 512 * 512 and big["shape"] == [512, 512] and "ones" in big["op"]
    assert big["line"] == 5 and r.memory["intact"] is True
    r = watched.call("tiled", 512, watch_memory=True)
    assert r.memory["largest"]["elements"] == 64 * 512
    # Views and in-place results are not allocations: the argument's own storage.
    r = watched.call("small_arg", torch.ones(10), watch_memory=True)
    assert r.memory["largest"]["elements"] == 10 and r.memory["allocations"] == 1


def test_the_kernel_measure_sees_big_allocations_and_numpy(watched):
    method = _outside(watched)
    assert method in ("cgroup-v1", "cgroup-v2", "proc")
    big = watched.call("big", N, watch_memory=True).memory["peak_extra_bytes"]
    tiled = watched.call("tiled", N, watch_memory=True).memory["peak_extra_bytes"]
    numpy = watched.call("in_numpy", N, watch_memory=True).memory
    assert big >= 60 * MiB, big
    assert tiled < 16 * MiB, tiled
    assert numpy["largest"] is None and numpy["peak_extra_bytes"] >= 60 * MiB  # torch never saw it


def test_switching_the_watch_off_is_reported_and_measured(watched):
    method = _outside(watched)
    r = watched.call("hide", N, watch_memory=True)
    assert r.memory["intact"] is False
    if method != "none":
        assert r.memory["peak_extra_bytes"] >= 60 * MiB
    watched.restart()


def test_memory_kept_between_calls_shows_in_resident_bytes(watched):
    _outside(watched)
    before = watched.resident_bytes()
    watched.call("grow_and_keep", N)
    assert watched.resident_bytes() - before >= 60 * MiB
    watched.restart()
    assert watched.resident_bytes() - before < 32 * MiB


def test_calibration_child_is_separate_and_gone():
    st = StudentCode(source="", limits=Limits(watch_memory=True))
    try:
        base = st.calibrate_memory(SOURCE, "keep", 0)
        if MemoryWatch().method == "none":
            assert base is None
        else:
            assert base is not None and base > 50 * MiB  # a Python with torch imported
        assert st.handle is None  # the student's own child was never started
    finally:
        st.close()


def test_without_watch_memory_every_child_still_has_its_cgroup_and_limit():
    # Every child gets a memory cgroup with a hard limit (issue 13); `watch_memory` adds
    # the malloc tunables that make its peaks exact.
    st = StudentCode(source=SOURCE, limits=Limits())
    try:
        r = st.call("big", 256, watch_memory=True)
        assert r.memory["method"] in ("cgroup-v1", "cgroup-v2", "proc", "none")
        assert st.sandbox.get("memory_limit") == r.memory["method"].startswith("cgroup")
        assert r.memory["largest"]["elements"] == 256 * 256  # the in-child watch still works
        assert st.call("big", 256).memory is None
    finally:
        st.close()


def test_expect_memory_within_and_case_tally():
    from autograder.judge.compare import (
        CaseTally,
        GradingFailure,
        PartialCredit,
        expect_memory_within,
    )

    expect_memory_within({"peak_extra_bytes": 10 * MiB, "method": "cgroup-v1"}, 16 * MiB, call="f()", advice="")
    expect_memory_within({"peak_extra_bytes": None}, 1, call="f()", advice="")  # no measure: nothing to hold
    with pytest.raises(GradingFailure, match="20 MiB of extra memory by CUDA's allocator"):
        expect_memory_within({"peak_extra_bytes": 1, "cuda_peak_extra_bytes": 20 * MiB}, 16 * MiB,
                             call="f()", advice="tile it")
    tally = CaseTally()

    def case(ok):
        if not ok:
            raise GradingFailure("case failed")

    for ok in (True, False, True, True):
        tally.run(case, ok)
    with pytest.raises(PartialCredit) as e:
        tally.finish()
    assert e.value.fraction == 0.75 and "3 of 4 cases pass" in str(e.value)
    CaseTally().finish()  # no cases, no failure
