"""A safe encoding of the values that cross between judge and child.

A message is a JSON document (the header) and one byte string (the payload) that
holds the raw bytes of every tensor in it. Supported values: None, bool, int, float
(NaN and infinities included), str, list, tuple, dict (str or int keys), torch.dtype,
torch.Tensor (dense, any listed dtype) and `Spec` (a registered problem spec, built on
the receiving side from trusted code). The decoder validates every field: dtypes come
from a whitelist, shapes must match the byte counts, offsets must lie in the payload,
depth and counts are bounded, checked by a cheap pass over the header before anything
is built (`scan`), and the tensors must tile the payload exactly: a payload longer or
shorter than what its tensors cover is refused. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

# What one message may hold. The largest honest reply is an optimizer's state dict for a
# GPT-2-sized model: 148 parameters (GPT-2 small) to 580 (GPT-2 XL), with two moments and
# a step each: ~450-1,750 tensors in a few thousand values. Measured here (2 cores,
# Python 3.11, a grading run alongside): decode costs ~10 us per tensor (0.1 s for
# MAX_TENSORS; GPT-2 XL's Adam state, 1,740 tensors, 15 ms) and ~0.7-1.0 us per other
# value (0.17-0.26 s for MAX_ITEMS); `scan` ~0.2 us per value, and it fails as soon as a
# bound is passed. So no reply costs the judge more than ~0.4 s to decode, and the bounds
# sit 6x (tensors) and 30x+ (values) above the largest honest reply; 300,000 tiny
# tensors (3-4 s to decode one such reply
# before, 66 s over a submission) are refused in ~1 ms, before anything is built.
# Nesting: json's C scanner gives up at the interpreter's recursion limit (1,000 by
# default: a 4 MiB header nested 20,000 deep fails in ~10 ms, most of it reading it; a
# ProtocolError, see loads_header), and values deeper than MAX_DEPTH are refused by
# `scan`, which walks without recursion.
MAX_DEPTH = 32
MAX_ITEMS = 250_000
MAX_TENSORS = 10_000
MAX_NDIM = 16

DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
for _name in ("float8_e4m3fn", "float8_e5m2"):
    if hasattr(torch, _name):
        DTYPES[_name] = getattr(torch, _name)
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


class ProtocolError(Exception):
    """A message that does not follow the protocol (malformed, oversized, unknown kind)."""


@dataclass(frozen=True)
class Spec:
    """A registered problem spec: `name` picks trusted builder code on the receiving
    side, `params` (protocol values only) configure it."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


ALIGN = 8  # every tensor starts at a multiple of 8 bytes, so it can be decoded without a copy


def encode(value: Any) -> tuple[Any, bytes]:
    """Encode `value` into (JSON-able header, payload bytes)."""
    header, chunks = encode_chunks(value)
    return header, b"".join(chunks)


def encode_chunks(value: Any) -> tuple[Any, list]:
    """Encode `value` into (JSON-able header, payload pieces to write in order)."""
    chunks: list = []
    offset = [0]

    def enc(v: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ProtocolError("value nested too deeply")
        if v is None or isinstance(v, bool | str):
            return v
        if isinstance(v, int):
            return {"int": str(v)} if abs(v) >= 2**53 else v
        if isinstance(v, float):
            return v if math.isfinite(v) else {"float": repr(v)}
        if isinstance(v, torch.Tensor):
            return enc_tensor(v)
        if isinstance(v, torch.dtype):
            if v not in DTYPE_NAMES:
                raise ProtocolError(f"dtype {v} cannot be sent")
            return {"dtype": DTYPE_NAMES[v]}
        if isinstance(v, torch.device):
            return {"device": str(v)}
        if isinstance(v, Spec):
            return {"spec": v.name, "params": enc(v.params, depth + 1)}
        if isinstance(v, tuple | torch.Size):
            return {"tuple": [enc(x, depth + 1) for x in v]}
        if isinstance(v, list):
            return [enc(x, depth + 1) for x in v]
        if isinstance(v, dict):
            items = []
            for k, x in v.items():
                if not isinstance(k, str | int) or isinstance(k, bool):
                    raise ProtocolError(f"dict key {k!r} cannot be sent (str or int only)")
                items.append([k, enc(x, depth + 1)])
            return {"dict": items}
        # numpy scalars and the like: send as plain numbers when they say they are.
        if hasattr(v, "item") and callable(v.item) and getattr(v, "shape", None) == ():
            return enc(v.item(), depth)
        raise ProtocolError(f"a value of type {type(v).__name__} cannot be sent")

    def enc_tensor(t: torch.Tensor) -> Any:
        if t.layout != torch.strided:
            raise ProtocolError(f"only dense tensors can be sent, not {t.layout}")
        if t.dtype not in DTYPE_NAMES:
            raise ProtocolError(f"tensors of dtype {t.dtype} cannot be sent")
        device = t.device.type
        data = t.detach().to("cpu").contiguous()
        raw = _tensor_bytes(data)
        header = {
            "tensor": DTYPE_NAMES[t.dtype],
            "shape": list(t.shape),
            "offset": offset[0],
            "nbytes": len(raw),
            "on": device,
        }
        chunks.append(raw)
        pad = -len(raw) % ALIGN
        if pad:
            chunks.append(b"\0" * pad)
        offset[0] += len(raw) + pad
        return header

    header = enc(value, 0)
    return header, chunks


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    if t.numel() == 0:
        return memoryview(b"")
    # A uint8 view of the same storage gives the raw bytes of any dtype (bf16, fp8...),
    # without copying them.
    return memoryview(t.reshape(-1).view(torch.uint8).numpy()).cast("B")


def scan(header: Any) -> int:
    """A cheap pass over a parsed header, before anything is built: the number of values
    (MAX_ITEMS), of tensors (MAX_TENSORS) and the nesting (MAX_DEPTH) are bounded, each
    failing as soon as it is exceeded, and the tensors' byte ranges must tile a payload
    as `encode` lays it out (each starts where the previous one ended, padded to ALIGN;
    none overlaps another). Returns the payload's size in bytes that the header accounts
    for: a payload of any other size is not this header's (ProtocolError in decode).
    Field-by-field validation is decode's."""
    count = 0
    spans: list[tuple[int, int]] = []
    stack: list[tuple[Any, int]] = [(header, 0)]

    def push(children: list, depth: int) -> None:
        if count + len(stack) + len(children) > MAX_ITEMS:
            raise ProtocolError("too many values in one message")
        stack.extend((x, depth) for x in children)

    while stack:
        h, depth = stack.pop()
        count += 1
        if count > MAX_ITEMS:
            raise ProtocolError("too many values in one message")
        if depth > MAX_DEPTH:
            raise ProtocolError("value nested too deeply")
        if isinstance(h, list):
            push(h, depth + 1)
        elif isinstance(h, dict):
            if "tensor" in h:
                if len(spans) >= MAX_TENSORS:
                    raise ProtocolError(f"too many tensors in one message (at most {MAX_TENSORS:,})")
                off, nbytes = h.get("offset"), h.get("nbytes")
                if not all(type(x) is int and x >= 0 for x in (off, nbytes)):
                    raise ProtocolError("malformed tensor offset")
                spans.append((off, nbytes))
            elif len(h) == 1 and isinstance(h.get("tuple"), list):
                push(h["tuple"], depth + 1)
            elif len(h) == 1 and isinstance(h.get("dict"), list):
                pairs = h["dict"]
                if count + len(stack) + len(pairs) > MAX_ITEMS:
                    raise ProtocolError("too many values in one message")
                for pair in pairs:
                    if not (isinstance(pair, list) and len(pair) == 2):
                        raise ProtocolError("malformed dict entry")
                    stack.append((pair[1], depth + 1))
            elif len(h) == 2 and "spec" in h and "params" in h:
                stack.append((h["params"], depth + 1))
            # other kinds (int, float, dtype, device) are leaves; unknown ones are decode's to refuse
    spans.sort()
    end = 0
    for off, nbytes in spans:
        if off != end:
            raise ProtocolError("tensor bytes are not laid out as the message says (a gap, an overlap "
                                "or bytes outside it)")
        end = off + nbytes + (-nbytes % ALIGN)
    return end


def decode(header: Any, payload: bytes, *, device: str | None = None, specs: Any = None,
           place: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Any:
    """Decode a header and payload produced by `encode`.

    `device`: where tensors go; None keeps the device each tensor was sent from when
    it exists here, else the CPU. `specs`: a callable (name, params) -> object that
    builds registered specs; None refuses every spec (the judge never accepts specs
    from a child). `place`: where given, each tensor as decoded (on the CPU, a view of the
    payload where it can be) goes through it instead of to `device`. The header is scanned first (`scan`: counts, depth, layout), and the
    payload must be exactly the bytes its tensors cover: no trailing bytes, none short.
    """
    try:
        need = scan(header)
    except ProtocolError:
        raise
    except Exception as e:  # noqa: BLE001  (RecursionError, MemoryError...: a malformed message)
        raise ProtocolError(f"malformed message: {type(e).__name__}: {str(e)[:200]}") from None
    if need != len(payload):
        raise ProtocolError(f"the message's payload is {len(payload):,} bytes and its tensors cover {need:,} "
                            "(a declared size other than what was sent, or bytes after the last tensor)")
    count = [0]
    view = memoryview(payload)
    writable = isinstance(payload, bytearray) or type(payload).__name__ == "mmap"

    def dec(h: Any, depth: int) -> Any:
        count[0] += 1
        if count[0] > MAX_ITEMS:
            raise ProtocolError("too many values in one message")
        if depth > MAX_DEPTH:
            raise ProtocolError("value nested too deeply")
        if h is None or isinstance(h, bool | str | int):
            return h
        if isinstance(h, float):
            return h
        if isinstance(h, list):
            return [dec(x, depth + 1) for x in h]
        if not isinstance(h, dict) or len(h) == 0:
            raise ProtocolError(f"malformed value {str(h)[:80]!r}")
        if "tensor" in h:
            return dec_tensor(h)
        if set(h) == {"tuple"} and isinstance(h["tuple"], list):
            return tuple(dec(x, depth + 1) for x in h["tuple"])
        if set(h) == {"dict"} and isinstance(h["dict"], list):
            out = {}
            for pair in h["dict"]:
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise ProtocolError("malformed dict entry")
                k, x = pair
                if not isinstance(k, str | int) or isinstance(k, bool):
                    raise ProtocolError("malformed dict key")
                out[k] = dec(x, depth + 1)
            return out
        if set(h) == {"int"} and isinstance(h["int"], str):
            try:
                return int(h["int"])
            except ValueError as e:
                raise ProtocolError("malformed int") from e
        if set(h) == {"float"} and h["float"] in ("nan", "inf", "-inf"):
            return float(h["float"])
        if set(h) == {"dtype"}:
            if h["dtype"] not in DTYPES:
                raise ProtocolError(f"unknown dtype {h['dtype']!r}")
            return DTYPES[h["dtype"]]
        if set(h) == {"device"} and isinstance(h["device"], str):
            return torch.device(h["device"]) if h["device"] in ("cpu", "cuda") or h["device"].startswith("cuda:") else _bad("device")
        if set(h) == {"spec", "params"} and isinstance(h["spec"], str):
            if specs is None:
                raise ProtocolError("problem specs are not accepted from this side")
            return specs(h["spec"], dec(h["params"], depth + 1))
        raise ProtocolError(f"unknown value kind {sorted(h)[:4]}")

    def dec_tensor(h: dict) -> torch.Tensor:
        if set(h) != {"tensor", "shape", "offset", "nbytes", "on"}:
            raise ProtocolError("malformed tensor header")
        name, shape, off, nbytes = h["tensor"], h["shape"], h["offset"], h["nbytes"]
        if name not in DTYPES:
            raise ProtocolError(f"tensors of dtype {name!r} are not accepted")
        dtype = DTYPES[name]
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_NDIM
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
        ):
            raise ProtocolError("malformed tensor shape")
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (off, nbytes)):
            raise ProtocolError("malformed tensor offset")
        numel = math.prod(shape)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if numel * itemsize != nbytes or off + nbytes > len(view):
            raise ProtocolError("tensor bytes do not match its shape or lie outside the message")
        if numel == 0:
            t = torch.empty(shape, dtype=dtype)
        elif writable and off % ALIGN == 0:
            # Zero copy: the tensor is a view of the received buffer, which nothing else owns.
            t = torch.frombuffer(payload, dtype=torch.uint8, count=nbytes, offset=off).view(dtype).reshape(shape)
        else:
            raw = bytearray(view[off : off + nbytes])
            t = torch.frombuffer(raw, dtype=torch.uint8).view(dtype).reshape(shape)
        if place is not None:
            return place(t)
        target = device if device is not None else h["on"]
        if target not in ("cpu", None) and not (target.startswith("cuda") and torch.cuda.is_available()):
            target = "cpu"
        return t.to(target) if target and target != "cpu" else t

    def _bad(what: str):
        raise ProtocolError(f"malformed {what}")

    try:
        return dec(header, 0)
    except ProtocolError:
        raise
    except Exception as e:  # noqa: BLE001  (any other failure to decode is a malformed message)
        raise ProtocolError(f"malformed message: {type(e).__name__}: {str(e)[:200]}") from None


def dumps_header(header: Any) -> bytes:
    return json.dumps(header, separators=(",", ":"), allow_nan=False).encode()


def loads_header(raw: bytes) -> Any:
    """Parse a header; anything that is not JSON, or nests deeper than json's C scanner
    goes (the recursion limit: it raises RecursionError at once), is a ProtocolError."""
    try:
        return json.loads(raw.decode("utf-8"))
    except Exception as e:  # noqa: BLE001  (RecursionError from 5000 "[", MemoryError...: all malformed)
        raise ProtocolError(f"malformed message header: {type(e).__name__}: {str(e)[:200]}") from None
