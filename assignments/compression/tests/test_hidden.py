"""Hidden suite of `compression`: every requirement the notebook lists, on inputs the
student has not seen. Deterministic functions are compared exactly (or within the float
roundings their arithmetic allows); the estimators' statistics with Hoeffding's bound
(false failure <= 1e-6 each, checks.py); local SGD and gossip on real ranks (world sizes
1 to 4), every rank read by the judge, bytes counted from the kernel's loopback count.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autograder.judge.compare import (
    CaseTally,
    GradingFailure,
    describe_call,
    expect_tuple,
    first_failure,
)
from autograder.judge.suite import generator, load_module
from autograder.protocol.specs import build, mlp_spec
from reference import compression as ref

HERE = Path(__file__).resolve().parent
C = load_module(HERE / "checks.py", "compression_checks")
H = load_module(HERE.parent / "harness.py", "compression_harness")

CALL_SECONDS = 120
RANK_SECONDS = 30  # a correct world of 4 ranks finishes its cases in about 1 s


def distinct_in(dtype, d, g):
    """d values of distinct magnitudes, exact in `dtype`: a signed permutation of 1..d times
    2^-6 (bfloat16 holds the integers up to 256 exactly: d <= 256 there)."""
    mags = (torch.randperm(d, generator=g) + 1).double() * 2.0**-6
    signs = torch.where(torch.rand(d, generator=g) < 0.5, -1.0, 1.0).double()
    x = (mags * signs).to(dtype)
    assert x.abs().unique().numel() == d, "ties among the magnitudes"  # the judge's own inputs
    return x


# -- top-k and decompress -------------------------------------------------------------------
def topk_case(student, device, x, k):
    call = describe_call("topk_compress", x, k)
    got = expect_tuple(student.call("topk_compress", x.to(device), k).value, 2, call=call, names="values, indices")
    values = C.expect_tensor(got[0], call=call, what="values", shape=(k,), dtype=x.dtype)
    indices = C.expect_tensor(got[1], call=call, what="indices", shape=(k,), dtype=torch.int64)
    want_v, want_i = ref.topk_compress(x, k)
    if sorted(indices.tolist()) != sorted(want_i.tolist()):
        missing = sorted(set(want_i.tolist()) - set(indices.tolist()))[:5]
        raise GradingFailure(f"{call}: the indices are not those of the {k} largest |x_i|: missing {missing} "
                             f"(|x| there: {[round(float(x[i].abs()), 6) for i in missing]})")
    order = indices.argsort()
    if not torch.equal(values[order], x[indices[order]]):
        raise GradingFailure(f"{call}: values are not x at the indices returned (in the same order)")


@pytest.mark.function("topk_compress")
@pytest.mark.points(6)
def test_topk_compress(student, device):
    """The k entries of largest magnitude, as a set; float32, float64, bfloat16."""
    score = CaseTally()
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        for d, k in ((50, 7), (1000 if dtype != torch.bfloat16 else 256, 100), (33, 32)):
            g = generator(f"topk/{dtype}/{d}")
            score.run(topk_case, student, device, distinct_in(dtype, d, g), k)
    score.finish()


@pytest.mark.function("topk_compress")
@pytest.mark.points(3)
def test_topk_compress_k_one_and_all(student, device):
    """k = 1 (the largest magnitude, negative here) and k = d (every entry)."""
    score = CaseTally()
    g = generator("topk-edge")
    x = distinct_in(torch.float32, 40, g)
    x[int(x.abs().argmax())] *= -1 if x[int(x.abs().argmax())] > 0 else 1
    score.run(topk_case, student, device, x, 1)
    score.run(topk_case, student, device, x, 40)
    score.finish()


@pytest.mark.function("decompress")
@pytest.mark.points(5)
def test_decompress(student, device):
    """Values at their indices, zeros elsewhere, dtype of values; a top-k round trip."""
    score = CaseTally()
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        g = generator(f"decompress/{dtype}")
        d = 60
        idx = torch.randperm(d, generator=g)[:9]
        vals = torch.randn(9, generator=g).to(dtype)
        call = describe_call("decompress", vals, idx, d)

        def case(vals=vals, idx=idx, call=call, d=d):
            got = C.expect_tensor(student.call("decompress", vals.to(device), idx.to(device), d).value, call=call,
                                  what="the result", shape=(d,), dtype=vals.dtype)
            want = ref.decompress(vals, idx, d)
            if not torch.equal(got, want):
                C.expect_near(got, want, 0.0, call=call, what="x_hat")
        score.run(case)
    x = torch.randn(30, generator=generator("decompress-roundtrip"))
    v, i = ref.topk_compress(x, 5)
    call = describe_call("decompress", v, i, 30) + " (top-5 of a vector)"

    def roundtrip():
        got = C.expect_tensor(student.call("decompress", v.to(device), i.to(device), 30).value, call=call,
                              what="the result", shape=(30,), dtype=x.dtype)
        if not torch.equal(got, torch.where(torch.isin(torch.arange(30), i), x, 0.0)):
            raise GradingFailure(f"{call}: not the top-5 entries in place with zeros elsewhere")
    score.run(roundtrip)
    score.finish()


# -- random-k -------------------------------------------------------------------------------
def randk_case(student, device, x, k, seed):
    call = describe_call("randk_compress", x, k, seed)
    got = expect_tuple(student.call("randk_compress", x.to(device), k, seed).value, 2, call=call,
                       names="values, indices")
    values = C.expect_tensor(got[0], call=call, what="values", shape=(k,), dtype=x.dtype)
    indices = C.expect_tensor(got[1], call=call, what="indices", shape=(k,), dtype=torch.int64)
    want_v, want_i = ref.randk_compress(x, k, seed)
    if not torch.equal(indices, want_i):
        same_set = sorted(indices.tolist()) == sorted(want_i.tolist())
        raise GradingFailure(f"{call}: indices {indices.tolist()[:6]}... expected {want_i.tolist()[:6]}... "
                             + ("(the same set in another order: keep randperm's order)" if same_set else
                                "(torch.randperm(d, generator=torch.Generator().manual_seed(seed))[:k])"))
    exact = x.double()[want_i] * (x.numel() / k)
    C.expect_near(values, exact, 4 * C.rounding(x.dtype) * exact.abs(), call=call, what="values",
                  why="values are x[indices] * d / k (the scale makes the estimate unbiased)")


@pytest.mark.function("randk_compress")
@pytest.mark.points(7)
def test_randk_compress(student, device):
    """randperm's first k indices for the seed, in order; values x[indices] * d / k."""
    score = CaseTally()
    for dtype in (torch.float32, torch.float64):
        for d, k, seed in ((100, 10, 0), (100, 10, 12345), (257, 64, 7), (20, 19, 3)):
            x = torch.randn(d, generator=generator(f"randk/{dtype}/{d}/{seed}")).to(dtype)
            score.run(randk_case, student, device, x, k, seed)
    score.finish()


@pytest.mark.function("randk_compress")
@pytest.mark.points(2)
def test_randk_compress_k_one_and_all(student, device):
    """k = 1 and k = d (every entry, in randperm's order, scale 1)."""
    score = CaseTally()
    x = torch.randn(25, generator=generator("randk-edge"))
    score.run(randk_case, student, device, x, 1, 99)
    score.run(randk_case, student, device, x, 25, 99)
    score.finish()


N_SEEDS = 2000


def unbiased_case(student, device, fn, x, param, width):
    """Every coordinate's mean over N_SEEDS seeds within Hoeffding's bound of x_i: draws of
    coordinate i lie in an interval of width width[i]; a union bound over the d coordinates
    keeps the false failure of the whole check at C.DELTA."""
    seeds = list(range(1000, 1000 + N_SEEDS))
    call = f"{fn}(x float32[{x.numel()}], {param}, seed) over {N_SEEDS} seeds"
    r = student.task("estimates", fn, x.to(device), param, seeds, timeout=CALL_SECONDS, what=call).value
    if "error" in r:
        raise GradingFailure(r["error"])
    rows = r["rows"]
    mean = rows.mean(0)
    bound = C.hoeffding(width, N_SEEDS, x.numel())
    err = (mean - x.double()).abs()
    if (err > bound + 1e-12).any():
        i = int((err - bound).argmax())
        raise GradingFailure(
            f"{call}: the mean estimate of x[{i}] = {float(x[i]):.5g} is {float(mean[i]):.5g} (off by "
            f"{float(err[i]):.3g}; a correct, unbiased estimator is within {float(bound[i]):.3g} except with "
            f"probability {C.DELTA:g}): biased (a missing scale? rounding to the nearest level?)")
    return rows


@pytest.mark.function("randk_compress")
@pytest.mark.points(6)
def test_randk_is_unbiased(student, device):
    """The mean of decompress(randk_compress(x, k, seed)) over 2000 seeds is x (Hoeffding)."""
    x = torch.randn(20, generator=generator("randk-unbiased"))
    d, k = 20, 5
    unbiased_case(student, device, "randk_compress", x, k, x.double().abs() * d / k)


# -- QSGD -------------------------------------------------------------------------------------
def qsgd_case(student, device, x, s, seed):
    call = describe_call("qsgd", x, s, seed)
    got = C.expect_tensor(student.call("qsgd", x.to(device), s, seed).value, call=call, what="the result",
                          shape=x.shape, dtype=x.dtype)
    r, p, norm = C.qsgd_levels(x, s)
    u = torch.rand(x.numel(), generator=torch.Generator().manual_seed(seed)).double()
    level = torch.floor(r) + (u < p).double()
    want = norm * torch.sign(x.double()) * level / s
    rounding = nearest = None
    if not torch.allclose(got.double(), want, rtol=16 * C.rounding(x.dtype), atol=0):
        rounding = norm * torch.sign(x.double()) * torch.round(r) / s
        nearest = torch.allclose(got.double(), rounding, rtol=1e-4, atol=0)
    C.expect_near(got, want, 16 * C.rounding(x.dtype) * want.abs(), call=call, what="x_hat",
                  why=("this is rounding to the nearest level: draw u = torch.rand(d, generator) and round up "
                       "when u_i < r_i - floor(r_i)" if nearest else
                       "x_hat = ||x|| sign(x) xi / s with xi = floor(r) + (u < r - floor(r)), r = s |x| / ||x||"))


@pytest.mark.function("qsgd")
@pytest.mark.points(2)
def test_qsgd_with_zero_entries(student, device):
    """Entries that are exactly 0 (sparse gradients have them): sign(0) = 0, level 0, x_hat_i = 0."""
    score = CaseTally()
    for d, s, seed in ((40, 4, 3), (64, 1, 8)):
        x = C.qsgd_input(generator(f"qsgd-zeros/{d}/{s}/{seed}"), d, s, seed, torch.float32, zeros=d // 4)
        score.run(qsgd_case, student, device, x, s, seed)
    score.finish()


@pytest.mark.function("qsgd")
@pytest.mark.points(6)
def test_qsgd(student, device):
    """Exactly the contract's draw, s = 1, 4, 255, float32 and float64, several seeds."""
    score = CaseTally()
    for dtype in (torch.float32, torch.float64):
        for d, s, seed in ((50, 4, 0), (50, 1, 11), (300, 255, 5), (64, 4, 2024)):
            x = C.qsgd_input(generator(f"qsgd/{dtype}/{d}/{s}/{seed}"), d, s, seed, dtype)
            score.run(qsgd_case, student, device, x, s, seed)
    score.finish()


@pytest.mark.function("qsgd")
@pytest.mark.points(2)
def test_qsgd_of_zero(student, device):
    """x = 0 gives zeros (no NaN from 0 / 0)."""
    x = torch.zeros(16)
    call = describe_call("qsgd", x, 4, 1)
    got = C.expect_tensor(student.call("qsgd", x.to(device), 4, 1).value, call=call, what="the result",
                          shape=x.shape, dtype=x.dtype)
    if not torch.equal(got, x):
        raise GradingFailure(f"{call}: expected zeros, got {got[:4].tolist()}... (guard ||x|| = 0)")


QSGD_STAT = dict(d=20, s=2)


@pytest.mark.function("qsgd")
@pytest.mark.points(6)
def test_qsgd_is_unbiased(student, device):
    """The mean of qsgd(x, s, seed) over 2000 seeds is x (Hoeffding): each entry's draws lie
    within ||x|| / s of each other."""
    d, s = QSGD_STAT["d"], QSGD_STAT["s"]
    x = torch.randn(d, generator=generator("qsgd-unbiased"))
    unbiased_case(student, device, "qsgd", x, s, torch.full((d,), float(x.double().norm()) / s))


@pytest.mark.function("qsgd")
@pytest.mark.points(5)
def test_qsgd_variance(student, device):
    """Mean squared error over 2000 seeds within Hoeffding's bound of the exact variance
    sum_i (||x|| / s)^2 p_i (1 - p_i), which is below min(d / s^2, sqrt(d) / s) ||x||^2."""
    d, s = QSGD_STAT["d"], QSGD_STAT["s"]
    x = torch.randn(d, generator=generator("qsgd-variance"))
    r, p, norm = C.qsgd_levels(x, s)
    exact = float(((norm / s) ** 2 * p * (1 - p)).sum())
    assert exact <= ref.qsgd_variance_bound(d, s) * norm**2  # the lemma, for the judge's own inputs
    seeds = list(range(5000, 5000 + N_SEEDS))
    call = f"qsgd(x float32[{d}], {s}, seed) over {N_SEEDS} seeds"
    res = student.task("estimates", "qsgd", x.to(device), s, seeds, timeout=CALL_SECONDS, what=call).value
    if "error" in res:
        raise GradingFailure(res["error"])
    sq = ((res["rows"] - x.double()) ** 2).sum(1)
    widest = float(((norm / s) ** 2 * torch.maximum(p, 1 - p) ** 2).sum())  # a draw's error is at most this
    bound = float(C.hoeffding(torch.tensor(widest), N_SEEDS, 1))
    if abs(float(sq.mean()) - exact) > bound:
        raise GradingFailure(
            f"{call}: mean squared error {float(sq.mean()):.4g}, expected {exact:.4g} (the stochastic rounding's "
            f"variance; a correct estimator is within {bound:.3g} except with probability {C.DELTA:g})"
            + (": no randomness at all?" if float(sq.mean()) < exact - bound else ""))


# -- error feedback ----------------------------------------------------------------------------
def ef_run(student, device, compressor, grads, error0, what):
    call = f"{steps_text(len(grads))} of error_feedback_step with the grader's {compressor} compressor ({what})"
    res = student.task("error_feedback_run", [g.to(device) for g in grads], error0.to(device), compressor,
                       timeout=CALL_SECONDS, what=call).value
    for t, (step, g) in enumerate(zip(res, grads)):
        # (the child's tensors come back on its device: the judge compares on the CPU)
        step = {k: ([c.cpu() for c in v] if k == "calls" else v.cpu() if isinstance(v, torch.Tensor) else v)
                for k, v in step.items()}
        at = f"{call}, step {t + 1}"
        if "returned" in step:
            raise GradingFailure(f"{at}: expected (message, new_error), got {step['returned']}")
        if step["changed"]:
            raise GradingFailure(f"{at}: the call changed its input {', '.join(step['changed'])}: return new tensors")
        e_in = step["error_in"].cpu()
        p = g.double() + e_in.double()
        u = C.rounding(g.dtype)
        scale = 4 * u * (g.double().abs() + e_in.double().abs()) + 1e-30
        if len(step["calls"]) != 1:
            raise GradingFailure(f"{at}: compress was called {len(step['calls'])} times; once per step, on grad + error")
        C.expect_near(step["calls"][0], p, scale, call=at, what="compress's input", why="compress(grad + error)")
        msg = H.compress_with(compressor, step["calls"][0].cpu())
        for name in ("message", "error"):
            C.expect_tensor(step[name], call=at, what=f"the {name.replace('error', 'new error')}", shape=g.shape,
                            dtype=g.dtype)
        # The grader's compressor ran in the child (on its device) and runs again here: a
        # reduction over the d entries (the scaled sign's mean) may round d times differently.
        own = g.numel() * u * msg.double().abs()
        C.expect_near(step["message"], msg, scale + own, call=at, what="message",
                      why="message = compress(grad + error)")
        C.expect_near(step["error"], step["calls"][0].double() - msg.double(), 2 * scale + 2 * own,
                      call=at, what="new_error", why="new_error = (grad + error) - message")
    if len(res) != len(grads):
        raise GradingFailure(f"{call}: stopped after {len(res)} steps")
    return res


def steps_text(n):
    return f"{n} step{'s' if n > 1 else ''}"


@pytest.mark.function("error_feedback_step")
@pytest.mark.points(8)
def test_error_feedback(student, device):
    """Runs of 1, 7 and 25 steps, three compressors, float32 and float64: each step's message
    and new error, compress called once on grad + error, inputs unchanged."""
    score = CaseTally()
    for compressor in ("top3", "scaled_sign", "quarters"):
        for dtype, steps in ((torch.float32, 7), (torch.float64, 25), (torch.float32, 1)):
            g = generator(f"ef/{compressor}/{dtype}/{steps}")
            grads = [torch.randn(12, generator=g).to(dtype) for _ in range(steps)]
            e0 = (0.1 * torch.randn(12, generator=g)).to(dtype)
            score.run(ef_run, student, device, compressor, grads, e0, str(dtype).replace("torch.", ""))
    score.finish()


@pytest.mark.function("error_feedback_step")
@pytest.mark.points(3)
def test_error_feedback_keeps_everything(student, device):
    """After 50 steps with top-3: messages sent + error held = gradients seen + initial error."""
    g = generator("ef-sum")
    grads = [torch.randn(10, generator=g, dtype=torch.float64) for _ in range(50)]
    e0 = torch.randn(10, generator=g, dtype=torch.float64)
    res = ef_run(student, device, "top3", grads, e0, "float64")
    total = sum(s["message"].cpu() for s in res) + res[-1]["error"].cpu()
    C.expect_near(total, sum(grads) + e0, 1e-10, call="50 steps of error_feedback_step with top-3",
                  what="sum(messages) + final error - (sum(grads) + initial error)")


# -- local SGD and gossip on ranks --------------------------------------------------------------
class Deadlock(GradingFailure):
    pass


_BASELINE: dict = {}


def baseline(student, world, device):
    key = (id(student), world, student._task_function())
    if key not in _BASELINE:
        r = student.task("run_ranks", world, [[{"op": "noop"}] * world], RANK_SECONDS, device, timeout=CALL_SECONDS,
                         what=f"setting up a process group of {world} ranks")
        _BASELINE[key] = r.loopback_bytes if r.value.get("backend") == "gloo" else None
    return _BASELINE[key]


DEADLOCKED: dict[str, str] = {}  # function -> its first deadlock: later runs of it are not retried


def run_ranks(student, world, cases, device, what):
    fn = what.split("(")[0].split(" ")[0]
    if fn in DEADLOCKED:
        raise Deadlock(f"{what}: not run, {fn} deadlocked earlier ({DEADLOCKED[fn]})")
    reply = student.task("run_ranks", world, cases, RANK_SECONDS, device, timeout=CALL_SECONDS, what=what)
    if reply.value.get("error"):
        DEADLOCKED[fn] = f"world size {world}"
        raise Deadlock(f"{what}: {reply.value['error']}")
    return reply


def rank_failure(res) -> str | None:
    if res is None:
        return "no result from this rank"
    if not res.get("returned"):
        where = "; ".join(res.get("where") or [])
        return f"raised {res.get('error')}" + (f" (in {where})" if where else "")
    return None


SIZES = [6, 8, 3]


def local_sgd_cases(label, world, local_steps, rounds, sizes=SIZES, lr=0.1):
    g = generator(label)
    model = build("mlp", dict(mlp_spec(sizes, None, "tanh", torch.float32).params))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    shards = [[(torch.randn(4, sizes[0], generator=g), torch.randn(4, sizes[-1], generator=g))
               for _ in range(local_steps * rounds)] for _ in range(world)]
    spec = dict(mlp_spec(sizes, state, "tanh", torch.float32).params)
    cases = [{"op": "local_sgd", "model": spec, "shard": shards[r], "lr": lr, "local_steps": local_steps,
              "rounds": rounds} for r in range(world)]
    models = []
    for _ in range(world):
        m = build("mlp", dict(mlp_spec(sizes, state, "tanh", torch.float32).params)).double()
        models.append(m)
    ref.simulate_local_sgd(models, H._mse, [[(x.double(), y.double()) for x, y in s] for s in shards], lr,
                           local_steps, rounds)
    return cases, [[p.detach() for p in models[0].parameters()]]


def local_sgd_check(student, device, label, worlds_steps):
    score = CaseTally()
    for world, local_steps, rounds in worlds_steps:
        cases, (want,) = local_sgd_cases(f"{label}/{world}/{local_steps}/{rounds}", world, local_steps, rounds)
        what = f"local_sgd(model, loss_fn, shard, lr=0.1, local_steps={local_steps}, rounds={rounds}) on {world} rank(s)"
        try:
            reply = run_ranks(student, world, [cases], device, what)
        except Deadlock as e:
            score.add(str(e))
            continue
        msg = None
        for rank in range(world):
            res = reply.value["results"][rank][0] if reply.value["results"][rank] else None
            msg = rank_failure(res)
            if msg:
                msg = f"{what}, rank {rank}: {msg}"
                break
            got_params = res["value"]
            if not isinstance(got_params, list) or len(got_params) != len(want):
                msg = f"{what}, rank {rank}: the model's parameters could not be read back"
                break
            for j, (got, w) in enumerate(zip(got_params, want)):
                # float32 training of a few steps against float64: relative 1e-4 of the
                # parameter's size (measured: the master is within 3e-6).
                msg = first_failure(C.expect_near, got, w, 1e-4 * (w.abs() + 0.1), call=f"{what}, rank {rank}",
                                    what=f"parameter {j}",
                                    why="every rank: local_steps SGD steps on shard[t] (t counted over all rounds), "
                                        "then the mean over ranks (all_reduce / world size)")
                if msg:
                    break
            if msg:
                break
        score.add(msg)
    score.finish()


@pytest.mark.function("local_sgd")
@pytest.mark.points(6)
def test_local_sgd_one_round(student, device):
    """One round: local_steps 1, 2, 5 on 1 to 4 ranks; every rank's parameters."""
    local_sgd_check(student, device, "lsgd1", [(1, 2, 1), (2, 1, 1), (2, 5, 1), (3, 2, 1), (4, 5, 1)])


@pytest.mark.function("local_sgd")
@pytest.mark.points(5)
def test_local_sgd_rounds(student, device):
    """Three rounds: shard[t] with t counted over all rounds, an average after each round."""
    local_sgd_check(student, device, "lsgd3", [(2, 2, 3), (3, 1, 3), (4, 3, 3)])


@pytest.mark.function("local_sgd")
@pytest.mark.points(4)
def test_local_sgd_sends_one_average_per_round(student, device):
    """8 steps as 2 rounds of 4 send at most 0.4 of the bytes of 8 rounds of 1 (kernel's count)."""
    world, sizes = 3, [64, 256, 64]
    sent = {}
    for local_steps, rounds in ((4, 2), (1, 8)):
        cases, _ = local_sgd_cases(f"lsgd-bytes/{local_steps}", world, local_steps, rounds, sizes=sizes, lr=0.01)
        what = f"local_sgd(..., local_steps={local_steps}, rounds={rounds}) on {world} ranks, a [64, 256, 64] MLP"
        # On gloo whatever the worker: the kernel counts loopback bytes, not NCCL's.
        reply = run_ranks(student, world, [cases], "cpu", what)
        for rank in range(world):
            res = reply.value["results"][rank][0] if reply.value["results"][rank] else None
            if rank_failure(res):
                raise GradingFailure(f"{what}, rank {rank}: {rank_failure(res)}")
        base = baseline(student, world, "cpu")
        if reply.loopback_bytes is None or base is None:
            pytest.skip("no kernel count of the sandbox's loopback here (or NCCL ranks): bytes are not graded")
        sent[local_steps] = max(reply.loopback_bytes - base, 0)
    params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    # A ring all-reduce of n float32 sends 2 (p - 1) n 4 bytes in all (gloo's: measured 1.01-1.02x that).
    per_round = 2 * (world - 1) * params * 4
    if sent[1] < 0.75 * 8 * per_round:
        raise GradingFailure(f"8 rounds of local_sgd on {world} ranks sent {sent[1]:,} bytes in all, less than 8 "
                             f"all-reduces of the parameters ({8 * per_round:,}): average with all_reduce")
    if sent[4] > 1.25 * 2 * per_round:
        raise GradingFailure(f"2 rounds of local_sgd (local_steps=4) on {world} ranks sent {sent[4]:,} bytes, more "
                             f"than 1.25x two all-reduces of the parameters ({2 * per_round:,}): one average per "
                             "round, nothing else")
    if sent[4] > 0.4 * sent[1]:
        raise GradingFailure(f"local_sgd with local_steps=4 sent {sent[4]:,} bytes, {sent[4] / sent[1]:.2f} of the "
                             f"{sent[1]:,} of local_steps=1 (expected about 0.25): average once per round, "
                             "after the local steps, not after each step")


GOSSIP_WEIGHTS = [(1 / 3, 1 / 3, 1 / 3), (0.1, 0.6, 0.3)]


def gossip_expected(xs, weights):
    W = ref.gossip_matrix(len(xs), weights)
    X = torch.stack([x.double() for x in xs])
    return W @ X


def gossip_cases(label, world, d, dtype, weights):
    g = generator(f"{label}/{world}/{d}/{dtype}")
    xs = [torch.randn(d, generator=g).to(dtype) for _ in range(world)]
    return [{"op": "gossip", "x": xs[r], "weights": list(weights)} for r in range(world)], xs


@pytest.mark.function("gossip_average")
@pytest.mark.points(6)
def test_gossip_average(student, device):
    """w0 x_{r-1} + w1 x_r + w2 x_{r+1} on every rank; 1 to 4 ranks, float32 and float64, two
    weightings (uniform and lopsided)."""
    score = CaseTally()
    for world in (1, 2, 3, 4):
        cases, checks = [], []
        for dtype in (torch.float32, torch.float64):
            for weights in GOSSIP_WEIGHTS:
                for d in (7, 1000):
                    c, xs = gossip_cases("gossip", world, d, dtype, weights)
                    cases.append(c)
                    checks.append((dtype, weights, d, xs))
        what = f"gossip_average on {world} rank(s)"
        try:
            reply = run_ranks(student, world, [[c[r] for r in range(world)] for c in cases], device, what)
        except Deadlock as e:
            for _ in checks:
                score.add(str(e))
            continue
        for i, (dtype, weights, d, xs) in enumerate(checks):
            want = gossip_expected(xs, weights)
            msg = None
            for rank in range(world):
                res = reply.value["results"][rank][i] if reply.value["results"][rank] and \
                    i < len(reply.value["results"][rank]) else None
                call = (f"gossip_average(x {str(dtype)[6:]}[{d}], weights={tuple(round(w, 3) for w in weights)}) on "
                        f"{world} rank(s), rank {rank}")
                msg = rank_failure(res)
                if msg:
                    msg = f"{call}: {msg}"
                    break
                scale = sum(abs(w) * x.double().abs() for w, x in zip(weights, (xs[(rank - 1) % world], xs[rank],
                                                                                xs[(rank + 1) % world])))
                msg = first_failure(C.expect_tensor, res["value"], call=call, what="x_new", shape=(d,), dtype=dtype) or \
                    first_failure(C.expect_near, res["value"], want[rank], 4 * C.rounding(dtype) * scale + 1e-30,
                                    call=call, what="x_new",
                                    why="w0 x_{r-1} + w1 x_r + w2 x_{r+1}, neighbours mod the world size")
                if msg:
                    break
            score.add(msg)
    score.finish()


@pytest.mark.function("gossip_average")
@pytest.mark.points(5)
def test_gossip_sends_x_once_to_each_neighbour(student, device):
    """The kernel's count: p * n * d * 4 bytes for float32 x of 50,000 entries (n distinct
    neighbours), within 0.75 to 1.25; each rank sends only to its neighbours."""
    d = 50_000
    score = CaseTally()
    for world in (2, 3, 4):
        cases, xs = gossip_cases("gossip-bytes", world, d, torch.float32, (0.25, 0.5, 0.25))
        what = f"gossip_average(x float32[{d}]) on {world} ranks"
        try:
            reply = run_ranks(student, world, [cases], "cpu", what)  # gloo: the kernel counts its bytes
        except Deadlock as e:
            score.add(str(e))
            continue
        failures = [f"rank {r}: {rank_failure(reply.value['results'][r][0] if reply.value['results'][r] else None)}"
                    for r in range(world)
                    if rank_failure(reply.value["results"][r][0] if reply.value["results"][r] else None)]
        if failures:
            score.add(f"{what}: {failures[0]}")
            continue
        neighbours = {r: sorted({(r - 1) % world, (r + 1) % world}) for r in range(world)}
        expected = sum(len(n) for n in neighbours.values()) * d * 4
        base = baseline(student, world, "cpu")
        msg = None
        if reply.loopback_bytes is not None and base is not None:
            sent = reply.loopback_bytes - base
            if not 0.75 * expected <= sent <= 1.25 * expected:
                seen = "; ".join(f"rank {r} -> {dict(sorted(reply.value['results'][r][0].get('sent_to', {}).items()))}"
                                 for r in range(world))
                msg = (f"{what}: the ranks sent {sent:,} bytes in all (the kernel's count), expected {expected:,}: x "
                       f"({d * 4:,} bytes) once to each distinct neighbour. Bytes by destination as the ranks "
                       f"counted them: {seen}")
        for r in range(world):
            to = reply.value["results"][r][0].get("sent_to", {})
            if msg is None and sorted(to) != neighbours[r]:
                msg = f"{what}: rank {r} sent to ranks {sorted(to)}; its neighbours are {neighbours[r]}"
            elif msg is None and any(n != d * 4 for n in to.values()):
                msg = (f"{what}: rank {r} sent {dict(sorted(to.items()))} bytes by destination; x is {d * 4:,} bytes, "
                       "sent once to each neighbour")
        score.add(msg)
    score.finish()


# -- inputs ---------------------------------------------------------------------------------
def unchanged_case(student, device, fn, *args):
    x = torch.randn(40, generator=generator(f"unchanged/{fn}"))
    was = x.clone()
    r = student.call(fn, x.to(device), *args, return_args=True)
    after = r.args_after[0] if r.args_after else None
    if after is None or not torch.equal(after.cpu(), was):
        raise GradingFailure(f"{describe_call(fn, x, *args)} changed its input x: return new tensors "
                             "(an in-place abs_, mul_ or sort_?)")


@pytest.mark.function("topk_compress")
@pytest.mark.points(1)
def test_topk_leaves_x_unchanged(student, device):
    """topk_compress leaves x as it was (read back by the judge)."""
    unchanged_case(student, device, "topk_compress", 5)


@pytest.mark.function("randk_compress")
@pytest.mark.points(1)
def test_randk_leaves_x_unchanged(student, device):
    """randk_compress leaves x as it was (read back by the judge)."""
    unchanged_case(student, device, "randk_compress", 5, 3)


@pytest.mark.function("qsgd")
@pytest.mark.points(1)
def test_qsgd_leaves_x_unchanged(student, device):
    """qsgd leaves x as it was (read back by the judge)."""
    unchanged_case(student, device, "qsgd", 4, 3)
