"""The child's request loop: load the submission, answer calls and harness tasks."""

from __future__ import annotations

import ast
import importlib.util
import linecache
import sys
import time
import traceback
import types
from collections.abc import Mapping
from typing import Any

import torch

from autograder.protocol import ProtocolError
from autograder.protocol import specs as spec_registry
from autograder.protocol.channel import ChildChannel
from autograder.protocol.messages import Failure, Reply, Request

from . import execlock
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


def _error(exc: BaseException, line: int | None = None) -> Failure:
    return Failure(type(exc).__name__, str(exc)[:2000], tuple(map(tuple, _student_frames(exc.__traceback__))), line)


def _signature_error(req: Request, target, args: list, kwargs: dict, exc: TypeError) -> Failure | None:
    """A TypeError raised by the call itself (no student line ran): the student's function
    or class does not take the arguments the assignment specifies. Says so, with both
    signatures, instead of a bare TypeError."""
    import inspect

    if req.op == "call":
        try:
            sig = inspect.signature(target)
        except (TypeError, ValueError):
            return None
        try:
            sig.bind(*args, **kwargs)
            return None  # it binds: the TypeError came from elsewhere
        except TypeError as bind:
            shown = ", ".join([*("_" for _ in args), *(f"{k}=..." for k in kwargs)])
            return Failure("SignatureError", (f"`{req.fn}` cannot be called as the assignment specifies: the grader "
                                              f"calls {req.fn}({shown}), and your definition is {req.fn}{sig} "
                                              f"({bind})")[:2000])
    text = str(exc)
    if any(s in text for s in ("positional argument", "keyword argument", "required argument", "takes no arguments")):
        return Failure("SignatureError", (f"the grader's task {req.fn} called your code as the assignment "
                                          f"specifies, and the call did not fit your definition: {text}")[:2000])
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
        self.load_error: Failure | None = None
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
        # Imported only where a guard is wanted, and dropped from sys.modules after its
        # install (below): its helpers are no use to the code that follows.
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

    def load(self, source: str, harness_path: str | None) -> Reply:
        try:
            guard = self._guard()
        except Exception as e:  # noqa: BLE001  (never run student code unguarded)
            return Reply.failed("GuardError", f"{type(e).__name__}: {str(e)[:500]}")
        try:
            # No new program from here on (execlock.py): a second interpreter would run unguarded.

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
        self.load_problems: list[Failure] = []
        try:
            tree = ast.parse(source, SUBMISSION_FILE)
        except SyntaxError as e:
            self.load_error = Failure("SyntaxError", f"{e.msg} (line {e.lineno})",
                                      ((e.lineno or 0, "<module>", (e.text or "").strip()),))
            tree = ast.Module(body=[], type_ignores=[])
        for node in tree.body:
            try:
                exec(compile(ast.Module(body=[node], type_ignores=[]), SUBMISSION_FILE, "exec"), self.namespace)
            except BaseException as e:  # noqa: BLE001  (SystemExit at import is the student's bug)
                self.load_problems.append(_error(e, line=node.lineno))
        names = sorted(k for k, v in self.namespace.items()
                       if not k.startswith("__") and (callable(v) or isinstance(v, type)))
        return Reply(ok=self.load_error is None, error=self.load_error, names=names, guard=guard,
                     exec_lock=exec_lock, problems=self.load_problems[:20], device=self.device,
                     seconds=time.perf_counter() - started, forbidden=self.tracer.take())

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

    def call(self, req: Request) -> Reply:
        args = list(req.args)
        kwargs = dict(req.kwargs)
        if req.op == "call":
            fn = self.namespace.get(req.fn)
            if fn is None:
                return Reply.failed("MissingFunction", f"`{req.fn}` is not defined in your submission")
            target = fn
        else:
            if self.harness is None or not hasattr(self.harness, req.fn):
                return Reply.failed("HarnessError", f"no harness task {req.fn!r}")
            target = getattr(self.harness, req.fn)
            args = [StudentNames(self.namespace, req.fn), *args]
        self.tracer.take()
        watch = AllocationWatch(SUBMISSION_FILE) if req.watch else None
        cuda = self.device != "cpu"
        if watch is not None and cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            cuda_before = torch.cuda.memory_allocated()
        started = time.perf_counter()
        try:
            # inference mode: the judge may call with autograd unusable (backprop by hand).
            with torch.inference_mode(req.inference):
                if watch is None:
                    value = target(*args, **kwargs)
                else:
                    value = self._watched(watch, target, args, kwargs)
            if cuda:
                torch.cuda.synchronize()
        except BaseException as e:  # noqa: BLE001  (SystemExit/KeyboardInterrupt in student code)
            error = _error(e)
            if isinstance(e, TypeError) and not error.frames:
                error = _signature_error(req, target, args, kwargs, e) or error
            return Reply(ok=False, error=error, forbidden=self.tracer.take(), seconds=time.perf_counter() - started)
        seconds = time.perf_counter() - started
        reply = Reply(ok=True, value=value, seconds=seconds, forbidden=self.tracer.take())
        if watch is not None:
            reply.watch = watch.report(self._watch_intact)
            if cuda:
                reply.watch["cuda_peak_extra_bytes"] = torch.cuda.max_memory_allocated() - cuda_before
        if req.return_args and req.op == "call":
            # The child's own account, used only for a call that sent no tensor (the judge
            # reads a call's tensors back from its own file). Objects built from specs go
            # back as None: only data returns.
            reply.args_after = [a if isinstance(a, torch.Tensor | int | float | str | bool | list | tuple | dict)
                                or a is None else None for a in args]
        return reply


def serve(req_fd: int, rep_fd: int, cfg: dict) -> None:
    # Student prints go to the log (fd 1/2), never to the reply channel.
    child = Child(cfg)
    channel = ChildChannel(req_fd, rep_fd, cfg.get("xfer"))
    while True:
        req = None
        try:
            # Tensors go to the grading device, unless the harness places them itself
            # (HOST_TENSORS: it forks processes that must start CUDA on their own).
            req = channel.receive(child.device, getattr(child.harness, "HOST_TENSORS", False), child.specs)
            if req.op == "load":
                reply = child.load(req.source or "", cfg.get("harness"))
            elif req.op in ("call", "task"):
                reply = child.call(req)
            elif req.op == "ping":
                reply = Reply(ok=True, value="pong")
            else:  # collect
                # Before a watched call: garbage in reference cycles (torch's load_state_dict
                # keeps the decoded state in one) freed during the call would hide its peak.
                import gc

                gc.collect()
                reply = Reply(ok=True)
            try:
                channel.finish_call()
            except Exception:  # noqa: BLE001  (a CUDA error the call left: the inputs stay inverted, read as changed)
                pass
        except EOFError:
            return
        except ProtocolError as e:
            reply = Reply.failed("ProtocolError", str(e))
        channel.reply(reply, req)
        sys.stdout.flush()
        sys.stderr.flush()
        # Drop this request's buffers now, not when the next one arrives: freed during a
        # watched call they would hide that much of its peak.
        req = reply = None
