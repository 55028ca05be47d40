"""Public tests of `zeroth_order`: run them with `dlopt test zeroth_order.ipynb`.

One small case each; the hidden suite checks the estimators' statistics (bias and the
variance theory predicts, for both distributions), MeZO and LOZO exactly under the
contract's draws, their memory, and training runs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from autograder.judge.compare import GradingFailure, expect_close
from autograder.judge.suite import load_module
from autograder.protocol.codec import Spec
from autograder.protocol.specs import build, mlp_spec

# the problem set (objectives, model losses) is the harness's: it registers their specs
objective_spec = load_module(Path(__file__).resolve().parents[1] / "harness.py", "zo_harness").objective_spec

pytestmark = pytest.mark.visibility("public")


def _quadratic(d=4):
    g = torch.Generator().manual_seed(0)
    m = torch.randn(d, d, generator=g, dtype=torch.float64)
    a = m @ m.T / d + torch.eye(d, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    x = torch.randn(d, generator=g, dtype=torch.float64)
    return objective_spec("quadratic", A=a, b=b), x, a @ x - b


@pytest.mark.points(1)
@pytest.mark.function("coordinate_gradient")
def test_public_coordinate_gradient(student):
    spec, x, grad = _quadratic()
    got = student.call("coordinate_gradient", spec, x, 0.1).value
    # Central differences are exact on a quadratic: only rounding remains.
    expect_close(got, grad, call="coordinate_gradient(quadratic, x[4], 0.1)", what="the gradient",
                 rtol=1e-12, atol=1e-12)


@pytest.mark.points(1)
@pytest.mark.function("zo_gradient")
def test_public_zo_gradient_many_samples(student):
    spec, x, grad = _quadratic(3)
    got = torch.as_tensor(student.call("zo_gradient", spec, x, 0.1, 5000, 1).value).cpu()  # cpu: GPU runs return cuda
    # E|error|^2 = (d + 1)|g|^2 / n = 8e-4 |g|^2: an error of half |g| is 17 standard deviations.
    err = float((got - grad).norm())
    if not err < 0.5 * float(grad.norm()):
        raise GradingFailure(f"zo_gradient(quadratic, x[3], 0.1, 5000, seed=1): |g_hat - g| = {err:.3g}, "
                             f"|g| = {float(grad.norm()):.3g}; with 5000 samples it should be within a few percent")


@pytest.mark.points(2)
@pytest.mark.function("mezo_step")
def test_public_mezo_step(student, device):
    g = torch.Generator().manual_seed(1)
    sizes = [3, 4, 2]
    model = build("mlp", {"sizes": sizes, "state": {}, "activation": "tanh", "dtype": torch.float64})
    state = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    model.to(device)  # on a GPU run student code and the contract's generator are on the GPU
    batch = (torch.randn(8, 3, generator=g, dtype=torch.float64), torch.randn(8, 2, generator=g, dtype=torch.float64))
    spec = mlp_spec(sizes, state, "tanh", torch.float64)
    spec.params["device"] = device
    student.task("store_model", "public", spec)
    pg = student.task("step", "mezo_step", "public", Spec("model_loss", {"name": "mse"}), batch,
                      {"lr": 0.1, "eps": 1e-3, "seed": 4}).value
    # The contract, written out: z regenerated from the seed for every pass.
    loss = build("model_loss", {"name": "mse"})

    def zs():
        gen = torch.Generator(device).manual_seed(4)
        return [torch.randn(p.shape, generator=gen, dtype=p.dtype, device=device) for p in model.parameters()]

    batch = tuple(t.to(device) for t in batch)
    with torch.no_grad():
        for p, z in zip(model.parameters(), zs()):
            p += 1e-3 * z
        plus = float(loss(model, batch))
        for p, z in zip(model.parameters(), zs()):
            p -= 2e-3 * z
        minus = float(loss(model, batch))
        for p, z in zip(model.parameters(), zs()):
            p += 1e-3 * z
        want = (plus - minus) / 2e-3
        for p, z in zip(model.parameters(), zs()):
            p -= 0.1 * want * z
    if not math.isclose(pg, want, rel_tol=1e-8, abs_tol=1e-8):
        raise GradingFailure(f"mezo_step(lr=0.1, eps=1e-3, seed=4): projected_grad {pg:.8g}, expected {want:.8g}")
    for (name, p), q in zip(model.named_parameters(), student.task("parameters", "public").value):
        expect_close(torch.as_tensor(q).cpu(), p.detach().cpu(), call="mezo_step(lr=0.1, eps=1e-3, seed=4)", what=f"parameter {name}",
                     rtol=1e-10, atol=1e-10)
