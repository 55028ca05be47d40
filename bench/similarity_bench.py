"""The similarity report (issue 27) on a synthetic class: time, and where planted copies rank.

    python bench/similarity_bench.py [--assignment adam] [--count 300] [--planted 10] [--edited 5]
                                     [--rate 0.5] [--seed 27] [--no-baseline] [--no-server]

A class of `--count` final submissions made from the assignment's examples (their code,
read as the grader reads it). Every "independent" student starts from an example, takes
each function from another example half of the time, then has it rewritten: commutative
operands swapped, comparisons flipped, `x += e` and `x = x + e` exchanged, if/else
inverted, returns through a temporary, keyword arguments shuffled, `torch.f(x)` and
`x.f()` exchanged, `x ** 2` and `x * x`, neighbouring independent assignments swapped
(each at `--rate` of the places it applies), and then renamed (every local variable),
reordered (top-level functions and classes), recommented and re-spaced. `--planted` of
them are copies of another student's final code with only those last, cosmetic changes
(renamed variables, reordered functions, new comments and blank lines); `--edited` more
are copies with the rewrites too, at a tenth of the rate (a copier who also edits).

Then, on this machine:
- the report as a course gets it: a server data folder (SQLite, the store) holding the
  class as a staff batch upload, and `dlopt similarity SLUG --data-dir ...` run as a
  command (reading every submission in a bounded child, fingerprinting, comparing, saving);
- `server.similarity.report` on the same sources in-process, and with `exhaustive=True`
  (copydetect's compare_files on every pair), to check the index ranks exactly as it does;
- baseline: copydetect's own CopyDetector over the class as files (all n(n-1)/2 pairs).
Prints the times and the rank of every planted pair, and a line for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import ast
import copy
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autograder.authoring.notebook import extract  # noqa: E402

WORDS = ["acc", "avg", "bias", "buf", "coef", "corr", "cur", "delta", "denom", "g", "grad_c", "h", "hat", "k",
         "lr_t", "m", "mom", "new", "nxt", "out", "prev", "q", "res", "rate", "s", "scale", "sq", "state_",
         "t", "tmp", "u", "upd", "v", "val", "vel", "w", "x1", "y", "z"]
COMMENTS = ["# update the running averages", "# bias correction", "# see the lecture notes", "# TODO: tidy up",
            "# vectorised", "# helper", "# follows the PyTorch docs", "# keep the inputs unchanged",
            "# decoupled weight decay", "# numerically stable", "# step counts from 1", "# moments"]
UNARY = {"sqrt", "exp", "abs", "log", "neg", "sign", "clone", "square", "reciprocal"}
FLIP = {ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE, ast.Eq: ast.Eq, ast.NotEq: ast.NotEq}


# -- rewriting ---------------------------------------------------------------------------------
def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


class Rewrite(ast.NodeTransformer):
    """Semantics-keeping rewrites, each applied at a place with probability `rate`."""

    def __init__(self, rng: random.Random, rate: float) -> None:
        self.rng, self.rate, self.tmp = rng, rate, 0

    def hit(self) -> bool:
        return self.rng.random() < self.rate

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.Add | ast.Mult) and self.hit():
            node.left, node.right = node.right, node.left
        elif isinstance(node.op, ast.Pow) and isinstance(node.left, ast.Name) and \
                isinstance(node.right, ast.Constant) and node.right.value == 2 and self.hit():
            return ast.BinOp(left=node.left, op=ast.Mult(), right=ast.Name(node.left.id, ast.Load()))
        elif isinstance(node.op, ast.Mult) and isinstance(node.left, ast.Name) and \
                isinstance(node.right, ast.Name) and node.left.id == node.right.id and self.hit():
            return ast.BinOp(left=node.left, op=ast.Pow(), right=ast.Constant(2))
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        if len(node.ops) == 1 and type(node.ops[0]) in FLIP and self.hit():
            return ast.Compare(left=node.comparators[0], ops=[FLIP[type(node.ops[0])]()], comparators=[node.left])
        return node

    def visit_AugAssign(self, node):
        self.generic_visit(node)
        if isinstance(node.target, ast.Name) and self.hit():
            return ast.Assign(targets=[ast.Name(node.target.id, ast.Store())],
                              value=ast.BinOp(ast.Name(node.target.id, ast.Load()), node.op, node.value))
        return node

    def visit_Assign(self, node):
        self.generic_visit(node)
        t = node.targets[0] if len(node.targets) == 1 else None
        v = node.value
        if isinstance(t, ast.Name) and isinstance(v, ast.BinOp) and isinstance(v.left, ast.Name) and \
                v.left.id == t.id and self.hit():
            return ast.AugAssign(target=t, op=v.op, value=v.right)
        return node

    def visit_If(self, node):
        self.generic_visit(node)
        if node.orelse and self.hit():
            return ast.If(test=ast.UnaryOp(ast.Not(), node.test), body=node.orelse, orelse=node.body)
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        f = node.func
        if len(node.keywords) > 1 and self.hit():
            self.rng.shuffle(node.keywords)
        if isinstance(f, ast.Attribute) and f.attr in UNARY and self.hit():
            if isinstance(f.value, ast.Name) and f.value.id == "torch" and len(node.args) == 1 and not node.keywords:
                return ast.Call(ast.Attribute(node.args[0], f.attr, ast.Load()), [], [])
            if not node.args and not node.keywords and not (isinstance(f.value, ast.Name) and f.value.id == "torch"):
                return ast.Call(ast.Attribute(ast.Name("torch", ast.Load()), f.attr, ast.Load()), [f.value], [])
        return node

    def _body(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out = []
        for st in body:
            if isinstance(st, ast.Return) and st.value is not None and \
                    not isinstance(st.value, ast.Name | ast.Constant) and self.hit():
                self.tmp += 1
                name = f"result{self.tmp}"
                out += [ast.Assign([ast.Name(name, ast.Store())], st.value), ast.Return(ast.Name(name, ast.Load()))]
            else:
                out.append(st)
        for i in range(len(out) - 1):  # neighbouring assignments that do not read each other
            a, b = out[i], out[i + 1]
            if isinstance(a, ast.Assign) and isinstance(b, ast.Assign) and len(a.targets) == len(b.targets) == 1 \
                    and isinstance(a.targets[0], ast.Name) and isinstance(b.targets[0], ast.Name):
                ta, tb = a.targets[0].id, b.targets[0].id
                if ta != tb and ta not in _names(b.value) and tb not in _names(a.value) and self.hit():
                    out[i], out[i + 1] = b, a
        return out

    def generic_visit(self, node):
        super().generic_visit(node)
        for attr in ("body", "orelse", "finalbody"):
            seq = getattr(node, attr, None)
            if isinstance(seq, list) and seq and isinstance(seq[0], ast.stmt):
                setattr(node, attr, self._body(seq))
        return node


def rename_locals(tree: ast.Module, rng: random.Random) -> None:
    """Every variable a function assigns (not its parameters) gets a new name, consistently."""
    for fn in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]:
        params = {a.arg for a in fn.args.args + fn.args.kwonlyargs + fn.args.posonlyargs}
        params |= {a.arg for a in (fn.args.vararg, fn.args.kwarg) if a}
        stored = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        taken = _names(tree) | params | set(dir(__builtins__))
        mapping = {}
        for old in sorted(stored - params):
            new = rng.choice(WORDS)
            while new in taken:
                new = f"{rng.choice(WORDS)}{rng.randint(2, 99)}"
            taken.add(new)
            mapping[old] = new
        for n in ast.walk(fn):
            if isinstance(n, ast.Name) and n.id in mapping:
                n.id = mapping[n.id]


def dress(tree: ast.Module, rng: random.Random, drop_docstrings: float) -> str:
    """Reorder the top-level definitions, drop some docstrings, unparse, add comments and
    blank lines."""
    head = [n for n in tree.body if not isinstance(n, ast.FunctionDef | ast.ClassDef)]
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
    rng.shuffle(defs)
    for d in defs:
        for f in [d] + [n for n in d.body if isinstance(n, ast.FunctionDef)]:
            if len(f.body) > 1 and isinstance(f.body[0], ast.Expr) and isinstance(f.body[0].value, ast.Constant) \
                    and rng.random() < drop_docstrings:
                f.body = f.body[1:]
    lines = []
    for node in head:
        lines.append(ast.unparse(node))
    for node in defs:
        lines.append("\n" * rng.randint(1, 2))
        if rng.random() < 0.5:
            lines.append(rng.choice(COMMENTS))
        for ln in ast.unparse(node).split("\n"):
            if rng.random() < 0.06 and ln.strip() and not ln.rstrip().endswith(("\\", "(", ",")):
                indent = ln[: len(ln) - len(ln.lstrip())]
                lines.append(indent + rng.choice(COMMENTS))
            lines.append(ln)
    return "\n".join(lines) + "\n"


# -- the class ----------------------------------------------------------------------------------
def examples(slug: str) -> list[ast.Module]:
    out = []
    for p in sorted((REPO / "assignments" / slug / "examples").iterdir()):
        if p.suffix in (".py", ".ipynb"):
            src = extract(p).source
            try:
                out.append(ast.parse(src))
            except SyntaxError:
                continue
    return out


def make_class(slug: str, count: int, planted: int, edited: int, rate: float, seed: int):
    """{login: source}, and the planted pairs {(original, copy): "plain" | "edited"}."""
    rng = random.Random(seed)
    pool = examples(slug)
    versions: dict[str, list[ast.AST]] = {}
    for tree in pool:
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                versions.setdefault(node.name, []).append(node)
    n_copies = planted + edited
    independent = count - n_copies
    sources, order = {}, []
    for i in range(independent):
        tree = copy.deepcopy(pool[i % len(pool)])
        body = []
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and rng.random() < 0.5:
                node = copy.deepcopy(rng.choice(versions[node.name]))
            body.append(node)
        tree.body = body
        tree = ast.fix_missing_locations(Rewrite(rng, rate).visit(tree))
        rename_locals(tree, rng)
        login = f"s{i:03d}"
        sources[login] = dress(tree, rng, drop_docstrings=0.5)
        order.append(login)
    pairs = {}
    originals = rng.sample(order, n_copies)
    for k, orig in enumerate(originals):
        tree = ast.parse(sources[orig])
        kind = "plain" if k < planted else "edited"
        if kind == "edited":
            tree = ast.fix_missing_locations(Rewrite(rng, rate / 10).visit(tree))
        rename_locals(tree, rng)
        login = f"s{independent + k:03d}"
        sources[login] = dress(tree, rng, drop_docstrings=0.3)
        pairs[(orig, login)] = kind
    # logins in a random order, so a copy's number says nothing
    logins = list(sources)
    rng.shuffle(logins)
    rename = {old: f"student{j:03d}" for j, old in enumerate(logins)}
    return ({rename[k]: v for k, v in sources.items()},
            {tuple(sorted((rename[a], rename[b]))): kind for (a, b), kind in pairs.items()})


def ranks(pairs: list[tuple[str, str]], planted: dict) -> dict:
    pos = {tuple(sorted(p)): i + 1 for i, p in enumerate(pairs)}
    return {p: pos.get(p) for p in planted}


def summary(label: str, rk: dict, planted: dict) -> str:
    out = []
    for kind in ("plain", "edited"):
        mine = [r for p, r in rk.items() if planted[p] == kind]
        if mine:
            top10 = sum(1 for r in mine if r is not None and r <= 10)
            top20 = sum(1 for r in mine if r is not None and r <= 20)
            shown = sorted(r if r is not None else 10**6 for r in mine)
            out.append(f"{kind}: {top10}/{len(mine)} in the top 10, {top20}/{len(mine)} in the top 20 "
                       f"(ranks {', '.join(str(r) if r < 10**6 else '-' for r in shown)})")
    return f"{label}: " + "; ".join(out)


# -- the server path ------------------------------------------------------------------------------
def server_run(slug: str, sources: dict[str, str], top: int) -> tuple[float, dict]:
    """The class as a staff batch in a fresh server data folder, then `dlopt similarity`."""
    from server.app import create_app
    from server.config import Settings
    from server.models import User
    from server.service import batch_submit, get_assignment, import_roster

    data_dir = Path(tempfile.mkdtemp(prefix="dlopt-simbench-"))
    settings = Settings(_env_file=None, data_dir=data_dir, workers=0, assignments_dir=REPO / "assignments")
    app = create_app(settings, workers=False)
    roster = "login,name\n" + "".join(f"{login},{login}\n" for login in sorted(sources))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for login, src in sorted(sources.items()):
            zf.writestr(f"{login}.py", src)
    t = time.perf_counter()
    with app.state.db.session() as s:
        from sqlalchemy import select
        admin = s.scalar(select(User).where(User.role == "admin"))
        import_roster(s, admin, roster)
        batch_submit(app, s, admin, get_assignment(s, slug), buf.getvalue())
    print(f"server data folder {data_dir} (removed at the end): {len(sources)} students, batch stored in "
          f"{time.perf_counter() - t:.1f} s")
    app.state.db.engine.dispose()
    env = dict(os.environ, DLOPT_ASSIGNMENTS_DIR=str(REPO / "assignments"))
    cmd = [sys.executable, "-m", "autograder.cli", "similarity", slug, "--data-dir", str(data_dir),
           "--top", str(top), "--show", "12"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, text=True, capture_output=True)
    wall = time.perf_counter() - t
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    if proc.returncode != 0:
        raise SystemExit(f"dlopt similarity failed ({proc.returncode})")
    saved = json.loads((data_dir / "similarity" / f"{slug}.json").read_text())
    shutil.rmtree(data_dir, ignore_errors=True)
    return wall, saved


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--assignment", default="adam")
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--planted", type=int, default=10)
    ap.add_argument("--edited", type=int, default=5)
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=27)
    ap.add_argument("--top", type=int, default=200)
    ap.add_argument("--no-baseline", action="store_true", help="skip copydetect's CopyDetector over all pairs")
    ap.add_argument("--no-server", action="store_true", help="skip the server data folder and the command")
    ap.add_argument("--no-exhaustive", action="store_true", help="skip the check against compare_files on every pair")
    args = ap.parse_args()

    from server.similarity import released_stub, report

    t = time.perf_counter()
    sources, planted = make_class(args.assignment, args.count, args.planted, args.edited, args.rate, args.seed)
    stub, _, _ = released_stub(REPO / "assignments", args.assignment)
    print(f"{len(sources)} submissions of {args.assignment} made in {time.perf_counter() - t:.1f} s "
          f"({args.planted} plain copies, {args.edited} edited copies; rewrite rate {args.rate}); "
          f"boilerplate: the released notebook, {len(stub.splitlines())} lines")

    lines = []
    if not args.no_server:
        wall, saved = server_run(args.assignment, sources, args.top)
        rk = ranks([(p["a"], p["b"]) for p in saved["pairs"]], planted)
        lines.append(f"`dlopt similarity {args.assignment}` on {saved['submissions']} submissions: {wall:.1f} s wall "
                     f"(reading {saved['seconds_reading']:.1f} s, report {saved['seconds']:.1f} s: "
                     f"{', '.join(f'{k} {v:.1f} s' for k, v in saved['timings'].items())}; "
                     f"{saved['sharing']} pairs share code)")
        lines.append(summary("  planted pairs", rk, planted))

    rep = report(sources, stub, top=args.top)
    rk = ranks([(p.a, p.b) for p in rep.pairs], planted)
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in rep.timings.items())
    lines.append(f"report() in-process: {rep.seconds:.1f} s ({parts})")
    lines.append(summary("  planted pairs", rk, planted))
    sims = {tuple(sorted((p.a, p.b))): p for p in rep.pairs}
    others = [p.similarity for key, p in sims.items() if key not in planted]
    plain = [sims[k].similarity for k, v in planted.items() if v == "plain" and k in sims]
    edited = [sims[k].similarity for k, v in planted.items() if v == "edited" and k in sims]
    lines.append(f"  similarity: plain copies {min(plain, default=0):.0%}-{max(plain, default=0):.0%}, edited copies "
                 f"{min(edited, default=0):.0%}-{max(edited, default=0):.0%}, the most similar independent pair "
                 f"{max(others, default=0):.0%}, the 200th pair {rep.pairs[-1].similarity:.0%}")

    if not args.no_exhaustive:
        ex = report(sources, stub, top=args.top, exhaustive=True)
        same = sum(1 for a, b in zip(rep.pairs, ex.pairs)
                   if (a.a, a.b, a.similarity_a, a.similarity_b) == (b.a, b.b, b.similarity_a, b.similarity_b))
        lines.append(f"report(exhaustive=True): {ex.seconds:.1f} s (compare_files on all {ex.scored} pairs); "
                     f"the same top {len(rep.pairs)}, in the same order, with the same numbers: "
                     f"{same}/{len(rep.pairs)}")

    if not args.no_baseline:
        os.environ.setdefault("MPLBACKEND", "Agg")
        from copydetect import CopyDetector
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "class").mkdir()
            (root / "given").mkdir()
            for login, src in sources.items():
                (root / "class" / f"{login}.py").write_text(src)
            (root / "given" / "stub.py").write_text(stub)
            t = time.perf_counter()
            det = CopyDetector(test_dirs=[str(root / "class")], boilerplate_dirs=[str(root / "given")],
                               extensions=["py"], silent=True, autoopen=False, display_t=0.0)
            det.run()
            base = time.perf_counter() - t
            code = det.get_copied_code_list()
        listed = sorted(((c[0] + c[1]) / 2, Path(c[2]).stem, Path(c[3]).stem) for c in code)[::-1]
        rk = ranks([(a, b) for _, a, b in listed], planted)
        lines.append(f"baseline, copydetect's CopyDetector (all {len(sources) * (len(sources) - 1) // 2} pairs): "
                     f"{base:.1f} s")
        lines.append(summary("  planted pairs", rk, planted))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
