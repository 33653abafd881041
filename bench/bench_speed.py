"""The speed table of issues 14 and 25 in one run: portal beside its reference, with ratios.

    python bench/bench_speed.py            # all rows (several minutes)
    python bench/bench_speed.py --quick    # small sizes and counts, to try it out
    python bench/bench_speed.py --rows get,small

Rows (each measured `--repeat` times, default 3; the median is printed, with
the 1-minute load average of the machine when each run started):

  browsers text submissions from 16 browsers (keep-alive), each GETting the
           form and POSTing it (consent and a short testimony, an empty file
           part), against a reference Flask + Flask-WTF app on the same
           gunicorn settings that validates its CSRF token, writes each
           POST's testimony to a new file and fsyncs it. Rate, CPU per
           submission, and the POST's p99 latency of each. And the limit:
           the same reference storing each POST as the portal's design
           requires (age-encrypted, padded, committed durably through the
           portal's own intake and store); where its ratio is below the
           aim, issue 25 holds the portal to 0.9 of it.
  upload   256 MiB through the real portal with curl (gunicorn, 2 workers)
           to ciphertext on disk, against `age -e` to the same disk + fsync;
           and against a SecureDrop-style server on the same gunicorn
           settings (Werkzeug's default form parser, which spools the upload
           to a plaintext temporary file, then `gzip | gpg -e` to a
           throwaway key in a temporary GNUPGHOME, then fsync).
  open     `testimony-review open` of that submission against `age -d` of
           the same file + fsync of its output, each run starting with the
           ciphertext in the page cache (`same_start_for_open`).
  small    2,000 text submissions from 32 connections, each posting the form
           as a browser does with no file chosen (an empty file part) and the
           default questionnaire's one required answer (consent), with a form
           fetched beforehand for each submission (forms are one-time).
  browser  submissions as a new visitor makes them: a new connection, GET
           the form (new session, new token), then POST it.
  get      GET / against a minimal Flask page on the same gunicorn settings.

Every row runs at the default settings (the receipt's default argon2id cost
included). `small` and `browser` are not in the default set (`--rows`).

The load client runs in separate processes (`--client-procs`, default 4, each
with `clients / procs` threads on blocking keep-alive sockets) and sends
pre-built request bytes with a minimal HTTP/1.1 parser, so that it costs a
fraction of what the server does; its own CPU per request is printed beside
the server's (CPU of the whole gunicorn tree, from /proc, divided by the
requests served). Both share the machine's two cores, which is why every
comparison is a ratio measured in the same run.

In the `get` and `browsers` rows each connection is closed and opened again
every `RECONNECT_EVERY` requests (a browser that stays keeps its session).
A keep-alive connection stays with the gunicorn worker that accepted it,
and connections opened all at once split between the two workers by
chance: with one connection for the whole run, runs of the same code gave
2,500 to 5,000 GET/s for the minimal page, as one worker did up to four
times the other's work (CPU of each worker, docs/BENCHMARKS.md). Opened
again every few requests, the connections even out between the workers,
as they do in the deployment, where nginx opens a new connection to
gunicorn for every request (`portal/server/front.py`).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_upload import RssSampler, tree_rss  # noqa: E402

from portal.core.age import X25519Identity  # noqa: E402
from portal.testing.live import (  # noqa: E402
    RECEIVED_MARKERS,
    free_port,
    hidden_fields,
    start_server,
)

MIB = 1 << 20
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
ALL_ROWS = ("browsers", "upload", "open", "small", "browser", "get")
DEFAULT_ROWS = ("browsers", "upload", "open", "get")


# ------------------------------------------------------------------ measuring


def load1() -> float:
    return os.getloadavg()[0]


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants, threads included."""
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICK
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, ValueError):
            continue
        stack.extend(int(c) for c in children)
    return total


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Run:
    """One measurement: its figure(s) and the load average when it started."""

    values: dict[str, float]
    load: float


@dataclass
class Row:
    work: str
    portal: str
    reference: str
    ratio: str
    aim: str
    load: str
    note: str = ""


def median_run(runs: list[Run], key: str) -> Run:
    """The run whose `key` is the median (the middle one of an odd count)."""
    ordered = sorted(runs, key=lambda r: r.values[key])
    return ordered[(len(ordered) - 1) // 2]


def loads(runs: list[Run]) -> str:
    return "/".join(f"{r.load:.1f}" for r in runs)


def repeat(times: int, measure: Callable[[], dict[str, float]]) -> list[Run]:
    runs = []
    for _ in range(times):
        load = load1()
        runs.append(Run(measure(), load))
    return runs


# ------------------------------------------------------------- load client


class Connection:
    """One keep-alive HTTP/1.1 connection with just enough parsing for this benchmark."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buffer = b""

    def _connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=120)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buffer = b""
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _fill(self, sock: socket.socket) -> None:
        data = sock.recv(256 * 1024)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buffer += data

    def roundtrip(self, request: bytes) -> tuple[int, bytes, bytes]:
        """Send one request; return (status, head, body)."""
        for attempt in (0, 1):
            sock = self._connect()
            try:
                sock.sendall(request)
                while b"\r\n\r\n" not in self.buffer:
                    self._fill(sock)
                break
            except (ConnectionError, BrokenPipeError):
                # A keep-alive connection the server closed while idle: retry once.
                self.close()
                if attempt:
                    raise
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        match = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
        length = int(match.group(1)) if match else 0
        while len(self.buffer) < length:
            self._fill(sock)
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        if re.search(rb"\r\nconnection: *close", head, re.IGNORECASE):
            self.close()
        return int(head[9:12]), head, body


def get_request(path: str, cookie: str | None = None) -> bytes:
    extra = f"Cookie: {cookie}\r\n" if cookie else ""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


def form_post(form: tuple[str, str], cookie: str, text: str) -> bytes:
    """The form as a browser posts it when no file was chosen: an empty, unnamed file part."""
    token, form_id = form
    boundary = "----bench" + secrets.token_hex(8)
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n',
        f'--{boundary}\r\nContent-Disposition: form-data; name="form_id"\r\n\r\n{form_id}\r\n',
        f'--{boundary}\r\nContent-Disposition: form-data; name="testimony"\r\n\r\n{text}\r\n',
        # The default questionnaire's one required answer.
        f'--{boundary}\r\nContent-Disposition: form-data; name="consent"\r\n\r\nyes\r\n',
        f'--{boundary}\r\nContent-Disposition: form-data; name="attachments"; filename=""\r\n'
        "Content-Type: application/octet-stream\r\n\r\n\r\n",
        f'--{boundary}\r\nContent-Disposition: form-data; name="website"\r\n\r\n\r\n',
        f"--{boundary}--\r\n",
    ]
    body = "".join(parts).encode("utf-8")
    head = (
        "POST /submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\nCookie: {cookie}\r\n\r\n"
    )
    return head.encode() + body


def fetch_form(conn: Connection, cookie: str | None = None) -> tuple[tuple[str, str], str]:
    """GET the form (in a new session without `cookie`); return ((token, form_id), cookie)."""
    status, head, body = conn.roundtrip(get_request("/submit", cookie))
    page = body.decode("utf-8")
    fields = hidden_fields(page)
    token, form_id = fields.get("csrf_token"), fields.get("form_id")
    if cookie is None:
        found = re.search(rb"\r\nset-cookie: *([^;\r]+)", head, re.IGNORECASE)
        cookie = found.group(1).decode() if found else None
    if status != 200 or not token or not form_id or not cookie:
        raise RuntimeError(f"no form from the server (HTTP {status})")
    return (token, form_id), cookie


RECEIVED = RECEIVED_MARKERS[0].encode()
# Requests a load connection carries before it is opened again (see the
# module's docstring); the same for the portal and every reference.
RECONNECT_EVERY = 24


def client_thread(
    port: int, mode: str, count: int, out: dict[str, Any], prepared: Any, ready: Any
) -> None:
    conn = Connection(port)
    latencies: list[float] = []
    failures = 0
    forms: list[tuple[str, str]] = []
    cookie = ""
    if mode == "small":
        # Each form stores one submission (its one-time value): the forms are
        # fetched before the clock starts, in one session, so that only the
        # submissions are timed.
        form, cookie = fetch_form(conn)
        forms.append(form)
        while len(forms) < count:
            forms.append(fetch_form(conn, cookie)[0])
    prepared.wait()
    ready.wait()
    for number in range(count):
        text = f"bench testimony {secrets.token_hex(6)} 증언 {number}"
        start = time.perf_counter()
        if mode == "small":
            status, _head, body = conn.roundtrip(form_post(forms[number], cookie, text))
            ok = status == 200 and RECEIVED in body
        elif mode == "browser":
            conn.close()  # a new visitor: a new connection, no cookie
            form, new_cookie = fetch_form(conn)
            status, _head, body = conn.roundtrip(form_post(form, new_cookie, text))
            ok = status == 200 and RECEIVED in body
        elif mode == "browsers":
            # A browser that stays: one session, its connection opened
            # again every RECONNECT_EVERY requests.
            if number and number % (RECONNECT_EVERY // 2) == 0:
                conn.close()
            form, cookie = fetch_form(conn, cookie or None)
            posted = time.perf_counter()
            status, _head, body = conn.roundtrip(form_post(form, cookie, text))
            out["post_latencies"].append(time.perf_counter() - posted)
            ok = status == 200 and RECEIVED in body
        else:
            if number and number % RECONNECT_EVERY == 0:
                conn.close()
            status, _head, body = conn.roundtrip(get_request(mode))
            ok = status == 200
        latencies.append(time.perf_counter() - start)
        failures += not ok
    conn.close()
    out["latencies"].extend(latencies)
    out["failures"] += failures


def client_process(
    port: int, mode: str, counts: list[int], barrier: Any, results: Any, go: Any
) -> None:
    out: dict[str, Any] = {"latencies": [], "post_latencies": [], "failures": 0}
    prepared = threading.Barrier(len(counts) + 1)
    ready = threading.Barrier(len(counts) + 1)
    threads = [
        threading.Thread(target=client_thread, args=(port, mode, n, out, prepared, ready))
        for n in counts
    ]
    for thread in threads:
        thread.start()
    prepared.wait()  # every thread has its connection (and its forms)
    barrier.wait()  # and so has every process
    go.wait()
    start = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_SELF)
    ready.wait()
    for thread in threads:
        thread.join()
    end = time.monotonic()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    results.put((start, end, out["latencies"], out["failures"], cpu, out["post_latencies"]))


def run_load(
    server_pid: int, port: int, mode: str, total: int, clients: int, procs: int
) -> dict[str, float]:
    """`total` requests (or submissions) from `clients` connections in `procs` processes."""
    ctx = mp.get_context("fork")
    per_client = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    groups = [per_client[i::procs] for i in range(procs)]
    barrier, go, results = ctx.Barrier(procs + 1), ctx.Event(), ctx.Queue()
    workers = [
        ctx.Process(target=client_process, args=(port, mode, group, barrier, results, go))
        for group in groups
    ]
    for worker in workers:
        worker.start()
    barrier.wait()
    cpu_before = tree_cpu(server_pid)
    go.set()
    collected = [results.get(timeout=900) for _ in workers]
    cpu_after = tree_cpu(server_pid)
    for worker in workers:
        worker.join()
    start = min(c[0] for c in collected)
    end = max(c[1] for c in collected)
    latencies = sorted(lat for c in collected for lat in c[2])
    posts = sorted(lat for c in collected for lat in c[5]) or latencies
    failures = sum(c[3] for c in collected)
    wall = end - start
    return {
        "post_p99": posts[min(len(posts) - 1, int(0.99 * len(posts)))] * 1000,
        "rate": len(latencies) / wall,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000,
        "server_ms": (cpu_after - cpu_before) / len(latencies) * 1000,
        "client_ms": sum(c[4] for c in collected) / len(latencies) * 1000,
        "failures": failures,
    }


# --------------------------------------------------------- reference servers


def minimal_app() -> Any:
    from flask import Flask

    app = Flask("minimal")

    @app.get("/")
    def index() -> str:
        return "<!doctype html><html><head><title>Hello</title></head><body>Hello</body></html>"

    return app


def wtf_app(out_dir: Path, recipient: str | None = None) -> Any:
    """The reference form: Flask + Flask-WTF, CSRF checked, each POST written and fsynced.

    With `recipient`, the limit of the browsers row instead: the same app
    stores each POST as the portal's design requires and nothing more,
    through the portal's own intake and store (the testimony age-encrypted
    to `recipient` in a manifest padded to its size bucket, then committed
    durably: staging folder, file and folder fsyncs, rename, parent fsync,
    times set to the day, the free-space floor kept), in `out_dir`.
    """
    from flask import Flask
    from flask_wtf import FlaskForm
    from wtforms import TextAreaField

    app = Flask("reference_form")
    app.config["SECRET_KEY"] = secrets.token_hex(32)

    class TestimonyForm(FlaskForm):  # type: ignore[misc]
        testimony = TextAreaField()

    page = (
        "<!doctype html><html lang=en><head><title>Form</title></head><body>"
        '<form method=post action="/submit" enctype="multipart/form-data">'
        '<input type="hidden" name="csrf_token" value="{token}">'
        '<input type="hidden" name="form_id" value="reference">'
        '<textarea name="testimony"></textarea><button>Send</button></form></body></html>'
    )

    @app.get("/submit")
    def form() -> str:
        return page.format(token=TestimonyForm().csrf_token.current_token)

    store = None
    if recipient is not None:
        from portal.core.age import parse_recipient
        from portal.server.freespace import FreeSpaceFloor
        from portal.server.intake import store_submission
        from portal.server.store import SubmissionStore

        recipients = [parse_recipient(recipient)]
        store = SubmissionStore(out_dir, opener=FreeSpaceFloor(out_dir, 0).opener)
        store.initialise()

    @app.post("/submit")
    def submit() -> tuple[str, int]:
        posted = TestimonyForm()
        if not posted.validate_on_submit():
            return "invalid", 400
        if store is not None:
            store_submission(store, recipients, {"testimony": posted.testimony.data or ""}, [])
            return f"<p {RECEIVED_MARKERS[0]}>received</p>", 200
        target = out_dir / secrets.token_hex(12)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (posted.testimony.data or "").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        return f"<p {RECEIVED_MARKERS[0]}>received</p>", 200

    return app


def securedrop_app(out_dir: Path, gnupghome: str, recipient: str) -> Any:
    """Werkzeug's default parser (spools uploads to a plaintext temp file), then gzip | gpg."""
    from flask import Flask, request

    app = Flask("securedrop_style")

    @app.post("/submit")
    def submit() -> tuple[str, int]:
        for upload in request.files.getlist("attachments"):
            if not upload.filename:
                continue
            upload.stream.seek(0)
            target = out_dir / f"{secrets.token_hex(8)}.gz.gpg"
            gpg_cmd = [
                "gpg", "--batch", "--quiet", "--homedir", gnupghome, "--trust-model", "always",
                "--compress-algo", "none", "-e", "-r", recipient, "-o", str(target),
            ]  # fmt: skip
            has_fd = hasattr(upload.stream, "fileno")
            gzip = subprocess.Popen(
                ["gzip", "-c"],
                stdin=upload.stream if has_fd else subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            gpg = subprocess.Popen(gpg_cmd, stdin=gzip.stdout)
            assert gzip.stdout is not None
            gzip.stdout.close()
            if not has_fd:
                assert gzip.stdin is not None
                shutil.copyfileobj(upload.stream, gzip.stdin)
                gzip.stdin.close()
            if gzip.wait() or gpg.wait():
                return "failed", 500
            fsync_path(target)
        return f"<p {RECEIVED_MARKERS[0]}>received</p>", 200

    return app


def serve_reference(kind: str, port: int, extra: list[str]) -> None:
    from portal.server.appserver import PortalServer, gunicorn_options
    from portal.server.cli.parser import DEFAULT_THREADS

    if kind == "minimal":
        app = minimal_app()
    elif kind == "wtf":
        app = wtf_app(Path(extra[0]))
    elif kind == "wtf-sealed":
        app = wtf_app(Path(extra[0]), recipient=extra[1])
    else:
        out_dir, gnupghome, recipient = extra
        app = securedrop_app(Path(out_dir), gnupghome, recipient)
    # The portal's own gunicorn settings: 2 workers, gthread, its thread limit, preload.
    options = gunicorn_options(
        SimpleNamespace(log_level="warning"),  # type: ignore[arg-type]
        f"127.0.0.1:{port}",
        2,
        DEFAULT_THREADS,
    )
    # The portal's housekeeping thread (staging sweep, daily seal) has no place here.
    options.pop("post_worker_init", None)
    PortalServer(app, options).run()


@dataclass
class Reference:
    process: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def start_reference(kind: str, root: Path, extra: list[str] = []) -> Reference:  # noqa: B006
    port = free_port()
    env = {**os.environ, "TMPDIR": str(root)}
    log = (root / f"{kind}.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port), *extra],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the {kind} reference server exited; see {root / kind}.log")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return Reference(process, port)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the {kind} reference server did not start")


def throwaway_gpg_key(root: Path) -> tuple[str, str]:
    """A fresh GnuPG home (short path: gpg-agent's socket name is limited) and a key in it."""
    home = tempfile.mkdtemp(prefix="gpg-", dir="/tmp")  # noqa: S108
    os.chmod(home, 0o700)
    uid = "bench <bench@example.invalid>"
    subprocess.run(
        ["gpg", "--batch", "--quiet", "--homedir", home, "--passphrase", "",
         "--quick-gen-key", uid, "future-default", "default", "never"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return home, uid


def stop_gpg(home: str) -> None:
    subprocess.run(
        ["gpgconf", "--homedir", home, "--kill", "all"], check=False, stderr=subprocess.DEVNULL
    )
    shutil.rmtree(home, ignore_errors=True)


# ------------------------------------------------------------------- rows


def random_file(path: Path, mib: int) -> Path:
    with path.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MIB))
    return path


def curl_upload(port: int, source: Path, *, with_form: bool) -> float:
    """POST `source` with curl as a browser would; returns the POST's seconds.

    `with_form`: GET the portal's form first (its session cookie, CSRF token
    and one-time value) and answer its one required question, as a witness does.
    """
    base = f"http://127.0.0.1:{port}"
    command = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1800"]
    if with_form:
        jar = str(source.parent / "cookies.txt")
        page = subprocess.run(
            ["curl", "-sS", "-c", jar, "-b", jar, f"{base}/submit"],
            capture_output=True,
            check=True,
        ).stdout.decode()
        command += ["-c", jar, "-b", jar, "-F", "consent=yes"]
        for name, value in hidden_fields(page).items():
            command += ["-F", f"{name}={value}"]
    command += [
        "-F", "testimony=benchmark",
        "-F", f"attachments=@{source};type=application/octet-stream",
        f"{base}/submit",
    ]  # fmt: skip
    start = time.perf_counter()
    status = subprocess.run(command, capture_output=True, check=True, text=True).stdout
    elapsed = time.perf_counter() - start
    if status != "200":
        raise SystemExit(f"upload failed: HTTP {status}")
    return elapsed


def upload_once(port: int, pid: int, source: Path, *, with_form: bool) -> dict[str, float]:
    idle = tree_rss(pid)
    sampler = RssSampler(pid)
    sampler.start()
    cpu = tree_cpu(pid)
    elapsed = curl_upload(port, source, with_form=with_form)
    server_cpu = tree_cpu(pid) - cpu
    peak = sampler.stop()
    size = source.stat().st_size / MIB
    return {
        "rate": size / elapsed,
        "rss": (peak - idle) / MIB,
        "cpu": server_cpu / elapsed,
        "cpu_s_per_gib": server_cpu / (size / 1024),
    }


def age_encrypt_once(recipient: str, source: Path, target: Path) -> dict[str, float]:
    start = time.perf_counter()
    subprocess.run(["age", "-e", "-r", recipient, "-o", str(target), str(source)], check=True)
    fsync_path(target)
    elapsed = time.perf_counter() - start
    target.unlink()
    return {"rate": source.stat().st_size / MIB / elapsed}


def rows_upload_open(args: argparse.Namespace, root: Path) -> list[Row]:
    identity = X25519Identity.generate()
    identity_file = root / "identity.txt"
    identity_file.write_text(f"{identity}\n")
    recipient = str(identity.recipient)
    source = random_file(root / "upload.bin", args.upload_mib)
    server = start_server(root / "portal", recipient, identity_file)
    rows: list[Row] = []
    try:
        submissions = server.data_dir / "submissions"

        def portal_upload() -> dict[str, float]:
            for old in submissions.iterdir():
                shutil.rmtree(old)
            return upload_once(server.port, server.process.pid, source, with_form=True)

        portal_runs: list[Run] = []
        age_runs: list[Run] = []
        # Interleaved, so that both see the same moments of a shared disk.
        for _ in range(args.repeat):
            portal_runs += repeat(1, portal_upload)
            age_runs += repeat(
                1, lambda: age_encrypt_once(recipient, source, server.data_dir / "age.age")
            )
    finally:
        server.stop()
    p, a = median_run(portal_runs, "rate"), median_run(age_runs, "rate")
    rows.append(
        Row(
            f"{args.upload_mib} MiB upload (curl) through gunicorn, to ciphertext on disk",
            f"{p.values['rate']:.0f} MiB/s (server +{p.values['rss']:.0f} MiB RSS, aim <= +64; "
            f"{p.values['cpu']:.2f} cores, {p.values['cpu_s_per_gib']:.1f} CPU s/GiB)",
            f"`age -e` + fsync: {a.values['rate']:.0f} MiB/s",
            f"{p.values['rate'] / a.values['rate']:.2f}",
            ">= 0.6",
            f"{loads(portal_runs)} ; {loads(age_runs)}",
        )
    )

    if "open" in args.rows:
        (stored,) = list(submissions.iterdir())
        ciphertext = stored / "files" / "1.age"
        open_runs: list[Run] = []
        agedec_runs: list[Run] = []
        same_start_for_open(source)
        for _ in range(args.repeat):
            read_whole(ciphertext)
            open_runs += repeat(
                1, lambda: open_once(server.data_dir, identity_file, root, args.upload_mib)
            )
            read_whole(ciphertext)
            agedec_runs += repeat(
                1, lambda: age_decrypt_once(identity_file, ciphertext, root, args.upload_mib)
            )
        o, d = median_run(open_runs, "rate"), median_run(agedec_runs, "rate")
        rows.append(
            Row(
                f"`testimony-review open` of that {args.upload_mib} MiB file",
                f"{o.values['rate']:.0f} MiB/s ({o.values['cpu']:.2f} CPU s)",
                f"`age -d` + fsync: {d.values['rate']:.0f} MiB/s ({d.values['cpu']:.2f} CPU s)",
                f"{o.values['rate'] / d.values['rate']:.2f}",
                ">= 0.9",
                f"{loads(open_runs)} ; {loads(agedec_runs)}",
            )
        )

    if args.sd_mib:
        rows.insert(1, securedrop_row(args, root, p))
    source.unlink()
    return rows


def securedrop_row(args: argparse.Namespace, root: Path, portal: Run) -> Row:
    gnupghome, uid = throwaway_gpg_key(root)
    out_dir = root / "securedrop-out"
    out_dir.mkdir()
    spool = root / "securedrop-tmp"
    spool.mkdir()
    server: Reference | None = None
    try:
        source = random_file(root / "sd-upload.bin", args.sd_mib)
        server = reference = start_reference("securedrop", spool, [str(out_dir), gnupghome, uid])

        def sd_upload() -> dict[str, float]:
            for old in out_dir.iterdir():
                old.unlink()
            return upload_once(reference.port, reference.process.pid, source, with_form=False)

        runs = repeat(args.repeat, sd_upload)
    finally:
        # The throwaway key's gpg-agent is stopped whatever happened.
        if server is not None:
            server.stop()
        stop_gpg(gnupghome)
        (root / "sd-upload.bin").unlink(missing_ok=True)
    s = median_run(runs, "rate")
    return Row(
        f"same, against a SecureDrop-style pipeline ({args.sd_mib} MiB: Werkzeug spooling, "
        "then `gzip \\| gpg -e`)",
        f"{portal.values['rate']:.0f} MiB/s",
        f"{s.values['rate']:.1f} MiB/s",
        f"{portal.values['rate'] / s.values['rate']:.1f}x faster",
        "keep",
        loads(runs),
    )


def same_start_for_open(source: Path) -> None:
    """Give `open` and `age -d` the same start, as a reviewer's machine gives them.

    - The ciphertext is read into the page cache before every run of either
      (`read_whole`): the server drops an upload's pages from the cache as it
      writes them, so the first run read it from the disk and left it cached
      for the next, which was always `age -d`.
    - The random upload is flushed to the disk first, so that its writeback
      does not fall into whichever run comes next.
    - The portal's modules are compiled to bytecode once, as pip does when it
      installs the reviewer's tool; this environment sets
      PYTHONDONTWRITEBYTECODE, and without it every run of `open` compiled
      them from source again.
    """
    fsync_path(source)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "portal")],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def read_whole(path: Path) -> None:
    with path.open("rb", buffering=0) as f:
        while f.read(MIB):
            pass


def open_once(data_dir: Path, identity_file: Path, root: Path, mib: int) -> dict[str, float]:
    # A fresh folder each time: `open` keeps its custody log's head beside the log,
    # and refuses a log that went missing while its head stayed.
    work = Path(tempfile.mkdtemp(prefix="open-", dir=root))
    out, custody = work / "opened", work / "custody.jsonl"
    command = [
        sys.executable, "-m", "portal.review.cli", "open", str(data_dir), "--identity",
        str(identity_file), "--out", str(out), "--custody", str(custody), "--reviewer", "bench",
        "--quiet",
    ]  # fmt: skip
    cpu = children_cpu()
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    cpu = children_cpu() - cpu
    shutil.rmtree(work)
    return {"rate": mib / elapsed, "cpu": cpu}


def children_cpu() -> float:
    """CPU seconds (user + system, all threads) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def age_decrypt_once(
    identity_file: Path, ciphertext: Path, root: Path, mib: int
) -> dict[str, float]:
    target = root / "age-plain.bin"
    cpu = children_cpu()
    start = time.perf_counter()
    subprocess.run(
        ["age", "-d", "-i", str(identity_file), "-o", str(target), str(ciphertext)], check=True
    )
    own = time.process_time()
    fsync_path(target)
    elapsed = time.perf_counter() - start
    # The fsync's own work (sending the pages to the disk) is done by this process.
    cpu = children_cpu() - cpu + time.process_time() - own
    target.unlink()
    return {"rate": mib / elapsed, "cpu": cpu}


def rows_load(args: argparse.Namespace, root: Path) -> list[Row]:
    """The load rows asked for, on one portal server at the default settings."""
    wanted = args.rows
    identity = X25519Identity.generate()
    identity_file = root / "identity.txt"
    identity_file.write_text(f"{identity}\n")
    server = start_server(root / "portal-load", str(identity.recipient), identity_file)
    pid, port = server.process.pid, server.port
    rows: list[Row] = []
    load_args = (args.clients, args.client_procs)

    def submissions(mode: str, count: int, clients: int | None = None) -> dict[str, float]:
        """Submit `count`; a submission confirmed but not on disk counts as a failure."""
        before = len(os.listdir(server.data_dir / "submissions"))
        shape = load_args if clients is None else (clients, min(args.client_procs, clients))
        result = run_load(pid, port, mode, count, *shape)
        stored = len(os.listdir(server.data_dir / "submissions")) - before
        result["failures"] += abs(count - stored)
        return result

    try:
        if "browsers" in wanted:
            rows.append(browsers_row(args, root, pid, port, submissions, str(identity.recipient)))
        if "small" in wanted:
            runs = repeat(args.repeat, lambda: submissions("small", args.submissions))
            m = median_run(runs, "rate")
            rows.append(
                Row(
                    f"small text submissions, {args.clients} clients, {args.submissions} "
                    f"submissions (empty file part as a browser sends)",
                    f"{m.values['rate']:.0f}/s, p99 {m.values['p99']:.0f} ms, "
                    f"{m.values['server_ms']:.1f} ms CPU each",
                    f"(goal) client {m.values['client_ms']:.1f} ms CPU each",
                    "",
                    ">= 200/s, p99 <= 200 ms",
                    loads(runs),
                    failures(runs),
                )
            )
        if "browser" in wanted:
            runs = repeat(args.repeat, lambda: submissions("browser", args.browser))
            m = median_run(runs, "rate")
            rows.append(
                Row(
                    "small submissions as a browser makes them (GET the form, then POST)",
                    f"{m.values['rate']:.0f}/s, {m.values['server_ms']:.1f} ms CPU each",
                    f"client {m.values['client_ms']:.1f} ms CPU each",
                    "",
                    ">= 150/s",
                    loads(runs),
                    failures(runs),
                )
            )
        if "get" in wanted:
            minimal = start_reference("minimal", root)
            try:
                portal_runs: list[Run] = []
                minimal_runs: list[Run] = []
                # Interleaved, so that both see the same moments of a noisy machine.
                for _ in range(args.repeat):
                    portal_runs += repeat(
                        1, lambda: run_load(pid, port, "/", args.gets, *load_args)
                    )
                    minimal_runs += repeat(
                        1,
                        lambda: run_load(
                            minimal.process.pid, minimal.port, "/", args.gets, *load_args
                        ),
                    )
            finally:
                minimal.stop()
            p, r = median_run(portal_runs, "rate"), median_run(minimal_runs, "rate")
            rows.append(
                Row(
                    "GET /",
                    f"{p.values['rate']:.0f}/s, {p.values['server_ms']:.2f} ms CPU each "
                    f"(client {p.values['client_ms']:.2f})",
                    f"minimal Flask page, same gunicorn: {r.values['rate']:.0f}/s, "
                    f"{r.values['server_ms']:.2f} ms (client {r.values['client_ms']:.2f})",
                    f"{p.values['rate'] / r.values['rate']:.2f}",
                    ">= 0.7",
                    f"{loads(portal_runs)} ; {loads(minimal_runs)}",
                    failures(portal_runs + minimal_runs),
                )
            )
    finally:
        server.stop()
    return rows


def browsers_row(
    args: argparse.Namespace,
    root: Path,
    pid: int,
    port: int,
    submissions: Callable[[str, int, int], dict[str, float]],
    recipient: str,
) -> Row:
    """16 browsers (keep-alive): the portal, the Flask + Flask-WTF reference, and the limit.

    The limit is the reference storing each POST as the portal's design
    requires (`wtf_app` with a recipient): what any Flask + Flask-WTF app
    must spend to keep a submission encrypted and durable on this machine.
    Where the limit itself is below the aim, the portal is held to 0.9 of it.
    """
    out_dir = root / "reference-out"
    out_dir.mkdir(exist_ok=True)
    sealed_dir = root / "limit-out"
    sealed_dir.mkdir(exist_ok=True)
    reference = start_reference("wtf", root, [str(out_dir)])
    try:
        limit = start_reference("wtf-sealed", root, [str(sealed_dir), recipient])
    except BaseException:
        reference.stop()
        raise
    browsers = (args.browsers_clients, min(args.client_procs, args.browsers_clients))
    portal_runs: list[Run] = []
    reference_runs: list[Run] = []
    limit_runs: list[Run] = []

    def load_on(server: Reference, stored: Callable[[], int]) -> Callable[[], dict[str, float]]:
        def measure() -> dict[str, float]:
            before = stored()
            result = run_load(server.process.pid, server.port, "browsers", args.browsers, *browsers)
            result["failures"] += abs(args.browsers - (stored() - before))
            return result

        return measure

    try:
        for _ in range(args.repeat):
            portal_runs += repeat(
                1, lambda: submissions("browsers", args.browsers, args.browsers_clients)
            )
            reference_runs += repeat(1, load_on(reference, lambda: len(os.listdir(out_dir))))
            limit_runs += repeat(
                1, load_on(limit, lambda: len(os.listdir(sealed_dir / "submissions")))
            )
    finally:
        reference.stop()
        limit.stop()
    p, r = median_run(portal_runs, "rate"), median_run(reference_runs, "rate")
    lim = median_run(limit_runs, "rate")
    ratio, limit_ratio = p.values["rate"] / r.values["rate"], lim.values["rate"] / r.values["rate"]
    return Row(
        f"text submissions, {args.browsers_clients} browsers (GET form + POST)",
        f"{p.values['rate']:.0f}/s, {p.values['server_ms']:.1f} ms CPU each, "
        f"POST p99 {p.values['post_p99']:.0f} ms",
        f"Flask + Flask-WTF, write + fsync each POST: {r.values['rate']:.0f}/s, "
        f"{r.values['server_ms']:.1f} ms CPU each, POST p99 {r.values['post_p99']:.0f} ms; "
        f"limit, the same app storing each POST encrypted and durably as the portal must: "
        f"{lim.values['rate']:.0f}/s, {lim.values['server_ms']:.1f} ms CPU each",
        f"{ratio:.2f} (p99 {p.values['post_p99'] / r.values['post_p99']:.1f}x); "
        f"limit {limit_ratio:.2f}, portal / limit {p.values['rate'] / lim.values['rate']:.2f}",
        ">= 0.7 (p99 <= 4x), or >= 0.9 of the limit where the limit is below 0.7",
        f"{loads(portal_runs)} ; {loads(reference_runs)} ; {loads(limit_runs)}",
        failures(portal_runs + reference_runs + limit_runs),
    )


def failures(runs: list[Run]) -> str:
    failed = sum(int(r.values["failures"]) for r in runs)
    return f"{failed} failed requests" if failed else ""


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    print()
    print(
        f"Speed table (issues 14, 25): median of {args.repeat} runs; load = 1-minute load average "
        f"at the start of each run ({os.cpu_count()} cores)"
    )
    print()
    print("| work | portal | reference | ratio | aim | load (portal / reference runs) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        note = f" **{row.note}**" if row.note else ""
        print(
            f"| {row.work} | {row.portal}{note} | {row.reference} | {row.ratio} "
            f"| {row.aim} | {row.load} |"
        )
    print()
    print(
        f"Load client: {args.client_procs} processes x {args.clients // args.client_procs} "
        f"threads, keep-alive sockets (opened again every {RECONNECT_EVERY} requests), "
        "pre-built requests; CPU per request is the whole "
        "gunicorn tree's (server) and the client processes' own (client)."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows",
        default=",".join(DEFAULT_ROWS),
        help=f"default %(default)s; any of {','.join(ALL_ROWS)}",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--upload-mib", type=int, default=256)
    parser.add_argument(
        "--sd-mib",
        type=int,
        default=256,
        help="size for the SecureDrop-style row (it runs at about 10 MiB/s; 0 skips it)",
    )
    parser.add_argument("--submissions", type=int, default=2000)
    parser.add_argument("--browser", type=int, default=1000)
    parser.add_argument("--browsers", type=int, default=2000)
    parser.add_argument("--browsers-clients", type=int, default=16)
    parser.add_argument("--gets", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--client-procs", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="small sizes and counts")
    parser.add_argument(
        "--serve", choices=("minimal", "wtf", "wtf-sealed", "securedrop"), help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_reference(args.serve, args.port, args.extra)
        return 0
    if args.quick:
        args.upload_mib, args.sd_mib, args.submissions = 64, 16, 300
        args.browser, args.gets, args.repeat, args.browsers = 200, 500, 1, 300
    args.rows = set(args.rows.split(","))
    for tool in ("age", "gpg", "gzip"):
        if not shutil.which(tool):
            raise SystemExit(f"the `{tool}` command is needed: run `make system-deps`")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        root = Path(tmp)
        if args.rows & {"upload", "open"}:
            (root / "big").mkdir()
            rows += rows_upload_open(args, root / "big")
        if args.rows & {"browsers", "small", "browser", "get"}:
            (root / "load").mkdir()
            rows += rows_load(args, root / "load")
    print_table(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
