"""A class's worth of submissions through `dlopt grade --jobs N`: throughput and exactness.

    python bench/class_bench.py [--assignment adam] [--count 300] [--jobs 2] [--baseline 10]
    python docker/podman_dev.py run -- python bench/class_bench.py --runner docker --count 20 --baseline 20

Copies the assignment's examples round-robin into N submission files (a class's mix of
correct, buggy, forbidden and hostile work), grades them with the CLI exactly as a TA
would (`dlopt grade SLUG DIR --jobs N --json OUT`), and reports wall time and
submissions per minute; every submission must score what its example's `scores.toml`
says. Baseline, same run: the same CLI with DLOPT_ZYGOTE=0 (a new interpreter for every
judge and every child, as before the zygotes) on the first `--baseline` files. With
`--runner docker`: the docker runner with its pool of containers started ahead
(sandbox/pool.py) against the same runner starting a container per child when asked
(DLOPT_DOCKER_POOL=0), both with the judge zygote.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DLOPT = [sys.executable, "-m", "autograder.cli"]


def make_class(slug: str, count: int, folder: Path) -> dict[str, float]:
    examples = REPO / "assignments" / slug / "examples"
    expected = tomllib.loads((examples / "scores.toml").read_text())
    expected = {k: float(v) for k, v in (expected.get("scores") or expected).items() if isinstance(v, int | float)}
    files = sorted(p for p in examples.iterdir() if p.name in expected)
    want = {}
    for i in range(count):
        src = files[i % len(files)]
        dst = folder / f"student{i:04d}_{src.name}"
        shutil.copy(src, dst)
        want[dst.name] = expected[src.name]
    return want


def run(slug: str, folder: Path, jobs: int, env: dict, runner: str = "local") -> tuple[float, list[dict]]:
    out = folder.parent / f"{folder.name}.json"
    started = time.perf_counter()
    proc = subprocess.run([*DLOPT, "grade", slug, str(folder), "--jobs", str(jobs), "--json", str(out),
                           "--runner", runner],
                          env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"dlopt grade failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, json.loads(out.read_text())


def check(results: list[dict], want: dict[str, float]) -> list[str]:
    wrong = []
    for r in results:
        name = Path(r["path"]).name
        if abs(r["score"] - want[name]) > 1e-6 or r.get("error"):
            wrong.append(f"{name}: {r['score']} (expected {want[name]}) {r.get('error') or ''}")
    if len(results) != len(want):
        wrong.append(f"{len(results)} results for {len(want)} submissions")
    return wrong


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assignment", default="adam")
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--baseline", type=int, default=10, help="submissions graded the old way (0: none)")
    ap.add_argument("--runner", choices=("local", "docker"), default="local")
    args = ap.parse_args()
    docker = args.runner == "docker"
    if docker:
        new, old = dict(DLOPT_ZYGOTE="1"), dict(DLOPT_ZYGOTE="1", DLOPT_DOCKER_POOL="0")
        names = ("docker runner, containers started ahead (pool, default)",
                 "baseline: docker runner, a container started per child (DLOPT_DOCKER_POOL=0)")
    else:
        new, old = dict(DLOPT_ZYGOTE="1"), dict(DLOPT_ZYGOTE="0")
        names = ("zygotes (default)", "baseline: a new interpreter per judge and child (DLOPT_ZYGOTE=0)")
    tmp = Path(tempfile.mkdtemp(prefix="dlopt-class-"))
    try:
        rows = []
        folder = tmp / "class"
        folder.mkdir()
        want = make_class(args.assignment, args.count, folder)
        wall, results = run(args.assignment, folder, args.jobs, dict(os.environ, **new), args.runner)
        wrong = check(results, want)
        rows.append((names[0], args.count, wall, wrong))
        if args.baseline:
            base = tmp / "baseline"
            base.mkdir()
            bwant = make_class(args.assignment, args.baseline, base)
            bwall, bresults = run(args.assignment, base, args.jobs, dict(os.environ, **old), args.runner)
            rows.append((names[1], args.baseline, bwall, check(bresults, bwant)))
        print(f"| {args.assignment}, `dlopt grade --jobs {args.jobs}` | submissions | wall | per minute | "
              "at expected scores |")
        print("| --- | --- | --- | --- | --- |")
        for name, n, w, bad in rows:
            print(f"| {name} | {n} | {w:.0f} s | {60 * n / w:.0f} | {n - len(bad)} of {n} |")
        if len(rows) == 2:
            print(f"\nthroughput ratio: {(rows[0][1] / rows[0][2]) / (rows[1][1] / rows[1][2]):.1f}x the baseline")
        for _, _, _, bad in rows:
            for line in bad[:20]:
                print("WRONG", line)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
