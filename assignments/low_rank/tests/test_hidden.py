"""Hidden suite of `low_rank`: LoRA's functions and module against the float64 reference
(reference/low_rank.py, checked against autograd, torch.nn.Linear and peft's
initialisation in tests/test_reference.py), and GaLore's step against its float64
reference (checked there against a re-derivation). Inputs come from generators seeded by
each test's label; everything checked here is stated in the notebook. Tolerances: checks.py.
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
)
from autograder.judge.suite import generator, load_module, randn
from reference import low_rank as ref

HERE = Path(__file__).resolve().parent
C = load_module(HERE / "checks.py", "low_rank_checks")
HARNESS = load_module(HERE.parent / "harness.py", "low_rank_harness")

FWD = pytest.mark.function("lora_forward")
BWD = pytest.mark.function("lora_backward")
MERGE = pytest.mark.function("lora_merge")
UNMERGE = pytest.mark.function("lora_unmerge")
MODULE = pytest.mark.function("LoRALinear")
GALORE = pytest.mark.function("galore_adamw_step")


def _lora_inputs(label, n, d_in, d_out, r, dtype=torch.float32, bias=True):
    g = generator(label)
    x, W = randn(g, n, d_in, dtype=dtype), randn(g, d_out, d_in, dtype=dtype, scale=d_in ** -0.5)
    b = randn(g, d_out, dtype=dtype) if bias else None
    A, B = randn(g, r, d_in, dtype=dtype, scale=d_in ** -0.5), randn(g, d_out, r, dtype=dtype)
    return x, W, b, A, B


# --------------------------------------------------------------------------------------
# lora_forward (13 points with the public test)
# --------------------------------------------------------------------------------------
def _forward_case(student, device, label, n, d_in, d_out, r, scaling, dtype=torch.float32, bias=True,
                  return_args=False):
    x, W, b, A, B = _lora_inputs(label, n, d_in, d_out, r, dtype, bias)
    call = describe_call("lora_forward", x, W, b, A, B, scaling)
    res = student.call("lora_forward", *(t.to(device) if t is not None else None for t in (x, W, b, A, B)), scaling,
                       return_args=return_args)
    want = ref.lora_forward(*(t.double() if t is not None else None for t in (x, W, b, A, B)), scaling)
    atol = C.bound(dtype, d_in, C.forward_magnitude(x, W, b, A, B, scaling))
    expect_close(res.value, want.to(dtype), call=call, what="y", rtol=0.0, atol=atol,
                 why="y = x W^T + b + scaling * (x A^T) B^T")
    return res, (x, W, b, A, B), call


@FWD
@pytest.mark.points(3)
def test_lora_forward(student, device):
    """float32, with a bias: x W^T + b + scaling (x A^T) B^T."""
    _forward_case(student, device, "fwd", 24, 40, 56, 4, scaling=2.0)


@FWD
@pytest.mark.points(2)
def test_lora_forward_without_bias(student, device):
    """b = None (a Linear layer without bias): no bias term."""
    _forward_case(student, device, "fwd-nobias", 16, 32, 24, 2, scaling=0.5, bias=False)


@FWD
@pytest.mark.points(2)
def test_lora_forward_float64(student, device):
    """float64 in, float64 out, to float64 accuracy."""
    _forward_case(student, device, "fwd-f64", 12, 28, 20, 3, scaling=1.5, dtype=torch.float64)


@FWD
@pytest.mark.points(2)
def test_lora_forward_leaves_inputs_unchanged(student, device):
    """x, W, b, A and B are left as they were."""
    res, inputs, call = _forward_case(student, device, "fwd-unchanged", 8, 16, 12, 2, scaling=1.0,
                                      return_args=True)
    for before, after, name in zip(inputs, res.args_after[:5], ("x", "W", "b", "A", "B")):
        expect_unchanged(before, after, call=call, name=name)


# Few rows and a wide layer: B A (and W + s B A) is [2048, 2048] (16 MiB in float32),
# what the contract's order computes is x A^T [8, 8] and [8, 2048] (64 KiB). The inputs
# arrive in shared memory the child already holds, so the kernel's peak counts what the
# call allocates. Measured (cgroup v1): the master 2 MiB (the allocator's first chunk),
# through the merged weight 34 MiB. The budget, 8 MiB, is half of B A alone.
MEM_N, MEM_D, MEM_R = 8, 2048, 8
MEM_BUDGET = 8 << 20


@FWD
@pytest.mark.points(4)
def test_lora_forward_never_forms_BA(student, device):
    """A [2048 x 2048] layer with 8 rows of input: the call's peak memory stays far below the
    16 MiB that B A (or W + scaling B A) would take."""
    x, W, b, A, B = _lora_inputs("fwd-memory", MEM_N, MEM_D, MEM_D, MEM_R)
    warm = _lora_inputs("fwd-memory-warm", 4, 32, 32, 2)
    student.restart()
    student.call("lora_forward", *(t.to(device) for t in warm), 2.0, watch_memory=True)
    call = describe_call("lora_forward", x, W, b, A, B, 2.0)
    r = student.call("lora_forward", *(t.to(device) for t in (x, W, b, A, B)), 2.0, watch_memory=True, timeout=60)
    want = ref.lora_forward(*(t.double() for t in (x, W, b, A, B)), 2.0)
    expect_close(r.value, want.float(), call=call, what="y", rtol=0.0,
                 atol=C.bound(torch.float32, MEM_D, C.forward_magnitude(x, W, b, A, B, 2.0)))
    expect_memory_within(r.memory, MEM_BUDGET, call=call, host=device == "cpu", advice=(
        f"B A is [{MEM_D} x {MEM_D}] ({MEM_D * MEM_D * 4 / 2**20:.0f} MiB): compute scaling * (x A^T) B^T, "
        "two thin products, never B A or W + scaling B A"))


# --------------------------------------------------------------------------------------
# lora_backward (18 points with the public test); autograd is forbidden in it
# --------------------------------------------------------------------------------------
def _backward_case(student, device, label, n, d_in, d_out, r, scaling, dtype=torch.float32, return_args=False):
    x, W, _, A, B = _lora_inputs(label, n, d_in, d_out, r, dtype, bias=False)
    dy = randn(generator(label + "/dy"), n, d_out, dtype=dtype)
    call = describe_call("lora_backward", dy, x, W, A, B, scaling)
    res = student.call("lora_backward", *(t.to(device) for t in (dy, x, W, A, B)), scaling, return_args=return_args)
    got = expect_tuple(res.value, 3, call=call, names="dx, dA, dB")
    want = ref.lora_backward(*(t.double() for t in (dy, x, W, A, B)), scaling)
    a = [t.double().abs() for t in (dy, x, W, A, B)]
    s = abs(scaling)
    mags = [a[0] @ a[2] + s * ((a[0] @ a[4]) @ a[3]), s * ((a[0] @ a[4]).T @ a[1]), s * (a[0].T @ (a[1] @ a[3].T))]
    reductions = [d_out, n * d_out, n * d_in]
    return res, got, want, mags, reductions, (dy, x, W, A, B), call


def _expect_grad(got, want, mag, reduction, k, dtype, call):
    names = ("dx", "dA", "dB")
    whys = ("dx = dy W + scaling (dy B) A", "dA = scaling (dy B)^T x", "dB = scaling dy^T (x A^T)")
    expect_close(got[k], want[k].to(dtype), call=call, what=names[k], rtol=0.0, atol=C.bound(dtype, reduction, mag),
                 why=whys[k])


@BWD
@pytest.mark.points(4)
@pytest.mark.parametrize("k", [0, 1, 2], ids=["dx", "dA", "dB"])
def test_lora_backward(student, device, k):
    """Each gradient graded on its own: dx, dA and dB (W and b are frozen: no gradient)."""
    _, got, want, mags, reds, _, call = _backward_case(student, device, "bwd", 20, 36, 28, 4, scaling=2.0)
    _expect_grad(got, want, mags[k], reds[k], k, torch.float32, call)


@BWD
@pytest.mark.points(3)
def test_lora_backward_float64(student, device):
    """float64 in, float64 out, to float64 accuracy."""
    _, got, want, mags, reds, _, call = _backward_case(student, device, "bwd-f64", 10, 18, 22, 3, scaling=0.75,
                                                       dtype=torch.float64)
    for k in range(3):
        _expect_grad(got, want, mags[k], reds[k], k, torch.float64, call)


@BWD
@pytest.mark.points(2)
def test_lora_backward_leaves_inputs_unchanged(student, device):
    """dy, x, W, A and B are left as they were."""
    res, got, want, mags, reds, inputs, call = _backward_case(student, device, "bwd-unchanged", 6, 10, 8, 2,
                                                              scaling=1.0, return_args=True)
    for k in range(3):  # leaving the inputs alone earns points only in a call that computes the answer
        _expect_grad(got, want, mags[k], reds[k], k, torch.float32, call)
    for before, after, name in zip(inputs, res.args_after[:5], ("dy", "x", "W", "A", "B")):
        expect_unchanged(before, after, call=call, name=name)


# --------------------------------------------------------------------------------------
# lora_merge and lora_unmerge (15 points)
# --------------------------------------------------------------------------------------
def _merge_inputs(label, d_out=30, d_in=22, r=4, dtype=torch.float32):
    g = generator(label)
    return randn(g, d_out, d_in, dtype=dtype), randn(g, r, d_in, dtype=dtype), randn(g, d_out, r, dtype=dtype)


def _merge_bound(W, A, B, scaling, r, dtype):
    return C.bound(dtype, r, W.double().abs() + abs(scaling) * (B.double().abs() @ A.double().abs()))


@MERGE
@pytest.mark.points(4)
def test_lora_merge(student, device):
    """W + scaling B A."""
    W, A, B = _merge_inputs("merge")
    call = describe_call("lora_merge", W, A, B, 0.5)
    res = student.call("lora_merge", W.to(device), A.to(device), B.to(device), 0.5, return_args=True)
    expect_close(res.value, ref.lora_merge(W.double(), A.double(), B.double(), 0.5).float(), call=call,
                 what="the merged weight", rtol=0.0, atol=_merge_bound(W, A, B, 0.5, 4, torch.float32),
                 why="W + scaling * (B @ A): the scaling belongs in the merged weight too")
    expect_unchanged(W, res.args_after[0], call=call, name="W")


@UNMERGE
@pytest.mark.points(4)
def test_lora_unmerge(student, device):
    """W_merged - scaling B A."""
    W, A, B = _merge_inputs("unmerge")
    call = describe_call("lora_unmerge", W, A, B, 3.0)
    res = student.call("lora_unmerge", W.to(device), A.to(device), B.to(device), 3.0, return_args=True)
    expect_close(res.value, ref.lora_unmerge(W.double(), A.double(), B.double(), 3.0).float(), call=call,
                 what="the unmerged weight", rtol=0.0, atol=_merge_bound(W, A, B, 3.0, 4, torch.float32),
                 why="W_merged - scaling * (B @ A)")
    expect_unchanged(W, res.args_after[0], call=call, name="W_merged")


@UNMERGE
@pytest.mark.points(2)
def test_lora_unmerge_undoes_merge(student, device):
    """lora_unmerge(lora_merge(W, A, B, s), A, B, s) is W within rounding."""
    W, A, B = _merge_inputs("roundtrip")
    got = student.task("merge_cycles", W.to(device), A.to(device), B.to(device), 4.0, 1,
                       what="lora_unmerge(lora_merge(W, A, B, 4.0), A, B, 4.0)").value
    expect_close(got, W, call="lora_unmerge(lora_merge(W, A, B, 4.0), A, B, 4.0)", what="the weight",
                 rtol=0.0, atol=2 * _merge_bound(W, A, B, 4.0, 4, torch.float32),
                 why="subtract exactly what merge added: scaling * (B @ A), in W's dtype")


@UNMERGE
@pytest.mark.points(3)
def test_lora_merge_unmerge_cycles_do_not_drift(student, device):
    """50 rounds of merge then unmerge (as a server switching adapters does): W comes back
    within 50 rounds' rounding, not further."""
    W, A, B = _merge_inputs("cycles")
    got = student.task("merge_cycles", W.to(device), A.to(device), B.to(device), 2.0, 50,
                       what="50 rounds of lora_unmerge(lora_merge(W, ...))").value
    # Each round rounds twice per entry; the errors add up at most linearly: 2 * 50 rounds.
    expect_close(got, W, call="50 rounds of lora_unmerge(lora_merge(W, A, B, 2.0), A, B, 2.0)", what="the weight",
                 rtol=0.0, atol=100 * _merge_bound(W, A, B, 2.0, 4, torch.float32) / C.FACTOR,
                 why="unmerge must subtract exactly the term merge added (same scaling, same product, same dtype)")


@MERGE
@pytest.mark.points(2)
def test_lora_merge_float64(student, device):
    """float64 weights merge to float64 accuracy."""
    W, A, B = _merge_inputs("merge-f64", dtype=torch.float64)
    call = describe_call("lora_merge", W, A, B, 0.25)
    got = student.call("lora_merge", W.to(device), A.to(device), B.to(device), 0.25).value
    expect_close(got, ref.lora_merge(W, A, B, 0.25), call=call, what="the merged weight", rtol=0.0,
                 atol=_merge_bound(W, A, B, 0.25, 4, torch.float64))


# --------------------------------------------------------------------------------------
# LoRALinear (25 points)
# --------------------------------------------------------------------------------------
def _module_case(student, device, label, d_in=24, d_out=20, r=4, alpha=8.0, seed=1234, bias=True, lead=(3, 5),
                 dtype=torch.float32):
    g = generator(label)
    W = randn(g, d_out, d_in, scale=d_in ** -0.5, dtype=dtype)
    b = randn(g, d_out, dtype=dtype) if bias else None
    x = randn(g, *lead, d_in, dtype=dtype)
    B_values = randn(g, d_out, r, dtype=dtype)
    G = randn(g, *lead, d_out, dtype=dtype)
    args = (W, b, r, alpha, seed, x, B_values, G)
    moved = [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]
    got = student.task("lora_linear", *moved, timeout=60,
                       what=f"LoRALinear(Linear({d_in}, {d_out}), r={r}, alpha={alpha}, seed={seed})").value
    exp = HARNESS.lora_linear({"LoRALinear": ref.LoRALinear}, *args)
    call = f"LoRALinear(torch.nn.Linear({d_in}, {d_out}{'' if bias else ', bias=False'}), r={r}, alpha={alpha}, " \
           f"seed={seed})"
    if not isinstance(got, dict):
        raise GradingFailure(f"{call}: the task did not return its report")
    return got, exp, call, (W, b, x, B_values, G, r, alpha)


def _out_bound(x, W, b, A, B, scaling, d_in):
    return C.bound(torch.float32, d_in, C.forward_magnitude(x.reshape(-1, x.shape[-1]), W, b, A, B, scaling)
                   ).reshape(*x.shape[:-1], -1)


@MODULE
@pytest.mark.points(1)
def test_lora_linear_follows_the_base_dtype(student, device):
    """A float64 base layer: lora_A and lora_B are float64, and so is the output."""
    got, exp, call, (W, b, x, B_values, G, r, alpha) = _module_case(student, device, "module-f64",
                                                                    dtype=torch.float64)
    A = got.get("A0")
    if not isinstance(A, torch.Tensor) or A.dtype != torch.float64:
        raise GradingFailure(f"{call} on a float64 Linear: lora_A is {getattr(A, 'dtype', type(A).__name__)}, "
                             "expected torch.float64 (create lora_A and lora_B in base.weight's dtype)")
    # The draw itself is checked on float32 layers; here the output is checked with the
    # module's own lora_A (drawing in float32 and casting, as peft does, or in float64: both fine).
    x2 = x.reshape(-1, x.shape[-1])
    want = ref.lora_forward(x2, W, b, A.cpu(), B_values, alpha / r).reshape(exp["y"].shape)
    expect_close(got.get("y"), want, call=call + " on a float64 Linear, forward(x)", what="the output", rtol=0.0,
                 atol=C.bound(torch.float64, W.shape[1], C.forward_magnitude(x2, W, b, A.cpu(), B_values, alpha / r)
                              ).reshape(want.shape),
                 why="compute in base.weight's dtype: lora_A, lora_B and the output are float64 here")


@MODULE
@pytest.mark.points(3)
def test_lora_linear_initialises_A_as_peft(student, device):
    """lora_A [r, Din] drawn by kaiming_uniform_(a=sqrt(5)) from torch.Generator().manual_seed(seed)."""
    got, exp, call, _ = _module_case(student, device, "module-init", seed=20240917)
    # The same draw; computing the bound 1/sqrt(Din) by hand instead of kaiming's gain, or
    # rand * 2b - b instead of uniform_(-b, b), rounds differently in the last bits: a few
    # ulps of each entry and of the bound.
    bound = 1 / math.sqrt(24)
    expect_close(got.get("A0"), exp["A0"], call=call, what="lora_A at initialisation", rtol=4e-7,
                 atol=4 * torch.finfo(torch.float32).eps * bound,
                 why="torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=torch.Generator().manual_seed(seed))")


@MODULE
@pytest.mark.points(2)
def test_lora_linear_B_starts_at_zero(student, device):
    """lora_B [Dout, r] starts at zeros: the wrapped layer computes what the base did."""
    got, exp, call, _ = _module_case(student, device, "module-b0")
    expect_close(got.get("B0"), exp["B0"], call=call, what="lora_B at initialisation", rtol=0.0, atol=0.0,
                 why="lora_B starts at zeros (peft's default): training starts from the pretrained model")


@MODULE
@pytest.mark.points(2)
def test_lora_linear_trains_only_A_and_B(student, device):
    """Only lora_A and lora_B require gradients; the base layer's parameters are frozen."""
    got, exp, call, _ = _module_case(student, device, "module-trainable")
    if got.get("trainable") != ["lora_A", "lora_B"]:
        raise GradingFailure(f"{call}: the parameters that require gradients are {got.get('trainable')}; expected "
                             "exactly ['lora_A', 'lora_B'] (set requires_grad_(False) on the base layer's)")


@MODULE
@pytest.mark.points(2)
def test_lora_linear_starts_as_the_base_layer(student, device):
    """At initialisation forward(x) equals base(x), for inputs [3, 5, Din]."""
    got, exp, call, (W, b, x, *_rest) = _module_case(student, device, "module-identity")
    expect_close(got.get("y_init"), exp["y_init"], call=call + "(x)", what="the output at initialisation",
                 rtol=0.0, atol=_out_bound(x, W, b, exp["A0"], torch.zeros(W.shape[0], 4), 2.0, W.shape[1]))


@MODULE
@pytest.mark.points(3)
@pytest.mark.parametrize("r,alpha,bias", [(4, 6.0, True), (8, 8.0, False)], ids=["r4-alpha6", "r8-alpha8-nobias"])
def test_lora_linear_forward(student, device, r, alpha, bias):
    """With lora_B set: base(x) + (alpha / r) (x A^T) B^T, for inputs [3, 5, Din]."""
    got, exp, call, (W, b, x, B_values, G, r, alpha) = _module_case(student, device, f"module-fwd-{r}", r=r,
                                                                    alpha=alpha, bias=bias)
    expect_close(got.get("y"), exp["y"], call=call + "(x)", what="the output with lora_B set", rtol=0.0,
                 atol=_out_bound(x, W, b, exp["A0"], B_values, alpha / r, W.shape[1]),
                 why="y = base(x) + scaling * (x A^T) B^T with scaling = alpha / r")


@MODULE
@pytest.mark.points(3)
def test_lora_linear_gradients(student, device):
    """Gradients of sum(forward(x) * G): lora_A's and lora_B's as the math gives them, and none
    for the base layer."""
    got, exp, call, (W, b, x, B_values, G, r, alpha) = _module_case(student, device, "module-grad")
    if got.get("base_grad"):
        raise GradingFailure(f"{call}: after backward the base layer's parameters have gradients; freeze them")
    s = alpha / r
    x2, G2 = x.reshape(-1, x.shape[-1]), G.reshape(-1, G.shape[-1])
    _, dA, dB = ref.lora_backward(G2.double(), x2.double(), W.double(), exp["A0"].double(), B_values.double(), s)
    a = [t.double().abs() for t in (G2, x2, exp["A0"], B_values)]
    expect_close(got.get("dA"), dA.float(), call=call, what="lora_A.grad", rtol=0.0,
                 atol=C.bound(torch.float32, G2.numel(), s * ((a[0] @ a[3]).T @ a[1])))
    expect_close(got.get("dB"), dB.float(), call=call, what="lora_B.grad", rtol=0.0,
                 atol=C.bound(torch.float32, x2.numel(), s * (a[0].T @ (a[1] @ a[2].T))))


@MODULE
@pytest.mark.points(1)
def test_lora_linear_keeps_its_base(student, device):
    """The wrapped layer itself is kept as module.base, and merge() then unmerge() gives its
    weight back."""
    got, exp, call, (W, *_rest) = _module_case(student, device, "module-base")
    if got.get("base_is_kept") is not True:
        raise GradingFailure(f"{call}: keep the wrapped layer itself as `self.base`")
    expect_close(got.get("W_unmerged"), W, call=call, what="base.weight after merge() and unmerge()", rtol=0.0,
                 atol=C.bound(torch.float32, 4, W.abs() + 4 * 2.0))


@MODULE
@pytest.mark.points(3)
def test_lora_linear_merge(student, device):
    """merge() folds scaling B A into base.weight in place; forward gives the same outputs."""
    got, exp, call, (W, b, x, B_values, G, r, alpha) = _module_case(student, device, "module-merge")
    s = alpha / r
    expect_close(got.get("W_merged"), exp["W_merged"], call=call + ".merge()", what="base.weight after merge()",
                 rtol=0.0, atol=_merge_bound(W, exp["A0"], B_values, s, r, torch.float32),
                 why="base.weight becomes W + scaling * (B @ A), in place")
    expect_close(got.get("y_merged"), exp["y"], call=call + ".merge(); forward(x)", what="the output after merge()",
                 rtol=0.0, atol=2 * _out_bound(x, W, b, exp["A0"], B_values, s, W.shape[1]),
                 why="after merge(), forward must not add the low-rank term a second time")


@MODULE
@pytest.mark.points(2)
def test_lora_linear_unmerge(student, device):
    """unmerge() restores base.weight; forward gives the same outputs again."""
    got, exp, call, (W, b, x, B_values, G, r, alpha) = _module_case(student, device, "module-unmerge")
    s = alpha / r
    expect_close(got.get("y_unmerged"), exp["y"], call=call + ".merge(); .unmerge(); forward(x)",
                 what="the output after unmerge()", rtol=0.0,
                 atol=2 * _out_bound(x, W, b, exp["A0"], B_values, s, W.shape[1]))
    expect_close(got.get("W_unmerged"), W, call=call + ".merge(); .unmerge()", what="base.weight after unmerge()",
                 rtol=0.0, atol=2 * _merge_bound(W, exp["A0"], B_values, s, r, torch.float32))


# --------------------------------------------------------------------------------------
# galore_adamw_step (25 points with the public test)
# --------------------------------------------------------------------------------------
def _galore_run(student, device, label, shape, rank, steps, return_last_args=False, check_from=1, **hyper):
    """Each side feeds back its own state; the parameter is compared at every step from
    `check_from` on."""
    g = generator(label)
    param = randn(g, *shape)
    grads = [randn(g, *shape) for _ in range(steps)]
    r_param, r_state, state = param.double(), {}, {}
    m, n = shape
    last = None
    for t, grad in enumerate(grads, start=1):
        call = describe_call("galore_adamw_step", param, grad, f"<state after {t - 1} steps>", **hyper, rank=rank)
        res = student.call("galore_adamw_step", param.to(device), grad.to(device), state, rank=rank,
                           return_args=return_last_args and t == steps, **hyper)
        new, state = expect_tuple(res.value, 2, call=call, names="new param, state")
        r_param, r_state = ref.galore_adamw_step(r_param, grad, r_state, rank=rank, **hyper)
        if t < check_from:
            param = new.to("cpu")
            continue
        expect_close(new, r_param.float(), call=call, what=f"the parameter after step {t}", tol=C.galore_tol(r_param),
                     why="the update is lr * sqrt(1 - b2^t) / (1 - b1^t) * scale * N projected back, then "
                         "param -= lr * weight_decay * param")
        if not isinstance(state, dict):
            raise GradingFailure(f"{call}: the second value returned must be the state dict, got {type(state).__name__}")
        last = (res, param, grad, call)
        param = new.to("cpu")
    return state, last


@GALORE
@pytest.mark.points(3)
def test_galore_tall_matrix_with_refreshes(student, device):
    """A tall 40 x 16 matrix (m >= n: P = Vh[:rank], R = grad P^T), the projector refreshed
    on steps 1, 4 and 7 (update_proj_gap = 3), moments kept across refreshes."""
    _galore_run(student, device, "galore-tall", (40, 16), 4, 8, lr=1e-2, update_proj_gap=3)


@GALORE
@pytest.mark.points(4)
def test_galore_wide_matrix_with_refreshes(student, device):
    """A wide 12 x 36 matrix (m < n: P = U[:, :rank], R = P^T grad), refreshed every 3 steps."""
    _galore_run(student, device, "galore-wide", (12, 36), 3, 8, lr=1e-2, update_proj_gap=3)


@GALORE
@pytest.mark.points(3)
def test_galore_projector_kept_between_refreshes(student, device):
    """With the default update_proj_gap (200) the projector of step 1 serves every later step."""
    _galore_run(student, device, "galore-kept", (24, 10), 3, 6, lr=1e-2)


@GALORE
@pytest.mark.points(1)
def test_galore_square_matrix_uses_the_right_projector(student, device):
    """m = n counts as m >= n: P = Vh[:rank] and R = grad P^T (an edge case of its own)."""
    _galore_run(student, device, "galore-square", (14, 14), 3, 5, lr=1e-2, update_proj_gap=2)


@GALORE
@pytest.mark.points(1)
def test_galore_default_gap_is_200(student, device):
    """update_proj_gap left at its default, 202 steps of a small matrix: the projector is
    recomputed on step 201, not before and not after (checked on steps 199 to 202)."""
    _galore_run(student, device, "galore-gap", (6, 4), 2, 202, check_from=199, lr=1e-2)


@GALORE
@pytest.mark.points(2)
def test_galore_refresh_every_step(student, device):
    """update_proj_gap = 1: a new projector at every step, the moments carried over."""
    _galore_run(student, device, "galore-every", (10, 30), 2, 5, lr=1e-2, update_proj_gap=1)


@GALORE
@pytest.mark.points(3)
def test_galore_singular_vector_signs(student, device):
    """The sign rule: each kept singular vector flipped so that its largest-magnitude entry is
    positive. After a refresh the carried moments meet the new projector, so a sign
    LAPACK happens to return otherwise changes the step."""
    _galore_run(student, device, "galore-signs", (20, 8), 3, 7, lr=2e-2, update_proj_gap=2)


@GALORE
@pytest.mark.points(3)
def test_galore_hyperparameters_and_weight_decay(student, device):
    """Other betas, eps, scale and weight decay (applied after the step: param -= lr wd param)."""
    _galore_run(student, device, "galore-hyper", (18, 14), 5, 6, lr=5e-2, update_proj_gap=4, scale=0.5,
                betas=(0.8, 0.99), eps=1e-4, weight_decay=0.5)


@GALORE
@pytest.mark.points(2)
def test_galore_state_holds_no_full_size_tensor(student, device):
    """The state counts steps from 1 in state["step"] and holds nothing of size m x n."""
    shape, rank = (32, 24), 4
    state, (res, *_rest, call) = _galore_run(student, device, "galore-state", shape, rank, 3, lr=1e-2)
    step = state.get("step")
    if not (isinstance(step, int | float) or (isinstance(step, torch.Tensor) and step.numel() == 1)) \
            or float(step) != 3:
        raise GradingFailure(f"{call}: after 3 steps state['step'] is {step!r}; expected 3 (counting from 1)")
    big = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.numel() >= shape[0] * shape[1]]
    if big:
        raise GradingFailure(f"{call}: the state holds {big} with {shape[0] * shape[1]} or more entries; GaLore keeps "
                             f"only the projector and moments of size rank x {min(shape)} (the point of the method)")


@GALORE
@pytest.mark.points(2)
def test_galore_leaves_inputs_unchanged(student, device):
    """param and grad are left as they were."""
    _, (res, param, grad, call) = _galore_run(student, device, "galore-unchanged", (16, 12), 3, 2, lr=1e-2,
                                              return_last_args=True)
    for before, after, name in zip((param, grad), res.args_after[:2], ("param", "grad")):
        expect_unchanged(before, after, call=call, name=name)

