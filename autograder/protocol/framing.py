"""Length-prefixed frames on a pipe: magic, header length, payload length, header, payload."""

from __future__ import annotations

import os
import select
import struct
import time
from typing import Any

from .codec import ProtocolError, dumps_header, encode_chunks, loads_header

MAGIC = b"DLO1"
_PREFIX = struct.Struct("<4sIQ")
MAX_HEADER = 64 << 20
DEFAULT_MAX_PAYLOAD = 4 << 30


def write_frame(fd: int, message: Any) -> None:
    """Encode `message` and write it to file descriptor `fd` in full."""
    header, chunks = encode_chunks(message)
    head = dumps_header(header)
    _write_all(fd, _PREFIX.pack(MAGIC, len(head), sum(len(c) for c in chunks)) + head)
    for chunk in chunks:
        _write_all(fd, chunk)


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]


class FrameTimeout(Exception):
    """The other side did not finish a frame before the deadline."""


def read_exact(fd: int, n: int, deadline: float | None = None) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise FrameTimeout()
        k = os.readv(fd, [view[got:]])
        if k == 0:
            raise EOFError("the other side closed the channel")
        got += k
    return buf


def read_frame(
    fd: int, max_payload: int = DEFAULT_MAX_PAYLOAD, deadline: float | None = None
) -> tuple[Any, bytearray]:
    """Read one frame; return (header, payload) undecoded.

    Raises EOFError (closed), FrameTimeout (past `deadline`, a time.monotonic() value)
    or ProtocolError (not a frame, or too large)."""
    magic, hlen, plen = _PREFIX.unpack(read_exact(fd, _PREFIX.size, deadline))
    if magic != MAGIC:
        raise ProtocolError("bad frame magic: the other side wrote something that is not a message")
    if hlen > MAX_HEADER or plen > max_payload:
        raise ProtocolError(f"message too large ({hlen} header bytes, {plen} payload bytes)")
    header = loads_header(bytes(read_exact(fd, hlen, deadline)))
    payload = read_exact(fd, plen, deadline)
    return header, payload
