"""The course server's API as the student client uses it: where the token is kept, and the
HTTP calls (urllib; standard library only).

The token is stored in the user's config folder (`$XDG_CONFIG_HOME/dlopt/credentials.json`,
default `~/.config/dlopt/`; `DLOPT_CONFIG_DIR` overrides), the folder mode 700 and the file
mode 600, written atomically. `DLOPT_SERVER` and `DLOPT_TOKEN` override what is stored.
"""

from __future__ import annotations

import json
import mimetypes
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dlopt_submit import __version__

TIMEOUT = 60.0


class ClientError(Exception):
    """A message for the student; the command exits with status 2."""


@dataclass(frozen=True)
class Config:
    """Where the credentials live, and the server and token that override them."""

    config_dir: Path
    server: str | None = None
    token: str | None = None

    @classmethod
    def from_env(cls, env=None) -> Config:
        env = os.environ if env is None else env
        config = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        folder = Path(env["DLOPT_CONFIG_DIR"]) if env.get("DLOPT_CONFIG_DIR") else config / "dlopt"
        return cls(folder, env.get("DLOPT_SERVER") or None, env.get("DLOPT_TOKEN") or None)

    @property
    def credentials(self) -> Path:
        return self.config_dir / "credentials.json"


# -- credentials ------------------------------------------------------------------------
def save_credentials(config: Config, url: str, token: str) -> Path:
    folder = config.config_dir
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    tmp = folder / f".credentials.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"url": url, "token": token}, f)
        os.replace(tmp, config.credentials)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return config.credentials


def load_credentials(config: Config, prog: str) -> tuple[str, str]:
    url, token = config.server, config.token
    if not (url and token):
        path = config.credentials
        try:
            stored = json.loads(path.read_text())
        except FileNotFoundError:
            stored = {}
        except (OSError, ValueError) as e:
            raise ClientError(f"cannot read {path}: {e}; run `{prog} login URL` again") from None
        if not isinstance(stored, dict):
            raise ClientError(f"cannot read {path}: not what `{prog} login` writes; run `{prog} login URL` again")
        url, token = url or stored.get("url"), token or stored.get("token")
    if not (url and token):
        raise ClientError(f"not signed in: run `{prog} login URL` with your course server's address")
    return url.rstrip("/"), token


def server_url(text: str) -> str:
    """The address as typed, with https:// where no scheme is given and no trailing /."""
    url = text.strip().rstrip("/")
    return url if url.startswith(("http://", "https://")) else "https://" + url


def in_the_clear(url: str) -> bool:
    """Plain http to anything but this machine: the token would travel unencrypted."""
    host = urllib.parse.urlsplit(url).hostname or ""
    return url.startswith("http://") and host not in ("127.0.0.1", "localhost", "::1")


# -- HTTP -----------------------------------------------------------------------------
class _Redirected(Exception):
    pass


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is refused, not followed: following would send the token to wherever it
    points (another host, plain http) and turn an upload into a GET."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise _Redirected(req.full_url, newurl)


_OPENER = urllib.request.build_opener(_NoRedirects)


class Server:
    """One course server, one token; `prog` is the command named in the advice of errors."""

    def __init__(self, url: str, token: str, prog: str = "dlopt-submit", timeout: float = TIMEOUT):
        self.url, self.token, self.prog, self.timeout = url.rstrip("/"), token, prog, timeout

    def request(self, path: str, method: str = "GET", body: bytes | None = None,
                content_type: str | None = None, raw: bool = False):
        """The answer's JSON (or its bytes, `raw`)."""
        url = self.url + path
        headers = {"Accept": "application/json", "User-Agent": f"dlopt-submit/{__version__}"}
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(url, data=body, headers=headers, method=method)
        req.add_unredirected_header("Authorization", f"Bearer {self.token}")
        try:
            with _OPENER.open(req, timeout=self.timeout) as resp:
                data = resp.read()
                return data if raw else json.loads(data or b"null")
        except _Redirected as e:
            raise ClientError(f"the server redirected {e.args[0]} to {e.args[1]}: run `{self.prog} login` with the "
                              "address it names (https, and the right path) if that is your course's server") from None
        except urllib.error.HTTPError as e:
            raise self._refused(e) from None
        except urllib.error.URLError as e:
            raise ClientError(f"cannot reach {url}: {e.reason}") from None
        except (TimeoutError, OSError) as e:
            raise ClientError(f"cannot reach {url}: {e}") from None
        except ValueError:
            raise ClientError(f"{url} did not answer with JSON: is this the course server's address?") from None

    def _refused(self, e: urllib.error.HTTPError) -> ClientError:
        try:
            detail = json.loads(e.read()).get("detail")
        except (ValueError, AttributeError, OSError):
            detail = None
        if isinstance(detail, list):  # FastAPI's validation errors
            detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        if e.code == 401:
            return ClientError(f"the server refused the token ({detail or 'invalid'}): run `{self.prog} login` "
                               "again with the token your course staff sent")
        return ClientError(f"{e.code}: {detail or e.reason}")

    def get(self, path: str, **query):
        query = {k: v for k, v in query.items() if v is not None}
        return self.request(path + ("?" + urllib.parse.urlencode(query) if query else ""))

    def upload(self, path: str, filename: str, data: bytes, fields: dict[str, str] | None = None):
        body, ctype = multipart("file", filename, data, fields)
        return self.request(path, "POST", body, ctype)


def quote(segment: str) -> str:
    """One path segment of a URL (an assignment's slug as typed)."""
    return urllib.parse.quote(segment, safe="")


def multipart(field: str, filename: str, data: bytes, fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    """A form with one file and, optionally, text fields."""
    boundary = "dlopt" + secrets.token_hex(16)
    text = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
                    for k, v in (fields or {}).items())
    ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    # As browsers send it (WHATWG): the UTF-8 name with ", CR and LF percent-escaped.
    quoted = filename.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{quoted}\"\r\n"
            f"Content-Type: {ctype}\r\n\r\n").encode()
    return text + head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
