"""The judge's cache of reference results for fixed inputs: computed once per content of
its sources, reused, recomputed when a source changes or the file is damaged, and kept
where a child cannot read it."""

from __future__ import annotations

import stat

import torch

from autograder.judge.suite import cached_truth, truth_cache_dir


def test_computed_once_reused_and_invalidated(tmp_path, monkeypatch):
    monkeypatch.setenv("DLOPT_TRUTH_CACHE", str(tmp_path / "truth"))
    src = tmp_path / "suite.py"
    src.write_text("v1")
    calls = []

    def compute():
        calls.append(1)
        return (torch.arange(3.0, dtype=torch.float64), [torch.ones(2)], 0.5)

    a = cached_truth("k", compute, [src])
    b = cached_truth("k", compute, [src])
    assert len(calls) == 1 and torch.equal(a[0], b[0]) and b[2] == 0.5
    cached_truth("other key", compute, [src])
    src.write_text("v2")  # the suite changed: its truth is computed again
    cached_truth("k", compute, [src])
    assert len(calls) == 3
    for f in truth_cache_dir().iterdir():
        f.write_bytes(b"garbage")  # a damaged file is recomputed, never trusted
    assert torch.equal(cached_truth("k", compute, [src])[0], a[0]) and len(calls) == 4
    assert stat.S_IMODE(truth_cache_dir().stat().st_mode) == 0o700
