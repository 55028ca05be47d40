"""A running app with its users, for the server's tests (imported by conftest and tests)."""

from __future__ import annotations

from fastapi.testclient import TestClient


class Course:
    """A running app with an admin, a TA and three students, each with a token."""

    def __init__(self, app, client: TestClient) -> None:
        self.app, self.client = app, client
        self.tokens = {"admin": (app.state.settings.data_dir / "admin-token").read_text().strip()}
        roster = "login,name,email,role\nta1,Tea Ay,ta@x.edu,ta\nalice,Alice,a@x.edu,student\n" \
                 "bob,Bob,b@x.edu,\ncarol,Carol,c@x.edu,student\n"
        r = self.post("admin", "/api/v1/roster", files={"file": ("roster.csv", roster, "text/csv")})
        assert r.status_code == 200, r.text
        self.tokens.update(r.json()["tokens"])

    def sign_in(self, who: str) -> str:
        """Sign `who` in through the form, as a browser does; returns the session secret
        (the client keeps its cookie)."""
        import re

        from server.auth import COOKIE
        self.client.cookies.clear()
        page = self.client.get("/")
        value = re.search(r'name="login_csrf" value="([^"]+)"', page.text).group(1)
        r = self.client.post("/login", data={"token": self.tokens[who], "login_csrf": value}, follow_redirects=False)
        assert r.status_code == 303, (r.status_code, r.text[:300])
        return self.client.cookies[COOKIE]

    def h(self, who: str | None) -> dict:
        return {"Authorization": f"Bearer {self.tokens.get(who, who)}"} if who else {}

    def get(self, who, url, **kw):
        return self.client.get(url, headers=self.h(who), **kw)

    def post(self, who, url, **kw):
        return self.client.post(url, headers=self.h(who), **kw)

    def submit(self, who, slug, text="def double(x):\n    return 2 * x\n", name="sol.py"):
        return self.post(who, f"/api/v1/assignments/{slug}/submissions", files={"file": (name, text.encode())})

    def wait_graded(self, sub_id: int, timeout: float = 60.0) -> dict:
        import time
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            d = self.get("admin", f"/api/v1/submissions/{sub_id}").json()
            if d["status"] in ("done", "failed"):
                return d
            time.sleep(0.1)
        raise AssertionError(f"submission {sub_id} not graded within {timeout} s: {d}")


class Served:
    """An app under uvicorn on a free loopback port, in a thread (a real socket: for the
    command line and for what a server reads of a body before it answers)."""

    def __init__(self, app, lifespan: str = "on") -> None:
        import socket
        import threading
        import time

        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


def fake_source(score: float, extra: str = "") -> str:
    """A submission the scripted grader (server_fakes) scores `score` of 10."""
    return f"# fake-score: {score}\n{extra}def double(x):\n    return 2 * x\n"


def final_row(c: Course, slug: str, login: str) -> dict:
    """A student's row of the score table, as a TA reads it."""
    return next(r for r in c.get("ta1", f"/api/v1/assignments/{slug}/scores").json()["rows"] if r["login"] == login)
