"""One judge process: run a suite against one extracted submission and write its result.

`python -m autograder.judge.run JOB.json`: the job names the assignment folder, the
extracted code, the device and where the result goes. Started by
`autograder.grading` in a fresh process per submission, so pytest's module state
never leaks between submissions and a judge crash costs only that submission.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from autograder import assignment as assignments
from autograder.judge.plugin import GradingConfig, GradingPlugin


def run_job(job: dict) -> dict:
    from autograder.judge.forbidden import validate

    a = assignments.load(job["assignment_dir"])
    validate(a)  # a forbidden list that names nothing is the assignment's error, never a silent no-op
    extracted = json.loads(Path(job["extracted_path"]).read_text())
    cfg = GradingConfig(
        assignment=a.slug, submission=job["label"], extracted=extracted, limits=a.limits,
        forbidden=a.forbidden, harness=str(a.harness) if a.harness else None,
        device=job.get("device", "cpu"), force_weak=bool(job.get("weak")), suite=job.get("suite", "hidden"),
        flags_cost_points=a.flags_cost_points, allow_imports=a.allow_imports, guard=a.guard)
    plugin = GradingPlugin(cfg)
    tests = [str(p) for p in a.suite(cfg.suite)]
    args = [*tests, "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--import-mode=importlib",
            # Only the assignment's own conftest files: never the repository's tests/conftest.py
            # above a fixture assignment (the probe lives under tests/).
            "--rootdir", str(a.root), "--confcutdir", str(a.root), "-W", "ignore::pytest.PytestAssertRewriteWarning",
            "--tb=no", "--no-header", "-rN"]
    if job.get("keyword"):
        args += ["-k", job["keyword"]]
    pytest.main(args, plugins=[plugin])
    return plugin.result.as_dict()


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    result = run_job(job)
    Path(job["out"]).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
