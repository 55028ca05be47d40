"""An assignment: its folder under `assignments/` and its `assignment.toml`."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from autograder.sandbox import Limits

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS_DIR = REPO_ROOT / "assignments"

GPU_MODES = ("none", "optional", "required")
EXTRACTION_MODES = ("definitions", "all")


class AssignmentError(ValueError):
    """An assignment folder that does not follow the format."""


@dataclass
class Assignment:
    slug: str
    root: Path
    title: str
    points: float
    gpu: str = "none"
    extraction: str = "definitions"
    master: Path | None = None
    harness: Path | None = None
    public_tests: list[Path] = field(default_factory=list)
    hidden_tests: list[Path] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)
    flags_cost_points: bool = False  # [forbidden] flags_cost_points
    runtime_forbidden: list[str] = field(default_factory=list)  # [forbidden] runtime: ops and objects made to raise
    block_autograd: bool = False  # [forbidden] block_autograd: no gradient can be computed in the child

    @property
    def guard(self) -> dict | None:
        if not (self.runtime_forbidden or self.block_autograd):
            return None
        return {"patterns": list(self.runtime_forbidden), "block_autograd": self.block_autograd}
    limits: Limits = field(default_factory=Limits)
    deadline: datetime | None = None
    late_policy: dict = field(default_factory=dict)
    daily_submission_limit: int | None = None
    finished: bool = True

    @property
    def examples_dir(self) -> Path:
        return self.root / "examples"

    def suite(self, which: str) -> list[Path]:
        return {"hidden": self.hidden_tests + self.public_tests, "public": self.public_tests}[which]


def load(slug_or_path: str | Path) -> Assignment:
    root = Path(slug_or_path)
    if not (root / "assignment.toml").exists():
        root = ASSIGNMENTS_DIR / str(slug_or_path)
    cfg_path = root / "assignment.toml"
    if not cfg_path.exists():
        known = ", ".join(all_slugs()) or "none"
        raise AssignmentError(f"no assignment {str(slug_or_path)!r} (known: {known})")
    try:
        cfg = tomllib.loads(cfg_path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise AssignmentError(f"{cfg_path}: {e}") from None

    def path(key: str) -> Path | None:
        return root / cfg[key] if cfg.get(key) else None

    gpu = cfg.get("gpu", "none")
    if gpu not in GPU_MODES:
        raise AssignmentError(f"{cfg_path}: gpu must be one of {GPU_MODES}")
    extraction = cfg.get("extraction", "definitions")
    if extraction not in EXTRACTION_MODES:
        raise AssignmentError(f"{cfg_path}: extraction must be one of {EXTRACTION_MODES}")
    unknown = set(cfg.get("forbidden", {})) - {"apis", "runtime", "block_autograd", "flags_cost_points"}
    if unknown:
        raise AssignmentError(f"{cfg_path}: unknown keys in [forbidden]: {sorted(unknown)}")
    limit_keys = set(Limits.__dataclass_fields__)
    unknown = set(cfg.get("limits", {})) - limit_keys
    if unknown:
        raise AssignmentError(f"{cfg_path}: unknown limits {sorted(unknown)}")
    deadline = cfg.get("deadline")
    if isinstance(deadline, str):
        deadline = datetime.fromisoformat(deadline)
    return Assignment(
        slug=cfg.get("slug", root.name),
        root=root,
        title=cfg["title"],
        points=float(cfg["points"]),
        gpu=gpu,
        extraction=extraction,
        master=path("master"),
        harness=path("harness"),
        public_tests=[root / p for p in cfg.get("public_tests", [])],
        hidden_tests=[root / p for p in cfg.get("hidden_tests", [])],
        forbidden=list(cfg.get("forbidden", {}).get("apis", [])),
        flags_cost_points=bool(cfg.get("forbidden", {}).get("flags_cost_points", False)),
        runtime_forbidden=list(cfg.get("forbidden", {}).get("runtime", [])),
        block_autograd=bool(cfg.get("forbidden", {}).get("block_autograd", False)),
        limits=Limits(**cfg.get("limits", {})),
        deadline=deadline,
        late_policy=dict(cfg.get("late_policy", {})),
        daily_submission_limit=cfg.get("daily_submission_limit"),
        finished=bool(cfg.get("finished", True)),
    )


def all_slugs(finished_only: bool = False) -> list[str]:
    slugs = []
    for p in sorted(ASSIGNMENTS_DIR.glob("*/assignment.toml")):
        if finished_only:
            cfg = tomllib.loads(p.read_text())
            if not cfg.get("finished", True):
                continue
        slugs.append(p.parent.name)
    return slugs
