"""Bulk bytes between judge and child through files in the child's shared folder.

The pipe carries frames; a large payload goes through a file instead (page cache, one
copy each way, no pipe-sized hops): the judge's requests in a file of their own per
call (the child maps it shared, so inputs are views of it and the judge can read back
what the call did to them), the child's replies in the one reply file the judge made
for it, offered by the judge call by call. The frame that points to a file says how
many bytes, which must be exactly what its header's tensors cover (codec.scan, checked
before a byte is read); the reader takes that many, at most its budget, through its own
descriptor, into memory of its own, then drops the file's pages (truncated to 0: the
child can never keep pages the judge faulted in), and decodes with the same
validation as any frame (codec.decode: nothing is unpickled).
"""

from __future__ import annotations

import mmap
import os
import re
from pathlib import Path
from typing import Any

from .codec import ProtocolError, scan
from .messages import SharedReply

SHM_MIN_BYTES = 256 << 10  # payloads from this size on go through a shared file, not the pipe
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\.bin")


def _pwrite_all(fd: int, chunks: list) -> int:
    offset = 0
    for c in chunks:
        view = memoryview(c).cast("B")
        while view:
            n = os.pwrite(fd, view, offset)
            offset += n
            view = view[n:]
    return offset


def write_shared(xfer: Path, chunks: list) -> tuple[int, Path]:
    """The judge: a new file in the child's shared folder holding `chunks`: (fd, path)."""
    import uuid

    path = Path(xfer) / f"call-{uuid.uuid4().hex[:16]}.bin"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
    try:
        os.fchmod(fd, 0o666)
        _pwrite_all(fd, chunks)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return fd, path


class ReplyFile:
    """The judge's end of the file a child writes its large replies to. The judge made
    it (the child may open it by name, never create one: its folder is 0711) and reads
    it through its own descriptor."""

    NAME = "reply.bin"

    def __init__(self, xfer: Path):
        self.path = Path(xfer) / self.NAME
        self.name = self.NAME
        self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
        os.fchmod(self.fd, 0o666)

    def prepare(self, budget: int) -> None:
        """Make the file at least this call's reply budget long, for a call that offers it
        (sparse: no memory until written). The child writes through a shared mapping,
        inside the file's size: the file-size limit (RLIMIT_FSIZE) does not cut a large
        reply short; the judge reads at most the budget. The pages a reply dirties count
        in the child's memory cgroup, until the judge drops them after its take."""
        if os.fstat(self.fd).st_size < budget:
            os.ftruncate(self.fd, budget)

    def drop(self) -> None:
        """Free the file's pages (truncate it to 0; the next `prepare` extends it sparse
        again): no page the judge read, and none the child wrote, outlives the exchange,
        so the child cannot keep data in page cache that was charged to the judge. A
        child that kept a mapping of it gets SIGBUS there: its own problem."""
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass

    def take(self, size: Any, header: Any, max_payload: int) -> tuple[Any, Any]:
        """(header, payload) of a reply the child wrote here; ProtocolError where the
        frame's claim does not hold (not an int, over the budget, other than the bytes its
        header's tensors cover, past the file's end). Only the declared bytes are read,
        once the claim is checked; the file's pages are dropped afterwards, whatever
        happened."""
        try:
            if not (isinstance(size, int) and not isinstance(size, bool) and 0 < size <= max_payload):
                raise ProtocolError("malformed or oversized shared reply")
            need = scan(header)  # bounded: counts and depth fail fast
            if need != size:
                raise ProtocolError(f"the shared reply declares {size:,} bytes and its tensors cover {need:,}")
            if os.fstat(self.fd).st_size < size:
                raise ProtocolError("the shared reply is shorter than its frame says")
            # Anonymous memory of the judge's own (zeroed lazily by the kernel, no memset):
            # the child can change its file afterwards, never these bytes.
            populate = getattr(mmap, "MAP_POPULATE", 0)  # one fault-in for all pages: 36 -> 22 ms per 64 MiB here
            payload = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)
            got = 0
            with memoryview(payload) as view:
                while got < size:  # one read returns at most ~2 GiB
                    n = os.preadv(self.fd, [view[got:]], got)
                    if n <= 0:
                        break
                    got += n
            if got != size:
                payload.close()
                raise ProtocolError("the shared reply is shorter than its frame says")
            return header, payload
        finally:
            self.drop()

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def child_write_reply(xfer: str | None, name: Any, header: Any, chunks: list) -> SharedReply | None:
    """The child: put a large reply's payload in the judge's reply file (through a shared
    mapping, within the size the judge gave the file: its budget); the header of the
    frame that points to it, or None (small, no file, too large, or it could not be
    written: the pipe then carries it, and the budget is enforced there)."""
    size = sum(len(c) for c in chunks)
    if not (xfer and isinstance(name, str) and NAME.fullmatch(name) and size >= SHM_MIN_BYTES):
        return None
    try:
        fd = os.open(os.path.join(xfer, name), os.O_RDWR)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_size < size:
            return None
        with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as view:
            offset = 0
            for c in chunks:
                n = len(c)
                view[offset:offset + n] = memoryview(c).cast("B")
                offset += n
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return SharedReply(size, header)
