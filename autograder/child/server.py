"""The child's request loop: load the submission, answer calls and harness tasks."""

from __future__ import annotations

import ast
import importlib.util
import linecache
import os
import sys
import time
import traceback
import types
from collections.abc import Mapping
from typing import Any

import torch

from autograder.protocol import ProtocolError, decode, read_frame, write_frame
from autograder.protocol import specs as spec_registry

from .forbidden import ForbiddenTracer
from .watch import AllocationWatch

SUBMISSION_FILE = "submission.py"


def _student_frames(tb) -> list[list]:
    """The frames of a traceback that lie in the student's code: [line, function, text]."""
    frames = []
    for fs in traceback.extract_tb(tb):
        if fs.filename == SUBMISSION_FILE:
            frames.append([fs.lineno, fs.name, (fs.line or "").strip()])
    return frames[-4:]


def _error(exc: BaseException, kind: str | None = None) -> dict:
    return {
        "type": kind or type(exc).__name__,
        "message": str(exc)[:2000],
        "frames": _student_frames(exc.__traceback__),
    }


def _signature_error(req: dict, target, args: list, kwargs: dict, exc: TypeError) -> dict | None:
    """A TypeError raised by the call itself (no student line ran): the student's function
    or class does not take the arguments the assignment specifies. Says so, with both
    signatures, instead of a bare TypeError."""
    import inspect

    if req["op"] == "call":
        try:
            sig = inspect.signature(target)
        except (TypeError, ValueError):
            return None
        try:
            sig.bind(*args, **kwargs)
            return None  # it binds: the TypeError came from elsewhere
        except TypeError as bind:
            shown = ", ".join([*("_" for _ in args), *(f"{k}=..." for k in kwargs)])
            return {"type": "SignatureError", "frames": [],
                    "message": (f"`{req['fn']}` cannot be called as the assignment specifies: the grader calls "
                                f"{req['fn']}({shown}), and your definition is {req['fn']}{sig} ({bind})")[:2000]}
    text = str(exc)
    if any(s in text for s in ("positional argument", "keyword argument", "required argument", "takes no arguments")):
        return {"type": "SignatureError", "frames": [],
                "message": (f"the grader's task {req['fn']} called your code as the assignment specifies, "
                            f"and the call did not fit your definition: {text}")[:2000]}
    return None


class MissingFunction(KeyError):
    """A harness task asked for a name the submission does not define (its type name is
    what the judge turns into the student's "not defined" feedback)."""

    def __str__(self) -> str:
        return str(self.args[0])


class StudentNames(Mapping):
    """The student's namespace as a harness task sees it: a name the submission does not
    define says so, instead of a bare KeyError('AdamW')."""

    def __init__(self, names: dict, task: str):
        self._names, self._task = names, task

    def __getitem__(self, key):
        try:
            return self._names[key]
        except KeyError:
            raise MissingFunction(f"`{key}` is not defined at the top level of your submission (the grader's "
                                  f"task {self._task} needs it)") from None

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class Child:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.namespace: dict[str, Any] = {}
        self.load_error: dict | None = None
        self.tracer = ForbiddenTracer(cfg.get("forbidden", []), SUBMISSION_FILE)
        self.harness: types.ModuleType | None = None
        device = cfg.get("device", "cpu")
        self.device = device if (device == "cpu" or torch.cuda.is_available()) else "cpu"
        if cfg.get("watch_memory"):
            # The first dispatch mode imports and allocates ~80 MB: pay that before any
            # measurement, so only the student's own allocations show in one.
            with AllocationWatch(SUBMISSION_FILE):
                torch.ones(2, 2) @ torch.ones(2, 2)

    def _guard(self) -> dict | None:
        """Make the assignment's forbidden routines raise, below Python, before any harness
        or student code exists in this process (see guard.py)."""
        spec = self.cfg.get("guard") or {}
        if not (spec.get("patterns") or spec.get("block_autograd")):
            return None
        from autograder.child import guard

        summary = guard.install(list(spec.get("patterns") or []), bool(spec.get("block_autograd")))
        problems = guard.verify()
        if problems:
            raise RuntimeError(f"the guard did not hold: {problems[:3]}")
        # Its helpers (a raw memory writer among them) are no use to the code that follows.
        sys.modules.pop("autograder.child.guard", None)
        for name in ("ctypes", "_tp_word", "_force_setattr", "_incref", "_leak", "_type_modified", "_swap",
                     "_block_ops", "_block_python", "_block_autograd", "_neuter_function", "_neuter_class",
                     "_block_c10d_backends", "install", "verify", "_installed", "_CPP_CALL"):
            if hasattr(guard, name):
                delattr(guard, name)
        # ... and the source of the Python objects it neutered is made unreadable in load()
        # (execlock.hide): re-running torch's own adam.py would build them anew.
        self.hidden_files = list(summary["python"].get("sources") or [])
        return {"ops": len(summary["dispatcher"]["ops"]), "autograd": summary["autograd"] is not None,
                "python": len(summary["python"]["neutered"]), "seconds": round(summary["seconds"]["total"], 3)}

    def load(self, source: str, harness_path: str | None) -> dict:
        try:
            guard = self._guard()
        except Exception as e:  # noqa: BLE001  (never run student code unguarded)
            return {"ok": False, "names": [], "problems": [], "seconds": 0.0, "forbidden": [],
                    "error": {"type": "GuardError", "message": f"{type(e).__name__}: {str(e)[:500]}", "frames": []}}
        try:
            # No new program from here on (execlock.py): a second interpreter would run unguarded.
            from . import execlock

            gpu = self.device != "cpu"
            exec_lock = execlock.lock(execlock.gpu_programs() if gpu else None)
            # On a GPU path the dynamic loader must stay executable (the compilers need it),
            # and `ld-linux.so python` would start an unguarded Python: make every Python
            # interpreter on this machine unreadable, so the loader cannot load one.
            hidden = [*getattr(self, "hidden_files", []), *(execlock.interpreters() if gpu else [])]
            exec_lock["hidden"] = len(execlock.hide(hidden).get("hidden", []))
        except Exception as e:  # noqa: BLE001  (the judge marks forbidden verdicts unenforced)
            exec_lock = {"method": None, "error": f"{type(e).__name__}: {str(e)[:300]}"}
        self.tracer.install()
        if harness_path:
            spec = importlib.util.spec_from_file_location("harness", harness_path)
            self.harness = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(self.harness)
        module = types.ModuleType("submission")
        module.__file__ = SUBMISSION_FILE
        sys.modules["submission"] = module
        self.namespace = module.__dict__
        # Register the source so tracebacks can quote the student's own lines.
        linecache.cache[SUBMISSION_FILE] = (len(source), None, source.splitlines(True), SUBMISSION_FILE)
        started = time.perf_counter()
        # Statement by statement: an import that fails here (a plotting library, say) or a
        # top-level line that raises costs only what depends on it, not the whole file.
        self.load_problems: list[dict] = []
        try:
            tree = ast.parse(source, SUBMISSION_FILE)
        except SyntaxError as e:
            self.load_error = {"type": "SyntaxError", "message": f"{e.msg} (line {e.lineno})",
                               "frames": [[e.lineno or 0, "<module>", (e.text or "").strip()]]}
            tree = ast.Module(body=[], type_ignores=[])
        for node in tree.body:
            try:
                exec(compile(ast.Module(body=[node], type_ignores=[]), SUBMISSION_FILE, "exec"), self.namespace)
            except BaseException as e:  # noqa: BLE001  (SystemExit at import is the student's bug)
                err = _error(e)
                err["line"] = node.lineno
                self.load_problems.append(err)
        names = sorted(k for k, v in self.namespace.items()
                       if not k.startswith("__") and (callable(v) or isinstance(v, type)))
        return {"ok": self.load_error is None, "error": self.load_error, "names": names, "guard": guard,
                "exec_lock": exec_lock,
                "problems": self.load_problems[:20],
                "seconds": time.perf_counter() - started, "forbidden": self.tracer.take()}

    def specs(self, name: str, params: Any) -> Any:
        return spec_registry.build(name, params)

    def _watched(self, watch: AllocationWatch, target, args, kwargs):
        self._watch_intact = True
        watch.__enter__()
        try:
            return target(*args, **kwargs)
        finally:
            self._watch_intact = watch.active()
            if self._watch_intact:
                watch.__exit__(None, None, None)

    def call(self, req: dict) -> dict:
        args = list(req.get("args", []))
        kwargs = dict(req.get("kwargs", {}))
        if req["op"] == "call":
            fn = self.namespace.get(req["fn"])
            if fn is None:
                return {"ok": False, "error": {"type": "MissingFunction",
                        "message": f"`{req['fn']}` is not defined in your submission", "frames": []}}
            target = fn
        else:
            if self.harness is None or not hasattr(self.harness, req["fn"]):
                return {"ok": False, "error": {"type": "HarnessError",
                        "message": f"no harness task {req['fn']!r}", "frames": []}}
            target = getattr(self.harness, req["fn"])
            args = [StudentNames(self.namespace, req["fn"]), *args]
        self.tracer.take()
        watch = AllocationWatch(SUBMISSION_FILE) if req.get("watch") else None
        cuda = self.device != "cpu"
        if watch is not None and cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            cuda_before = torch.cuda.memory_allocated()
        started = time.perf_counter()
        try:
            # inference mode: the judge may call with autograd unusable (backprop by hand).
            with torch.inference_mode(bool(req.get("inference"))):
                if watch is None:
                    value = target(*args, **kwargs)
                else:
                    value = self._watched(watch, target, args, kwargs)
            if cuda:
                torch.cuda.synchronize()
        except BaseException as e:  # noqa: BLE001  (SystemExit/KeyboardInterrupt in student code)
            error = _error(e)
            if isinstance(e, TypeError) and not error["frames"]:
                error = _signature_error(req, target, args, kwargs, e) or error
            return {"ok": False, "error": error, "forbidden": self.tracer.take(),
                    "seconds": time.perf_counter() - started}
        seconds = time.perf_counter() - started
        reply = {"ok": True, "value": value, "seconds": seconds, "forbidden": self.tracer.take()}
        if watch is not None:
            reply["watch"] = watch.report(self._watch_intact)
            if cuda:
                reply["watch"]["cuda_peak_extra_bytes"] = torch.cuda.max_memory_allocated() - cuda_before
        if req.get("return_args"):
            # Objects built from specs (a model, an objective) go back as None: only data returns.
            after = list(args) if req["op"] == "call" else list(args[1:])
            reply["args_after"] = [a if isinstance(a, torch.Tensor | int | float | str | bool | list | tuple | dict)
                                   or a is None else None for a in after]
        return reply


def _shared(header, payload, xfer: str | None):
    """A request whose payload the judge put in a shared file (`{"shm": name, "size": n,
    "h": header}`): its tensors are views of that file, mapped shared, so what the call
    does to its inputs is in the judge's file, where the judge reads it after the reply.
    Returns (header, payload, mapped)."""
    if not (isinstance(header, dict) and set(header) == {"shm", "size", "h"}):
        return header, payload, False
    import mmap
    import re

    name, size = header["shm"], header["size"]
    if not (xfer and isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}\.bin", name)
            and isinstance(size, int) and size > 0):
        raise ProtocolError("malformed shared-memory request")
    fd = os.open(os.path.join(xfer, name), os.O_RDWR)
    try:
        if os.fstat(fd).st_size != size:
            raise ProtocolError("shared-memory file of the wrong size")
        view = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    return header["h"], view, True


class DeviceStaging:
    """A GPU call's inputs, staged through the judge's shared file so that the judge reads
    what the call did to them from its own file (issue 25, point 6), as on the CPU.

    Each tensor the request carries is a view of the file; `place` copies it to the
    device the student's code gets, then inverts every byte of the view, so the file
    holds no copy of the input while the call runs; `write_back`, after the call, copies
    each device tensor back over its view. A child that skips the write-back leaves the
    inverted bytes, which differ from the input everywhere: its inputs read as changed.
    A device tensor whose shape the call changed (`resize_`, `set_`) is not
    written back: its view keeps the inverted bytes, and the input reads as changed.
    (A pageable host-to-device copy has read its source when `.to` returns, so the view
    can be overwritten at once.)"""

    def __init__(self, device: str):
        self.device = device
        self.pairs: list[tuple[torch.Tensor, torch.Tensor, tuple]] = []

    def place(self, view: torch.Tensor) -> torch.Tensor:
        on_device = view.to(self.device, copy=True)
        if view.numel():
            view.reshape(-1).view(torch.uint8).bitwise_not_()
            self.pairs.append((view, on_device, tuple(on_device.shape)))
        return on_device

    def write_back(self) -> None:
        for view, on_device, shape in self.pairs:
            if tuple(on_device.shape) == shape:  # values as the caller would see them, strides and all
                view.copy_(on_device)
        self.pairs.clear()


def _reply(rep_fd: int, reply: dict, xfer: str | None, shm_name) -> None:
    """A reply frame; a large payload goes into the judge's reply file (protocol/shm.py)."""
    from autograder.protocol.codec import encode_chunks
    from autograder.protocol.framing import write_encoded
    from autograder.protocol.shm import child_write_reply

    header, chunks = encode_chunks(reply)
    pointer = child_write_reply(xfer, shm_name, header, chunks)
    if pointer is not None:
        write_encoded(rep_fd, pointer, [])
    else:
        write_encoded(rep_fd, header, chunks)


def serve(req_fd: int, rep_fd: int, cfg: dict) -> None:
    # Student prints go to the log (fd 1/2), never to the reply channel.
    child = Child(cfg)
    while True:
        try:
            header, payload = read_frame(req_fd)
        except EOFError:
            return
        req = None
        try:
            header, payload, mapped = _shared(header, payload, cfg.get("xfer"))
            # Tensors go to the grading device, unless the harness places them itself
            # (HOST_TENSORS: it forks processes that must start CUDA on their own).
            host = getattr(child.harness, "HOST_TENSORS", False)
            staged = DeviceStaging(child.device) if mapped and not host and child.device != "cpu" else None
            req = decode(header, payload, device=None if host else child.device, specs=child.specs,
                         place=staged.place if staged is not None else None)
            op = req.get("op") if isinstance(req, dict) else None
            if op == "load":
                reply = child.load(req["source"], cfg.get("harness"))
            elif op in ("call", "task"):
                reply = child.call(req)
            elif op == "ping":
                reply = {"ok": True, "value": "pong"}
            elif op == "collect":
                # Before a watched call: garbage in reference cycles (torch's load_state_dict
                # keeps the decoded state in one) freed during the call would hide its peak.
                import gc

                gc.collect()
                reply = {"ok": True, "value": None}
            else:
                reply = {"ok": False, "error": {"type": "ProtocolError", "message": f"unknown op {op!r}", "frames": []}}
            if staged is not None:
                staged.write_back()
        except ProtocolError as e:
            reply = {"ok": False, "error": {"type": "ProtocolError", "message": str(e), "frames": []}}
        try:
            _reply(rep_fd, reply, cfg.get("xfer"), req.get("reply_shm") if isinstance(req, dict) else None)
        except ProtocolError as e:
            write_frame(rep_fd, {"ok": False, "forbidden": reply.get("forbidden", []), "error": {
                "type": "BadReturnValue", "frames": [],
                "message": f"your function returned something that cannot be graded: {e}"}})
        sys.stdout.flush()
        sys.stderr.flush()
        # Drop this request's buffers now, not when the next one arrives: freed during a
        # watched call they would hide that much of its peak.
        header = payload = req = reply = None

