"""What stands between the network and the routes: request body limits enforced while
the body streams in (chunked or not, before any route or form parser reads it), the
cross-site checks of the pages, security headers, and the two validators every entry
point shares (logins, CSV cells).

Body limits by who asks (the token is looked up before the body is read):
- nobody (no valid token or session): `anonymous_body_bytes` (a sign-in form);
- a student: `max_upload_bytes` plus a form's overhead;
- course staff: `max_batch_bytes` plus the same overhead.
A body that goes past its limit gets 413 at that byte; what the application may have
started to answer is replaced.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from urllib.parse import quote, urlsplit

import anyio

from autograder.text import visible

# -- logins ------------------------------------------------------------------------
# One pattern wherever a login enters (roster, batch archives, queries, the CLI): it
# starts with a letter or digit (so never "." or ".."), then letters, digits, . _ -.
LOGIN_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_LOGIN = re.compile(LOGIN_PATTERN)


def login_error(login: str) -> str | None:
    """Why `login` is not a valid login, or None."""
    if not _LOGIN.fullmatch(login or ""):
        return (f"login {login!r} must be 1-64 characters: letters, digits, '.', '_' or '-', starting with a "
                "letter or digit")
    return None


# -- CSV cells -----------------------------------------------------------------------
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value) -> str:
    """A text cell that a spreadsheet will not run (OWASP, CSV injection): one that starts
    with = + - @, a tab or a carriage return gets a leading single quote. Numbers are
    written by the caller as numbers, not through here. Control characters and bidi
    overrides are shown as escapes (autograder.text.visible), never passed on raw."""
    text = visible(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


# -- file names ----------------------------------------------------------------------
_UNSAFE_NAME = re.compile(r"[^\w.\- ]+", re.UNICODE)


def clean_filename(name: str | None) -> str:
    """The last path component, NFC-normalised; letters and digits of any script, '.', '_'
    and '-' kept, spaces made '_', anything else (controls, separators, quotes) replaced
    with '_'. An empty stem becomes 'submission'; the suffix is kept."""
    base = unicodedata.normalize("NFC", (name or "").replace("\\", "/").split("/")[-1])
    base = _UNSAFE_NAME.sub("_", base).replace(" ", "_")
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, ""
    stem = stem.strip("._")[:100] or "submission"
    return stem + (f".{suffix[:16]}" if dot else "")


def attachment(filename: str) -> str:
    """A Content-Disposition value for any file name (RFC 6266: an ASCII fallback and the
    UTF-8 name in filename*)."""
    fallback = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode() or "download"
    fallback = re.sub(r'[^A-Za-z0-9._-]', "_", fallback)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


# -- the body limit ------------------------------------------------------------------
FORM_OVERHEAD = 1024 * 1024  # multipart boundaries and the other fields of a form


class BodyLimit:
    """ASGI middleware: count the request body as it arrives and answer 413 at the first
    byte past the caller's limit. `limit_for(scope) -> int` runs before any of the body is
    read (in a worker thread: it may look the token up in the database)."""

    def __init__(self, app, limit_for: Callable[[dict], int]) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        limit = await anyio.to_thread.run_sync(self.limit_for, scope)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _json(send, 400, "bad Content-Length")
            if int(length) > limit:
                return await _json(send, 413, _too_large(limit))
        state = {"seen": 0, "over": False, "started": False}

        async def limited_receive():
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > limit:
                    state["over"] = True
                    # The application sees a client that went away; it stops reading here.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if state["over"]:
                if message["type"] == "http.response.start" and not state["started"]:
                    state["started"] = True
                    await _json(send, 413, _too_large(limit))
                return  # whatever the application answers after the cut is dropped
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await _json(send, 413, _too_large(limit))


def _too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes, the limit for this account"


async def _json(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# -- cross-site checks -----------------------------------------------------------------
def same_origin(headers: dict[bytes, bytes], scheme: str, public_url: str | None = None) -> bool | None:
    """Whether the request's Origin (else Referer) names this server: True, False, or None
    when the browser sent neither (then the CSRF value alone decides). This server is its
    public URL when one is set (`DLOPT_PUBLIC_URL`, for a proxy that rewrites Host), else the
    Host header or a proxy's X-Forwarded-Host."""
    if public_url:
        allowed = {urlsplit(public_url).netloc.lower()}
    else:
        allowed = {headers.get(b"host", b"").decode("latin-1").lower(),
                   headers.get(b"x-forwarded-host", b"").decode("latin-1").split(",")[0].strip().lower()} - {""}
    for key in (b"origin", b"referer"):
        value = headers.get(key)
        if value:
            text = value.decode("latin-1")
            if text == "null":
                return False
            parts = urlsplit(text)
            return parts.netloc.lower() in allowed and parts.scheme in ("http", "https")
    return None


# -- headers ---------------------------------------------------------------------------
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# Swagger UI and ReDoc (served from the package's own files) need inline bootstrap code.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'")
HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
           (b"x-frame-options", b"DENY"), (b"cross-origin-opener-policy", b"same-origin")]


class SecurityHeaders:
    """ASGI middleware: every response gets the headers above and a Content-Security-Policy
    (no inline script on the pages; the API docs get theirs); HTTPS responses add HSTS."""

    def __init__(self, app, docs_paths: tuple[str, ...] = ("/docs", "/redoc")) -> None:
        self.app, self.docs_paths = app, docs_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        csp = DOCS_CSP if scope["path"].startswith(self.docs_paths) else CSP

        async def with_headers(message):
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in HEADERS if k not in have]
                if b"content-security-policy" not in have:
                    extra.append((b"content-security-policy", csp.encode()))
                if scope.get("scheme") == "https":
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, receive, with_headers)


CSV_LIMIT = 2 * 1024 * 1024


def csv_text(upload, what: str = "the file") -> str:
    """An uploaded CSV (a roster, an accommodation list) as text: at most CSV_LIMIT bytes of
    UTF-8 (a byte-order mark allowed); else an HTTPException saying which."""
    from fastapi import HTTPException

    data = upload.file.read(CSV_LIMIT + 1)
    if len(data) > CSV_LIMIT:
        raise HTTPException(413, f"{what} is larger than {CSV_LIMIT >> 20} MiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HTTPException(422, f"{what} is not UTF-8 text") from None
