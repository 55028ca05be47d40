"""An assignment: its folder under `assignments/` and its `assignment.toml`."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from autograder import settings
from autograder.sandbox import Limits

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS_DIR = REPO_ROOT / "assignments"

GPU_MODES = ("none", "optional", "required")
EXTRACTION_MODES = ("definitions", "all")
SCORE_POLICIES = ("best", "last")  # the server's final score: the best graded submission, or the last


class AssignmentError(ValueError):
    """An assignment folder that does not follow the format."""


# -- the one schema of assignment.toml (the engine, the server and `dlopt new` use it) ----
NUMBER = (int, float)
STRINGS = "list of strings"


class TableOf(dict):
    """A table whose keys are names the author picks (functions, say), each a table of
    `schema`: [forbidden.functions.lora_backward] with its own apis, runtime, ..."""


FUNCTION_RULES = {"apis": STRINGS, "runtime": STRINGS, "block_autograd": bool}
SCHEMA: dict = {
    "slug": str, "title": str, "points": NUMBER, "gpu": GPU_MODES, "extraction": EXTRACTION_MODES,
    "master": str, "harness": str, "public_tests": STRINGS, "hidden_tests": STRINGS,
    "deadline": (str, datetime), "finished": bool, "daily_submission_limit": int,
    "score_policy": SCORE_POLICIES, "feedback_after_deadline": bool,
    "late_policy": {"grace_minutes": NUMBER, "penalty_per_day": NUMBER, "max_days_late": int},
    "forbidden": {"apis": STRINGS, "runtime": STRINGS, "block_autograd": bool, "flags_cost_points": bool,
                  "allow_imports": STRINGS, "functions": TableOf(FUNCTION_RULES)},
    "boards": list,
    "limits": {name: (NUMBER if f.type in ("float", float) else bool if f.type in ("bool", bool) else int)
               for name, f in Limits.__dataclass_fields__.items()},
}
REQUIRED = ("title", "points")


def _kind(expected) -> str:
    if expected == STRINGS:
        return "a list of strings"
    if isinstance(expected, tuple) and all(isinstance(x, str) for x in expected):
        return "one of " + ", ".join(repr(x) for x in expected)
    if isinstance(expected, dict):
        return "a table"
    names = {str: "a string", int: "an integer", bool: "true or false", datetime: "a date", list: "a list of tables"}
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(names.get(k, "a number" if k in (int, float) else k.__name__) for k in kinds
                       if k is not float or int not in kinds) if kinds != NUMBER else "a number"


def _fits(value, expected) -> bool:
    if expected == STRINGS:
        return isinstance(value, list) and all(isinstance(x, str) for x in value)
    if isinstance(expected, tuple) and all(isinstance(x, str) for x in expected):
        return value in expected
    if isinstance(expected, dict):
        return isinstance(value, dict)
    kinds = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds)


def validate_config(cfg: dict, where: Path | str, schema: dict = SCHEMA, prefix: str = "") -> None:
    """Every key known and of its kind, else AssignmentError naming the file and the key
    (with the nearest known key for a misspelt one)."""
    import difflib

    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if key not in schema:
            near = difflib.get_close_matches(key, list(schema), n=1)
            hint = f" (did you mean {prefix + near[0]!r}?)" if near else f" (known: {', '.join(sorted(schema))})"
            table = f" in [{prefix.rstrip('.')}]" if prefix else ""
            raise AssignmentError(f"{where}: unknown key {name!r}{table}{hint}")
        expected = schema[key]
        if not _fits(value, expected):
            raise AssignmentError(f"{where}: {name} must be {_kind(expected)}, not {value!r}")
        if isinstance(expected, TableOf):
            for sub, table in value.items():
                if not isinstance(table, dict):
                    raise AssignmentError(f"{where}: {name}.{sub} must be a table, not {table!r}")
                validate_config(table, where, dict(expected), f"{name}.{sub}.")
        elif isinstance(expected, dict):
            validate_config(value, where, expected, f"{name}.")
    if not prefix:
        for key in REQUIRED:
            if key not in cfg:
                raise AssignmentError(f"{where}: {key!r} is required")


def read_config(cfg_path: Path) -> dict:
    """assignment.toml parsed and validated against SCHEMA."""
    try:
        cfg = tomllib.loads(cfg_path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise AssignmentError(f"{cfg_path}: {e}") from None
    validate_config(cfg, cfg_path)
    return cfg


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
    allow_imports: list[str] = field(default_factory=list)  # [forbidden] allow_imports: beyond the scan's allow-list
    runtime_forbidden: list[str] = field(default_factory=list)  # [forbidden] runtime: ops and objects made to raise
    block_autograd: bool = False  # [forbidden] block_autograd: no gradient can be computed in the child
    # [forbidden.functions.NAME]: rules of one graded function only, {name: {"apis",
    # "runtime", "block_autograd"}}: its static scan finds them in that function (and the
    # helpers it calls) only, and the judge calls it in a child whose guard adds them.
    function_rules: dict = field(default_factory=dict)
    # [[boards]]: kernel leaderboards (autograder/judge/boards.py): each a Board's fields
    boards: list[dict] = field(default_factory=list)

    @property
    def guard(self) -> dict | None:
        return guard_spec(self.runtime_forbidden, self.block_autograd)
    limits: Limits = field(default_factory=Limits)
    deadline: datetime | None = None
    late_policy: dict = field(default_factory=dict)
    daily_submission_limit: int | None = None
    finished: bool = True
    score_policy: str = "best"  # the server's final score: "best" or "last" graded submission
    feedback_after_deadline: bool = False  # the server shows after_deadline tests once the deadline has passed

    @property
    def examples_dir(self) -> Path:
        return self.root / "examples"

    def suite(self, which: str) -> list[Path]:
        return {"hidden": self.hidden_tests + self.public_tests, "public": self.public_tests}[which]


def guard_spec(patterns: list[str], block_autograd: bool) -> dict | None:
    """What a child makes raise before any student code (child/guard.py), or None."""
    if not (patterns or block_autograd):
        return None
    return {"patterns": list(dict.fromkeys(patterns)), "block_autograd": bool(block_autograd)}


def find(slug_or_path: str | Path) -> Path:
    """The folder of an assignment named by path or by slug: the path itself, else
    SLUG under $DLOPT_ASSIGNMENTS_DIR, ./assignments, then the engine's assignments/."""
    root = Path(slug_or_path)
    if (root / "assignment.toml").exists():
        return root
    for base in (settings.current().assignments_dir, "assignments", ASSIGNMENTS_DIR):
        if base and (Path(base) / str(slug_or_path) / "assignment.toml").exists():
            return Path(base) / str(slug_or_path)
    return ASSIGNMENTS_DIR / str(slug_or_path)


def load(slug_or_path: str | Path) -> Assignment:
    root = find(slug_or_path).resolve()
    cfg_path = root / "assignment.toml"
    if not cfg_path.exists():
        known = ", ".join(all_slugs()) or "none"
        raise AssignmentError(f"no assignment {str(slug_or_path)!r} (known: {known})")
    cfg = read_config(cfg_path)

    def path(key: str) -> Path | None:
        return root / cfg[key] if cfg.get(key) else None

    gpu = cfg.get("gpu", "none")
    extraction = cfg.get("extraction", "definitions")
    deadline = cfg.get("deadline")
    if isinstance(deadline, str):
        try:
            deadline = datetime.fromisoformat(deadline)
        except ValueError:
            raise AssignmentError(f"{cfg_path}: deadline {deadline!r} is not an ISO date and time") from None
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
        allow_imports=list(cfg.get("forbidden", {}).get("allow_imports", [])),
        runtime_forbidden=list(cfg.get("forbidden", {}).get("runtime", [])),
        block_autograd=bool(cfg.get("forbidden", {}).get("block_autograd", False)),
        function_rules={name: dict(rules) for name, rules in cfg.get("forbidden", {}).get("functions", {}).items()},
        limits=Limits(**cfg.get("limits", {})),
        deadline=deadline,
        late_policy=dict(cfg.get("late_policy", {})),
        daily_submission_limit=cfg.get("daily_submission_limit"),
        finished=bool(cfg.get("finished", True)),
        score_policy=cfg.get("score_policy", "best"),
        feedback_after_deadline=bool(cfg.get("feedback_after_deadline", False)),
        boards=_boards(cfg.get("boards", []), cfg_path),
    )


BOARD_KEYS = {"name": str, "function": str, "shapes": list, "cpu_shapes": list, "requires": STRINGS, "dtype": str, "timed": str, "run_task": str,
              "reveal_task": str, "baselines": STRINGS, "rtol": NUMBER, "atol": NUMBER, "loops": int, "reveal": int,
              "seconds_per_loop": NUMBER, "max_iterations": int}


def _boards(boards: list, cfg_path) -> list[dict]:
    """[[boards]] checked key by key (the fields of autograder.judge.boards.Board)."""
    out = []
    for i, b in enumerate(boards):
        if not isinstance(b, dict):
            raise AssignmentError(f"{cfg_path}: boards[{i}] must be a table")
        validate_config(b, cfg_path, BOARD_KEYS, f"boards[{i}].")
        for key in ("name", "function", "shapes"):
            if key not in b:
                raise AssignmentError(f"{cfg_path}: boards[{i}] needs {key!r}")
        if not b["shapes"] or not all(isinstance(x, dict) for x in b["shapes"]):
            raise AssignmentError(f"{cfg_path}: boards[{i}].shapes must be a non-empty list of tables")
        out.append(dict(b))
    return out


def all_slugs(finished_only: bool = False) -> list[str]:
    slugs = []
    for p in sorted(ASSIGNMENTS_DIR.glob("*/assignment.toml")):
        if finished_only and not read_config(p).get("finished", True):
            continue
        slugs.append(p.parent.name)
    return slugs
