"""Every message between the judge and the child: one class per kind, with the fields it
may carry and their bounds, checked on receipt. This module is the only place a key of
the wire format is spelled; everything else reads and writes these classes.

The judge sends a `Request` (load the submission, call a function, run a harness task,
ping, collect garbage); the child answers each with a `Reply`. A reply's `error` is a
`Failure`; a load's problems are `Failure`s with the line of the statement that failed.
The two envelopes say that the bytes went through a shared file instead of the pipe:
`SharedRequest` (the judge's file for this call) and `SharedReply` (the reply file, only
where the request offered it: `Request.reply_file`).

Values (`args`, `kwargs`, `value`, `args_after`) are the codec's (codec.py: tensors,
numbers, strings, containers, registered specs), decoded before the message is built;
what the child reports of itself (`forbidden`, `watch`, `guard`, `exec_lock`) is
checked for shape and size here, and read by the judge as the child's report, never as
evidence for points where its process could forge it (DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .codec import ProtocolError

OPS = ("load", "call", "task", "ping", "collect")
MAX_NAMES = 10_000     # names a submission defines
MAX_FINDINGS = 200     # forbidden routines the child reports in one reply
MAX_PROBLEMS = 20      # statements that failed at load
MAX_FRAMES = 20        # a failure's traceback frames in the student's code
MAX_TEXT = 4_000       # a failure's message, once cut
MAX_REPORT_KEYS = 64   # keys of a report dict (watch, guard, exec_lock)


def _bad(what: str):
    raise ProtocolError(f"malformed message: {what}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _text(v, what: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(v, str):
        _bad(what)
    return v[:limit]


def _report(v, what: str) -> dict | None:
    """A small dict of the child's own report: string keys, at most MAX_REPORT_KEYS."""
    if v is None:
        return None
    if not (isinstance(v, dict) and len(v) <= MAX_REPORT_KEYS and all(isinstance(k, str) for k in v)):
        _bad(what)
    return v


@dataclass(frozen=True)
class Failure:
    """What went wrong on the child's side: an exception's type and message, and the
    frames of the traceback that lie in the student's code ([line, function, text])."""

    type: str
    message: str
    frames: tuple = ()
    line: int | None = None  # a load problem: the line of the statement that failed

    def to_wire(self) -> dict:
        out = {"type": self.type, "message": self.message, "frames": [list(f) for f in self.frames]}
        if self.line is not None:
            out["line"] = self.line
        return out

    @classmethod
    def from_wire(cls, v: Any) -> Failure:
        if not (isinstance(v, dict) and set(v) <= {"type", "message", "frames", "line"}):
            _bad("failure")
        frames = v.get("frames", [])
        if not (isinstance(frames, list) and len(frames) <= MAX_FRAMES and all(
                isinstance(f, list) and len(f) == 3 and _is_int(f[0]) and isinstance(f[1], str)
                and isinstance(f[2], str) for f in frames)):
            _bad("failure frames")
        line = v.get("line")
        if line is not None and not _is_int(line):
            _bad("failure line")
        return cls(_text(v.get("type", "Exception"), "failure type", 200), _text(v.get("message", ""), "message"),
                   tuple((f[0], f[1][:200], f[2][:400]) for f in frames), line)


def _watch(v: Any) -> dict | None:
    """A watched call's allocation report (child/watch.py, and CUDA's allocator peak on a
    GPU): each field of the type the judge reads, or the reply is refused."""
    if v is None:
        return None
    if not (isinstance(v, dict) and set(v) <= {"largest", "allocations", "intact", "cuda_peak_extra_bytes"}):
        _bad("watch report")
    largest = v.get("largest")
    if largest is not None and not (
            isinstance(largest, dict) and set(largest) <= {"elements", "shape", "dtype", "op", "line"}
            and _is_int(largest.get("elements", 0)) and (largest.get("line") is None or _is_int(largest["line"]))
            and isinstance(largest.get("shape", []), list) and len(largest.get("shape", [])) <= 64
            and all(_is_int(x) for x in largest.get("shape", []))
            and isinstance(largest.get("dtype", ""), str) and isinstance(largest.get("op", ""), str)):
        _bad("watch report's largest allocation")
    if not (_is_int(v.get("allocations", 0)) and isinstance(v.get("intact", False), bool)
            and (v.get("cuda_peak_extra_bytes") is None or _is_int(v["cuda_peak_extra_bytes"]))):
        _bad("watch report")
    return v


def _findings(v: Any) -> list[dict]:
    """Forbidden routines the child's tracer or guard saw: {"api", "function", "line"}."""
    if not (isinstance(v, list) and len(v) <= MAX_FINDINGS):
        _bad("forbidden findings")
    out = []
    for f in v:
        if not (isinstance(f, dict) and set(f) <= {"api", "function", "line"}):
            _bad("forbidden finding")
        api, fn, line = f.get("api"), f.get("function"), f.get("line")
        if not (isinstance(api, str) and (fn is None or isinstance(fn, str)) and (line is None or _is_int(line))):
            _bad("forbidden finding")
        out.append({"api": api[:200], "function": fn[:200] if fn else fn, "line": line})
    return out


def finding(api: str, function: str | None, line: int | None) -> dict:
    """One forbidden routine seen: the record the child sends and the judge keeps."""
    return {"api": api, "function": function, "line": line}


@dataclass(frozen=True)
class Request:
    op: str
    source: str | None = None          # load: the extracted code
    fn: str | None = None              # call: the student's function; task: the harness task
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    return_args: bool = False          # the judge reads the inputs back after the call
    inference: bool = False            # run under torch.inference_mode()
    watch: bool = False                # watch the call's allocations
    reply_file: str | None = None      # the reply file this call offers (a large reply may use it)

    def to_wire(self) -> dict:
        out: dict[str, Any] = {"op": self.op}
        if self.op == "load":
            out["source"] = self.source
        elif self.op in ("call", "task"):
            out |= {"fn": self.fn, "args": list(self.args), "kwargs": dict(self.kwargs),
                    "return_args": self.return_args, "inference": self.inference, "watch": self.watch}
        if self.reply_file is not None:
            out["reply_shm"] = self.reply_file
        return out

    @classmethod
    def from_wire(cls, v: Any) -> Request:
        if not (isinstance(v, dict) and v.get("op") in OPS):
            _bad(f"unknown op {str(v.get('op') if isinstance(v, dict) else v)[:40]!r}")
        op = v["op"]
        allowed = {"op", "reply_shm"} | ({"source"} if op == "load" else set()) | (
            {"fn", "args", "kwargs", "return_args", "inference", "watch"} if op in ("call", "task") else set())
        if not set(v) <= allowed:
            _bad(f"{op} request with {sorted(set(v) - allowed)[:4]}")
        reply_file = v.get("reply_shm")
        if reply_file is not None and not isinstance(reply_file, str):
            _bad("reply file")
        if op == "load":
            return cls(op, source=_text(v.get("source"), "source", 1 << 30), reply_file=reply_file)
        if op in ("ping", "collect"):
            return cls(op, reply_file=reply_file)
        fn, args, kwargs = v.get("fn"), v.get("args", []), v.get("kwargs", {})
        if not (isinstance(fn, str) and isinstance(args, list) and isinstance(kwargs, dict)
                and all(isinstance(k, str) for k in kwargs)):
            _bad(f"{op} request")
        flags = [v.get(k, False) for k in ("return_args", "inference", "watch")]
        if not all(isinstance(b, bool) for b in flags):
            _bad(f"{op} request flags")
        return cls(op, fn=fn, args=args, kwargs=kwargs, return_args=flags[0], inference=flags[1], watch=flags[2],
                   reply_file=reply_file)


_REPLY_KEYS = {"ok", "value", "error", "seconds", "forbidden", "watch", "args_after",
               "names", "guard", "exec_lock", "problems", "device"}


@dataclass
class Reply:
    ok: bool
    value: Any = None
    error: Failure | None = None
    seconds: float = 0.0
    forbidden: list[dict] = field(default_factory=list)
    watch: dict | None = None          # a watched call: the child's allocation report
    args_after: list | None = None     # the child's own account of its inputs (a call that sent no tensor)
    # A load's reply only:
    names: list[str] = field(default_factory=list)
    guard: dict | None = None          # what the guard made raise (a summary)
    exec_lock: dict | None = None      # how new programs are refused (child/execlock.py)
    problems: list[Failure] = field(default_factory=list)
    device: str | None = None          # where the child runs student code ("cpu" without a GPU)

    def to_wire(self) -> dict:
        out: dict[str, Any] = {"ok": self.ok, "seconds": self.seconds, "forbidden": self.forbidden}
        if self.value is not None:
            out["value"] = self.value
        if self.error is not None:
            out["error"] = self.error.to_wire()
        for key in ("watch", "args_after", "guard", "exec_lock", "device"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.names:
            out["names"] = self.names
        if self.problems:
            out["problems"] = [p.to_wire() for p in self.problems]
        return out

    @classmethod
    def from_wire(cls, v: Any) -> Reply:
        if not isinstance(v, dict):
            _bad("reply is not a message")
        if not set(v) <= _REPLY_KEYS:
            _bad(f"reply with {sorted(set(v) - _REPLY_KEYS)[:4]}")
        ok, seconds = v.get("ok"), v.get("seconds", 0.0)
        if not isinstance(ok, bool):
            _bad("reply without ok")
        if not (isinstance(seconds, int | float) and not isinstance(seconds, bool)):
            _bad("reply seconds")
        names = v.get("names", [])
        if not (isinstance(names, list) and len(names) <= MAX_NAMES and all(isinstance(n, str) for n in names)):
            _bad("names")
        problems = v.get("problems", [])
        if not (isinstance(problems, list) and len(problems) <= MAX_PROBLEMS):
            _bad("problems")
        args_after = v.get("args_after")
        if args_after is not None and not isinstance(args_after, list):
            _bad("args_after")
        error = v.get("error")
        device = v.get("device")
        if device is not None and not (isinstance(device, str) and len(device) <= 32):
            _bad("device")
        return cls(ok=ok, value=v.get("value"), error=Failure.from_wire(error) if error is not None else None,
                   seconds=float(seconds), forbidden=_findings(v.get("forbidden", [])),
                   watch=_watch(v.get("watch")), args_after=args_after, names=names,
                   guard=_report(v.get("guard"), "guard"), exec_lock=_report(v.get("exec_lock"), "exec_lock"),
                   problems=[Failure.from_wire(p) for p in problems], device=device)

    def lock_summary(self) -> str:
        """How the load's child refuses new programs ("seccomp", "landlock"...), or why
        it could not: "none (...)" (child/execlock.py)."""
        lock = self.exec_lock or {}
        method, error = lock.get("method"), lock.get("error")
        if isinstance(method, str) and method:
            return method[:80]
        return f"none ({(error if isinstance(error, str) and error else 'not reported')[:200]})"

    @classmethod
    def failed(cls, kind: str, message: str, **kw) -> Reply:
        return cls(ok=False, error=Failure(kind, message), **kw)


# -- the envelopes of the two shared files ---------------------------------------------------
@dataclass(frozen=True)
class SharedRequest:
    """The frame of a request whose payload the judge wrote to a file of its own."""

    name: str
    size: int
    header: Any

    def to_wire(self) -> dict:
        return {"shm": self.name, "size": self.size, "h": self.header}

    @classmethod
    def from_wire(cls, v: Any) -> SharedRequest | None:
        """The envelope, or None where the frame is a request of its own (the pipe's)."""
        if not (isinstance(v, dict) and set(v) == {"shm", "size", "h"}):
            return None
        if not (isinstance(v["shm"], str) and _is_int(v["size"]) and v["size"] > 0):
            _bad("shared-memory request")
        return cls(v["shm"], v["size"], v["h"])


@dataclass(frozen=True)
class SharedReply:
    """The frame of a reply whose payload the child wrote to the judge's reply file."""

    size: int
    header: Any

    def to_wire(self) -> dict:
        return {"shm_reply": {"size": self.size, "h": self.header}}

    @staticmethod
    def claims(v: Any) -> bool:
        return isinstance(v, dict) and "shm_reply" in v

    @classmethod
    def from_wire(cls, v: Any, payload_bytes: int) -> SharedReply:
        """Only a frame that is nothing but the envelope (no payload of its own)."""
        if not (isinstance(v, dict) and set(v) == {"shm_reply"} and payload_bytes == 0):
            _bad("shared reply")
        info = v["shm_reply"]
        if not (isinstance(info, dict) and set(info) == {"size", "h"} and _is_int(info["size"]) and info["size"] > 0):
            _bad("shared reply")
        return cls(info["size"], info["h"])
