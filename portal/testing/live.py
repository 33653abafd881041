"""A real portal on loopback and a small HTTP client for it: what tests and benchmarks share.

`start_server` runs `testimony-portal serve` in a subprocess (gunicorn, and
nginx in front with `front=True`) and waits until it answers. `Client` is a
tiny browser over plain `http.client`: the multipart body is generated piece
by piece, so it can stream a multi-gigabyte file from disk without holding
it. `post_form` opens a form and posts it with its hidden fields (CSRF token,
one-time value) through this client or through Flask's test client.
"""

from __future__ import annotations

import hashlib
import html
import http.client
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, overload
from urllib.parse import urlencode, urlsplit

if TYPE_CHECKING:
    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

RECEIVED_MARKERS = ('class="notice ok"',)


def process_tree(pid: int) -> list[int]:
    """The pid and all its descendants (gunicorn's master, workers and their sealers)."""
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                pids += process_tree(int(child))
    except FileNotFoundError:  # a thread or process ended while we looked
        pass
    return pids


def sealer_pids(pid: int) -> list[int]:
    """The sealer processes among `pid` and its descendants (portal.server.sealer)."""
    found = []
    for candidate in process_tree(pid):
        try:
            if b"portal.server.sealer" in Path(f"/proc/{candidate}/cmdline").read_bytes():
                found.append(candidate)
        except FileNotFoundError:  # ended while we looked
            pass
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str


class Client:
    """A tiny browser: keeps the session cookie, fetches CSRF tokens, posts multipart."""

    def __init__(self, base_url: str, timeout: float = 600, host_header: str | None = None) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        # The name to send in Host (the onion address of PORTAL_ALLOWED_HOSTS), if not the URL's.
        self.host_header = host_header
        self.cookie: str | None = None
        self.form_id: str | None = None

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Iterable[bytes] | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        headers = dict(headers or {})
        if self.host_header:
            headers.setdefault("Host", self.host_header)
        if self.cookie:
            headers["Cookie"] = self.cookie
        conn = self._connection()
        try:
            # http.client sends a body as is when Transfer-Encoding is set by
            # hand; it only frames the chunks when asked to.
            chunked = headers.get("Transfer-Encoding") == "chunked"
            try:
                conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
            except (BrokenPipeError, ConnectionResetError):
                # The server may answer (a 413, say) and close before the
                # whole body is sent, as it should: read that answer, as a
                # browser does. If there is none, the send error stands;
                # nor is there one when the connection itself was refused
                # (a node being killed): http.client then holds no socket.
                if conn.sock is None:
                    raise
                try:
                    resp = conn.getresponse()
                except (OSError, http.client.HTTPException):
                    pass
                else:
                    return self._answer(resp)
                raise
            return self._answer(conn.getresponse())
        finally:
            conn.close()

    def _answer(self, resp: http.client.HTTPResponse) -> Response:
        text = resp.read().decode("utf-8", "replace")
        cookie = resp.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, text)

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def csrf_token(self, lang: str = "en") -> str:
        """Open the form; its one-time value is kept for the next `submit(token=...)`."""
        return self.form_fields(lang)["csrf_token"]

    def form_fields(self, lang: str = "en") -> dict[str, str]:
        """Open the form and return its hidden fields: the CSRF token and the one-time value."""
        page = self.get(_submit_path(lang))
        assert page.status == 200, f"the form did not load ({page.status})"
        fields = form_fields(page.body)
        self.form_id = fields["form_id"]
        return fields

    def last_page(self, lang: str = "en", role: str = "saw") -> str:
        """The form's last page (default questionnaire: the second), as a witness reaches it."""
        fields = hidden_fields(self.get(_submit_path(lang)).body)
        body = urlencode({**fields, "page": "1", "go": "next", "role": role}).encode()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Length": str(len(body)),
        }
        response = self.request("POST", f"{_submit_path(lang)}/page", body=body, headers=headers)
        assert response.status == 200, f"the form's next page did not load ({response.status})"
        return response.body

    def submit(
        self,
        text: str,
        files: Iterable[tuple[str, bytes | Path, str]] = (),
        lang: str = "en",
        *,
        extra_fields: dict[str, str] | None = None,
        chunked: bool = False,
        token: str | None = None,
    ) -> Response:
        """Post the form; `token` reuses a CSRF token fetched earlier with `csrf_token()`."""
        token = token or self.csrf_token(lang)
        fields = {
            "csrf_token": token,
            "form_id": self.form_id or "",
            "testimony": text,
            **CONSENT,
            **(extra_fields or {}),
        }
        body = MultipartBody(fields, list(files))
        headers = {"Content-Type": body.content_type}
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = str(body.length)
        return self.request("POST", _submit_path(lang), body=iter(body), headers=headers)


# The one required answer of the default questionnaire: the witness's consent.
CONSENT = {"consent": "yes"}


# The portal's own templates, not any HTML: attributes always in double quotes.
_INPUT_RE = re.compile(r"<input\b[^>]*>")
_ATTRIBUTE_RE = re.compile(r'([\w-]+)="([^"]*)"')


def hidden_fields(page: str) -> dict[str, str]:
    """The hidden inputs of the page's forms by name: CSRF token, one-time value, receipt..."""
    fields: dict[str, str] = {}
    for tag in _INPUT_RE.findall(page):
        attributes = dict(_ATTRIBUTE_RE.findall(tag))
        if attributes.get("type") == "hidden" and attributes.get("name"):
            fields.setdefault(attributes["name"], html.unescape(attributes.get("value", "")))
    return fields


def csrf_token(page: str) -> str:
    """The CSRF token of the page's form."""
    token = hidden_fields(page).get("csrf_token")
    assert token, "no CSRF token on the page"
    return token


def form_fields(page: str) -> dict[str, str]:
    """What the testimony form on this page needs to be accepted: CSRF token, one-time value,
    and the one required answer (consent)."""
    fields = hidden_fields(page)
    assert fields.get("csrf_token") and fields.get("form_id"), "no CSRF token or form value"
    return {**fields, **CONSENT}


def _answers(page: str) -> dict[str, str]:
    """A form's hidden fields, with consent given when the page's form stores a submission.

    Consent is asked on the last page of the form; a page before it carries
    the one-time value (`form_id`) too, and a POST of it to the submit
    address is a submission like the last page's.
    """
    fields = hidden_fields(page)
    assert fields.get("csrf_token"), "no CSRF token on the page"
    stores = 'name="consent"' in page or 'name="form_id"' in page
    return {**fields, **CONSENT} if stores else fields


@overload
def post_form(
    client: Client,
    data: Mapping[str, str] | None = ...,
    path: str = ...,
    files: Iterable[tuple[str, bytes | Path, str]] = ...,
) -> Response: ...


@overload
def post_form(
    client: FlaskClient, data: Mapping[str, object] | None = ..., path: str = ...
) -> TestResponse: ...


def post_form(
    client: Client | FlaskClient,
    data: Mapping[str, Any] | None = None,
    path: str = "/submit",
    files: Iterable[tuple[str, bytes | Path, str]] = (),
) -> Response | TestResponse:
    """Open the form at `path`, then post it as multipart with its hidden fields and `data`.

    Works with a live server's `Client` and with a Flask test client. The
    hidden fields are the CSRF token and the one-time value; consent is given
    when the form asks for it. `data` overrides any of them. `files` are
    (filename, content, content type) attachments for the live client; through
    Flask, pass them in `data` as Werkzeug expects.
    """
    if isinstance(client, Client):
        fields = {**_answers(client.get(path).body), **(data or {})}
        body = MultipartBody(fields, list(files))
        headers = {"Content-Type": body.content_type, "Content-Length": str(body.length)}
        return client.request("POST", path, body=iter(body), headers=headers)
    assert not files, "through Flask, pass files in `data`"
    fields = _answers(client.get(path).get_data(as_text=True))
    return client.post(path, data={**fields, **(data or {})}, content_type="multipart/form-data")


def lang_prefix(lang: str) -> str:
    """The start of every address in `lang`: none for the default language, English."""
    return "" if lang == "en" else f"/{lang}"


def _submit_path(lang: str) -> str:
    return f"{lang_prefix(lang)}/submit"


class MultipartBody:
    """multipart/form-data generated lazily; files given as paths are streamed from disk."""

    def __init__(
        self,
        fields: dict[str, str],
        files: list[tuple[str, bytes | Path, str]],
        field_name: str = "attachments",
        chunk_size: int = 256 * 1024,
    ) -> None:
        self.boundary = "----portal" + secrets.token_hex(16)
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self.chunk_size = chunk_size
        self._parts: list[tuple[bytes, bytes | Path]] = []
        for name, value in fields.items():
            head = (
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            ).encode()
            self._parts.append((head, value.encode("utf-8")))
        for filename, content, content_type in files:
            quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
            head = (
                f"--{self.boundary}\r\nContent-Disposition: form-data; "
                f'name="{field_name}"; filename="{quoted}"\r\n'
                f"Content-Type: {content_type}\r\n\r\n"
            ).encode()
            self._parts.append((head, content))
        self._tail = f"--{self.boundary}--\r\n".encode()

    @property
    def length(self) -> int:
        total = len(self._tail)
        for head, content in self._parts:
            size = content.stat().st_size if isinstance(content, Path) else len(content)
            total += len(head) + size + 2
        return total

    def __iter__(self) -> Iterator[bytes]:
        for head, content in self._parts:
            yield head
            if isinstance(content, Path):
                with content.open("rb") as f:
                    yield from _read_chunks(f, self.chunk_size)
            else:
                yield content
            yield b"\r\n"
        yield self._tail


def _read_chunks(f: BinaryIO, size: int) -> Iterator[bytes]:
    while chunk := f.read(size):
        yield chunk


@dataclass
class LiveServer:
    url: str
    port: int
    data_dir: Path
    tmp_dir: Path
    log_path: Path
    identity_file: Path
    recipient: str
    process: subprocess.Popen[bytes]
    host_header: str | None = None

    def client(self) -> Client:
        return Client(self.url, host_header=self.host_header)

    def stop(self, sig: int | None = None) -> None:
        if self.process.poll() is None:
            if sig is None:
                self.process.terminate()
            else:
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")


def start_server(
    root: Path,
    recipient: str,
    identity_file: Path,
    *,
    env: dict[str, str] | None = None,
    port: int | None = None,
    data_dir: Path | None = None,
    log_name: str = "server.log",
    python: str = sys.executable,
    front: bool = False,
    serve_args: Sequence[str] = (),
    reply_signers: Sequence[str] = (),
    answers: list[int] | None = None,
    host_header: str | None = None,
) -> LiveServer:
    """Start `testimony-portal serve` in a subprocess and wait until it answers.

    With `front`, the documented stack (nginx in front of gunicorn) serves;
    otherwise gunicorn alone (`--no-front`), which starts faster. `answers`,
    if given, receives the status of every answer to `GET /` while waiting
    (a refused connection is not an answer), ending with the first 200.
    `host_header` is the name its clients send (one of PORTAL_ALLOWED_HOSTS).
    `reply_signers` are the public signing keys it trusts for replies.
    """
    root.mkdir(parents=True, exist_ok=True)
    keys = root / "keys"
    keys.mkdir(exist_ok=True)
    (keys / "recipients.txt").write_text(f"# test recipient\n{recipient}\n")
    if reply_signers:
        # The default PORTAL_REPLY_SIGNERS, relative to the server's working folder.
        (keys / "reply-signers.txt").write_text("".join(f"{s}\n" for s in reply_signers))
    data_dir = data_dir or root / "data"
    tmp_dir = root / "tmp"
    tmp_dir.mkdir(exist_ok=True)
    port = port or free_port()
    log_path = root / log_name
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),
        "TMPDIR": str(tmp_dir),
        "PORTAL_DATA_DIR": str(data_dir),
        "PORTAL_RECIPIENTS": str(keys / "recipients.txt"),
        "PORTAL_SECRET_KEY": "test-" + secrets.token_hex(16),
        "PORTAL_MIN_FREE_MB": "0",
        "PORTAL_RATE_PER_MINUTE": "100000",
        "PORTAL_RATE_BURST": "100000",
        # The receipt's argon2id cost, lowered by the autouse fixture in conftest.py.
        **{k: v for k, v in os.environ.items() if k.startswith("PORTAL_RECEIPT_KDF_")},
        **(env or {}),
    }
    log = log_path.open("ab")
    command = [python, "-m", "portal.server.cli", "serve", "--port", str(port), "--workers", "2"]
    command += [*([] if front else ["--no-front"]), *serve_args]
    process = subprocess.Popen(
        command,
        cwd=root,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    server = LiveServer(
        url=f"http://127.0.0.1:{port}",
        port=port,
        data_dir=data_dir,
        tmp_dir=tmp_dir,
        log_path=log_path,
        identity_file=identity_file,
        recipient=recipient,
        process=process,
        host_header=host_header,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            status = server.client().get("/").status
        except OSError:
            time.sleep(0.1 if answers is None else 0.01)
            continue
        if answers is not None:
            answers.append(status)
        if status == 200:
            return server
    server.stop()
    raise RuntimeError(f"server did not answer within 60 s:\n{server.log()}")


def open_submission(
    directory: Path, identities: Sequence[Any]
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Decrypt a committed submission: its manifest and each attachment's plaintext by path.

    Raises if anything fails to decrypt or an attachment's SHA-256 or size
    differs from the manifest: a corrupt submission never passes.
    """
    from portal.core.age import decrypt

    manifest = json.loads(decrypt((directory / "testimony.age").read_bytes(), identities))
    assert manifest["id"] == directory.name, "manifest names another submission"
    files = {}
    for entry in manifest["attachments"]:
        data = decrypt((directory / entry["path"]).read_bytes(), identities)
        assert len(data) == entry["size"], f"{entry['path']}: size differs from the manifest"
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{entry['path']}: bad hash"
        files[entry["path"]] = data
    return manifest, files
