"""Shared checks of the `attention` suites (trusted: runs in the judge, never in the child).

Tolerances. Every output is compared with the float64 reference computed from the same
(rounded) inputs. The error a correct implementation may have is measured, not guessed:
the same math run by the plain implementation in the inputs' own dtype (every step in
that dtype: `reference.attention` with `work=dtype`) has some largest error `e_plain`,
on a GPU the Triton FlashAttention-2 reference has its own `e_flash`, and for the
backward the exact gradient (from o and lse before they were rounded to the dtype the
student receives) differs by `e_inputs`; a submission may be off by 3 times the
largest of them, plus a floor of 4 units of roundoff of the
arithmetic times the output's scale (for float32 on a GPU that unit is TF32's 2**-11,
since Triton's `tl.dot` and cuBLAS may use TF32 as FlashAttention does). Computing in
float32 for half inputs, as FlashAttention does, is well inside this; a mask off by one
key, a missing scale or rescaling, a wrong lse base are each far outside it, and
the examples in `examples/` show it.
"""

from __future__ import annotations

import math

import torch

from autograder.judge.compare import CaseTally, GradingFailure, describe_call, expect_close
from autograder.judge.suite import generator
from reference import attention as ref

HALF = (torch.float16, torch.bfloat16)
PLAIN_FACTOR = 3.0
FLOOR_ULPS = 4.0


def unit_roundoff(dtype: torch.dtype, device: str) -> float:
    if dtype == torch.float32 and device != "cpu":
        return 2.0**-11  # TF32
    return torch.finfo(dtype).eps / 2


def lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in HALF else dtype


def make_qkv(label: str, b: int, h: int, n: int, m: int, d: int, dtype=torch.float32, *,
             spread: float = 1.0, shift: float = 0.0):
    """Fresh Gaussian q, k, v (and do). `spread` scales q and k (logits grow with its
    square); `shift` adds +shift*u to q and +-shift*u to k along one random direction u,
    so every score moves by about +-shift**2 (all large: overflow without the max
    subtraction; all very negative: underflow when the running max starts at 0)."""
    g = generator(label)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    q, k, v, do = rnd(b, h, n, d) * spread, rnd(b, h, m, d) * spread, rnd(b, h, m, d), rnd(b, h, n, d)
    if shift:
        u = rnd(d)
        u = u / u.norm() * math.sqrt(abs(shift)) * d**0.25
        q, k = q + u, k + (u if shift > 0 else -u)
    return tuple(t.to(dtype) for t in (q, k, v, do))


def _flash_reference(fn: str, args: tuple, kwargs: dict, device: str, force: bool = False):
    """The Triton reference on a GPU (None on the CPU or where Triton is missing). Its
    kernels take head dims 16, 32, 64, 128: other D are zero-padded up to the next one
    (zero columns change no score, and their outputs are sliced away); the default
    scale stays 1/sqrt(D) of the real D."""
    if device == "cpu" and not force:
        return None
    try:
        from reference import triton_flash_attention as tfa
    except ImportError:
        return None
    d = args[1].shape[-1]
    dp = next(p for p in (16, 32, 64, 128) if p >= d)
    kw = {k: v for k, v in kwargs.items() if k in ("causal", "scale")}
    if kw.get("scale") is None:
        kw["scale"] = 1.0 / math.sqrt(d)

    def prep(a):
        if not isinstance(a, torch.Tensor):
            return a
        a = a.to(device)
        return torch.nn.functional.pad(a, (0, dp - d)) if a.dim() == 4 and dp != d else a

    moved = [prep(a) for a in args]
    run = tfa.flash_attention_forward if fn == "forward" else tfa.flash_attention_backward
    out = run(*moved, **kw)
    return tuple(t[..., :d] if t.dim() == 4 else t for t in out)


def expected_forward(q, k, v, causal, scale, device):
    """(truth, allowed error per output) for (o, lse)."""
    truth = ref.attention_forward(q, k, v, causal, scale)
    on = [t.to(device) for t in (q, k, v)]
    others = [ref.attention_forward(*on, causal, scale, work=q.dtype), _tiled_forward(*on, causal, scale)]
    flash = _flash_reference("forward", (q, k, v), {"causal": causal, "scale": scale}, device)
    others += [flash] if flash is not None else []
    return truth, _allowed(truth, others, q.dtype, device)


def _tiled_forward(q, k, v, causal, scale, block=16):
    """The online softmax in the inputs' dtype, 16 keys at a time, with q scaled before
    the product (as many write it): the rescaling and the early scaling add roundings
    the plain softmax does not have (up to ~1.6x its error in float32)."""
    n, m = q.shape[-2], k.shape[-2]
    tau = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    q, tau = q * tau, 1.0
    mx = torch.full(q.shape[:-1], float("-inf"), dtype=q.dtype, device=q.device)
    den = torch.zeros_like(mx)
    acc = torch.zeros_like(q)
    rows = torch.arange(n, device=q.device)[:, None]
    for j0 in range(0, m, block):
        s = (q @ k[..., j0:j0 + block, :].transpose(-2, -1)) * tau
        if causal:
            s = s.masked_fill(torch.arange(j0, min(m, j0 + block), device=q.device)[None, :] > rows, float("-inf"))
        new = torch.maximum(mx, s.amax(-1))
        alpha = torch.exp(mx - new).nan_to_num(0.0)  # rows with nothing seen yet: -inf - -inf
        p = torch.exp(s - new[..., None]).nan_to_num(0.0)
        den = den * alpha + p.sum(-1)
        acc = acc * alpha[..., None] + p @ v[..., j0:j0 + block, :]
        mx = new
    return acc / den[..., None], (mx.float() + torch.log(den.float())).to(lse_dtype(q.dtype))


def expected_backward(do, q, k, v, causal, scale, device):
    """(o, lse) the judge passes in, (truth, allowed error) for (dq, dk, dv)."""
    o64, lse64 = ref.attention_forward(*(t.double() for t in (q, k, v)), causal, scale)
    o, lse = o64.to(q.dtype), lse64.to(lse_dtype(q.dtype))
    truth = ref.attention_backward(do, q, k, v, o, lse, causal, scale)
    on = [t.to(device) for t in (do, q, k, v, o, lse)]
    others = [ref.attention_backward(*on, causal, scale, work=q.dtype)]
    # o and lse reach the student rounded to their dtypes, so the legitimate ways of
    # computing Delta (do . o, or rowsum(P * dP) with P from the rounded lse) and the
    # exact gradient (from unrounded o and lse) differ by that rounding: |lse| u, 3e-5
    # relative for scores near 500 in float32. Both are measured.
    others.append(ref.attention_backward(do, q, k, v, o64, lse64, causal, scale))
    others.append(_backward_delta_from_p(do, q, k, v, lse, causal, scale))
    # ... and that form computed in float32 (P recomputed from S - lse in float32), as a
    # student may: its rounding of S near 1000 moves P by about |S| u (measured with
    # examples/correct_delta_rowsum_float32.py, which lost points before this case).
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    others.append(_backward_delta_from_p(do, q, k, v, lse, causal, scale, work=work))
    flash = _flash_reference("backward", (do, q, k, v, o, lse), {"causal": causal, "scale": scale}, device)
    others += [flash] if flash is not None else []
    return (o, lse), truth, _allowed(truth, others, q.dtype, device)


def _backward_delta_from_p(do, q, k, v, lse, causal, scale, work=torch.float64):
    """The backward with Delta = rowsum(P * dP) instead of do . o, every step in `work`."""
    q, k, v, do = (t.to(work) for t in (q, k, v, do))
    tau = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    s = (q @ k.transpose(-2, -1)) * tau
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    p = torch.exp(s - lse.to(work)[..., None])
    dp = do @ v.transpose(-2, -1)
    ds = p * (dp - (p * dp).sum(-1, keepdim=True))
    return tau * ds @ k, tau * ds.transpose(-2, -1) @ q, p.transpose(-2, -1) @ do


def _allowed(truth, others, dtype, device) -> list[float]:
    u = unit_roundoff(dtype, device)
    out = []
    for i, t in enumerate(truth):
        t64 = t.double().cpu()
        finite = torch.isfinite(t64)
        scale = float(t64[finite].abs().max()) if finite.any() else 1.0
        worst = max(float((o[i].double().cpu() - t64).abs().where(finite, torch.zeros(())).nan_to_num(
            nan=float("inf")).max()) for o in others)
        out.append(PLAIN_FACTOR * worst + FLOOR_ULPS * u * max(scale, 1.0))
    return out


def compare(got, truth: torch.Tensor, allowed: float, *, call: str, what: str, dtype: torch.dtype,
            hint: str = "") -> None:
    """Shape, dtype, finiteness and the largest error against `allowed` (absolute)."""
    if isinstance(got, torch.Tensor) and got.dtype != dtype and got.shape == truth.shape:
        raise GradingFailure(f"{call}: {what}: expected dtype {dtype}, got {got.dtype}")
    expect_close(got, truth, call=call, what=what, rtol=0.0, atol=allowed, check_dtype=False, why=hint)


def call_text(fn: str, *args, **kwargs) -> str:
    return describe_call(fn, *args, **{k: v for k, v in kwargs.items() if v is not None})


Cases = CaseTally
