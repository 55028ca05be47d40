"""Helpers for writing hidden suites: trusted harness modules and seeded inputs."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from types import ModuleType

import torch


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
