"""One judge process: run a suite against one extracted submission and write its result.

`python -m autograder.judge.run JOB.json`: the job (`autograder.judge.job.GradingJob`,
JSON under its own schema) holds everything: the assignment's contract and limits, the
extracted code, the device, the runner and where the result goes. Started by
`autograder.grading` in a fresh process per submission (a fork of the judge zygote where
there is one), so pytest's module state never leaks between submissions and a judge
crash costs only that submission.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from autograder.judge.job import GradingJob
from autograder.judge.plugin import GradingPlugin


def run_job(job: GradingJob) -> dict:
    plugin = GradingPlugin(job)
    args = [*job.tests, "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--import-mode=importlib",
            # Only the assignment's own conftest files: never the repository's tests/conftest.py
            # above a fixture assignment (the probe lives under tests/).
            "--rootdir", job.root, "--confcutdir", job.root, "-W", "ignore::pytest.PytestAssertRewriteWarning",
            "--tb=no", "--no-header", "-rN"]
    if job.keyword:
        args += ["-k", job.keyword]
    pytest.main(args, plugins=[plugin])
    return plugin.result.as_dict()


def main() -> None:
    job = GradingJob.load(sys.argv[1])
    result = run_job(job)
    Path(job.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
