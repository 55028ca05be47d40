"""A fork server: a process that imports what its forks need once, then forks on request.

Used twice (standard library only, so the sandbox's runtime can carry it):
- the judge zygote (`autograder/sandbox/judge_zygote.py`): a fresh fork per submission's judge,
  with torch, pytest and the engine already imported;
- the child zygote (`autograder/sandbox/child_zygote.py`): a fresh fork per sandboxed child,
  with torch imported, that builds new namespaces for itself before it reads any
  student code (fresh namespaces per child, never a shared sandbox).

Protocol, on a Unix socket in a 0700 folder of the user who grades: a client connects
and sends one JSON line (with file descriptors attached, SCM_RIGHTS); the server
forks, the fork runs the server's handler with the request and never returns; the
server answers {"pid": P} and, when that process has ended, {"exit": CODE} (its exit
code, or -N for signal N). A client that closes its connection early has the fork's
process group killed. The server ends when its stdin closes (its owner went away) and
kills the forks still running then.
"""

from __future__ import annotations

import array
import json
import os
import selectors
import signal
import socket
import sys
import time

MAX_REQUEST = 1 << 20
MAX_FDS = 8


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def loaded_files(root: str) -> list[str]:
    """Files of the modules now loaded from under `root` (a client starts a new server
    when one changes on disk)."""
    files = []
    for mod in list(sys.modules.values()):
        path = getattr(mod, "__file__", None)
        if isinstance(path, str) and os.path.abspath(path).startswith(root + os.sep):
            files.append(os.path.abspath(path))
    return sorted(set(files))


def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    conn.settimeout(10)
    fds: list[int] = []
    buf = b""
    while not buf.endswith(b"\n"):
        fdbuf = array.array("i")
        msg, anc, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(MAX_FDS * fdbuf.itemsize))
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fdbuf.frombytes(data[: len(data) - len(data) % fdbuf.itemsize])
                fds += list(fdbuf)
        if not msg:
            _close_all(fds)
            raise EOFError
        buf += msg
        if len(buf) > MAX_REQUEST or len(fds) > MAX_FDS:
            _close_all(fds)
            raise ValueError("request too large")
    try:
        req = json.loads(buf)
    except ValueError:
        _close_all(fds)
        raise
    if not isinstance(req, dict):
        _close_all(fds)
        raise ValueError("a request is a JSON object")
    return req, fds


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _send(conn: socket.socket, message: dict, fds: list[int] = ()) -> None:
    try:
        conn.settimeout(5)
        data = json.dumps(message).encode() + b"\n"
        if fds:
            socket.send_fds(conn, [data], list(fds))
        else:
            conn.sendall(data)
    except OSError:
        pass


class _Closed:
    """Stands in for a connection its client closed before the fork ended."""

    def fileno(self) -> int:
        return -1


def serve(path: str, handler, ready: dict, ops: dict | None = None, on_exit=None) -> None:
    """Listen on `path`; for each request fork and call `handler(request, fds)` in the
    fork (it must not return). A request whose "op" names one of `ops` is answered by
    that function's result instead, in the server, without a fork: a dict, or (dict,
    fds) to pass file descriptors with it (closed here once sent). `ready` goes to
    stdout once listening; `on_exit()` runs when the owner goes away."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(128)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    sel.register(0, selectors.EVENT_READ, "owner")
    running: dict[int, socket.socket | _Closed] = {}
    sys.stdout.write(json.dumps({"ready": True, **ready}) + "\n")
    sys.stdout.flush()

    def reap() -> None:
        while running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            kill_group(pid)  # whatever it left in its group
            conn = running.pop(pid, None)
            if isinstance(conn, socket.socket):
                sel.unregister(conn)
                _send(conn, {"exit": os.waitstatus_to_exitcode(status)})
                conn.close()

    while True:
        for key, _ in sel.select(timeout=5):
            if key.data == "accept":
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                try:
                    req, fds = _read_request(conn)
                except (OSError, ValueError, EOFError):  # not a request: dropped, nothing forked
                    conn.close()
                    continue
                if ops and req.get("op") in ops:
                    _close_all(fds)
                    passed: list[int] = []
                    try:
                        answer = ops[req["op"]](req)
                        if isinstance(answer, tuple):
                            answer, passed = answer
                    except Exception as e:  # noqa: BLE001  (the asker falls back; the server goes on)
                        answer = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                    _send(conn, answer, passed)
                    _close_all(passed)
                    conn.close()
                    continue
                close_in_fork = [listener.fileno(), wake_r, wake_w, conn.fileno(),
                                 *(c.fileno() for c in running.values() if isinstance(c, socket.socket))]
                pid = os.fork()
                if pid == 0:
                    try:
                        signal.set_wakeup_fd(-1)
                        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                            signal.signal(sig, signal.SIG_DFL)
                        for fd in close_in_fork:
                            try:
                                os.close(fd)
                            except OSError:
                                pass
                        running.clear()  # other forks' pids: nothing of theirs in this one
                        handler(req, fds)
                    finally:
                        os._exit(120)
                for fd in fds:
                    os.close(fd)
                running[pid] = conn
                _send(conn, {"pid": pid})
                sel.register(conn, selectors.EVENT_READ, pid)
            elif key.data == "wake":
                try:
                    while os.read(wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            elif key.data == "owner":
                if not os.read(0, 4096):  # the owner went away: so do the forks it asked for
                    for pid in list(running):
                        kill_group(pid)
                    if on_exit is not None:
                        try:
                            on_exit()
                        finally:
                            os._exit(0)
                    os._exit(0)
            else:  # a client closed its connection (gave up, or died): end that fork
                kill_group(key.data)
                sel.unregister(key.fileobj)
                key.fileobj.close()
                running[key.data] = _Closed()
        reap()


def redirect_output(stdout_fd: int, stderr_fd: int | None = None) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd if stderr_fd is not None else stdout_fd, 2)


def reseed() -> None:
    """Fresh draws in a fork: the server's generators were seeded once, before it forked."""
    import random

    random.seed()
    for name in ("numpy", "torch"):
        module = sys.modules.get(name)
        if module is not None:
            module.random.seed(None) if name == "numpy" else module.seed()


def run_then_exit(body) -> None:
    """In a fork: run `body()`, then end the process with its exit code (a SystemExit's,
    1 after a traceback on stderr, else 0) without running the server's atexit hooks."""
    code = 1
    try:
        body()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# -- the client ---------------------------------------------------------------------------
class ServerLost(Exception):
    """The server ended or could not be started: the caller does the work another way."""


def _read_line(conn: socket.socket, deadline: float | None, buf: bytes = b"") -> tuple[bytes, bytes] | None:
    """(one line, what came after it) from `conn` by `deadline`; (b"", b"") at EOF,
    None at the deadline."""
    import select

    while b"\n" not in buf:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not select.select([conn], [], [], 5.0 if left is None else min(left, 5.0))[0]:
            if left is not None and left <= 0:
                return None
            continue
        chunk = conn.recv(65536)
        if not chunk:
            return b"", b""
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    return line, rest


class Fork:
    """A process a server forked for us: its pid, and its exit code once it has ended."""

    def __init__(self, conn: socket.socket, pid: int, rest: bytes):
        self.conn = conn
        self.pid = pid
        self._rest = rest
        self.returncode: int | None = None
        self.lost = False  # the server ended before reporting this process's end

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code; None if it has not ended by `timeout` seconds (None: no limit)."""
        if self.returncode is not None or self.lost:
            return self.returncode
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            got = _read_line(self.conn, deadline, self._rest)
        except OSError:
            got = (b"", b"")
        if got is None:
            return None
        line, self._rest = got
        if not line:
            self.lost = True
            kill_group(self.pid)
            self.returncode = -signal.SIGKILL
        else:
            self.returncode = int(json.loads(line)["exit"])
        self.close()
        return self.returncode

    def poll(self) -> int | None:
        return self.wait(0)

    def kill(self) -> None:
        if self.returncode is None:
            kill_group(self.pid)
            try:
                os.kill(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass


class Endpoint:
    """A fork server reached by its socket (one another process owns)."""

    def __init__(self, path: str):
        self.path = path

    def ask(self, request: dict, timeout: float = 200.0) -> dict:
        """A request answered without a fork (an `ops` entry of the server)."""
        answer, fds = self.ask_fds(request, timeout)
        _close_all(fds)
        return answer

    def ask_fds(self, request: dict, timeout: float = 200.0) -> tuple[dict, list[int]]:
        """`ask`, and the file descriptors that came with the answer (the caller's to close)."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        fds: list[int] = []
        try:
            conn.settimeout(30)
            conn.connect(self.path)
            conn.sendall(json.dumps(request).encode() + b"\n")
            conn.settimeout(timeout)
            buf = b""
            while not buf.endswith(b"\n"):
                msg, got, _flags, _addr = socket.recv_fds(conn, 65536, MAX_FDS)
                fds += got
                if not msg:
                    break
                buf += msg
                if len(buf) > MAX_REQUEST:
                    raise ValueError("answer too large")
            answer = json.loads(buf) if buf else None
        except (OSError, ValueError) as e:
            _close_all(fds)
            raise ServerLost(f"the fork server did not answer: {e}") from None
        finally:
            conn.close()
        if not isinstance(answer, dict) or "error" in answer:
            _close_all(fds)
            raise ServerLost(f"the fork server could not answer: {answer}")
        return answer, fds

    def start(self, request: dict, fds: list[int] = ()) -> Fork:
        """Ask for one fork; raises ServerLost when the server cannot start it."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(30)
            conn.connect(self.path)
            data = json.dumps(request).encode() + b"\n"
            if fds:
                socket.send_fds(conn, [data], list(fds))
            else:
                conn.sendall(data)
            got = _read_line(conn, time.monotonic() + 30)
            started = json.loads(got[0]) if got and got[0] else {}
            pid = started.get("pid") if isinstance(started, dict) else None
            if not isinstance(pid, int):
                raise ServerLost("the fork server did not start the process")
            conn.setblocking(True)
            return Fork(conn, pid, got[1])
        except (OSError, ValueError) as e:
            conn.close()
            raise ServerLost(f"the fork server did not answer: {e}") from None
        except ServerLost:
            conn.close()
            raise


class Client(Endpoint):
    """A fork server owned by this process: started on first use, shared by its threads,
    started again when it ended or when a module it loaded changed on disk."""

    START_SECONDS = 180.0

    def __init__(self, cmd: list[str], env: dict, prefix: str):
        import subprocess
        import tempfile

        self.owner = os.getpid()
        self.folder = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.folder, 0o700)
        self.path = os.path.join(self.folder, "socket")
        self._log = open(os.path.join(self.folder, "log.txt"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([*cmd, self.path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, env=dict(env, TMPDIR=self.folder),
                                     cwd=self.folder, start_new_session=True)
        import select

        line = b""
        if select.select([self.proc.stdout], [], [], self.START_SECONDS)[0]:
            line = self.proc.stdout.readline()
        try:
            ready = json.loads(line)
        except ValueError:
            ready = {}
        if not isinstance(ready, dict) or not ready.get("ready"):
            tail = self.log_tail()
            self.close()
            raise ServerLost(f"the fork server did not start: {tail[-800:]}")
        self.ready = ready
        self.files = {f: self._stamp(f) for f in ready.get("files", [])}

    def log_tail(self) -> str:
        try:
            with open(os.path.join(self.folder, "log.txt"), "rb") as f:
                return f.read()[-2000:].decode("utf-8", "replace")
        except OSError:
            return ""

    @staticmethod
    def _stamp(path: str):
        try:
            st = os.stat(path)
            return st.st_mtime_ns, st.st_size
        except OSError:
            return None

    def fresh(self) -> bool:
        """Still running, owned by this process, with its modules' files as it loaded them."""
        return (self.owner == os.getpid() and self.proc.poll() is None
                and all(self._stamp(f) == s for f, s in self.files.items()))

    def close(self) -> None:
        import shutil

        if self.owner == os.getpid():
            try:
                self.proc.stdin.close()  # the server ends, and its forks with it
            except OSError:
                pass
            try:
                self.proc.wait(timeout=10)
            except Exception:  # noqa: BLE001
                self.proc.kill()
            shutil.rmtree(self.folder, ignore_errors=True)
        self._log.close()


class Shared:
    """One Client per key in this process (e.g. per environment), made on first use."""

    def __init__(self, make):
        import threading

        self.make = make
        self.lock = threading.Lock()
        self.clients: dict = {}

    def get(self, key, *args) -> Client:
        with self.lock:
            c = self.clients.get(key)
            if c is not None and not c.fresh():
                c.close()
                c = None
            if c is None:
                import atexit

                c = self.clients[key] = self.make(*args)
                atexit.register(c.close)
            return c
