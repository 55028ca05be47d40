"""Hidden suite of `muon`: Newton–Schulz, the Muon step and MuonAdamW against
torch.optim.Muon and torch.optim.AdamW (reference/muon.py follows the former operation
for operation; assignments/muon/tests/test_reference.py checks that on every
`dlopt check`). Inputs come from generators seeded by each test's label; every check
here is stated in the notebook. Tolerances and their measurements: checks.py.

Gradients are full rank, and each optimizer test hands both sides the same gradients
at every step (they do not depend on the parameters), so the bfloat16 differences of
two correct Newton–Schulz orderings add up step by step and are never fed back into
later gradients (the contract's advice: a cross-entropy head's rank-deficient gradient
amplifies rounding noise ~480x; no test here uses one).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from autograder.judge.compare import (
    GradingFailure,
    describe_call,
    expect_close,
    expect_memory_within,
    expect_tuple,
    expect_unchanged,
    tolerance_for,
)
from autograder.judge.student import StudentTimeout
from autograder.judge.suite import generator, load_module, randn
from reference import muon as ref

HERE = Path(__file__).resolve().parent
C = load_module(HERE / "checks.py", "muon_checks")
HARNESS = load_module(HERE.parent / "harness.py", "muon_harness")

NS = pytest.mark.function("newton_schulz")
STEP = pytest.mark.function("muon_step")
OPT = pytest.mark.function("MuonAdamW")


def _ns(student, device, G, label_call=None, **kwargs):
    call = label_call or describe_call("newton_schulz", G, **kwargs)
    got = student.call("newton_schulz", G.to(device), **kwargs).value
    return C.expect_tensor(got, call=call, what="the result", shape=G.shape, dtype=torch.bfloat16), call


def _ill_conditioned(g, m, n, decades=3.0):
    """A random m x n matrix whose singular values are spread evenly over `decades`."""
    U, _, Vh = torch.linalg.svd(randn(g, m, n, dtype=torch.float64), full_matrices=False)
    s = torch.logspace(0, -decades, min(m, n), dtype=torch.float64)
    return (U * s) @ Vh


# --------------------------------------------------------------------------------------
# newton_schulz (30 hidden points + 3 public)
# --------------------------------------------------------------------------------------
@NS
@pytest.mark.points(2)
@pytest.mark.parametrize("shape", [(48, 48), (40, 96), (96, 40)], ids=["square", "wide", "tall"])
def test_newton_schulz_matches_torch_muon(student, device, shape):
    """Random Gaussian matrices, square, wide and tall: close to torch.optim.Muon's result."""
    G = randn(generator(f"ns-{shape}"), *shape)
    got, call = _ns(student, device, G)
    want = ref.newton_schulz(G)
    C.expect_near(got, want, C.NS_RTOL * float(want.double().norm()), call=call, what="the result",
                  measure=f"{C.NS_RTOL} of its norm: the spread of correct bfloat16 orderings",
                  why="normalise by the Frobenius norm (not the spectral or largest entry), then "
                      "X = a X + (b A + c A A) X with A = X X^T, `steps` times")


@NS
@pytest.mark.points(1)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16],
                         ids=["float32", "float64", "bfloat16"])
def test_newton_schulz_returns_bfloat16(student, device, dtype):
    """Whatever the input's dtype, the result is bfloat16 (the iteration runs in bfloat16)."""
    G = randn(generator(f"ns-dtype-{dtype}"), 24, 40, dtype=dtype)
    got, call = _ns(student, device, G)
    want = ref.newton_schulz(G)
    C.expect_near(got, want, C.NS_RTOL * float(want.double().norm()), call=call, what="the result",
                  measure=f"{C.NS_RTOL} of its norm")


@NS
@pytest.mark.points(4)
def test_newton_schulz_rounds_its_input_to_bfloat16(student, device):
    """The first step is X = G in bfloat16: entries 1 + u with |u| < 0.0015 are all 1.0 there."""
    g = generator("ns-rounding")
    G = 1.0 + (torch.rand(32, 48, generator=g, dtype=torch.float64) * 2 - 1).float() * 0.0015
    got, call = _ns(student, device, G)
    want = ref.newton_schulz(G)
    C.expect_near(got, want, C.ROUNDING_RTOL * float(want.double().norm()), call=call,
                  what="the result for a matrix whose bfloat16 rounding is the all-ones matrix",
                  measure=f"{C.ROUNDING_RTOL} of its norm",
                  why="cast G to bfloat16 first and iterate in bfloat16: in float32 the tiny "
                      "perturbation's singular values are amplified ~480x")


@NS
@pytest.mark.points(3)
@pytest.mark.parametrize("shape", [(64, 32), (32, 64)], ids=["tall", "wide"])
def test_newton_schulz_singular_values(student, device, shape):
    """Singular values spread over three decades: the result's are the quintic's image of the
    normalised input's (near, not at, 1; small ones still growing after 5 steps)."""
    G = _ill_conditioned(generator(f"ns-sv-{shape}"), *shape).float()
    got, call = _ns(student, device, G)
    have = torch.linalg.svdvals(got.detach().cpu().double()).sort(descending=True).values
    want = ref.expected_singular_values(G)
    err = (have - want).abs()
    k = int(err.argmax())
    if float(err[k]) > C.SV_ATOL:
        raise GradingFailure(
            f"{call}: singular value {k} of the result (largest first) is {float(have[k]):.4g}; the quintic, applied "
            f"5 times to the normalised input's {float(torch.linalg.svdvals(G.double())[k] / G.double().norm()):.4g}, "
            f"gives {float(want[k]):.4g} (allowed ±{C.SV_ATOL}, bfloat16's noise on the smallest ones)\n"
            "  hint: Newton–Schulz keeps U and V of the SVD and maps each singular value through "
            "p(s) = a s + b s^3 + c s^5; an exact polar factor (every singular value 1) is not what Muon computes")


@NS
@pytest.mark.points(1)
@pytest.mark.parametrize("steps,coefficients", [(3, ref.COEFFICIENTS), (8, ref.COEFFICIENTS),
                                                (6, (15 / 8, -10 / 8, 3 / 8))],
                         ids=["3-steps", "8-steps", "convergent-quintic"])
def test_newton_schulz_steps_and_coefficients(student, device, steps, coefficients):
    """Other step counts and coefficients, passed by keyword."""
    G = randn(generator(f"ns-steps-{steps}-{coefficients}"), 40, 56)
    got, call = _ns(student, device, G, steps=steps, coefficients=coefficients)
    want = ref.newton_schulz(G, steps, coefficients)
    C.expect_near(got, want, C.NS_RTOL * float(want.double().norm()), call=call, what="the result",
                  measure=f"{C.NS_RTOL} of its norm", why="use the `steps` and `coefficients` passed in")


# A tall 4096 x 4 matrix: worked on its short side the Gram matrix is 4 x 4 (64 bytes) and
# the call takes milliseconds; without the transpose it is 4096 x 4096 (32 MiB in
# bfloat16) and each A @ A costs 4096^3 multiply-adds (on this 2-core CPU the call did not
# end within 60 s of CPU time). The budget: 4 MiB; measured for the separate-products
# variant: 0.5 MiB. NS_TALL_SECONDS bounds the call's CPU time (the kernel's count, so not
# the machine's load): 5 s is hundreds of times what the short side needs.
NS_TALL = (4096, 4)
NS_MEMORY_BUDGET = 4 << 20
NS_TALL_SECONDS = 5


@NS
@pytest.mark.points(4)
def test_newton_schulz_works_on_the_short_side(student, device):
    """A tall 4096 x 4 matrix is transposed first: its Gram matrix is 4 x 4, not 4096 x 4096."""
    G = randn(generator("ns-tall-memory"), *NS_TALL)
    student.restart()
    student.call("newton_schulz", randn(generator("ns-warm"), 16, 4).to(device), watch_memory=True)
    call = describe_call("newton_schulz", G)
    advice = ("When m > n, transpose first so that A = X X^T is n x n: here 4 x 4 instead of 4096 x 4096 "
              "(32 MiB in bfloat16, and 4096^3 multiply-adds for A @ A); Muon's cost is then O(m n^2) per step.")
    try:
        r = student.call("newton_schulz", G.to(device), watch_memory=True, timeout=NS_TALL_SECONDS)
    except StudentTimeout:
        raise GradingFailure(f"{call}: no answer within {NS_TALL_SECONDS} s of CPU time. {advice}") from None
    got = C.expect_tensor(r.value, call=call, what="the result", shape=G.shape, dtype=torch.bfloat16)
    want = ref.newton_schulz(G)
    C.expect_near(got, want, C.NS_RTOL * float(want.double().norm()), call=call, what="the result",
                  measure=f"{C.NS_RTOL} of its norm")
    expect_memory_within(r.memory, NS_MEMORY_BUDGET, call=call, host=device == "cpu", advice=advice)


@NS
@pytest.mark.points(1)
def test_newton_schulz_of_zero_is_zero(student, device):
    """G = 0: eps keeps the normalisation finite and the result is 0."""
    G = torch.zeros(12, 20)
    got, call = _ns(student, device, G)
    if got.abs().max() != 0:
        raise GradingFailure(f"{call}: expected all zeros, got entries up to {float(got.abs().max()):.4g}")


@NS
@pytest.mark.points(1)
def test_newton_schulz_divides_a_tiny_matrix_by_eps(student, device):
    """||G||_F = 1e-9, below eps = 1e-7: X = G / eps (not G / ||G||_F), so the singular values
    start at 1% of 1 and the result is far from orthogonal after 5 steps."""
    G = randn(generator("ns-tiny"), 16, 24)
    G = G / G.norm() * 1e-9
    got, call = _ns(student, device, G)
    want = ref.newton_schulz(G)
    C.expect_near(got, want, C.NS_RTOL * float(want.double().norm()), call=call, what="the result",
                  measure=f"{C.NS_RTOL} of its norm", why="X = X / max(||X||_F, eps): eps wins below it")


@NS
@pytest.mark.points(2)
def test_newton_schulz_leaves_a_bfloat16_input_unchanged(student, device):
    """A bfloat16 G: G.bfloat16() is G itself, so an in-place division would change the caller's tensor."""
    G = randn(generator("ns-inplace"), 20, 28, dtype=torch.bfloat16)
    call = describe_call("newton_schulz", G)
    r = student.call("newton_schulz", G.to(device), return_args=True)
    C.expect_tensor(r.value, call=call, what="the result", shape=G.shape, dtype=torch.bfloat16)
    expect_unchanged(G, r.args_after[0], call=call, name="G")


# --------------------------------------------------------------------------------------
# muon_step (30 hidden points + 2 public)
# --------------------------------------------------------------------------------------
def _step_case(student, device, label, shape, *, with_buf=True, param_scale=1.0, dtype=torch.float32,
               return_args=False, why="", check_buf=True, **hyper):
    g = generator(label)
    param = randn(g, *shape, dtype=dtype, scale=param_scale)
    grad = randn(g, *shape)
    buf = randn(g, *shape, scale=0.5) if with_buf else None
    call = describe_call("muon_step", param, grad, buf, **hyper)
    r = student.call("muon_step", param.to(device), grad.to(device), None if buf is None else buf.to(device),
                     return_args=return_args, **hyper)
    new_param, new_buf = expect_tuple(r.value, 2, call=call, names="new param, new buffer")
    want_param, want_buf, ortho = ref.muon_step(param, grad, buf, **hyper)
    C.expect_tensor(new_param, call=call, what="the new param", shape=shape, dtype=dtype)
    if check_buf:
        # buf = momentum buf + (1 - momentum) grad in float32, however written (lerp,
        # mul/add): two roundings per entry; 16 ulps of the largest term.
        scale = float(want_buf.abs().max()) + float(grad.abs().max())
        expect_close(new_buf, want_buf, call=call, what="the new momentum buffer",
                     tol=tolerance_for(torch.float32, factor=16, scale=scale),
                     why="buf = momentum * buf + (1 - momentum) * grad (buf starts at zeros)")
    lr_adj = ref.adjusted_lr(hyper["lr"], shape, hyper.get("adjust_lr_fn"))
    bound = C.NS_RTOL * lr_adj * float(ortho.double().norm()) \
        + 16 * torch.finfo(dtype).eps * float(param.double().norm())
    C.expect_near(new_param, want_param, bound, call=call, what="the new param",
                  measure=f"{C.NS_RTOL} of lr' * ||O|| (Newton-Schulz's bfloat16 spread) + 16 ulps of the param",
                  why=why)
    return r, (param, grad, buf), call


@STEP
@pytest.mark.points(4)
def test_muon_step_first_step(student, device):
    """buf is None on the first step: it starts at zeros."""
    _step_case(student, device, "step-first", (48, 32), with_buf=False, lr=0.02, weight_decay=0.1,
               why="when buf is None, start from zeros: buf = (1 - momentum) * grad")


@STEP
@pytest.mark.points(2)
@pytest.mark.parametrize("shape", [(40, 40), (24, 72), (72, 24)], ids=["square", "wide", "tall"])
def test_muon_step_nesterov(student, device, shape):
    """A step from a momentum buffer with Nesterov (the default): square, wide and tall."""
    _step_case(student, device, f"step-nesterov-{shape}", shape, lr=0.05, momentum=0.9, weight_decay=0.0,
               why="the direction is grad + momentum * (buf - grad) with the new buf; lr' = lr * sqrt(max(1, m / n))")


@STEP
@pytest.mark.points(2)
def test_muon_step_without_nesterov(student, device):
    """nesterov=False: the direction is the new buffer itself."""
    _step_case(student, device, "step-plain", (36, 52), lr=0.03, momentum=0.8, nesterov=False, weight_decay=0.0,
               why="with nesterov=False the direction is buf")


@STEP
@pytest.mark.points(2)
@pytest.mark.parametrize("shape,fn", [((96, 24), "original"), ((24, 96), "match_rms_adamw"),
                                      ((96, 24), "match_rms_adamw")],
                         ids=["original-tall", "match_rms_adamw-wide", "match_rms_adamw-tall"])
def test_muon_step_adjusts_the_lr(student, device, shape, fn):
    """adjust_lr_fn: lr * sqrt(max(1, m / n)) ("original", or None) or 0.2 * lr * sqrt(max(m, n))."""
    _step_case(student, device, f"step-adjust-{shape}-{fn}", shape, lr=0.04, weight_decay=0.0, adjust_lr_fn=fn,
               check_buf=False,
               why='lr\' = lr * sqrt(max(1, m / n)) for "original", 0.2 * lr * sqrt(max(m, n)) for "match_rms_adamw"')


@STEP
@pytest.mark.points(2)
@pytest.mark.parametrize("shape", [(32, 32), (96, 24)], ids=["square", "tall"])
def test_muon_step_weight_decay(student, device, shape):
    """Strong decoupled decay on a large parameter: param * (1 - lr * weight_decay) first, with
    the unadjusted lr, then the update."""
    _step_case(student, device, f"step-decay-{shape}", shape, param_scale=50.0, lr=0.1, weight_decay=3.0,
               check_buf=False,
               why="decay first, param * (1 - lr * weight_decay) with the plain lr (not lr'), then subtract "
                   "lr' * O from the decayed parameter")


@STEP
@pytest.mark.points(2)
def test_muon_step_ns_steps(student, device):
    """ns_steps = 2 passed by keyword: two Newton-Schulz iterations (measured: 2 steps land 33-38%
    from 5; 3 steps only 8-12%, inside the tolerance, so 2 it is)."""
    _step_case(student, device, "step-ns2", (40, 24), lr=0.05, weight_decay=0.0, ns_steps=2, check_buf=False,
               why="pass ns_steps on to newton_schulz (steps=ns_steps)")


@STEP
@pytest.mark.points(2)
def test_muon_step_returns_the_new_buffer(student, device):
    """The returned buffer is momentum * buf + (1 - momentum) * grad."""
    _step_case(student, device, "step-buffer", (28, 44), lr=0.02, momentum=0.7, weight_decay=0.0)


@STEP
@pytest.mark.points(2)
def test_muon_step_keeps_the_param_dtype(student, device):
    """A float64 parameter (with float32 gradient and buffer) comes back float64."""
    _step_case(student, device, "step-f64", (30, 30), dtype=torch.float64, lr=0.02, weight_decay=0.1,
               check_buf=False, why="return the parameter in its own dtype")


@STEP
@pytest.mark.points(2)
def test_muon_step_leaves_inputs_unchanged(student, device):
    """param, grad and buf are left as they were."""
    r, inputs, call = _step_case(student, device, "step-unchanged", (20, 36), lr=0.02, weight_decay=0.1,
                                 return_args=True, check_buf=False)
    for before, after, name in zip(inputs, r.args_after[:3], ("param", "grad", "buf")):
        expect_unchanged(before, after, call=call, name=name)


# --------------------------------------------------------------------------------------
# MuonAdamW (35 points)
# --------------------------------------------------------------------------------------
# Parameters: two matrices (tall and wide), a vector and a 3-D tensor. Muon groups
# hold matrices; AdamW groups hold everything else.
SHAPES = [(48, 24), (16, 40), (40,), (3, 4, 5)]
# AdamW's part is elementwise float32, a few operations per entry per step: 64 ulps of
# the parameter's size after up to 12 steps (measured between torch.optim.AdamW and a
# hand-written AdamW: a few ulps).
ADAMW_TOL = tolerance_for(torch.float32, factor=64, scale=2.0)


def _initial(label):
    g = generator(label)
    return [randn(g, *s) for s in SHAPES]


def _gradients(label, steps, skip=(), tiny=()):
    """Random gradients; those of the parameters in `tiny` scaled to 1e-10, where AdamW's
    sqrt(v) meets its default eps (1e-10) and the eps in use shows."""
    g = generator(label + "/grads")
    out = []
    for t in range(steps):
        out.append([None if (t, i) in skip else randn(g, *s) * (1e-10 if i in tiny else 1.0)
                    for i, s in enumerate(SHAPES)])
    return out


def _muon_bound(groups, i, shape, steps_taken):
    """The Frobenius tolerance of Muon parameter i after `steps_taken` of its steps: the NS
    spread of each step's update, added up (||O||_F <= 1.21 sqrt(min(m, n)), the top of the
    quintic's invariant interval), plus float32 rounding of the parameter."""
    group = next(g for g in groups if i in g["layers"])
    lr = group.get("lr", ref.TorchMuonAdamW.MUON["lr"])
    lr_adj = ref.adjusted_lr(lr, shape, group.get("adjust_lr_fn"))
    hi = ref.invariant_interval()[1]
    return C.NS_RTOL * lr_adj * hi * math.sqrt(min(shape)) * steps_taken + 1e-5 * math.sqrt(math.prod(shape))


def _compare_runs(student, device, label, groups, steps, *, skip=(), reload_at=(), schedule=(), doing="",
                  why="", tiny=(), as_iterators=False):
    init, grads = _initial(label), _gradients(label, steps, skip, tiny)
    options = dict(reload_at=list(reload_at), schedule=[list(c) for c in schedule], as_iterators=as_iterators)
    got = student.task("run_with_gradients", [p.to(device) for p in init], groups,
                       [[None if x is None else x.to(device) for x in row] for row in grads], **options,
                       timeout=60, what=f"{steps} steps of your MuonAdamW with given gradients").value
    exp = HARNESS.run_with_gradients({"MuonAdamW": ref.TorchMuonAdamW}, init, groups, grads, **options)
    call = f"MuonAdamW({groups}){doing}"
    if not isinstance(got, list) or len(got) != steps:
        raise GradingFailure(f"{call}: the run did not return the parameters of {steps} steps")
    muon = {i for g in groups if g["use_muon"] for i in g["layers"]}
    for t in range(steps):
        for i, (gp, ep) in enumerate(zip(got[t], exp[t])):
            what = f"parameter {i} {list(SHAPES[i])} after step {t + 1}"
            if i in muon:
                taken = sum(1 for k in range(t + 1) if (k, i) not in skip)
                C.expect_tensor(gp, call=call, what=what, shape=ep.shape, dtype=ep.dtype)
                C.expect_near(gp, ep, _muon_bound(groups, i, SHAPES[i], taken), call=call, what=what,
                              measure="NS_RTOL of lr' * ||O|| per step", why=why or
                              "a Muon group updates exactly as torch.optim.Muon with the group's options")
            else:
                expect_close(gp, ep, call=call, what=what, tol=ADAMW_TOL, why=why or
                             "an AdamW group updates exactly as torch.optim.AdamW with the group's options")
    return got, exp


@OPT
@pytest.mark.points(6)
def test_muon_adamw_default_hyperparameters(student, device):
    """Groups that give only "params" and "use_muon": Muon's defaults (lr 0.02, momentum 0.95,
    Nesterov, no decay, 5 steps) and AdamW's (lr 3e-4, betas (0.9, 0.95), eps 1e-10, no decay)."""
    groups = [{"layers": [0, 1], "use_muon": True}, {"layers": [2, 3], "use_muon": False}]
    # Parameter 2's gradients are 1e-10: its steps show AdamW's default eps (1e-10).
    _compare_runs(student, device, "opt-defaults", groups, 6, tiny=(2,),
                  why="fill in each group's missing options from its own kind's defaults (the contract's list)")


@OPT
@pytest.mark.points(1)
def test_muon_adamw_takes_params_as_iterators(student, device):
    """A group's "params" may be any iterable, as torch's optimizers take it (model.parameters()
    is a generator): here every group's is an iterator, consumed once."""
    groups = [{"layers": [0, 1], "use_muon": True}, {"layers": [2, 3], "use_muon": False, "lr": 1e-2}]
    _compare_runs(student, device, "opt-iterators", groups, 3, as_iterators=True,
                  doing=" with every group's params given as an iterator",
                  why="turn params into a list once (list(group['params'])) before checking or storing it")


@OPT
@pytest.mark.points(5)
def test_muon_adamw_group_options(student, device):
    """Every option set per group: two Muon groups and an AdamW group."""
    groups = [
        {"layers": [0], "use_muon": True, "lr": 0.05, "momentum": 0.5, "nesterov": False, "weight_decay": 0.2,
         "ns_steps": 4},
        # lr * weight_decay = 0.3: decay applied after the update, or with lr', shows here
        {"layers": [1], "use_muon": True, "lr": 0.1, "weight_decay": 3.0, "adjust_lr_fn": "match_rms_adamw"},
        {"layers": [2, 3], "use_muon": False, "lr": 1e-2, "betas": [0.8, 0.99], "eps": 1e-8, "weight_decay": 0.05},
    ]
    _compare_runs(student, device, "opt-options", groups, 6)


@OPT
@pytest.mark.points(5)
def test_muon_adamw_adamw_groups_match_torch_adamw(student, device):
    """AdamW groups only (matrices too): torch.optim.AdamW to float32 rounding, 12 steps."""
    groups = [{"layers": [0, 2], "use_muon": False, "lr": 3e-2, "weight_decay": 0.1},
              {"layers": [1, 3], "use_muon": False, "lr": 1e-2, "betas": [0.85, 0.9]}]
    _compare_runs(student, device, "opt-adamw", groups, 12,
                  why="AdamW: decay param * (1 - lr * weight_decay), then the bias-corrected step with eps "
                      "added to sqrt(v_hat)")


@OPT
@pytest.mark.points(3)
def test_muon_adamw_refuses_non_matrices_in_muon_groups(student, device):
    """A Muon group holding a vector or a 3-D tensor raises ValueError when constructed."""
    for shapes in ([(8, 4), (8,)], [(2, 3, 4)]):
        got = student.task("construction_error", shapes, True, what=f"MuonAdamW with a Muon group of {shapes}").value
        if got != "ValueError":
            raise GradingFailure(f"MuonAdamW([{{'params': <parameters of shapes {shapes}>, 'use_muon': True}}]): "
                                 f"expected ValueError at construction, got {got or 'no error'}")


@OPT
@pytest.mark.points(3)
def test_muon_adamw_skips_parameters_without_gradient(student, device):
    """A parameter whose .grad is None on a step is left exactly as it is (no decay, no
    momentum step), in either kind of group; AdamW counts its steps per parameter."""
    groups = [{"layers": [0, 1], "use_muon": True, "weight_decay": 0.1},
              {"layers": [2, 3], "use_muon": False, "lr": 1e-2, "weight_decay": 0.1}]
    skip = {(1, 0), (2, 0), (1, 2), (3, 3), (4, 3)}
    got, exp = _compare_runs(student, device, "opt-skip", groups, 6, skip=skip,
                             why="skip a parameter whose .grad is None: torch neither steps nor decays it")
    for t, i in sorted(skip):
        before = got[t - 1][i] if t else None
        if before is not None and not torch.equal(got[t][i].cpu(), before.cpu()):
            raise GradingFailure(f"MuonAdamW: parameter {i} {list(SHAPES[i])} had no gradient at step {t + 1} "
                                 "but changed; skip parameters whose .grad is None")


@OPT
@pytest.mark.points(4)
def test_muon_adamw_resumes_from_its_state_dict(student, device):
    """A checkpoint: before steps 3 and 6 a new MuonAdamW over the same parameters loads
    opt.state_dict(); the momentum buffers and moments carry on."""
    groups = [{"layers": [0, 1], "use_muon": True, "momentum": 0.95},
              {"layers": [2, 3], "use_muon": False, "lr": 1e-2}]
    _compare_runs(student, device, "opt-resume", groups, 8, reload_at=(3, 6),
                  doing=" resumed with load_state_dict(opt.state_dict()) before steps 4 and 7",
                  why="keep momentum buffers, moments and step counts in self.state[p]: state_dict() carries them")


@OPT
@pytest.mark.points(3)
def test_muon_adamw_reads_group_options_at_every_step(student, device):
    """An LR scheduler's way: lr and weight_decay changed in param_groups before step 3."""
    groups = [{"layers": [0, 1], "use_muon": True}, {"layers": [2, 3], "use_muon": False, "lr": 1e-2}]
    _compare_runs(student, device, "opt-schedule", groups, 6, schedule=[(2, {"lr": 0.005, "weight_decay": 0.5})],
                  doing=" with lr = 0.005 and weight_decay = 0.5 set in every group before step 3",
                  why="read lr, weight_decay, ... from the group at every step")


@OPT
@pytest.mark.points(5)
def test_muon_adamw_step_with_closure(student, device):
    """A two-layer network trained with step(closure): it returns the closure's loss, and the
    parameters follow torch's."""
    g = generator("opt-closure")
    weights = [randn(g, 32, 12, scale=0.3), randn(g, 32, scale=0.1), randn(g, 6, 32, scale=0.3),
               randn(g, 6, scale=0.1)]
    X, Y = randn(g, 128, 12), randn(g, 128, 6)
    steps, muon_options, adamw_options = 4, {"lr": 0.02}, {"lr": 1e-2}
    got = student.task("train_with_closure", [w.to(device) for w in weights], X.to(device), Y.to(device), steps,
                       muon_options, adamw_options, timeout=60,
                       what="training a two-layer network with your MuonAdamW.step(closure)").value
    exp = HARNESS.train_with_closure({"MuonAdamW": ref.TorchMuonAdamW}, weights, X, Y, steps, muon_options,
                                     adamw_options)
    call = "MuonAdamW([W1, W2 with use_muon, b1, b2 without]).step(closure)"
    if not isinstance(got, dict) or not isinstance(got.get("returned"), list):
        raise GradingFailure(f"{call}: training did not return its results")
    first = got["returned"][0] if got["returned"] else None
    if not isinstance(first, float) or abs(first - exp["returned"][0]) > 1e-5 * abs(exp["returned"][0]):
        raise GradingFailure(f"{call}: the first step returned {first!r}; expected the closure's loss "
                             f"{exp['returned'][0]:.6g} (evaluate the closure with gradients enabled and return it)")
    # The gradients depend on the parameters here: each step's NS spread moves the next
    # gradient a little; twice the summed per-step bound covers it (measured: under 0.3 of it).
    groups = [{"layers": [0, 2], "use_muon": True, **muon_options}]
    for t in range(steps):
        for i in (0, 2):
            bound = 2 * _muon_bound(groups, i, tuple(weights[i].shape), t + 1)
            C.expect_near(got["history"][t][i], exp["history"][t][i], bound, call=call,
                          what=f"W{i // 2 + 1} after step {t + 1}", measure="twice the summed NS spread")
