"""What the public and hidden suites of `kv_cache` share: the bound on an attention
output (with its measurement), the float64 truth of a run of cache operations, and the
comparison with feedback.

The bound. A correct output differs from the float64 truth by the rounding of the output
to its dtype (u_out |o|, |o| <= max|v|) and by the rounding of the scores in the working
precision (float32 for the half types): a score s = q.k / sqrt(D) is off by about
u_work sum_d |q_d k_d| / sqrt(D), which moves each probability by that much relatively and
the output by as much times max|v|. Per query head the bound is therefore

    KV_FACTOR * max|v| * (u_out + u_work * (1 + S)),   S = max_{t,l} sum_d |q_td k_ld| / sqrt(D)

with max|v| over the key/value head the query head reads. Measured (bench/kv_cache_tolerances.py,
20 seeds, four shapes, scores near 0 and near 500; table in bench/RESULTS.md): correct
formulations (grouped reshape, repeat_interleave, a softmax by hand per head, P rounded
to the input dtype before P @ V as FlashAttention does) reach at most 0.62 of the scale in
float16/bfloat16 and 2.0 in float32 (scores near 500); scores or softmax in float16/bfloat16 reach 38-48
on scores near 500; the wrong head mapping (h % Hkv) 80 and more. KV_FACTOR = 8.
"""

from __future__ import annotations

import math

import torch

from autograder.judge.compare import describe

KV_FACTOR = 8.0
HALF = (torch.float16, torch.bfloat16)


def attention_scale(q, k, v) -> torch.Tensor:
    """Per (batch, query head): max|v| (u_out + u_work (1 + S)), shaped [B, Hq, 1, 1]."""
    g = q.shape[1] // k.shape[1]
    u_out = torch.finfo(q.dtype).eps / 2
    u_work = torch.finfo(torch.float32 if q.dtype in HALF else q.dtype).eps / 2
    qa, ka = q.detach().cpu().double().abs(), k.detach().cpu().double().abs().repeat_interleave(g, 1)
    S = (qa @ ka.mT).amax(dim=(-2, -1), keepdim=True) / math.sqrt(q.shape[-1])
    vmax = v.detach().cpu().double().abs().amax(dim=(-2, -1), keepdim=True).repeat_interleave(g, 1)
    return vmax * (u_out + u_work * (1.0 + S))


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def shape_text(t) -> str:
    return f"{dtype_name(t.dtype)}{list(t.shape)}" if isinstance(t, torch.Tensor) else describe(t)


def describe_ops(kind: str, kwargs: dict, ops: list) -> str:
    """`KVCache(1, 2, 16, 64, float16)`, then prefill 7, decode x 3, ...: the run in one line."""
    args = ", ".join(f"{k}={dtype_name(v) if isinstance(v, torch.dtype) else v}" for k, v in kwargs.items()
                     if k != "device")
    parts: list[str] = []
    for op in ops:
        word = f"{op[0]} {op[-1].shape[2]}" if op[0] != "decode" else "decode"
        if parts and parts[-1].split(" x ")[0] == word:
            n = int(parts[-1].split(" x ")[1]) + 1 if " x " in parts[-1] else 2
            parts[-1] = f"{word} x {n}"
        else:
            parts.append(word)
    q = next((op[1] for op in ops if op[0] != "append"), None)
    heads = f", queries {shape_text(q)}" if q is not None else ""
    return f"{'KVCache' if kind == 'kv' else 'SinkCache'}({args}){heads}, then " + ", ".join(parts)


def copied(x):
    """A tensor's own copy (anything else as it is)."""
    return x.clone() if isinstance(x, torch.Tensor) else x


def truth_of(kind: str, kwargs: dict, ops: list, ref) -> list[dict]:
    """The float64 replay of `ops` on the reference: per op its output (prefill/decode),
    len, keys and values, and the keys/values it attended over (for the bound)."""
    k64 = dict(kwargs, dtype=torch.float64, device=None)
    cache = ref.KVCache(**k64) if kind == "kv" else ref.SinkCache(**k64)
    out = []
    for op in ops:
        step: dict = {}
        if op[0] == "append":
            cache.append(op[1].double(), op[2].double())
            # (prefill's offset below is len - T: the suites prefill a SinkCache only while it fits)
        else:
            q, k, v = (t.double() for t in op[1:4])
            before = len(cache)
            cache.append(k, v)
            step["output"] = ref.attend(q, cache.keys(), cache.values(), offset=before if op[0] == "prefill" else None)
            step["attended"] = (cache.keys().clone(), cache.values().clone())
        step["len"], step["keys"], step["values"] = len(cache), cache.keys().clone(), cache.values().clone()
        out.append(step)
    return out


def compare_output(got, want, q, kv, *, call: str, hint=None) -> str | None:
    """An attention output against its float64 truth within KV_FACTOR * attention_scale;
    `hint(got)`: a sentence naming the mistake the output matches, or None."""
    if isinstance(got, dict) and "returned" in got:  # what the harness saw instead of a tensor
        return f"{call}: expected a tensor {shape_text(q)}, got {got['returned']}"
    if not isinstance(got, torch.Tensor):
        return f"{call}: expected a tensor {shape_text(q)}, got {describe(got)}"
    if tuple(got.shape) != tuple(q.shape):
        return f"{call}: the output has shape {list(got.shape)}, expected {list(q.shape)} (the queries' shape)"
    if got.dtype != q.dtype:
        return f"{call}: the output is {dtype_name(got.dtype)}, expected {dtype_name(q.dtype)} (the queries' dtype)"
    k, v = kv
    bound = KV_FACTOR * attention_scale(q, k.to(q.dtype), v.to(q.dtype))
    g64 = got.detach().cpu().double()
    err = (g64 - want).abs()
    if not torch.isfinite(g64).all() or (err > bound).any():
        over = torch.nan_to_num(err / bound, nan=float("inf"))
        idx = tuple(int(i) for i in torch.unravel_index(over.argmax(), over.shape))
        lines = [f"{call}: output[{', '.join(map(str, idx))}] = {float(g64[idx]):.6g}, expected {float(want[idx]):.6g} "
                 f"(off by {float(err[idx]):.3g}, allowed {float(bound[idx[0], idx[1], 0, 0]):.3g} for this head)"]
        why = hint(got) if hint is not None else None
        if why:
            lines.append(f"  hint: {why}")
        return "\n".join(lines)
    return None


def modulo_mapping(q, k, v, offset, ref):
    """What attention gives with the wrong head mapping h % Hkv (for a hint)."""
    idx = torch.arange(q.shape[1]) % k.shape[1]
    return ref.attend(q.double(), k.double()[:, idx], v.double()[:, idx], offset)


def _half_scores(q, k, v, offset):
    """Scores and softmax in the half dtype (the mistake), for a hint."""
    g = q.shape[1] // k.shape[1]
    kk, vv = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = (q @ kk.mT) / math.sqrt(q.shape[-1])
    if offset is not None:
        T, L = s.shape[-2:]
        s = s.masked_fill(torch.ones(T, L, dtype=torch.bool).triu(offset + 1), float("-inf"))
    return (torch.softmax(s, -1) @ vv).double()


def mistake_hint(q, kv, offset, ref):
    """A function of the student's output naming the mistake it matches, if one does."""
    k, v = kv
    q64 = q.detach().cpu()
    kd, vd = k.to(q.dtype), v.to(q.dtype)
    bound = KV_FACTOR * attention_scale(q64, kd, vd)
    candidates = []
    if k.shape[1] not in (1, q.shape[1]):
        candidates.append((lambda: modulo_mapping(q64, k, v, offset, ref),
                           "this is what query head h reading key/value head h % Hkv gives; head h reads "
                           "h // (Hq // Hkv) (heads of one group are neighbours)"))
    if offset is not None:
        T, L = q.shape[2], k.shape[2]
        for off, what in ((offset - 1, "one key too few"), (offset + 1, "one key too many"),
                          (0, "the mask ignores the positions cached before the prompt: query i must see keys "
                              "0 .. n + i, n = len(cache) before the call")):
            if 0 <= off != offset and off <= L:
                candidates.append((lambda off=off: ref.attend(q64.double(), k.double(), v.double(), off),
                                   f"this is the causal mask with {what}" if off != 0 else "this is " + what))
        if T > 1:
            candidates.append((lambda: ref.attend(q64.double(), k.double(), v.double(), None),
                               "this is attention without a causal mask: query i sees keys 0 .. n + i only"))
    if q.dtype in HALF:
        candidates.append((lambda: _half_scores(q64, kd.cpu(), vd.cpu(), offset),
                           f"this is what scores and softmax in {dtype_name(q.dtype)} give: compute them in float32 "
                           "and round only the output"))

    def hint(got):
        g64 = got.detach().cpu().double()
        for alternative, text in candidates:
            try:
                if ((g64 - alternative()).abs() <= bound).all():
                    return text
            except RuntimeError:
                continue
        return None
    return hint


def check_run(reply: dict, truth: list[dict], ops: list, *, what: str, ref, check_contents: bool = True,
              outputs: bool = True) -> str | None:
    """The student's run (harness.run_cache's reply) against the float64 replay: every
    output, len and (with `check_contents`) keys()/values() after every op. The first
    failure as feedback, or None."""
    if reply.get("error"):
        return f"{what}: {reply['error']}"
    steps = reply["steps"]
    for i, (op, want) in enumerate(zip(ops, truth)):
        at = f"{what}: op {i + 1} ({op[0]}"
        at += f" of {op[-1].shape[2]} positions)" if op[0] != "decode" else ")"
        if i >= len(steps):
            return f"{at}: not reached"
        got = steps[i]
        if "error" in got:
            return f"{at} raised {got['error']}"
        if outputs and op[0] != "append":
            q = op[1]
            offset = (want["len"] - q.shape[2]) if op[0] == "prefill" else None
            msg = compare_output(got.get("output"), want["output"], q, want["attended"], call=at,
                                 hint=mistake_hint(q, want["attended"], offset, ref))
            if msg:
                return msg
        if got["len"] != want["len"]:
            return f"{at}: len(cache) is {got['len']}, expected {want['len']}"
        if check_contents and "keys" in got:
            for name in ("keys", "values"):
                g, w = got[name], want[name]
                if isinstance(g, dict) and "returned" in g:
                    return f"{at}: {name}() returned {g['returned']}, expected a tensor of shape {list(w.shape)}"
                if not isinstance(g, torch.Tensor) or tuple(g.shape) != tuple(w.shape):
                    return (f"{at}: {name}() is {shape_text(g)}, expected shape {list(w.shape)} "
                            f"(the {want['len']} positions kept)")
                if not torch.equal(g.detach().cpu().double(), w):
                    bad = (g.detach().cpu().double() != w).nonzero()[0].tolist()
                    return (f"{at}: {name}() differs from the positions appended at {bad} (position {bad[2]} of "
                            f"{want['len']}): expected {float(w[tuple(bad)]):.6g}, got "
                            f"{float(g[tuple(bad)]):.6g}; values are stored as given, no arithmetic")
    return None
