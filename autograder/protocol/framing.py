"""Length-prefixed frames on a pipe: magic, header length, payload length, header, payload.

What a reader accepts is bounded by its caller: `max_header` and `max_payload` cap
what a frame may claim, and memory is taken only as bytes arrive (a frame that claims
4 GiB and sends ten bytes costs ten bytes, not 4 GiB), so a hostile writer cannot make
the judge allocate more than `max_header + 2 * max_payload` for one frame. A writer
with a deadline never blocks past it (a reader that stops reading cannot hold it).
"""

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
_FIRST_CHUNK = 1 << 20  # memory for a frame grows from here, doubling, as bytes arrive


class FrameTimeout(Exception):
    """The other side did not finish a frame before the deadline."""


def write_frame(fd: int, message: Any, deadline: float | None = None) -> int:
    """Encode `message` and write it to file descriptor `fd` in full (by `deadline`, a
    time.monotonic() value, when given: the fd is then written without blocking).
    Returns the payload's size in bytes."""
    header, chunks = encode_chunks(message)
    return write_encoded(fd, header, chunks, deadline)


def write_encoded(fd: int, header: Any, chunks: list, deadline: float | None = None) -> int:
    """Write an already encoded message (codec.encode_chunks); returns the payload size."""
    head = dumps_header(header)
    size = sum(len(c) for c in chunks)
    _write_all(fd, _PREFIX.pack(MAGIC, len(head), size) + head, deadline)
    for chunk in chunks:
        _write_all(fd, chunk, deadline)
    return size


def _write_all(fd: int, data, deadline: float | None = None) -> None:
    view = memoryview(data).cast("B")
    if deadline is not None:
        os.set_blocking(fd, False)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise FrameTimeout() from None
            if not select.select([], [fd], [], left)[1]:
                raise FrameTimeout() from None
            continue
        view = view[n:]


def _wait_readable(fd: int, deadline: float | None) -> None:
    left = None if deadline is None else deadline - time.monotonic()
    if left is not None and left <= 0:
        raise FrameTimeout()
    if not select.select([fd], [], [], left)[0]:
        raise FrameTimeout()


def read_exact(fd: int, n: int, deadline: float | None = None) -> bytearray:
    """Read exactly `n` bytes; the buffer grows (doubling from 1 MiB) as bytes arrive."""
    buf = bytearray(min(n, _FIRST_CHUNK))
    got = 0
    while got < n:
        if got == len(buf):
            buf.extend(bytes(min(n, 2 * len(buf)) - len(buf)))
        if deadline is not None:
            _wait_readable(fd, deadline)
        view = memoryview(buf)
        try:
            k = os.readv(fd, [view[got:]])
        except BlockingIOError:
            view.release()
            _wait_readable(fd, deadline)
            continue
        view.release()
        if k == 0:
            raise EOFError("the other side closed the channel")
        got += k
    return buf


def read_frame(
    fd: int, max_payload: int = DEFAULT_MAX_PAYLOAD, deadline: float | None = None,
    max_header: int = MAX_HEADER,
) -> tuple[Any, bytearray]:
    """Read one frame; return (header, payload) undecoded.

    Raises EOFError (closed), FrameTimeout (past `deadline`, a time.monotonic() value)
    or ProtocolError (not a frame, too large, or a header that does not parse)."""
    magic, hlen, plen = _PREFIX.unpack(read_exact(fd, _PREFIX.size, deadline))
    if magic != MAGIC:
        raise ProtocolError("bad frame magic: the other side wrote something that is not a message")
    if hlen > max_header or plen > max_payload:
        raise ProtocolError(f"message too large ({hlen:,} header bytes, {plen:,} payload bytes; "
                            f"this call accepts at most {max_header:,} and {max_payload:,})")
    header = loads_header(bytes(read_exact(fd, hlen, deadline)))
    payload = read_exact(fd, plen, deadline)
    return header, payload
