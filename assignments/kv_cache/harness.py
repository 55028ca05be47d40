"""Trusted tasks of `kv_cache`: they run in the sandbox next to the student's code (reached
through `ns`, the student's namespace) and return only data: outputs, lengths, the
cache's contents, and where its tensors live. The judge replays the same operations on
`reference.kv_cache` in float64 and compares; memory rules are measured by the kernel
around these tasks (watch_memory), never reported by the child.
"""

from __future__ import annotations

import torch


def _make(ns, kind: str, kwargs: dict):
    cls = ns["KVCache"] if kind == "kv" else ns["SinkCache"]
    return cls(**kwargs)


def returned(o) -> dict:
    """What a function returned instead of a tensor, as the judge describes it."""
    return {"returned": f"{type(o).__name__} {repr(o)[:120]}"}


def _tensor_or_description(o):
    return o.detach().clone() if isinstance(o, torch.Tensor) else returned(o)


def _keys_values(cache):
    return _tensor_or_description(cache.keys()), _tensor_or_description(cache.values())


def run_cache(ns, kind, kwargs, ops, snapshots=True):
    """Build a cache (`kind` "kv" or "sink", keyword arguments `kwargs`) and run `ops` in
    order: ("append", k, v), ("prefill", q, k, v) or ("decode", q, k, v). Per op: the
    output (prefill/decode), len(cache) after it and, with `snapshots`, keys() and
    values(); an exception ends the run and is reported as its type and message."""
    out = []
    try:
        cache = _make(ns, kind, kwargs)
    except Exception as e:  # noqa: BLE001 - the student's failure, reported
        return {"error": f"{kind} cache construction raised {type(e).__name__}: {e}"[:400], "steps": out}
    for op in ops:
        step = {}
        try:
            if op[0] == "append":
                cache.append(op[1], op[2])
            else:
                fn = ns["prefill"] if op[0] == "prefill" else ns["decode_step"]
                o = fn(op[1], op[2], op[3], cache)
                step["output"] = o.detach().clone() if isinstance(o, torch.Tensor) else returned(o)
            step["len"] = len(cache)
            if snapshots:
                step["keys"], step["values"] = _keys_values(cache)
        except Exception as e:  # noqa: BLE001
            step["error"] = f"{type(e).__name__}: {e}"[:400]
            out.append(step)
            break
        out.append(step)
    return {"error": None, "steps": out}


def append_past_end(ns, kwargs, fill, extra, device="cpu"):
    """A KVCache filled with `fill` positions (one append), then `extra` more: the type of
    the exception the second append raised (None: none), and the cache's length and
    contents after it."""
    cache = ns["KVCache"](**kwargs)
    B, H, D, dtype = kwargs["batch"], kwargs["kv_heads"], kwargs["head_dim"], kwargs["dtype"]
    g = torch.Generator().manual_seed(5)
    first = _draw(g, B, H, fill, D, dtype, device)
    if fill:
        cache.append(first, -first)
    more = _draw(g, B, H, extra, D, dtype, device)
    try:
        cache.append(more, -more)
        raised = None
    except Exception as e:  # noqa: BLE001 - the type is the answer
        raised = type(e).__name__
    k, v = _keys_values(cache)
    return {"raised": raised, "len": len(cache), "keys": k, "values": v, "first": first}


def storage_of(t) -> tuple[int, int, int]:
    """(the storage's address, its size in bytes, the tensor's own address)."""
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes(), t.data_ptr()


def view_probe(ns, kwargs, chunks, seed, device="cpu"):
    """A KVCache filled by appends of `chunks` positions: after each append, where keys()
    and values() live (storage address and size, the view's address) and whether they
    share memory with what they returned after the first append."""
    cache = ns["KVCache"](**kwargs)
    B, H, D, dtype = kwargs["batch"], kwargs["kv_heads"], kwargs["head_dim"], kwargs["dtype"]
    g = torch.Generator().manual_seed(seed)
    seen = []
    first_k = None
    for T in chunks:
        k = _draw(g, B, H, T, D, dtype, device)
        cache.append(k, k + 1)
        keys, values = cache.keys(), cache.values()
        if first_k is None:
            first_k = keys
        seen.append({"keys": storage_of(keys), "values": storage_of(values),
                     "first_keys_shared": storage_of(first_k)[0] == storage_of(keys)[0],
                     "len": len(cache), "shape": tuple(keys.shape)})
    return seen


def _draw(g, B, H, T, D, dtype, device):
    return torch.randn(B, H, T, D, generator=g).to(device=device, dtype=dtype)


def fill_plan(B, H, D, max_len, fill_chunk, decodes, dtype, seed, device="cpu"):
    """The operations of `fill_cache` and `decode_cached`, drawn from `seed` (the judge draws the same):
    appends of `fill_chunk` positions up to max_len - decodes, then `decodes` decode steps."""
    g = torch.Generator().manual_seed(seed)
    filled = 0
    while filled < max_len - decodes:
        T = min(fill_chunk, max_len - decodes - filled)
        yield ("append", _draw(g, B, H, T, D, dtype, device), _draw(g, B, H, T, D, dtype, device))
        filled += T
    for _ in range(decodes):
        yield tuple(["decode"] + [_draw(g, B, H, 1, D, dtype, device) for _ in range(3)])


def stream_plan(B, Hq, Hkv, D, tokens, dtype, seed, device="cpu"):
    """The decode steps of `sink_stream`, drawn from `seed` (the judge draws the same)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(tokens):
        yield ("decode", _draw(g, B, Hq, 1, D, dtype, device), _draw(g, B, Hkv, 1, D, dtype, device),
               _draw(g, B, Hkv, 1, D, dtype, device))


def _stream(ns, cache, plan, keep_last):
    outs = []
    for op in plan:
        if op[0] == "append":
            cache.append(op[1], op[2])
        else:
            outs.append(_tensor_or_description(ns["decode_step"](op[1], op[2], op[3], cache)))
            del outs[:-keep_last]
    return outs


# The cache `fill_cache` built, kept in this child for `decode_cached` (the judge measures
# the two phases apart: the fill, where a cache grown by torch.cat needs 1.5x its size,
# and the decode steps, which may not copy more than one of keys or values at a time).
_KEPT: dict = {}


def fill_cache(ns, B, H, D, max_len, fill_chunk, decodes, dtype, seed, device="cpu"):
    """A watched task: a KVCache of max_len positions and the appends of `fill_plan`.
    Returns the length; the cache and the rest of the plan stay here for decode_cached."""
    cache = ns["KVCache"](batch=B, kv_heads=H, head_dim=D, max_len=max_len, dtype=dtype, device=device)
    plan = fill_plan(B, H, D, max_len, fill_chunk, decodes, dtype, seed, device)
    for op in plan:
        cache.append(op[1], op[2])
        if len(cache) >= max_len - decodes:
            break
    _KEPT.clear()
    _KEPT.update(cache=cache, plan=plan)
    return len(cache)


def decode_cached(ns, keep_last):
    """A watched task: the decode steps of the plan `fill_cache` started, on its cache.
    Returns the last `keep_last` outputs and the length."""
    cache = _KEPT["cache"]
    outs = _stream(ns, cache, _KEPT.pop("plan"), keep_last)
    return {"len": len(cache), "outputs": outs}


def sink_stream(ns, B, Hq, Hkv, D, num_sinks, window, tokens, dtype, seed, keep_last, device="cpu"):
    """A watched task: `tokens` decode steps through one SinkCache (`stream_plan`). Returns
    the last `keep_last` outputs, the length and the final keys/values."""
    cache = ns["SinkCache"](batch=B, kv_heads=Hkv, head_dim=D, num_sinks=num_sinks, window=window, dtype=dtype,
                            device=device)
    outs = _stream(ns, cache, stream_plan(B, Hq, Hkv, D, tokens, dtype, seed, device), keep_last)
    keys, values = _keys_values(cache)
    return {"len": len(cache), "outputs": outs, "keys": keys, "values": values}
