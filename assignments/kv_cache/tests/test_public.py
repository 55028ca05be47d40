"""Public tests of `kv_cache`: what a student sees before submitting (visibility "public").
The hidden suite checks more cases of the same rules (the notebook lists them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autograder.judge.compare import GradingFailure
from autograder.judge.suite import load_module
from reference import kv_cache as ref

HERE = Path(__file__).resolve().parent
C = load_module(HERE / "checks.py", "kv_cache_checks")
pytestmark = pytest.mark.visibility("public")


def _run(student, device, kind, kwargs, ops, **kw):
    kwargs = dict(kwargs, device=device) if device != "cpu" else dict(kwargs)
    what = C.describe_ops(kind, kwargs, ops)
    truth, ops_before = C.truth_of(kind, kwargs, ops, ref), [tuple(C.copied(x) for x in op) for op in ops]
    reply = student.task("run_cache", kind, kwargs, ops, kw.get("check_contents", True), what=what).value
    msg = C.check_run(reply, truth, ops_before, what=what, ref=ref, **kw)
    if msg:
        raise GradingFailure(msg)


def _rand(g, *shape):
    return torch.randn(*shape, generator=g)


@pytest.mark.function("KVCache")
@pytest.mark.points(2)
def test_public_kvcache_append(student, device):
    """Two appends (3 positions, then 2): keys()/values() and len."""
    g = torch.Generator().manual_seed(0)
    ops = [("append", _rand(g, 1, 2, 3, 4), _rand(g, 1, 2, 3, 4)), ("append", _rand(g, 1, 2, 2, 4), _rand(g, 1, 2, 2, 4))]
    _run(student, device, "kv", {"batch": 1, "kv_heads": 2, "head_dim": 4, "max_len": 8, "dtype": torch.float32}, ops,
         outputs=False)


@pytest.mark.function("decode_step")
@pytest.mark.points(4)
def test_public_prefill_then_decode(student, device):
    """Multi-head, float32: a prompt of 6, then 3 decode steps."""
    g = torch.Generator().manual_seed(1)
    ops = [("prefill", _rand(g, 1, 2, 6, 8), _rand(g, 1, 2, 6, 8), _rand(g, 1, 2, 6, 8))]
    ops += [("decode", _rand(g, 1, 2, 1, 8), _rand(g, 1, 2, 1, 8), _rand(g, 1, 2, 1, 8)) for _ in range(3)]
    _run(student, device, "kv", {"batch": 1, "kv_heads": 2, "head_dim": 8, "max_len": 16, "dtype": torch.float32},
         ops, check_contents=False)


@pytest.mark.function("prefill")
@pytest.mark.points(2)
def test_public_grouped_query_prefill(student, device):
    """Grouped-query (Hq = 4, Hkv = 2), float32: one prompt of 5."""
    g = torch.Generator().manual_seed(2)
    ops = [("prefill", _rand(g, 1, 4, 5, 8), _rand(g, 1, 2, 5, 8), _rand(g, 1, 2, 5, 8))]
    _run(student, device, "kv", {"batch": 1, "kv_heads": 2, "head_dim": 8, "max_len": 8, "dtype": torch.float32},
         ops, check_contents=False)


@pytest.mark.function("SinkCache")
@pytest.mark.points(2)
def test_public_sink_cache(student, device):
    """SinkCache(num_sinks=2, window=3): ten appends of one position keep positions 0, 1, 7, 8, 9."""
    g = torch.Generator().manual_seed(3)
    ops = [("append", _rand(g, 1, 1, 1, 2), _rand(g, 1, 1, 1, 2)) for _ in range(10)]
    _run(student, device, "sink", {"batch": 1, "kv_heads": 1, "head_dim": 2, "num_sinks": 2, "window": 3,
                                   "dtype": torch.float32}, ops, outputs=False)
