"""Public tests of `loss_scaling`: run them with `dlopt test loss_scaling.ipynb`.

They compare with torch.amp.GradScaler's rule and with a direct FP8 cast; the hidden
suite checks long trajectories, injected overflows, float16 training and error bounds.
"""

from __future__ import annotations

import pytest
import torch

from autograder.judge.compare import GradingFailure
from autograder.protocol.specs import build_mlp, mlp_spec

pytestmark = pytest.mark.visibility("public")


@pytest.mark.points(1)
@pytest.mark.function("DynamicLossScaler")
def test_public_growth_and_backoff(student):
    init = {"init_scale": 4.0, "growth_interval": 2}
    ops = []
    for bad in (False, False, True, False):
        ops += [{"op": "update", "found_inf": bad}, {"op": "get_scale"}]
    got = [x for x in student.task("scaler_script", init, ops).value if x is not None]
    if got != [4.0, 8.0, 4.0, 4.0]:
        raise GradingFailure(f"DynamicLossScaler(init_scale=4.0, growth_interval=2) after good, good, overflow, good: "
                             f"scales {got}, expected [4.0, 8.0, 4.0, 4.0]")


@pytest.mark.points(1)
@pytest.mark.function("fp8_quantize", "fp8_dequantize")
def test_public_fp8_e4m3_round_trip(student):
    x = torch.tensor([0.5, -1.0, 2.0, 448.0 / 100])
    q, scale = (t.cpu() for t in student.call("fp8_quantize", x, fmt="e4m3").value)
    want_scale = 4.48 / 448.0  # amax / the largest e4m3 value
    if q.dtype != torch.float8_e4m3fn or abs(float(scale) - want_scale) > 1e-9:
        raise GradingFailure(f"fp8_quantize({x.tolist()}, 'e4m3'): expected float8_e4m3fn and scale {want_scale:.6g}, "
                             f"got {q.dtype} and {float(scale):.6g}")
    back = student.call("fp8_dequantize", q, scale).value.cpu()
    if float((back - x).abs().max()) > 4.48 / 16:
        raise GradingFailure(f"round trip gave {back.tolist()} for {x.tolist()}")


@pytest.mark.points(1)
@pytest.mark.function("mixed_precision_sgd_step")
def test_public_mixed_precision_steps(student, device):
    torch.manual_seed(0)
    model = build_mlp([3, 4, 2], {}, "tanh", dtype=torch.float16)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    X, Y = torch.randn(3, 8, 3), torch.randn(3, 8, 2)
    spec = mlp_spec([3, 4, 2], state, "tanh", dtype=torch.float16)
    spec.params["device"] = device
    got = student.task("train_mixed_precision", spec, X.to(device), Y.to(device), 0.1, {"init_scale": 256.0}, [1]).value
    if got["skipped"] != [False, True, False]:
        raise GradingFailure(f"three steps, the second overflowing in float16: skipped = {got['skipped']}, "
                             "expected [False, True, False]")
