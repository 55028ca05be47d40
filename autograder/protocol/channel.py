"""The channel between the judge and the child: the only code that touches frames and the
two shared files. Each end deals in messages (messages.py), never in frames or keys.

Three transports: frames over the pipe (every message's header; small payloads), the
request file (the judge writes a call's payload to a file of its own in the child's
shared folder; the child maps it shared, so its tensors are views of the judge's file
and the judge reads back what the call did to them), and the reply file (the judge
offers it per call; a large reply's payload goes there). The judge decides, call by
call, which it offers; a reply by a transport it did not offer fails the call.

On a GPU the child copies a call's inputs from the request file to the device and back
after the call (`DeviceStaging`), so the judge reads the inputs' state from its own file
there too.
"""

from __future__ import annotations

import mmap
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .codec import ProtocolError, decode, encode_chunks
from .framing import read_frame, write_encoded, write_frame
from .messages import Failure, Reply, Request, SharedReply, SharedRequest
from .shm import SHM_MIN_BYTES, ReplyFile, child_write_reply, write_shared

REQUEST_FILE = re.compile(r"[A-Za-z0-9_-]{1,64}\.bin")


# -- the judge's end -----------------------------------------------------------------------
class Exchange:
    """One request and its reply, from the judge's side.

    `Exchange(req_fd, rep_fd, xfer, reply_file)`, then `encode(request, read_back)` (the
    bytes it will send), `send(max_payload, deadline)`, wait for the child, `receive(...)`,
    `inputs_after()` where the request was read back, and `close()` whatever happened
    (the request file truncated and removed, the reply file's pages dropped).
    `reply_file`: the reply file this call offers (None: the pipe only)."""

    def __init__(self, req_fd: int, rep_fd: int, xfer: Path | None, reply_file: ReplyFile | None):
        self.req_fd, self.rep_fd, self.xfer, self.reply_file = req_fd, rep_fd, xfer, reply_file
        self.request_file: tuple[int, Path] | None = None
        self.header: Any = None
        self.chunks: list = []
        self.size = 0
        self.read_back = False

    def encode(self, request: Request, read_back: bool = False) -> int:
        """Encode `request` (with the reply file's offer) and return its payload's size.
        `read_back`: the payload goes through a request file whatever its size, so that
        `inputs_after` can read what the call left in it."""
        if self.reply_file is not None:
            request = replace(request, reply_file=self.reply_file.name)
        self.header, self.chunks = encode_chunks(request.to_wire())
        self.size = sum(len(c) for c in self.chunks)
        self.read_back = read_back
        return self.size

    def send(self, max_payload: int, deadline: float) -> None:
        if self.reply_file is not None:
            self.reply_file.prepare(max_payload)
        if self.xfer is not None and self.size > 0 and (self.read_back or self.size >= SHM_MIN_BYTES):
            self.request_file = write_shared(Path(self.xfer), self.chunks)
            envelope = SharedRequest(self.request_file[1].name, self.size, self.header)
            write_encoded(self.req_fd, envelope.to_wire(), [], deadline=deadline)
        else:
            write_encoded(self.req_fd, self.header, self.chunks, deadline=deadline)
        self.chunks = []

    def receive(self, max_header: int, max_payload: int, deadline: float) -> Reply:
        """The child's reply, within its budgets, by a transport this call offered."""
        header, payload = read_frame(self.rep_fd, max_payload=max_payload, max_header=max_header, deadline=deadline)
        if SharedReply.claims(header):
            if self.reply_file is None:
                raise ProtocolError("a reply through the shared file, which this call did not offer")
            shared = SharedReply.from_wire(header, len(payload))
            header, payload = self.reply_file.take(shared.size, shared.header, max_payload)
        return Reply.from_wire(decode(header, payload, device=None, specs=None))

    def inputs_after(self, keep_specs) -> list | None:
        """The call's arguments as the call left them, read from the request file by the
        judge (never the child's report); None where the request did not go through one."""
        if self.request_file is None or not self.read_back:
            return None
        after = bytearray(self.size)
        if os.preadv(self.request_file[0], [after], 0) != self.size:
            raise ProtocolError("the shared file was truncated")
        return list(Request.from_wire(decode(self.header, after, device=None, specs=keep_specs)).args)

    def close(self) -> None:
        if self.reply_file is not None:
            self.reply_file.drop()  # no page of it outlives the call, whoever wrote it
        if self.request_file is not None:
            fd, path = self.request_file
            try:
                os.ftruncate(fd, 0)  # a child that kept a mapping of it keeps nothing the judge paid for
            except OSError:
                pass
            os.close(fd)
            path.unlink(missing_ok=True)
            self.request_file = None


# -- the child's end -----------------------------------------------------------------------
class DeviceStaging:
    """A GPU call's inputs, staged through the judge's shared file so that the judge reads
    what the call did to them from its own file (issue 25, point 6), as on the CPU.

    Each tensor the request carries is a view of the file; `place` copies it to the
    device the student's code gets, then inverts every byte of the view, so the file
    holds no copy of the input while the call runs; `write_back`, after the call, copies
    each device tensor back over its view. A child that skips the write-back leaves the
    inverted bytes, which differ from the input everywhere: its inputs read as changed.
    A device tensor whose shape the call changed (`resize_`, `set_`) is not written
    back: its view keeps the inverted bytes, and the input reads as changed. (A pageable
    host-to-device copy has read its source when `.to` returns, so the view can be
    overwritten at once.) This stops a child that skips the write-back, by accident or
    patch; a child that rewrites the file itself (inverting it back, say) makes the
    judge's file hold what a correct function leaves, as on the CPU, where the file is
    the inputs' only copy and such a child has only made its function behave."""

    def __init__(self, device: str):
        self.device = device
        self.pairs: list[tuple[torch.Tensor, torch.Tensor, tuple]] = []

    def place(self, view: torch.Tensor) -> torch.Tensor:
        on_device = view.to(self.device, copy=True)
        if view.numel():
            if view.dtype == torch.bool:  # any byte but 0 reads as True: flip the value instead
                view.logical_not_()
            else:
                view.reshape(-1).view(torch.uint8).bitwise_not_()
            self.pairs.append((view, on_device, tuple(on_device.shape)))
        return on_device

    def write_back(self) -> None:
        for view, on_device, shape in self.pairs:
            if tuple(on_device.shape) == shape:  # values as the caller would see them, strides and all
                view.copy_(on_device)
        self.pairs.clear()


class ChildChannel:
    """The child's end: `receive` the next request (EOFError when the judge is gone),
    `reply` to it. A request's tensors go to `device` (through DeviceStaging on a GPU
    where the judge sent a request file), or stay on the host where `host` (a harness
    whose processes start CUDA themselves)."""

    def __init__(self, req_fd: int, rep_fd: int, xfer: str | None):
        self.req_fd, self.rep_fd, self.xfer = req_fd, rep_fd, xfer
        self.staging: DeviceStaging | None = None
        self.from_file = False  # the last request came through the judge's file (it reads the inputs there)

    def receive(self, device: str, host: bool, specs) -> Request:
        """The next request; ProtocolError where it is malformed (its reply says so)."""
        self.staging = None
        header, payload = read_frame(self.req_fd)
        shared = SharedRequest.from_wire(header)
        self.from_file = shared is not None
        if shared is not None:
            header, payload = shared.header, self._map(shared)
            if not host and device != "cpu":
                self.staging = DeviceStaging(device)
        message = decode(header, payload, device=None if host else device, specs=specs,
                         place=self.staging.place if self.staging is not None else None)
        return Request.from_wire(message)

    def _map(self, shared: SharedRequest):
        """The judge's file for this call, mapped shared: its tensors are views of it."""
        if not (self.xfer and REQUEST_FILE.fullmatch(shared.name)):
            raise ProtocolError("malformed shared-memory request")
        fd = os.open(os.path.join(self.xfer, shared.name), os.O_RDWR)
        try:
            if os.fstat(fd).st_size != shared.size:
                raise ProtocolError("shared-memory file of the wrong size")
            return mmap.mmap(fd, shared.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)

    def finish_call(self) -> None:
        """After the call: what it left in the inputs goes back to the judge's file."""
        if self.staging is not None:
            self.staging.write_back()
            self.staging = None

    def reply(self, reply: Reply, request: Request | None) -> None:
        """Send `reply`; a large one through the reply file where `request` offered it. A
        value that cannot be encoded fails the call with a reason (never the channel)."""
        offered = request.reply_file if request is not None else None
        if self.from_file:
            reply.args_after = None  # the judge reads the inputs from its own file: no second copy
        try:
            header, chunks = encode_chunks(reply.to_wire())
        except Exception as e:  # noqa: BLE001  (ProtocolError, or a tensor torch cannot even read: meta, a lazy view)
            bad = Reply(ok=False, forbidden=reply.forbidden, error=Failure(
                "BadReturnValue", f"your function returned something that cannot be graded: {e}"))
            write_frame(self.rep_fd, bad.to_wire())
            return
        pointer = child_write_reply(self.xfer, offered, header, chunks) if offered else None
        if pointer is not None:
            write_encoded(self.rep_fd, pointer.to_wire(), [])
        else:
            write_encoded(self.rep_fd, header, chunks)
