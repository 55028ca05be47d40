"""Concurrent submissions against a running `dlopt serve` on loopback.

    python bench/submit_bench.py [--db sqlite|postgresql] [--students 300] [--window 60]
                                 [--grader instant|engine] [--workers 2] [--assignment adam]

Starts the server (a fresh data folder; for PostgreSQL a fresh database on the loopback
server), imports a roster of N students, and has each submit one notebook at a random
moment within `--window` seconds (0: all at once), over real HTTP. Reports the submit
route's throughput and latency (p50, p99, max), then waits until the queue is empty and
checks that every accepted submission is stored (its file's hash) and graded exactly once
(one run, done, recorded once; the grade function called once per submission).

`--grader instant` (default) swaps the engine for bench/instant_grader.py to measure the
server and the queue; `--grader engine` grades the probe suite with the real engine and
sandbox; `--assignment adam` has the students submit adam's examples round-robin through
the real engine, and checks every score against the examples' scores.toml.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import nbformat

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "tests" / "fixtures" / "probe"
PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_course(root: Path, slug: str) -> dict[str, tuple[str, bytes, float]]:
    """The course folder; for a real assignment also its examples round-robin, as
    {index: (file name, bytes, expected score)} (the probe: a notebook per student)."""
    if slug != "probe":
        import re
        import tomllib

        src = REPO / "assignments" / slug
        shutil.copytree(src, root / slug, ignore=shutil.ignore_patterns("__pycache__"))
        toml = (root / slug / "assignment.toml").read_text()
        toml = re.sub(r'(?m)^deadline = .*$', 'deadline = "2099-01-01T00:00:00+00:00"', toml)
        (root / slug / "assignment.toml").write_text(toml)
        expected = tomllib.loads((src / "examples" / "scores.toml").read_text())
        files = sorted(p for p in (src / "examples").iterdir() if isinstance(expected.get(p.name), int | float))
        return {i: (f.name, f.read_bytes(), float(expected[f.name])) for i, f in enumerate(files)}
    d = root / "probe"
    shutil.copytree(PROBE / "tests", d / "tests")
    (d / "assignment.toml").write_text(
        'slug = "probe"\ntitle = "Probe"\npoints = 10\ngpu = "none"\npublic_tests = []\n'
        'hidden_tests = ["tests/test_probe.py"]\nfinished = true\ndeadline = "2099-01-01T00:00:00+00:00"\n'
        "[limits]\ncall_seconds = 5\nsubmission_seconds = 60\n")
    return {}


def notebook_for(login: str) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {login}'s work"),
                nbformat.v4.new_code_cell(f"# {login}\ndef double(x):\n    return 2 * x\n\n"
                                          "def square(v):\n    return v * v\n")]
    return nbformat.writes(nb).encode()


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def submit_all(base: str, tokens: dict[str, str], window: float, seed: int, slug: str,
                     examples: dict) -> tuple[list, float]:
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=len(tokens), max_keepalive_connections=len(tokens))
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        t0 = time.perf_counter()

        async def one(login: str, token: str):
            await asyncio.sleep(rng.uniform(0, window) if window > 0 else 0)
            if examples:
                name, data, _ = examples[int(login[1:]) % len(examples)]
            else:
                name, data = f"{login}.ipynb", notebook_for(login)
            start = time.perf_counter()
            r = await client.post(f"/api/v1/assignments/{slug}/submissions", headers={"Authorization": f"Bearer {token}"},
                                  files={"file": (name, data)})
            took = time.perf_counter() - start
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {"text": r.text}
            return login, r.status_code, took, body, hashlib.sha256(data).hexdigest()

        results = await asyncio.gather(*(one(login, t) for login, t in tokens.items()))
        return results, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--students", type=int, default=300)
    ap.add_argument("--window", type=float, default=60.0, help="seconds over which students submit (0: at once)")
    ap.add_argument("--grader", choices=["instant", "engine"], default="instant")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--assignment", default="probe",
                    help="probe (a tiny suite), or a course assignment whose examples students submit round-robin "
                         "(scores checked against its scores.toml; implies --grader engine)")
    ap.add_argument("--keep", action="store_true", help="keep the data folder")
    args = ap.parse_args()

    if args.assignment != "probe":
        args.grader = "engine"
    tmp = Path(tempfile.mkdtemp(prefix="dlopt-bench-"))
    examples = make_course(tmp / "assignments", args.assignment)
    db_url, db_name = None, None
    if args.db == "postgresql":
        import psycopg
        db_name = "dlopt_bench_" + uuid.uuid4().hex[:10]
        with psycopg.connect(PG, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{db_name}"')
        db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}"
    port = free_port()
    calls = tmp / "calls.log"
    env = dict(os.environ, DLOPT_DATA_DIR=str(tmp / "data"), DLOPT_ASSIGNMENTS_DIR=str(tmp / "assignments"),
               DLOPT_WORKERS=str(args.workers), DLOPT_BENCH_CALLS=str(calls), DLOPT_POLL_SECONDS="0.2",
               PYTHONPATH=os.pathsep.join([str(REPO / "bench"), os.environ.get("PYTHONPATH", "")]))
    env.pop("DLOPT_BROKER_URL", None)
    if db_url:
        env["DLOPT_DATABASE_URL"] = db_url
    if args.grader == "instant":
        env["DLOPT_GRADE_FUNCTION"] = "instant_grader:grade"
    log = open(tmp / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "autograder.cli", "serve", "--port", str(port)], env=env,
                              stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise SystemExit("server did not start:\n" + (tmp / "serve.log").read_text()[-3000:])
        admin = {"Authorization": "Bearer " + (tmp / "data" / "admin-token").read_text().strip()}
        roster = "login,name\n" + "".join(f"s{i:04d},Student {i}\n" for i in range(args.students))
        tokens = httpx.post(base + "/api/v1/roster", headers=admin, files={"file": ("r.csv", roster)},
                            timeout=120).json()["tokens"]

        results, wall = asyncio.run(submit_all(base, tokens, args.window, args.seed, args.assignment, examples))
        ok = [r for r in results if r[1] == 201]
        lat = [r[2] * 1000 for r in ok]
        print(f"{args.db}, {args.students} students within {args.window:g} s, {args.workers} workers, "
              f"grader {args.grader}")
        print(f"  submit: {len(ok)}/{len(results)} accepted ({dict(Counter(r[1] for r in results))}), "
              f"{len(ok) / wall:.1f} submissions/s over {wall:.1f} s")
        if lat:
            print(f"  latency ms: p50 {pct(lat, 50):.1f}  p99 {pct(lat, 99):.1f}  max {max(lat):.1f}  "
                  f"mean {statistics.mean(lat):.1f}")

        t0 = time.perf_counter()
        started = t0 - wall  # the first submission
        while True:
            h = httpx.get(base + "/api/v1/health", timeout=30).json()["queue"]
            if not h.get("queued") and not h.get("running"):
                break
            time.sleep(0.5)
        done = time.perf_counter()
        print(f"  queue drained {done - t0:.1f} s after the last submission ({h}); "
              f"{len(ok)} graded in {done - started:.0f} s from the first: {60 * len(ok) / (done - started):.0f} per minute")

        subs = httpx.get(base + "/api/v1/submissions?limit=1000", headers=admin, timeout=60).json()
        by_id = {s["id"]: s for s in subs}
        problems = []
        for login, _status, _t, body, digest in ok:
            s = by_id.get(body["submission"]["id"])
            if s is None or s["login"] != login:
                problems.append(f"{login}: submission missing")
                continue
            want = examples[int(login[1:]) % len(examples)][2] if examples else 10
            if s["status"] != "done" or s["run"]["attempts"] != 1 or abs(s["score"] - want) > 1e-6:
                problems.append(f"{login}: {s['status']} attempts {s['run']['attempts']} score {s['score']}")
            f = httpx.get(base + f"/api/v1/submissions/{s['id']}/file", headers=admin, timeout=30)
            if hashlib.sha256(f.content).hexdigest() != digest:
                problems.append(f"{login}: stored file differs")
        graded = Counter(calls.read_text().split("\n")[:-1]) if calls.exists() else Counter()
        if args.grader == "instant":
            twice = [k for k, v in graded.items() if v != 1]
            if twice or len(graded) != len(ok):
                problems.append(f"grade calls: {len(graded)} distinct for {len(ok)} accepted; repeated: {twice[:5]}")
        runs = sum(len(s["run"] and [1] or []) for s in subs)
        print(f"  stored and graded exactly once: {len(ok) - len(problems)}/{len(ok)} "
              f"({len(subs)} submissions, {runs} newest runs; grade calls {sum(graded.values())})")
        for p in problems[:10]:
            print("   PROBLEM", p)
        return 1 if problems else 0
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        if db_name:
            import psycopg
            with psycopg.connect(PG, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("  data kept in", tmp)


if __name__ == "__main__":
    sys.exit(main())
