"""The GPU check of finished assignments: student code on the GPU, graded there.

For each finished assignment with gpu != "none": grade its master solution and every
example submission with device="cuda" (the child runs student code on the GPU, the
suite compares on the judge side against the references) and compare with
examples/scores.toml. Needs no server or Jupyter packages (the GPU image has neither).
Run on a GPU: `python bench/gpu_run.py [SLUG ...]` (prints a markdown table; exit 1 on a
mismatch); with no slug, every finished GPU-capable assignment.
"""

from __future__ import annotations

import os
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autograder import assignment as assignments  # noqa: E402
from autograder.authoring.release import board_expectation, board_mismatch  # noqa: E402
from autograder.grading import find_submissions, grade  # noqa: E402
from autograder.judge.student import StudentCode  # noqa: E402

JOBS = int(os.environ.get("GPU_RUN_JOBS", "4"))


def main() -> int:
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"triton {__import__('triton').__version__}")
    probe = StudentCode("import torch\ndef probe(x):\n    return [torch.cuda.is_available(), str(x.device), "
                        "(x * 2).sum().item()]\n", assignments.load("adam").limits, device="cuda", gpu=True)
    print("child on the GPU:", probe.call("probe", torch.ones(4)).value, "sandbox:", probe.sandbox)
    probe.close()
    from reference import cuda_ext

    t0 = time.time()
    print(cuda_ext.prebuild(), f"({time.time() - t0:.0f} s)")
    from autograder.sandbox.memwatch import MemoryWatch

    watch = MemoryWatch()
    print("outside memory measure here:", watch.method)
    watch.close()
    wanted = set(sys.argv[1:])
    ok = True
    print()
    print("| assignment | submission | device | score | expected | time (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for slug in assignments.all_slugs(finished_only=True):
        a = assignments.load(slug)
        if a.gpu == "none" or (wanted and slug not in wanted):
            continue
        expected = tomllib.loads((a.examples_dir / "scores.toml").read_text())
        # A bug whose effect depends on the device's arithmetic has its GPU score in [cuda].
        expected = {**expected, **expected.get("cuda", {})}
        subs = [(a.master, a.points)] + [(p, expected.get(p.name)) for p in find_submissions([a.examples_dir])]
        started = time.time()
        with ThreadPoolExecutor(JOBS) as pool:
            results = list(pool.map(lambda s, a=a: grade(a, s[0], device="cuda"), subs))
        for (path, want), r in zip(subs, results):
            board_why = board_mismatch(board_expectation("master" if path == a.master else "example", path, expected),
                                       r.boards)
            good = want is not None and abs(r.score - want) < 1e-6 and not r.grader_errors and board_why is None
            ok &= good
            boards = "; ".join(f"{b['board']}: " + (f"{b['seconds'] * 1e3:.3f} ms" if b.get("seconds") is not None
                                                     else f"none ({(b.get('reason') or '')[:90]})") for b in r.boards)
            print(f"| {slug} | {path.name} | cuda | {r.score:g} / {r.max_score:g} | {want} | {r.duration:.1f} |"
                  + (f" boards: {boards}" if boards else "")
                  + ("" if good else f" MISMATCH {board_why or ''} {r.error} {r.grader_errors[:1]} "
                     f"{[(t.name, t.feedback[:150]) for t in r.tests if t.points < t.max_points][:3]}"))
        print(f"\n{slug}: {len(subs)} submissions in {time.time() - started:.0f} s ({JOBS} in parallel)")
        if a.boards:
            # the boards' figures with nothing else on the GPU (the pass above ran JOBS at once)
            alone = grade(a, a.master, device="cuda")
            for b in alone.boards:
                base = ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in (b.get("baselines") or {}).items()
                                 if isinstance(v, int | float))
                shapes = "; ".join(f"{s['shape']} {s['median'] * 1e3:.3f} ms (spread {s['spread']:.0%}, "
                                   f"{s['iterations']} per loop)" for s in b.get("shapes", []))
                print(f"{slug} master alone, board {b['board']} on {b['device']}: "
                      + (f"{b['seconds'] * 1e3:.3f} ms" if b.get("seconds") else f"none ({b.get('reason')})")
                      + f", {b.get('checked')} outputs checked; baselines: {base}; shapes: {shapes}")
        slow = sorted(results[0].tests, key=lambda t: -t.duration)[:6]
        print(f"{slug} master, slowest tests: " + ", ".join(f"{t.name} {t.duration:.1f} s" for t in slow))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
