"""Hidden suite of `loss_scaling`: the scaler against the reference (which
tests/test_reference_loss_scaling.py checks against torch.amp.GradScaler), mixed
precision SGD trained in float16 against the reference, FP8 round trips by their
error bounds.

Exactness: the scale trajectory is a sequence of multiplications by the given factors;
it must match the reference exactly. Mixed-precision steps run the same float16 ops on
both sides and update float32 masters; a correct step may order its float32 updates
differently (w - lr*g or w + (-lr)*g): masters must agree to 4 float32 ulps.
FP8: e4m3 keeps 3 mantissa bits, e5m2 2: a round trip is within half an ulp of the
format, relative 2**-4 (e4m3) or 2**-3 (e5m2), for normal values, and within half the
smallest subnormal times the scale below that; we allow exactly those bounds plus one
float32 rounding of x / scale. On a GPU worker the scale the student's must equal comes
from the CUDA C++ reference (reference/cuda/fp8_cast.cu, built once per worker by
reference/cuda_ext.py; tests/test_reference_cuda.py checks it bit for bit against the
Python reference and the Triton one); where it cannot be built (no nvcc), and on CPUs,
from the Python reference.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from autograder.judge.compare import GradingFailure, describe_call, expect_close
from autograder.judge.suite import generator, load_module, randn
from autograder.protocol.specs import build_mlp, mlp_spec
from reference import cuda_ext
from reference import loss_scaling as ref

HARNESS = load_module(Path(__file__).resolve().parents[1] / "harness.py")
REF_NS = {"DynamicLossScaler": ref.DynamicLossScaler, "mixed_precision_sgd_step": ref.mixed_precision_sgd_step}
SCALER = pytest.mark.function("DynamicLossScaler")


def run_script(student, init, ops, what):
    got = student.task("scaler_script", init, ops, what=what).value
    want = HARNESS.scaler_script(REF_NS, init, ops)
    return got, want


def _scales(ops):
    return [i for i, op in enumerate(ops) if op["op"] == "get_scale"]


def compare_scales(got, want, ops, init, label):
    for i in _scales(ops):
        if got[i] != want[i]:
            step = sum(1 for op in ops[:i] if op["op"] == "update")
            recent = "".join("X" if op.get("found_inf") else "." for op in ops[:i] if op["op"] == "update")[-12:]
            raise GradingFailure(f"DynamicLossScaler({init}) {label}: after {step} update(s) (last ones, X = overflow: "
                                 f"{recent}) get_scale() returned {got[i]}, expected {want[i]}")


# -- DynamicLossScaler (37 points, 1 more in the public tests) --------------------------
@SCALER
@pytest.mark.points(2)
def test_scale_multiplies_the_loss(student):
    """By the current scale: at the start, after a backoff and after a growth."""
    loss = torch.tensor(0.37, dtype=torch.float32)
    init = {"init_scale": 1024.0, "growth_interval": 2}
    ops = [{"op": "scale", "loss": loss}, {"op": "update", "found_inf": True}, {"op": "scale", "loss": loss}]
    ops += [{"op": "update", "found_inf": False}] * 2 + [{"op": "update", "found_inf": False}] * 2
    ops += [{"op": "scale", "loss": loss}]
    got, want = run_script(student, init, ops, "scaler.scale(loss)")
    for i, when in [(0, "at the start"), (2, "after one overflow"), (7, "after an overflow and two growths")]:
        expect_close(got[i], want[i], call=f"DynamicLossScaler(init_scale=1024.0, growth_interval=2).scale(tensor(0.37)) "
                     f"{when}", what="the scaled loss", rtol=0, atol=0, why="loss * the current scale")


@SCALER
@pytest.mark.points(6)
def test_grows_after_exactly_growth_interval_good_steps(student):
    init = {"init_scale": 8.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 5}
    ops = []
    for _ in range(13):
        ops += [{"op": "update", "found_inf": False}, {"op": "get_scale"}]
    got, want = run_script(student, init, ops, "13 good steps")
    compare_scales(got, want, ops, init, "growth")


@SCALER
@pytest.mark.points(6)
def test_backs_off_on_overflow_and_resets_the_count(student):
    init = {"init_scale": 2.0**12, "growth_factor": 4.0, "backoff_factor": 0.25, "growth_interval": 3}
    pattern = [False, False, True, False, False, False, True, True, False, False, False, False]
    ops = []
    for bad in pattern:
        ops += [{"op": "update", "found_inf": bad}, {"op": "get_scale"}]
    got, want = run_script(student, init, ops, "good and bad steps")
    compare_scales(got, want, ops, init, "backoff")


@SCALER
@pytest.mark.points(2)
def test_growth_stops_where_the_scale_would_overflow(student):
    """GradScaler grows the scale only if the grown value is finite: at 2**127 (float32's last
    power of two) a growth must not make it inf, which would skip every later step. A scale
    kept as a Python float may grow past float32's range; it must stay finite and back off."""
    init = {"init_scale": 2.0**127, "growth_interval": 1}
    ops = [{"op": "update", "found_inf": False}, {"op": "get_scale"}, {"op": "update", "found_inf": False},
           {"op": "get_scale"}, {"op": "update", "found_inf": True}, {"op": "get_scale"}]
    got, _ = run_script(student, init, ops, "growth at 2**127")
    a, b, c = got[1], got[3], got[5]
    if not all(isinstance(v, float) and v == v and abs(v) != float("inf") for v in (a, b)):
        raise GradingFailure(f"DynamicLossScaler(init_scale=2.0**127, growth_interval=1): after one and two good steps "
                             f"get_scale() returned {a} and {b}; grow only when the grown scale is finite "
                             "(GradScaler keeps the old scale when scale * growth_factor overflows)")
    if not (isinstance(c, float) and 0 < c < b):
        raise GradingFailure(f"DynamicLossScaler(init_scale=2.0**127, growth_interval=1): after an overflow the scale "
                             f"should back off from {b}, get_scale() returned {c}")


@SCALER
@pytest.mark.points(6)
def test_long_trajectory_with_random_overflows(student):
    """6000 steps with GradScaler's defaults (init_scale 2**16, growth_factor 2, backoff 0.5,
    growth_interval 2000: the constructor called with no arguments), a few random overflows
    among long good runs: the scale must follow GradScaler's rule exactly. (dlopt audit:
    with every argument given, wrong defaults survived.)"""
    rng = random.Random(7)
    init: dict = {}
    ops = [{"op": "get_scale"}]
    for _ in range(6000):  # the scale after every step: a growth one step early or late shows
        ops += [{"op": "update", "found_inf": rng.random() < 0.0004}, {"op": "get_scale"}]
    got, want = run_script(student, init, ops, "6000 steps")
    if len({v for v in want if v is not None}) < 3:  # the suite's own premise: a grader error, not the student's
        raise RuntimeError("the trajectory must both grow and back off: change its seed")
    compare_scales(got, want, ops, init, "over 6000 steps with the default arguments")


@SCALER
@pytest.mark.points(6)
def test_state_dict_round_trip_mid_run(student):
    """Save mid-run (with a partial count of good steps), load into a fresh scaler, continue."""
    # Factors and interval that are not the defaults: the reloaded scaler is built with
    # DynamicLossScaler() and must take them from the state, then both grow and back off.
    init = {"init_scale": 512.0, "growth_factor": 4.0, "backoff_factor": 0.25, "growth_interval": 4}
    ops = [{"op": "update", "found_inf": b} for b in (False, True, False, False)]
    ops += [{"op": "reload"}, {"op": "get_scale"}]
    for bad in (False, False, False, False, False, True, False):
        ops += [{"op": "update", "found_inf": bad}, {"op": "get_scale"}]
    got, want = run_script(student, init, ops, "a state_dict round trip")
    compare_scales(got, want, ops, init, "after load_state_dict(state_dict())")


@SCALER
@pytest.mark.points(1)
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_unscale_finds_one_bad_value_among_many_gradients(student, bad):
    g = generator(f"unscale-{bad}")
    grads = [randn(g, 17, 5) * 1024 for _ in range(6)]
    grads[4][3, 2] = float(bad)
    got, want = run_script(student, {"init_scale": 1024.0}, [{"op": "unscale", "grads": grads}], "unscale_")
    if got[0]["found_inf"] is not True:
        raise GradingFailure(f"unscale_(6 gradients, one {bad} in the fifth) returned {got[0]['found_inf']}, expected True")
    clean = [randn(g, 3, 3) for _ in range(3)]
    got, _ = run_script(student, {"init_scale": 1024.0}, [{"op": "unscale", "grads": clean}], "unscale_")
    if got[0]["found_inf"] is not False:
        raise GradingFailure("unscale_(3 finite gradients) returned True, expected False")


@SCALER
@pytest.mark.points(3)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
def test_unscale_divides_in_place_in_float32(student, dtype):
    """Every gradient divided by the scale (computed in float32, stored in the gradient's dtype)."""
    g = generator(f"unscale-values-{dtype}")
    grads = [(randn(g, 8, 6) * 3000).to(dtype) for _ in range(3)]
    got, want = run_script(student, {"init_scale": 3000.0}, [{"op": "unscale", "grads": grads}], "unscale_")
    call = describe_call("DynamicLossScaler(init_scale=3000.0).unscale_", grads)
    for k, (a, b) in enumerate(zip(got[0]["grads"], want[0]["grads"])):
        # float32 math then one rounding to the storage dtype: one ulp of that dtype.
        eps = torch.finfo(dtype).eps
        expect_close(a, b, call=call, what=f"gradient {k} after unscale_", rtol=eps, atol=0,
                     why="divide in place, in float32 arithmetic: g.copy_(g.float() / scale)")


# -- mixed_precision_sgd_step (30 points) ------------------------------------------------
MP = pytest.mark.function("mixed_precision_sgd_step")


def _mp_problem(label, steps=40, dtype=torch.float16, sizes=(8, 16, 4)):
    g = generator(label)
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
    model = build_mlp(list(sizes), {}, "tanh", dtype=dtype)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    X, Y = randn(g, steps, 32, sizes[0]), randn(g, steps, 32, sizes[-1])
    return list(sizes), state, X, Y


def _train(student, device, label, overflow_steps=(), dtype=torch.float16, lr=0.05, scaler_kwargs=None, X=None,
           Y=None, loss="mse"):
    """Both sides on the same device: float16 matmuls round differently on a CPU and a GPU."""
    sizes, state, X0, Y0 = _mp_problem(label, dtype=dtype)
    X = (X0 if X is None else X).to(device)
    Y = (Y0 if Y is None else Y).to(device)
    kw = scaler_kwargs or {"init_scale": 2.0**10, "growth_interval": 10}
    spec = mlp_spec(sizes, state, "tanh", dtype=dtype)
    spec.params["device"] = device
    got = student.task("train_mixed_precision", spec, X, Y, lr, kw, list(overflow_steps), loss=loss, timeout=60,
                       what=f"{X.shape[0]} mixed-precision steps").value
    want = HARNESS.train_mixed_precision(REF_NS, build_mlp(sizes, state, "tanh", dtype=dtype, device=device), X, Y, lr,
                                         kw, list(overflow_steps), loss=loss)
    return got, want


def _expect_same_training(got, want, call, dtype=torch.float16):
    if got["skipped"] != want["skipped"]:
        raise GradingFailure(f"{call}: skipped steps {[i for i, s in enumerate(got['skipped']) if s]}, expected "
                             f"{[i for i, s in enumerate(want['skipped']) if s]} (skip when unscale_ finds inf/NaN)")
    if got["scales"] != want["scales"]:
        raise GradingFailure(f"{call}: scale after each step {got['scales'][:8]}..., expected {want['scales'][:8]}... "
                             "(call scaler.update once per step)")
    if got["model_dtypes"] != want["model_dtypes"]:
        raise GradingFailure(f"{call}: after training the model's parameters are {sorted(set(got['model_dtypes']))}, "
                             f"expected {sorted(set(want['model_dtypes']))}: copy the masters back in the model's own "
                             "dtype (p.copy_(m), not p.data = m.half())")
    for k, (a, b) in enumerate(zip(got["masters"], want["masters"])):
        expect_close(a, b, call=call, what=f"master parameter {k}", rtol=4 * 2**-23, atol=4 * 2**-23,
                     why="SGD on the float32 masters with the unscaled float32 gradients")
    for k, (a, b) in enumerate(zip(got["model"], want["model"])):
        expect_close(a, b, call=call, what=f"model parameter {k} ({dtype})", rtol=torch.finfo(dtype).eps, atol=0,
                     why="copy the updated masters back into the model")


@MP
@pytest.mark.points(8)
def test_mixed_precision_training_matches_reference(student, device):
    """40 float16 steps with overflows injected at steps 5, 6 and 23."""
    got, want = _train(student, device, "mp-train", overflow_steps=(5, 6, 23))
    _expect_same_training(got, want, "mixed_precision_sgd_step over 40 steps (float16 model, float32 masters)")


@MP
@pytest.mark.points(2)
@pytest.mark.parametrize("dtype,loss", [(torch.bfloat16, "smooth_l1"), (torch.float16, "l1")],
                         ids=["bfloat16-smooth_l1", "float16-l1"])
def test_mixed_precision_any_low_precision_dtype_and_loss(student, device, dtype, loss):
    """The step uses the loss_fn it is given and the model's own dtype (bfloat16 too, as the
    contract allows): 40 steps against the reference, same tolerances (float32 masters to 4
    ulps; the model to one ulp of its dtype). Measured for correct_alternative.py: 2.4e-8
    relative at most (a loss of higher degree, (out - y)**4, amplifies a correct
    reordering past 1e-4 in float16 within 40 steps, so none is used)."""
    got, want = _train(student, device, f"mp-{loss}", overflow_steps=(), dtype=dtype, loss=loss)
    _expect_same_training(got, want, f"mixed_precision_sgd_step over 40 steps ({dtype} model, loss_fn={loss})", dtype)


@MP
@pytest.mark.points(6)
def test_skipped_steps_leave_masters_untouched(student, device):
    got, want = _train(student, device, "mp-skip", overflow_steps=(0, 1, 2, 10))
    for t in (0, 1, 2, 10):
        if not got["skipped"][t] or not got["unchanged"][t]:
            raise GradingFailure(f"mixed_precision_sgd_step: at step {t} the forward overflowed in float16; the step must "
                                 f"be skipped (returned skipped={got['skipped'][t]}) and the masters left exactly as they "
                                 f"were (unchanged={got['unchanged'][t]})")
    if any(got["unchanged"][t] for t in range(3, 10)):
        raise GradingFailure("mixed_precision_sgd_step: good steps must update the masters")


@MP
@pytest.mark.points(4)
def test_returned_loss_is_unscaled(student, device):
    got, want = _train(student, device, "mp-loss", overflow_steps=())
    expect_close(torch.tensor(got["losses"]), torch.tensor(want["losses"]), call="mixed_precision_sgd_step",
                 what="the returned losses", rtol=1e-6, atol=1e-6,
                 why="return the loss before scaling, as a Python float")


@MP
@pytest.mark.points(8)
def test_scaling_recovers_gradients_that_underflow_in_float16(student, device):
    """Targets within 1e-4 of the outputs: the float16 gradients of the unscaled loss underflow to
    zero (below 2**-24), while 2**16 times the loss keeps them; the masters must move as the
    reference's do, and not stay put."""
    sizes, state, X, _ = _mp_problem("mp-underflow", steps=3)
    model = build_mlp(sizes, state, "tanh", dtype=torch.float16, device=device)
    with torch.no_grad():
        out = torch.stack([model(x.half().to(device)).float() for x in X])
    Y = out + 1e-4 * randn(generator("mp-underflow-y"), *out.shape).to(device)
    got, want = _train(student, device, "mp-underflow", scaler_kwargs={"init_scale": 2.0**16}, X=X, Y=Y, lr=10.0)
    moved = [not torch.equal(a.cpu(), b) for a, b in zip(got["masters"], [v.float() for v in state.values()])]
    if not any(moved):
        raise GradingFailure("mixed_precision_sgd_step: with gradients below float16's smallest subnormal, the masters "
                             "did not move: scale the loss before backward, then unscale the float32 gradients")
    for k, (a, b) in enumerate(zip(got["masters"], want["masters"])):
        expect_close(a, b, call="mixed_precision_sgd_step (tiny gradients)", what=f"master parameter {k}",
                     rtol=4 * 2**-23, atol=1e-9)


# -- FP8 (30 points, 1 more in the public tests; mixed precision: 1 more there too) -----------------------------------------
FP8Q = pytest.mark.function("fp8_quantize", "fp8_dequantize")
_MAX = {"e4m3": 448.0, "e5m2": 57344.0}
_MANT = {"e4m3": 3, "e5m2": 2}
_MIN_SUB = {"e4m3": 2.0**-9, "e5m2": 2.0**-16}


def _fp8_truth(x, fmt, device):
    """(codes, scale): the CUDA C++ reference on a GPU worker, else the Python one."""
    if device != "cpu":
        try:
            q, scale = cuda_ext.fp8_quantize(x.to(device), fmt)
            return q.cpu(), scale.cpu()
        except cuda_ext.CudaUnavailable:
            pass
    return ref.fp8_quantize(x, fmt)


def _check_fp8(student, x, fmt, label, device="cpu"):
    call = describe_call("fp8_quantize", x, fmt=fmt)
    got = student.call("fp8_quantize", x, fmt=fmt).value
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise GradingFailure(f"{call}: expected (x_fp8, scale)")
    q, scale = (t.cpu() if isinstance(t, torch.Tensor) else t for t in got)
    want_dtype = ref.FP8[fmt]
    if not isinstance(q, torch.Tensor) or q.dtype != want_dtype or q.shape != x.shape:
        raise GradingFailure(f"{call}: x_fp8 must be {want_dtype} of shape {list(x.shape)}, got "
                             f"{getattr(q, 'dtype', type(q).__name__)} {list(getattr(q, 'shape', []))}")
    if not isinstance(scale, torch.Tensor) or scale.dtype != torch.float32 or scale.numel() != 1:
        raise GradingFailure(f"{call}: scale must be a float32 scalar tensor, got {scale!r}"[:300])
    want_scale = _fp8_truth(x, fmt, device)[1]
    expect_close(scale.reshape(()), want_scale.reshape(()), call=call, what="scale", rtol=2**-22, atol=0,
                 why=f"scale = amax(|x|) / {_MAX[fmt]} (1 for an all-zero tensor)")
    back = student.call("fp8_dequantize", q, scale).value
    back = back.cpu() if isinstance(back, torch.Tensor) else back
    if not isinstance(back, torch.Tensor) or back.dtype != torch.float32:
        raise GradingFailure(f"fp8_dequantize: expected a float32 tensor, got {getattr(back, 'dtype', back)}")
    s = float(want_scale)
    bound = (x.abs() * 2.0 ** -(_MANT[fmt] + 1)).clamp_min(s * _MIN_SUB[fmt] / 2) * (1 + 2**-20) + s * 2**-24
    err = (back - x).abs()
    if bool((err > bound).any()):
        i = int((err - bound).argmax())
        raise GradingFailure(f"{call} then fp8_dequantize: the round trip is off by {float(err.reshape(-1)[i]):.3g} at "
                             f"x = {float(x.reshape(-1)[i]):.6g}, more than {float(bound.reshape(-1)[i]):.3g} "
                             f"({fmt} keeps {_MANT[fmt]} mantissa bits)")


@FP8Q
@pytest.mark.points(7)
@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_fp8_round_trip_error_bounds(student, fmt, device):
    g = generator(f"fp8-{fmt}")
    _check_fp8(student, randn(g, 64, 33, scale=3.0), fmt, "gaussian", device)


@FP8Q
@pytest.mark.points(5)
@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_fp8_wide_dynamic_range(student, fmt, device):
    """Entries from 1e-6 to 1e4 (outliers, as activations have): small ones fall to subnormals."""
    g = generator(f"fp8-range-{fmt}")
    x = randn(g, 500) * 10 ** torch.empty(500, dtype=torch.float64).uniform_(-6, 4, generator=g).float()
    _check_fp8(student, x, fmt, "wide range", device)


@FP8Q
@pytest.mark.points(3)
@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_fp8_all_zero_tensor(student, fmt):
    x = torch.zeros(4, 5)
    q, scale = student.call("fp8_quantize", x, fmt=fmt).value
    if float(scale) != 1.0 or bool(q.float().abs().sum() != 0):
        raise GradingFailure(f"fp8_quantize(zeros, fmt={fmt!r}): expected all-zero x_fp8 and scale 1, got scale "
                             f"{float(scale)} (0 / 0 gives NaN: special-case amax == 0)")
    back = student.call("fp8_dequantize", q, scale).value
    if bool(back.abs().sum() != 0) or back.dtype != torch.float32:
        raise GradingFailure("fp8_dequantize of an all-zero tensor must give float32 zeros")
