"""`/client`: the student client's wheel, for anyone (it holds no course material: the
`dlopt_submit` package and its dist-info, nothing else), and a page saying how to install
and use it. The wheel is built from the package this server runs with
(`dlopt_submit.build`: standard library only, no network), once, when first asked for.

    pip install https://dlopt.example.edu/client/dlopt_submit-0.1.0-py3-none-any.whl
"""

from __future__ import annotations

import hashlib
import html
from functools import lru_cache

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from autograder.distribution import engine_wheel
from dlopt_submit import build

router = APIRouter(include_in_schema=False)


@lru_cache(maxsize=1)
def wheel() -> tuple[str, bytes, str]:
    """(file name, bytes, sha256 hex) of the client's wheel."""
    data = build.wheel_bytes()
    return build.wheel_name(), data, hashlib.sha256(data).hexdigest()


@lru_cache(maxsize=1)
def engine() -> tuple[str, bytes, str]:
    """(file name, bytes, sha256 hex) of the grading engine's wheel (autograder/ only)."""
    name, data = engine_wheel()
    return name, data, hashlib.sha256(data).hexdigest()


def base_url(request: Request) -> str:
    """The address students use: the configured public URL, else the one they asked on."""
    configured = request.app.state.settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


def instructions(base: str) -> list[tuple[str, str]]:
    """(what it does, the command) for a student, in order."""
    name, _, sha = wheel()
    return [("install the client (Python 3.9 or newer; it needs nothing else)",
             f"python -m pip install {base}/client/{name}"),
            ("only to run the public tests on your machine: the grading engine (Python 3.11 or newer; it brings "
             "torch, pytest and nbformat; it holds no hidden test and no reference)",
             f"python -m pip install {base}/client/{name} {base}/client/{engine()[0]}"),
            ("sign in with the token your course staff sent (asked for once, kept in ~/.config/dlopt)",
             f"dlopt-submit login {base}"),
            ("the handout's public tests, on your machine (where the grading engine is installed)",
             "dlopt-submit test adam.ipynb"),
            ("submit, follow the grading and see your result", "dlopt-submit submit adam adam.ipynb --wait"),
            ("the assignments, and your submissions", "dlopt-submit status")]


@router.get("/client", response_class=HTMLResponse)
def client_page(request: Request) -> HTMLResponse:
    name, data, sha = wheel()
    base = base_url(request)
    steps = "".join(f"<li>{html.escape(what)}:<pre>{html.escape(cmd)}</pre></li>"
                    for what, cmd in instructions(base))
    page = (f"<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>the student client · dlopt</title>\n<link rel=\"stylesheet\" href=\"/static/app.css\">\n"
            f"</head>\n<body>\n<header><h1><a href=\"/\">dlopt</a> the student client</h1></header>\n<main>\n"
            f"<p>The <code>dlopt-submit</code> command submits your notebooks to this server and shows your "
            f"results. It holds no course material and needs only Python's standard library.</p>\n"
            f"<ol>{steps}</ol>\n"
            f"<p>The wheel: <a href=\"/client/{html.escape(name)}\">{html.escape(name)}</a> "
            f"({len(data):,} bytes, sha256 <code>{sha}</code>); the engine's: "
            f"<a href=\"/client/{html.escape(engine()[0])}\">{html.escape(engine()[0])}</a> "
            f"(sha256 <code>{engine()[2]}</code>). The hidden tests run only on this server.</p>\n"
            f"</main>\n</body>\n</html>\n")
    return HTMLResponse(page)


@router.get("/client/{filename}")
def client_wheel(filename: str) -> Response:
    name, data, sha = wheel()
    if filename == engine()[0]:
        name, data, sha = engine()
    elif filename != name:
        raise HTTPException(404, f"no such file: the client's wheel is /client/{name}, the engine's "
                                 f"/client/{engine()[0]}")
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-cache"})
