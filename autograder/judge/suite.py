"""Helpers for writing hidden suites: trusted harness modules and seeded inputs."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from types import ModuleType

import torch

from autograder import settings


def load_module(path: str | Path, name: str | None = None) -> ModuleType:
    """Import a trusted file of the assignment (its harness) in the judge's process."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(name or f"dlopt_{path.stem}_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generator(label: str) -> torch.Generator:
    """A generator seeded from a test's label: the same inputs at every regrade, different
    inputs for every test, and none of them hand-picked."""
    seed = int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "little")
    return torch.Generator().manual_seed(seed)


def randn(g: torch.Generator, *shape: int, dtype=torch.float32, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def mixed_scale(g: torch.Generator, *shape: int, dtype=torch.float32, low: float = -3.0,
                high: float = 1.0) -> torch.Tensor:
    """Gaussian entries whose magnitudes span 10**low to 10**high (never zero): adaptive
    methods behave differently on small and large coordinates, and bugs show on both."""
    base = torch.randn(*shape, generator=g, dtype=torch.float64)
    exps = torch.empty(*shape, dtype=torch.float64).uniform_(low, high, generator=g)
    out = base * 10**exps
    out = torch.where(out.abs() < 10**low, torch.full_like(out, 10**low), out)
    return out.to(dtype)


def truth_cache_dir() -> Path:
    """Where the judge keeps values it computed itself (`DLOPT_TRUTH_CACHE`, default
    `$XDG_CACHE_HOME/dlopt/truth`): on the host, never mounted into a sandbox, mode 700
    (a child runs as another uid, so even the weak sandbox cannot read it)."""
    return settings.current().truth_cache


def cached_truth(key: str, compute, sources: list[str | Path]):
    """A reference result the judge computes from inputs that are the same on every run
    (a fixed generator label), kept on the host across submissions: `compute()` runs once
    per content of `sources` (the suite and reference files it depends on), the torch
    version and `key`; what it returns (tensors, tuples and lists of them, numbers) is
    stored with torch.save and read back with weights_only=True. Written atomically, so
    judges grading in parallel share it; any read error recomputes. Inputs a suite draws
    fresh per run must not go through here."""
    import os
    import tempfile

    h = hashlib.sha256(f"{torch.__version__}\n{key}\n".encode())
    for src in sources:
        h.update(Path(src).read_bytes())
    folder = truth_cache_dir()
    path = folder / f"{h.hexdigest()[:40]}.pt"
    try:
        return torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001 - absent, partial or from another torch: compute it again
        pass
    value = compute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)  # the judge's alone: a child (another uid) cannot read the answers
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(value, f)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache costs time, not correctness
    return value
