"""Pairwise similarity of an assignment's final submissions, for plagiarism review.

The engine is copydetect (https://github.com/blingenf/copydetect, MIT): winnowing over
k-grams of pygments tokens, as MOSS does, with every name folded to one letter (a variable
is `V`, a function `F`, a class `O`, a string `S`), so renamed variables change nothing
and reordered functions change only the few k-grams that cross a function's edge. It is
pure Python on numpy and pygments, in a package index and on this server already (no JVM
as JPlag needs, no Node as Dolos needs, no web service as MOSS is), and it takes a
boilerplate: here the code of the released student notebook, so the given stubs,
signatures and docstrings match nothing.

`report(sources, boilerplate)` is the pure part: one copydetect CodeFingerprint per
submission (window 1: every k-gram of `NOISE` normalised characters kept), the
boilerplate's k-grams removed from each; then every pair is scored by copydetect's own
measure (the share of each file's tokens that lie in a k-gram the other file has too)
from an inverted index of the fingerprints, all pairs at once in numpy (about a second
for 300 submissions, where copydetect's CopyDetector calls `compare_files` on each of the
n(n-1)/2 pairs: about a minute); `compare_files` itself then compares the top pairs, for
the numbers shown and the matched passages. Pairs rank by the mean of the two shares.

`gather` collects an assignment's final submissions (the score table's, else a
student's newest) and the released stub; `build` runs both and `save` keeps the result
as JSON in `<data_dir>/similarity/<slug>.json` for the staff pages and the API; `dlopt
similarity SLUG` (`command`) does it from a shell and prints the top pairs.
"""

from __future__ import annotations

import bisect
import io
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

log = logging.getLogger("dlopt.similarity")

NOISE = 25        # copydetect's noise threshold: k, in characters of normalised code
GUARANTEE = 25    # its guarantee threshold; the winnowing window is GUARANTEE - NOISE + 1
MAX_SOURCE_CHARS = 512 * 1024  # only this much of a submission's code is compared
REPORT_VERSION = 1
SLUG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
EXTRACT_BATCH = 100  # submissions read per bounded child process


# -- the pure part ------------------------------------------------------------------------
@dataclass
class Pair:
    a: str
    b: str
    similarity_a: float  # share of a's tokens (boilerplate excluded) also found in b
    similarity_b: float  # share of b's tokens also found in a
    tokens: int          # a's tokens in the shared passages (a name is one token)
    lines_a: list[list[int]] = field(default_factory=list)  # matched lines of a: [first, last], 1-based
    lines_b: list[list[int]] = field(default_factory=list)

    @property
    def similarity(self) -> float:
        return (self.similarity_a + self.similarity_b) / 2

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "similarity": round(self.similarity, 4),
                "similarity_a": round(self.similarity_a, 4), "similarity_b": round(self.similarity_b, 4),
                "tokens": self.tokens, "lines_a": self.lines_a, "lines_b": self.lines_b}


@dataclass
class SimilarityReport:
    pairs: list[Pair]   # most similar first
    submissions: int    # submissions fingerprinted
    scored: int         # pairs scored: every pair, n(n-1)/2
    sharing: int        # pairs with at least one fingerprint in common
    compared: int       # pairs given to copydetect's compare_files
    seconds: float      # report() from start to end
    timings: dict[str, float] = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    empty: list[str] = field(default_factory=list)  # submissions with nothing but boilerplate

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pairs"] = [p.to_dict() for p in self.pairs]
        d["seconds"] = round(self.seconds, 3)
        d["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        return d


def _copydetect():
    # copydetect imports matplotlib.pyplot (for its own HTML report): never a window here
    os.environ.setdefault("MPLBACKEND", "Agg")
    import copydetect
    from copydetect import CodeFingerprint, compare_files
    from copydetect.utils import get_token_coverage

    return copydetect.__version__, CodeFingerprint, compare_files, get_token_coverage


def _lexable(source: str) -> tuple[str, int]:
    """`source` as pygments' lexer reads it, character for character, and the number of
    leading newlines it would strip: copydetect's slices are offsets into the text its
    lexer saw. A line ending `\r\n` becomes `\n` and a lone `\r` a space (the pages show
    it as an escape, not a line break), so line numbers stay those of the source."""
    text = source.replace("\r\n", "\n").replace("\r", " ")
    stripped = text.lstrip("\n")
    return stripped, len(text) - len(stripped)


def _line_ranges(source: str, slices, lead: int = 0) -> list[list[int]]:
    """copydetect's character slices of `source` as merged [first, last] line ranges
    (of the source before `lead` leading newlines were stripped)."""
    if len(slices) == 0 or len(slices[0]) == 0:
        return []
    starts = [0] + [i + 1 for i, c in enumerate(source) if c == "\n"]
    out: list[list[int]] = []
    n = len(source)
    for s, e in sorted(zip((int(x) for x in slices[0]), (int(x) for x in slices[1]))):
        s, e = max(0, min(s, n)), max(0, min(e, n))
        if e <= s:
            continue
        first = bisect.bisect_right(starts, s)
        last = bisect.bisect_right(starts, e - 1)
        if out and first + lead <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], last + lead)
        else:
            out.append([first + lead, last + lead])
    return out


def _overlaps(fps: list, k: int) -> np.ndarray:
    """overlap[i, j]: how many tokens of submission i lie in a k-gram whose fingerprint
    submission j has too: copydetect's token overlap (compare_files: the union of the
    k-token windows at the matching positions), for every pair at once. An inverted
    index of fingerprints (their ids over the whole class); for each j, its fingerprints
    marked in a table and every position of every other submission looked up in it."""
    n = len(fps)
    overlap = np.zeros((n, n), dtype=np.float64)
    hs, ps = [], []
    for fp in fps:
        idx = fp.hash_idx
        lens = np.fromiter((len(v) for v in idx.values()), dtype=np.int64, count=len(idx))
        h = np.repeat(np.fromiter((int(x) for x in idx), dtype=np.int64, count=len(idx)), lens)
        p = np.fromiter((int(i) for v in idx.values() for i in v), dtype=np.int64, count=int(lens.sum()))
        order = np.argsort(p, kind="stable")
        hs.append(h[order])
        ps.append(p[order])
    sizes = np.array([len(p) for p in ps], dtype=np.int64)
    if n < 2 or sizes.sum() == 0:
        return overlap
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    _, ids = np.unique(np.concatenate(hs), return_inverse=True)
    pos = np.concatenate(ps)
    owner = np.repeat(np.arange(n), sizes)
    present = np.zeros(int(ids.max()) + 1, dtype=bool)
    for j in range(n):
        mine = ids[bounds[j]:bounds[j + 1]]
        if mine.size == 0:
            continue
        present[mine] = True
        hit = present[ids]
        hit[bounds[j]:bounds[j + 1]] = False
        present[mine] = False
        p, f = pos[hit], owner[hit]
        if p.size == 0:
            continue
        step = np.full(p.size, float(k))  # a window's own k tokens, less what the one before covered
        same = f[1:] == f[:-1]
        step[1:][same] = np.minimum(np.diff(p)[same], k)
        overlap[:, j] = np.bincount(f, weights=step, minlength=n)
    return overlap


def report(sources: dict[str, str], boilerplate: str | Iterable[str] = "", *, top: int = 200,
           noise: int = NOISE, guarantee: int = GUARANTEE, exhaustive: bool = False) -> SimilarityReport:
    """The `top` most similar pairs of `sources` (key: a login or submission id; value:
    Python source), the k-grams of `boilerplate` (the given code) counting for nobody.

    Every pair is scored by copydetect's measure (the share of each one's tokens in
    k-grams the other has) from an inverted index of the fingerprints, all pairs at once;
    copydetect's `compare_files` then compares the `top` pairs in full (the numbers shown
    and the matched passages are its own). `exhaustive`: rank by `compare_files` on every
    pair instead, as copydetect's CopyDetector does (the same ranking, much slower: for
    checking)."""
    t0 = time.perf_counter()
    version, CodeFingerprint, compare_files, get_token_coverage = _copydetect()
    window = guarantee - noise + 1
    timings: dict[str, float] = {}

    pieces = [boilerplate] if isinstance(boilerplate, str) else list(boilerplate)
    given: set = set()
    for text in pieces:
        if text and text.strip():
            given |= CodeFingerprint("boilerplate.py", noise, 1, fp=io.StringIO(_lexable(text)[0]),
                                     language="python").hashes

    keys = sorted(sources)
    fps, lead = {}, {}
    for key in keys:
        text, lead[key] = _lexable(sources[key][:MAX_SOURCE_CHARS])
        fp = CodeFingerprint(f"{key}.py", noise, window, fp=io.StringIO(text), language="python")
        # Boilerplate removed here rather than by copydetect's own `boilerplate=`: its
        # np.intersect1d(assume_unique=True) also drops a file's repeated k-grams.
        drop = fp.hashes & given
        if drop:
            fp.hashes = fp.hashes - drop
            for h in drop:
                fp.hash_idx.pop(h, None)
            fp.token_coverage = get_token_coverage(fp.hash_idx, noise, len(fp.filtered_code))
        fps[key] = fp
    timings["fingerprints"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    n = len(keys)
    iu, ju = np.triu_indices(n, 1)
    if exhaustive:
        sa = np.zeros(len(iu))
        sb = np.zeros(len(iu))
        tok = np.zeros(len(iu))
        for x, (i, j) in enumerate(zip(iu, ju)):
            o, (sa[x], sb[x]), _ = compare_files(fps[keys[i]], fps[keys[j]])
            tok[x] = o
    else:
        overlap = _overlaps([fps[k] for k in keys], noise)
        coverage = np.array([max(float(fps[k].token_coverage), 1.0) for k in keys])
        tok = overlap[iu, ju]
        sa, sb = tok / coverage[iu], overlap[ju, iu] / coverage[ju]
    sharing = int((tok > 0).sum())
    order = np.lexsort((ju, iu, -tok, -(sa + sb)))[:min(top, sharing)]
    timings["rank"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    out = []
    for x in order:
        ka, kb = keys[iu[x]], keys[ju[x]]
        fa, fb = fps[ka], fps[kb]
        tokens, (sim_a, sim_b), (sla, slb) = compare_files(fa, fb)
        out.append(Pair(ka, kb, float(min(max(sim_a, 0.0), 1.0)), float(min(max(sim_b, 0.0), 1.0)), int(tokens),
                        _line_ranges(fa.raw_code, sla, lead[ka]), _line_ranges(fb.raw_code, slb, lead[kb])))
    timings["compare"] = time.perf_counter() - t2
    return SimilarityReport(
        pairs=out, submissions=n, scored=len(iu), sharing=sharing,
        compared=len(iu) + len(out) if exhaustive else len(out), seconds=time.perf_counter() - t0,
        timings=timings, empty=[k for k in keys if not fps[k].hashes],
        params={"engine": f"copydetect {version}", "noise": noise, "guarantee": guarantee, "window": window,
                "top": top, "exhaustive": exhaustive, "boilerplate_fingerprints": len(given),
                "rank": "mean of the two shares"})


# -- an assignment's submissions ------------------------------------------------------------
@dataclass
class Gathered:
    sources: dict[str, str]       # login -> extracted code
    students: dict[str, dict]     # login -> submission_id, filename, final, submitted_at
    skipped: dict[str, str]       # login -> why it is not in the report
    boilerplate: str
    notes: list[str]


def released_stub(assignments_dir: Path, slug: str) -> tuple[str, str, list[str]]:
    """(the released notebook's code, the assignment's extraction mode, notes): the code
    students were given, extracted as their submissions are."""
    import nbformat

    from autograder import assignment as engine
    from autograder.authoring.notebook import extract, release_notebook

    try:
        a = engine.load(Path(assignments_dir) / slug)
    except Exception as e:  # noqa: BLE001 - a folder gone from the server: no boilerplate, said so
        return "", "definitions", [f"the assignment's folder could not be read ({e}); no code was treated as given"]
    if a.master is None:
        return "", a.extraction, ["the assignment has no master notebook: no code was treated as given"]
    try:
        nb = release_notebook(a.master, a.slug)
    except Exception as e:  # noqa: BLE001
        return "", a.extraction, [f"the student notebook could not be released ({e}); no code was treated as given"]
    with tempfile.TemporaryDirectory(prefix="dlopt-stub-") as tmp:
        path = Path(tmp) / f"{a.slug}.ipynb"
        nbformat.write(nb, str(path))
        stub = extract(path, a.extraction)
    return stub.source, a.extraction, []


def extract_many(paths: list[Path], mode: str) -> list[tuple[str, str | None]]:
    """(source, fatal) of each file, read as the grader reads a submission
    (autograder.authoring.notebook.extract), EXTRACT_BATCH files per child process that
    bounds itself first with the grader's limits of time and memory for the whole batch;
    a batch whose child fails is read again one child per file, so a hostile file costs
    only its own entry. (The child sets its own limits: no preexec_fn, which can deadlock
    a process with threads, as the server is.)"""
    import subprocess

    from autograder.authoring.notebook import INTAKE_SECONDS

    def run(chunk: list[Path]) -> list[tuple[str, str | None]] | None:
        try:
            proc = subprocess.run([sys.executable, "-m", "server.similarity", "extract", mode, *map(str, chunk)],
                                  capture_output=True, timeout=2 * INTAKE_SECONDS, stdin=subprocess.DEVNULL)
            data = json.loads(proc.stdout) if proc.returncode == 0 else None
            if isinstance(data, list) and len(data) == len(chunk):
                return [(str(d.get("source") or ""), d.get("fatal")) for d in data]
        except (subprocess.TimeoutExpired, OSError, ValueError, AttributeError):
            pass
        return None

    out: list[tuple[str, str | None]] = []
    for lo in range(0, len(paths), EXTRACT_BATCH):
        chunk = paths[lo:lo + EXTRACT_BATCH]
        got = run(chunk)
        if got is None:
            log.warning("reading %d submissions in one child failed; reading them one by one", len(chunk))
            got = [(run([p]) or [("", "reading the file needed more time or memory than a submission may use")])[0]
                   for p in chunk]
        out.extend(got)
    return out


def gather(session, store, assignments_dir: Path, slug: str) -> Gathered:
    """Each student's final submission of `slug` (the one the score table counts; a
    student with none graded: their newest), read as the grader reads it, and the code of
    the released notebook."""
    from sqlalchemy import select

    from server.models import Submission, User
    from server.service import get_assignment, score_table

    a = get_assignment(session, slug)
    final = {r.login: r.submission_id for r in score_table(session, a).rows if r.submission_id}
    rows = session.execute(
        select(Submission.id, User.login, Submission.content_hash, Submission.kind, Submission.filename,
               Submission.created_at)
        .join(User, Submission.user_id == User.id)
        .where(Submission.assignment_id == a.id, User.role == "student")
        .order_by(Submission.id)).all()
    chosen: dict[str, tuple] = {}
    for row in rows:
        login = row[1]
        if final.get(login) == row[0] or (login not in final and (login not in chosen or row[0] > chosen[login][0])):
            chosen[login] = tuple(row)
    boilerplate, mode, notes = released_stub(assignments_dir, a.slug)
    students, skipped, paths, logins = {}, {}, [], []
    with tempfile.TemporaryDirectory(prefix="dlopt-similarity-") as tmp:
        for i, login in enumerate(sorted(chosen)):
            sub_id, _, digest, kind, filename, created = chosen[login]
            students[login] = {"submission_id": sub_id, "filename": filename, "final": login in final,
                               "submitted_at": created.isoformat() if created else None}
            try:
                data = store.get(digest)
            except (OSError, ValueError) as e:
                skipped[login] = f"the stored file could not be read ({e})"
                continue
            path = Path(tmp) / f"{i}.{'ipynb' if kind == 'ipynb' else 'py'}"
            path.write_bytes(data)
            paths.append(path)
            logins.append(login)
        read = extract_many(paths, mode)
    sources = {}
    for login, (source, fatal) in zip(logins, read):
        if fatal:
            skipped[login] = f"could not be read: {fatal}"
        elif not source.strip():
            skipped[login] = "no code"
        else:
            sources[login] = source
            if len(source) > MAX_SOURCE_CHARS:
                notes.append(f"{login}: only the first {MAX_SOURCE_CHARS >> 10} KiB of the code were compared")
    return Gathered(sources, students, skipped, boilerplate, notes)


# -- saved reports ----------------------------------------------------------------------------
def report_path(data_dir: Path, slug: str) -> Path:
    if not SLUG_RE.match(slug):
        raise ValueError(f"not an assignment slug: {slug!r}")
    return Path(data_dir) / "similarity" / f"{slug}.json"


def build(settings, db, store, slug: str, *, top: int = 200) -> dict:
    """Gather, compute and return the report as saved (JSON-ready)."""
    t0 = time.perf_counter()
    with db.session() as s:
        g = gather(s, store, settings.assignments_dir, slug)
        s.rollback()
    t1 = time.perf_counter()
    rep = report(g.sources, g.boilerplate, top=top)
    data = rep.to_dict()
    shown = {p.a for p in rep.pairs} | {p.b for p in rep.pairs}
    data.update({
        "version": REPORT_VERSION, "assignment": slug, "computed_at": datetime.now(UTC).isoformat(),
        "seconds_total": round(time.perf_counter() - t0, 3), "seconds_reading": round(t1 - t0, 3),
        "students": g.students, "skipped": g.skipped, "notes": g.notes,
        "boilerplate_lines": len(g.boilerplate.splitlines()),
        "sources": {k: g.sources[k] for k in sorted(shown)},
    })
    return data


def save(data_dir: Path, slug: str, data: dict) -> Path:
    """Written to a temporary file, synced, renamed into place: a reader sees the old
    report or the new one, never half of one."""
    from server.storage import write_atomically

    path = report_path(data_dir, slug)
    write_atomically(path, json.dumps(data).encode("utf-8"), f".{slug}-")
    return path


def load_saved(data_dir: Path, slug: str) -> dict | None:
    try:
        data = json.loads(report_path(data_dir, slug).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == REPORT_VERSION else None


# -- dlopt similarity SLUG ----------------------------------------------------------------------
def command(args, db) -> int:
    """`dlopt similarity SLUG [--top N] [--show N] [--data-dir DIR]` on the server's
    database (server.cli opens it as for `dlopt roster`): compute, save, print the top pairs."""
    from fastapi import HTTPException
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from autograder.text import visible
    from server.config import Settings
    from server.storage import Store

    console = Console()
    settings = Settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    try:
        data = build(settings, db, Store(settings.store), args.slug, top=args.top)
    except HTTPException as e:
        console.print(f"[red]{escape(str(e.detail))}[/red]")
        return 2
    path = save(settings.data_dir, args.slug, data)
    table = Table(title=f"{args.slug}: the {min(args.show, len(data['pairs']))} most similar pairs "
                        f"of {data['submissions']} final submissions")
    for col, just in (("#", "right"), ("student a", "left"), ("student b", "left"), ("similarity", "right"),
                      ("a in b", "right"), ("b in a", "right"), ("tokens", "right")):
        table.add_column(col, justify=just)
    for i, p in enumerate(data["pairs"][:args.show], start=1):
        table.add_row(str(i), escape(p["a"]), escape(p["b"]), f"{100 * p['similarity']:.0f}%",
                      f"{100 * p['similarity_a']:.0f}%", f"{100 * p['similarity_b']:.0f}%", str(p["tokens"]))
    console.print(table)
    for login, why in sorted(data["skipped"].items()):
        console.print(f"[yellow]skipped[/yellow] {escape(login)}: {escape(visible(why))}")
    for note in data["notes"]:
        console.print(f"[yellow]note[/yellow] {escape(visible(note))}")
    console.print(f"{data['submissions']} submissions, every one of the {data['scored']} pairs scored, "
                  f"{data['sharing']} share some code; {data['seconds_total']:.1f} s "
                  f"({data['seconds_reading']:.1f} s reading, "
                  f"{data['seconds']:.1f} s comparing; {data['params']['engine']}, the released notebook as "
                  f"boilerplate: {data['boilerplate_lines']} lines)")
    console.print(f"saved to {path}; staff page: /ui/ta/{args.slug}/similarity")
    return 0


if __name__ == "__main__":  # `python -m server.similarity extract MODE PATH...`: the bounded reading child
    if len(sys.argv) >= 3 and sys.argv[1] == "extract":
        from autograder.authoring.notebook import _intake_limits, extract

        _intake_limits()  # the grader's bounds, on this process, before any file is read
        sys.stdout.write(json.dumps([{"source": e.source, "fatal": e.fatal}
                                     for e in (extract(p, sys.argv[2]) for p in sys.argv[3:])]))
    else:
        sys.exit("usage: python -m server.similarity extract MODE PATH...")
