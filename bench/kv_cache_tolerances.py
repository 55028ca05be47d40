"""Where correct formulations of cached attention land against the float64 truth, and
where the mistakes land: the measurements behind `assignments/kv_cache/tests/checks.py`.

    .venv/bin/python bench/kv_cache_tolerances.py

Errors are printed in units of the bound's scale (checks.attention_scale: per query head,
max|v| (u_out + u_work (1 + S)), S the largest sum_d |q_d k_d| / sqrt(D)), so the table
reads directly against checks.KV_FACTOR.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autograder.judge.suite import load_module  # noqa: E402
from reference import kv_cache as ref  # noqa: E402

C = load_module(Path(__file__).resolve().parents[1] / "assignments/kv_cache/tests/checks.py", "kv_cache_checks")

HALF = (torch.float16, torch.bfloat16)


def _work(q):
    return torch.float32 if q.dtype in HALF else q.dtype


def v_repeat(q, k, v, offset):
    """K and V repeated to Hq heads (repeat_interleave), then plain attention."""
    g = q.shape[1] // k.shape[1]
    w = _work(q)
    kk, vv = k.to(w).repeat_interleave(g, 1), v.to(w).repeat_interleave(g, 1)
    s = q.to(w) @ kk.mT / math.sqrt(q.shape[-1])
    if offset is not None:
        T, L = s.shape[-2:]
        s = s.masked_fill(torch.ones(T, L, dtype=torch.bool).triu(offset + 1), float("-inf"))
    return (torch.softmax(s, -1) @ vv).to(q.dtype)


def v_manual(q, k, v, offset):
    """Per head, einsum, softmax by hand (max subtracted, exp, sum)."""
    g = q.shape[1] // k.shape[1]
    w = _work(q)
    outs = []
    for h in range(q.shape[1]):
        s = torch.einsum("btd,bld->btl", q[:, h].to(w), k[:, h // g].to(w)) * q.shape[-1] ** -0.5
        if offset is not None:
            T, L = s.shape[-2:]
            s = s + torch.full((T, L), float("-inf")).triu(offset + 1)
        e = torch.exp(s - s.amax(-1, keepdim=True))
        outs.append(torch.einsum("btl,bld->btd", e / e.sum(-1, keepdim=True), v[:, h // g].to(w)))
    return torch.stack(outs, 1).to(q.dtype)


def v_p_rounded(q, k, v, offset):
    """FlashAttention's order on GPUs: float32 scores and softmax, P rounded to the input
    dtype before P @ V (float32 accumulation), normalised after."""
    g = q.shape[1] // k.shape[1]
    w = _work(q)
    kk, vv = k.to(w).repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = q.to(w) @ kk.mT / math.sqrt(q.shape[-1])
    if offset is not None:
        T, L = s.shape[-2:]
        s = s.masked_fill(torch.ones(T, L, dtype=torch.bool).triu(offset + 1), float("-inf"))
    e = torch.exp(s - s.amax(-1, keepdim=True))
    o = (e.to(q.dtype).float() @ vv.float()) / e.sum(-1, keepdim=True)
    return o.to(q.dtype)


def m_half_scores(q, k, v, offset):
    """Scores and softmax in the input's half dtype."""
    g = q.shape[1] // k.shape[1]
    kk, vv = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = q @ kk.mT / math.sqrt(q.shape[-1])
    if offset is not None:
        T, L = s.shape[-2:]
        s = s.masked_fill(torch.ones(T, L, dtype=torch.bool).triu(offset + 1), float("-inf"))
    return torch.softmax(s, -1) @ vv


def m_modulo_heads(q, k, v, offset):
    """Query head h reads kv head h % Hkv."""
    idx = torch.arange(q.shape[1]) % k.shape[1]
    return ref.attend(q, k[:, idx], v[:, idx], offset)


CORRECT = {"reference": ref.attend, "repeat_interleave": v_repeat, "manual_softmax": v_manual,
           "P_rounded": v_p_rounded}
MISTAKES = {"half_scores": m_half_scores, "h % Hkv": m_modulo_heads}


def measure(q, k, v, offset):
    truth = ref.attend(q.double(), k.double(), v.double(), offset)
    scale = C.attention_scale(q, k, v)
    row = {}
    for name, fn in {**CORRECT, **MISTAKES}.items():
        if name == "half_scores" and q.dtype not in HALF:
            continue
        err = (fn(q, k, v, offset).double() - truth).abs() / scale
        row[name] = float(err.max())
    return row


def inputs(g, B, Hq, Hkv, T, L, D, dtype, peaked=False):
    q = torch.randn(B, Hq, T, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, Hkv, L, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, Hkv, L, D, generator=g, dtype=torch.float64)
    if peaked:
        q, k = peaked_inputs(g, q, k)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def peaked_inputs(g, q, k, level=500.0, spread=1.0):
    """Every score near `level` (q and k share one direction), differing by about `spread`."""
    D = q.shape[-1]
    e = torch.randn(D, generator=g, dtype=torch.float64)
    e = e / e.norm()
    a = math.sqrt(level * math.sqrt(D))
    noise = spread * D ** 0.25 / a
    q = a * e + noise * (q - (q @ e)[..., None] * e)
    k = a * e + noise * (k - (k @ e)[..., None] * e)
    return q, k


def main():
    print("| inputs | dtype | " + " | ".join(list(CORRECT) + list(MISTAKES)) + " |")
    print("|---" * (2 + len(CORRECT) + len(MISTAKES)) + "|")
    for peaked in (False, True):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            worst: dict[str, float] = {}
            for seed in range(20):
                g = torch.Generator().manual_seed(seed)
                for (B, Hq, Hkv, T, L, D) in ((2, 8, 2, 7, 40, 32), (1, 4, 4, 33, 33, 64), (2, 6, 1, 1, 300, 16),
                                              (1, 8, 4, 64, 1000, 64)):
                    q, k, v = inputs(g, B, Hq, Hkv, T, L, D, dtype, peaked)
                    for name, val in measure(q, k, v, L - T).items():
                        worst[name] = max(worst.get(name, 0.0), val)
            cells = [f"{worst[n]:.3g}" if n in worst else "-" for n in list(CORRECT) + list(MISTAKES)]
            print(f"| {'peaked (scores near 500)' if peaked else 'Gaussian'} | {str(dtype)[6:]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
