"""The judge's handle on student code: calls cross into the sandboxed child.

`StudentCode.call("adam_step", p, g, ...)` sends the arguments, waits at most the
per-call limit, and returns the decoded value or raises one of the errors below,
each of which says what happened in words a student can act on. A child that
crashes or times out is killed and started again for the next call, so one bad call
costs only the tests that made it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autograder import settings
from autograder.protocol import ProtocolError, Spec
from autograder.protocol.channel import Exchange
from autograder.protocol.framing import FrameTimeout
from autograder.protocol.messages import Failure, Reply, Request, finding
from autograder.sandbox import Limits, SandboxSpec, make_runner

if TYPE_CHECKING:
    from autograder.judge.job import GradingJob

IMPORT_GRACE_SECONDS = 60.0
MAX_FINDINGS = 1_000  # forbidden routines kept per submission  # torch's import and the submission's top level, on a slow disk
MAX_RESTARTS = 25
# A child that dies while loading the code twice in a row: the code's import kills it (an
# exit in a class body, a crash in an extension), and every later start would end alike.
LOAD_CRASH_LIMIT = 2


class StudentFailure(Exception):
    """Base of everything that goes wrong on the student's side of a call."""

    def feedback(self) -> str:
        return str(self)


class StudentError(StudentFailure):
    """The student's code raised an exception."""

    def __init__(self, what: str, error: Failure, line_map: list | None = None):
        self.what = what
        self.type = error.type
        self.message = error.message
        self.frames = list(error.frames)
        self.line_map = line_map or []
        super().__init__(self.feedback())

    def where(self, line: int) -> str:
        return where_in(self.line_map, line)

    def feedback(self) -> str:
        if isinstance(self, MissingFunction):
            return self.message
        lines = [f"{self.what} raised {self.type}: {self.message}".rstrip(": ")]
        for line, func, text in self.frames[-3:]:
            lines.append(f"  in {func}, {self.where(line)}: {text}")
        return "\n".join(lines)


def position(line_map: list, line: int | None) -> tuple[int | None, int | None]:
    """(cell, line in the cell) of a line of the extracted source: where the student sees it
    (cell None for a .py file, whose line is the file's)."""
    if line is None:
        return None, None
    if 0 < line <= len(line_map) and line_map[line - 1]:
        cell, cell_line = line_map[line - 1]
        return cell, cell_line
    return None, line


def where_in(line_map: list, line: int | None) -> str:
    """A line of the extracted source as the student sees it: cell and line in the notebook."""
    cell, cell_line = position(line_map, line)
    if cell_line is None:
        return "while it ran"
    return f"cell {cell}, line {cell_line}" if cell is not None else f"line {cell_line}"


def located(finding: dict, line_map: list) -> dict:
    """A finding with its place as the student sees it, the same in the JSON, the CLI and the
    pages: `line` (of the cell, or of the .py file), `cell`, `where` in words; the line of
    the extracted code kept as `source_line`."""
    cell, cell_line = position(line_map, finding.get("line"))
    return {**finding, "source_line": finding.get("line"), "line": cell_line, "cell": cell,
            "where": where_in(line_map, finding.get("line"))}


class MissingFunction(StudentError):
    pass


class SubmissionLoadError(StudentError):
    pass


class StudentTimeout(StudentFailure):
    pass


class StudentCrash(StudentFailure):
    pass


class HostOverloaded(Exception):
    """A call hit the wall-clock backstop while the host was overloaded and the child was
    still getting some CPU: the machine, not the code, was slow. Not the student's
    failure: the submission is graded again rather than scored (see grading.grade)."""


GUARD_PREFIX = "forbidden by the assignment: "  # what a routine made to raise by child/guard.py says


@dataclass
class CallResult:
    value: Any
    seconds: float
    args_after: list | None = None
    memory: dict | None = None  # watched calls: the child's allocation report + the kernel's peak
    # Bytes the child's sandbox sent on its own loopback during the call, by the kernel's
    # count read by the judge (None without a network namespace of its own).
    loopback_bytes: int | None = None


def _keep_specs(name, params):
    """Decoding the judge's own request again: specs come back as what was sent (never built)."""
    return Spec(name, params)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        import signal

        sig = -code
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        hint = {9: " (killed: usually the memory limit)", 24: " (the CPU-time limit)",
                11: " (a segmentation fault)"}.get(sig, "")
        return f"it was killed by {name}{hint}"
    return f"it exited with code {code}"


def _judge_sees_a_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class StudentCode:
    source: str
    limits: Limits
    line_map: list = field(default_factory=list)
    device: str = "cpu"
    gpu: bool = False
    forbidden_patterns: list[str] = field(default_factory=list)
    guard: dict | None = None  # routines the child makes raise before any student code (child/guard.py)
    # Functions called in a child of their own guard ([forbidden.functions.NAME] runtime
    # rules): {name: guard}, also for harness tasks of a test marked with that function.
    # Every other call and task runs under `guard`.
    function_guards: dict = field(default_factory=dict)
    harness: Any = None
    force_weak: bool = False
    notes: list[str] = field(default_factory=list)  # intake notes (e.g. a cell with a syntax error)
    runner_kind: str | None = None  # local or docker; None: the engine's setting (DLOPT_RUNNER)

    @classmethod
    def for_job(cls, job: GradingJob) -> StudentCode:
        """The student's code of a grading job, started by the job's runner."""
        return cls(source=job.source, limits=job.limits, line_map=list(job.line_map), device=job.device,
                   gpu=job.gpu, forbidden_patterns=list(job.forbidden), guard=job.guard,
                   function_guards=job.function_guards, harness=Path(job.harness) if job.harness else None, force_weak=job.weak,
                   notes=list(job.notes), runner_kind=job.runner)

    def __post_init__(self):
        self._runners: dict = {}
        self._guarded_for: str | None = None  # the function whose own guard the current child has
        self.runner = self._runner_for(None)
        self.handle = None
        self.started_at = time.monotonic()
        self.cpu_spent = 0.0  # CPU seconds of this submission's children that have ended
        # Seconds its children spent neither running nor waiting for a CPU (sleeping, blocked):
        # charged against limits.wait_seconds, so waiting is not free (a sleeping child uses
        # no CPU) and a busy host (time in the run queue) is never charged.
        self.waited = 0.0
        self.restarts = 0
        self.load_crashes = 0  # consecutive children that died loading the code
        self.load_crash_message = ""
        self.load_error: dict | None = None
        self.names: list[str] = []
        self.forbidden_found: list[dict] = []
        self._seen_findings: set = set()  # (api, function, line) of forbidden_found
        self.events: list[str] = []
        self.load_problems: list[str] = []
        self.sandbox = self.runner.report

    # -- lifecycle ---------------------------------------------------------------------
    # Time limits count the child's CPU time, by the kernel's count from outside its
    # process (CpuWatch), so a grade does not depend on how busy the machine is; the wall
    # clock is only a backstop (wall_factor times the CPU limit), and a call that reaches
    # it while the host is overloaded ends the run as "not scored", to be graded again.
    def cpu_used(self) -> float:
        """CPU seconds this submission's children have used so far."""
        now = self.handle.cpu_seconds() if self.handle is not None else None
        return self.cpu_spent + (now or 0.0)

    def _wall_backstop(self) -> float:
        return self.started_at + self.limits.submission_seconds * self.limits.wall_factor

    def _over_budget(self) -> bool:
        return (self.cpu_used() >= self.limits.submission_seconds or self._waited_too_long()
                or time.monotonic() >= self._wall_backstop())

    def _wait_budget(self) -> float:
        """Seconds a submission's children may sleep or block (infinite where 0: waiting not
        charged; the default with student code on a GPU, where waiting for a device shared
        with other children is the host's load and no kernel count tells it from sleep)."""
        budget = self.limits.wait_seconds_gpu if self.device != "cpu" else self.limits.wait_seconds
        return budget if budget > 0 else float("inf")

    def _waited_too_long(self) -> bool:
        return self.waited >= self._wait_budget()

    def _budget_message(self) -> str:
        if self._waited_too_long():
            return (f"waited instead of computing: your code's processes spent {self.waited:.0f} s neither "
                    f"running nor waiting for a CPU (sleeping or blocked; the limit is "
                    f"{self._wait_budget():.0f} s per submission)")
        return f"the submission used its whole time budget ({self.limits.submission_seconds:.0f} s)"

    @staticmethod
    def starved(wall: float, cpu: float | None, run_queue: float | None) -> bool:
        """Whether a call that reached the wall clock's backstop was starved by the host,
        judged from the child's own accounts (never the host's load average, which a child
        can raise): its threads spent at least half the call waiting for a CPU, while its
        processes together used less than one CPU (so its own processes were not what
        kept it waiting)."""
        if run_queue is None or cpu is None or wall <= 0:
            return False
        return run_queue >= 0.5 * wall and cpu < wall

    def _ensure_started(self) -> None:
        if self.handle is not None and self.handle.alive():
            return
        if self.handle is not None:
            self.close()
        if self.restarts >= MAX_RESTARTS:
            raise StudentCrash("your code's process was restarted too many times; later tests were not run")
        if self.load_crashes >= LOAD_CRASH_LIMIT:
            raise StudentCrash(f"{self.load_crash_message} (at each of {self.load_crashes} starts; not started again)")
        if self._over_budget():
            raise StudentTimeout(f"{self._budget_message()}; later tests were not run")
        self.restarts += 1
        self.handle = self.runner.start()
        try:
            reply = self._exchange(Request("load", source=self.source), IMPORT_GRACE_SECONDS, "loading your code")
        except StudentCrash as e:
            self.load_crashes += 1
            self.load_crash_message = str(e)
            raise
        self.load_crashes = 0
        if reply.error is not None and reply.error.type == "GuardError":
            # Not the student's doing (it runs before their code): a grader error for staff,
            # and this child is not used (the next call starts another, which says so again).
            self.close()
            raise RuntimeError(f"the child could not install its guard: {reply.error.message}")
        if self.device != "cpu" and reply.device == "cpu" and _judge_sees_a_gpu():
            # The runner did not give the sandbox the GPU this host has (a container engine
            # that dropped the device request): student code would run on the CPU unseen.
            self.close()
            raise RuntimeError(f"the sandbox has no GPU although this host has one and the job runs student code on "
                               f"{self.device}: the {self.runner_kind or settings.current().runner} runner did not "
                               "pass the GPU (docker runner: see gpu_attach)")
        self.guard_report = reply.guard
        # Whether the kernel refuses new programs in this child (child/execlock.py): said by
        # trusted code that ran before the student's, so a note, never a source of points.
        self.sandbox["exec_lock"] = reply.lock_summary()
        self._note_forbidden(reply)
        self.names = list(reply.names)
        self.load_problems = [f"{where_in(self.line_map, prob.line or 0)}: {prob.type}: {prob.message[:200]}"
                              for prob in reply.problems]
        if not reply.ok:
            self.load_error = reply.error or Failure("Error", "unknown")

    def _runner_for(self, fn: str | None):
        """The runner of children guarded for `fn` (None: the assignment's guard)."""
        if fn not in self._runners:
            guard = self.function_guards[fn] if fn is not None else self.guard
            spec = SandboxSpec(self.limits, device=self.device, forbidden=tuple(self.forbidden_patterns), guard=guard,
                               harness=Path(self.harness) if self.harness else None, weak=self.force_weak)
            self._runners[fn] = make_runner(self.runner_kind or settings.current().runner, spec)
        return self._runners[fn]

    def _use_guard_of(self, fn: str | None) -> None:
        """A call of a function with runtime rules of its own runs in a child started with
        them (installed below the student's code, as the assignment's are); any other call
        or task in a child without them. Switching closes the current child."""
        want = fn if fn in self.function_guards else None
        if want != self._guarded_for:
            self.close()
            self._guarded_for = want
            self.runner = self._runner_for(want)

    def enter_group(self, group: str) -> None:
        """Calls of another visibility group (public, after_deadline, hidden) get a child
        of their own: the current one is closed when the group changes."""
        if getattr(self, "group", None) not in (None, group):
            self.close()
        self.group = group

    def restart(self) -> None:
        """Start a fresh child for the next call (nothing left over from earlier calls)."""
        self.close()

    def resident_bytes(self) -> int | None:
        """The memory the child holds now, by the kernel's measure (None: no measure)."""
        self._ensure_started()
        return self.handle.memory.reset() if self.handle.memory is not None else None

    def calibrate_memory(self, source: str, fn: str, *args, **kwargs) -> int | None:
        """What a child running trusted `source` holds after calling `fn(*args)` once (a
        watched call, as the student's warm-up is): the baseline against which memory a
        submission keeps between calls (preallocated buffers, say) is measured."""
        trusted = StudentCode(source=source, limits=self.limits, device=self.device, gpu=self.gpu, guard=self.guard)
        try:
            trusted.call(fn, *args, watch_memory=True, **kwargs)
            return trusted.resident_bytes()
        finally:
            trusted.close()

    def close(self) -> None:
        if self.handle is not None:
            self.cpu_spent += self.handle.cpu_seconds() or 0.0
            self.handle.cleanup()
            self.handle = None

    def log_tail(self) -> str:
        return self.handle.log_tail() if self.handle is not None else ""

    # -- the exchange ------------------------------------------------------------------
    def _exchange(self, request: Request, seconds: float, what: str) -> Reply:
        return self._roundtrip(request, seconds, what)[0]

    def _roundtrip(self, request: Request, seconds: float, what: str,
                   read_back: bool = False) -> tuple[Reply, list | None, int]:
        """Send one request and read its reply, within the call's time and reply budget.
        Whatever the child sends (a forged frame, a header nested 5000 deep, nothing at
        all, or it stops reading), the judge holds at most the reply budget in memory,
        waits at most the deadline, and on any failure kills the child and fails only
        this call: the channel is never left out of step.

        The transports are the channel's (protocol/channel.py); this call decides which it
        offers. The reply file only for calls and tasks whose memory is not watched (its
        pages would count in the call's peak: measured, 0.5 MiB of reply raised it by
        5 MiB; the pipe's do not), never for load, collect or ping, whose replies are
        small. `read_back`: the request goes through a file whatever its size, and the
        arguments as the call left them (read from that file after the reply: the
        inputs-unchanged verdict rests on those bytes, read outside the student's
        process) come back second; third, the bytes of payload the request carried."""
        handle = self.handle
        offered = request.op in ("call", "task") and not request.watch
        reply_file = handle.shared_reply() if offered and hasattr(handle, "shared_reply") else None
        exchange = Exchange(handle.req_fd, handle.rep_fd, getattr(handle, "xfer", None), reply_file)
        try:
            return self._exchange_frames(handle, exchange, request, seconds, what, read_back)
        finally:
            exchange.close()

    def _exchange_frames(self, handle, exchange: Exchange, request: Request, seconds: float, what: str,
                         read_back: bool) -> tuple[Reply, list | None, int]:
        started = time.monotonic()
        cpu_start = handle.cpu_seconds()
        rq_start = handle.run_queue_seconds() if hasattr(handle, "run_queue_seconds") else None
        waited_before = self.waited

        def idle() -> float:
            """This call's time neither running nor in the run queue, by the kernel's counts."""
            if cpu_start is None or rq_start is None:
                return 0.0
            rq = handle.run_queue_seconds()
            cpu = handle.cpu_seconds()
            if rq is None or cpu is None or cpu < cpu_start or rq < rq_start:
                # no count, or counts that went backwards: the child is gone (a container's
                # counters read 0 once it has exited); nothing is charged for a call that ended so
                return 0.0
            return max(0.0, (time.monotonic() - started) - (cpu - cpu_start) - (rq - rq_start))

        wait_left = max(self._wait_budget() - waited_before, 0.0)
        cpu_left = self.limits.submission_seconds - self.cpu_used()
        cpu_cap = min(seconds, max(cpu_left, 0.0))
        wall_cap = min(started + seconds * self.limits.wall_factor + 10, self._wall_backstop())
        try:
            sent = exchange.encode(request, read_back)
            max_header, max_payload = self.limits.reply_budget(sent)
            exchange.send(max_payload, deadline=wall_cap)
            handle.await_reply(started, cpu_start, cpu_cap, wall_cap, idle, wait_left)
            self.waited = waited_before + idle()
            # Once a reply has begun, the rest comes at pipe speed: a child that stalls
            # inside a frame gets the call's own seconds (+10), not the wall backstop.
            reply = exchange.receive(max_header, max_payload, min(wall_cap, time.monotonic() + seconds + 10))
            return reply, exchange.inputs_after(_keep_specs) if read_back else None, sent
        except FrameTimeout as e:
            used = (handle.cpu_seconds() or 0.0) - (cpu_start or 0.0)
            wall = time.monotonic() - started
            rq = handle.run_queue_seconds() if rq_start is not None else None
            queued = rq - rq_start if rq is not None else None
            self.waited = waited_before + idle()
            handle.kill()
            if getattr(e, "waited", False):
                self.waited = max(self.waited, self._wait_budget())
                self.events.append(f"waited: {what}: {self.waited:.1f} s")
                raise StudentTimeout(f"{what}: {self._budget_message()}; later tests were not run") from None
            if getattr(e, "cpu", False) is False and self.starved(wall, used, queued):
                self.events.append(f"host overloaded: {what}: {used:.1f} s CPU, {queued:.1f} s waiting for a CPU "
                                   f"in {wall:.0f} s")
                raise HostOverloaded(f"{what}: {used:.1f} s of CPU and {queued:.1f} s in the run queue "
                                     f"in {wall:.0f} s of wall time") from None
            budget = self._over_budget()
            self.events.append(f"timeout: {what}")
            raise StudentTimeout(
                f"{what}: no answer within "
                + (f"the submission's time budget ({self._budget_message()})" if budget
                   else f"{seconds:.0f} s of CPU time (the limit per call)" if getattr(e, "cpu", False)
                   else f"{wall:.0f} s (its process was waiting, not computing)")
                + "; look for an endless loop, a deadlock or far too much work") from None
        except (EOFError, BrokenPipeError, OSError):
            tail = handle.log_tail(600).strip()
            try:
                handle.proc.wait(timeout=2)  # let its own exit status be the one we report
            except Exception:  # noqa: BLE001
                pass
            handle.kill()
            code = handle.proc.returncode
            self.events.append(f"crash: {what}: {code}")
            msg = f"{what}: your code's process ended: {_describe_exit(code)}"
            if tail:
                msg += "\n  last output: " + tail.splitlines()[-1][:300]
            raise StudentCrash(msg) from None
        except ProtocolError as e:
            handle.kill()
            self.events.append(f"invalid reply: {what}")
            raise StudentCrash(f"{what}: your code's process sent an invalid reply ({e})") from None
        except Exception as e:  # noqa: BLE001  (anything else while reading a reply: the child's fault)
            handle.kill()
            self.events.append(f"invalid reply: {what}: {type(e).__name__}")
            raise StudentCrash(f"{what}: your code's process sent a reply that could not be read "
                               f"({type(e).__name__})") from None

    def _task_function(self) -> str | None:
        """The graded function a harness task exercises, when the suite named one (the
        plugin sets `current_functions` from the test's function marker)."""
        fns = getattr(self, "current_functions", None) or []
        return fns[0] if len(fns) == 1 else None

    def _note_forbidden(self, reply: Reply) -> None:
        for f in reply.forbidden:  # already in the shape messages.finding gives
            self._add_finding(f)

    def _add_finding(self, f: dict) -> None:
        """Keep a forbidden routine seen, once, and at most MAX_FINDINGS of them (a child
        that reports thousands costs the judge no more than that)."""
        key = (f.get("api"), f.get("function"), f.get("line"))
        if key not in self._seen_findings and len(self.forbidden_found) < MAX_FINDINGS:
            self._seen_findings.add(key)
            self.forbidden_found.append(located(f, self.line_map))

    def _request(self, op: str, fn: str, args, kwargs, timeout, return_args, what,
                 inference: bool = False, watch: bool = False) -> CallResult:
        # A task runs the graded function of its test (the suite's function marker): it gets
        # that function's guarded child, as a call of it does (a multi-process harness's ranks
        # are forked from that child and keep its guard).
        self._use_guard_of(fn if op == "call" else self._task_function())
        self._ensure_started()
        if self.load_error is not None:
            raise SubmissionLoadError("loading your code", self.load_error, self.line_map)
        if op == "call" and fn not in self.names:
            why = "".join(f"\n  note: {n}" for n in [*self.notes, *self.load_problems]
                          if "syntax error" in n or "Error" in n)
            raise MissingFunction(fn, Failure("NameError", f"`{fn}` is not defined at the top level of your "
                                                           f"submission{why}"))
        watcher = self.handle.memory if watch else None
        if watch:
            self._exchange(Request("collect"), IMPORT_GRACE_SECONDS, "collecting garbage before a watched call")
        before = watcher.reset() if watcher is not None else None
        request = Request(op, fn=fn, args=list(args), kwargs=dict(kwargs), return_args=return_args,
                          inference=inference, watch=watch)
        lo_before = self.handle.loopback_tx_bytes()
        reply, left, sent = self._roundtrip(request, timeout or self.limits.call_seconds, what, read_back=return_args)
        memory = None
        if watch:
            peak = watcher.peak_bytes() if watcher is not None else None
            memory = dict(reply.watch or {"intact": False})
            memory["method"] = watcher.method if watcher is not None else "none"
            memory["peak_extra_bytes"] = peak - before if peak is not None and before is not None else None
            memory["resident_before_bytes"] = before
            largest = memory.get("largest")  # its fields' types are checked on receipt (messages._watch)
            if largest and largest.get("line"):
                memory["largest"] = dict(largest, where=where_in(self.line_map, largest["line"]))
        self._note_forbidden(reply)
        if not reply.ok:
            err = reply.error or Failure("Error", "the call failed and did not say why")
            if err.type in ("MissingFunction", "SignatureError"):  # the message says it all
                raise MissingFunction(fn, err)
            msg = err.message
            if msg.startswith(GUARD_PREFIX):
                # A routine the guard made raise: the student's function reached it. Only
                # ever costs points (a child can hide this report, never gain by it).
                found = finding((msg[len(GUARD_PREFIX):].split() or ["?"])[0][:120],
                                fn if op == "call" else self._task_function(),
                                err.frames[-1][0] if err.frames else None)
                if found["function"]:
                    self._add_finding(found)
            raise StudentError(what, err, self.line_map)
        # Inputs as the call left them: read back by the judge from the request's shared file
        # (on a GPU the child stages them through it: child/server.py's DeviceStaging). The
        # child's own report only for a call that sent no bytes (no tensor to forge), and
        # never for a task, whose arguments are the harness's.
        if left is not None:
            args_after = left
        else:
            args_after = reply.args_after if op == "call" and sent == 0 else None
        lo_after = self.handle.loopback_tx_bytes() if self.handle is not None else None
        loopback = lo_after - lo_before if lo_before is not None and lo_after is not None else None
        return CallResult(reply.value, reply.seconds, args_after, memory, loopback)

    def call(self, fn: str, *args, timeout: float | None = None, return_args: bool = False,
             autograd: bool = True, watch_memory: bool = False, **kwargs) -> CallResult:
        """Call the student's function `fn` in the sandbox; `autograd=False` runs it under
        torch.inference_mode(), where autograd cannot record anything. `watch_memory=True`
        fills `CallResult.memory`: the largest tensor the call allocated (seen inside the
        child), `intact` (the watch was not switched off), and `peak_extra_bytes`, the
        kernel's measure from outside (None where this machine has none; `method` says
        which: the assignment's `[limits] watch_memory` must be on for it)."""
        return self._request("call", fn, args, kwargs, timeout, return_args, f"{fn}(...)",
                             inference=not autograd, watch=watch_memory)

    def task(self, name: str, *args, timeout: float | None = None, what: str | None = None,
             watch_memory: bool = False, return_args: bool = False, **kwargs) -> CallResult:
        """Run a trusted harness task next to the student's code (e.g. train with their
        optimizer); `watch_memory` as for `call`. `return_args=True`: `args_after` holds the
        task's arguments as the task left them, read back by the judge from the request's
        shared file (on a GPU the child copies them back into it after the task; a harness
        with `HOST_TENSORS` keeps them in it, and processes the task forks share it)."""
        return self._request("task", name, args, kwargs, timeout, return_args, what or name, watch=watch_memory)
