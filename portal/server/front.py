"""The front proxy: nginx in front of gunicorn, started and supervised by `serve`.

Why a proxy at all: a gunicorn worker thread owns a connection from its
first byte, and gunicorn puts no deadline on a request's header block, so a
few hundred clients that send half a request and go quiet (or send a byte
every few seconds) hold every thread and lock every witness out. nginx holds
such connections in one event loop for a few hundred bytes each, and drops a
header block that has not arrived within `header_timeout` seconds in total.

It is set up so that it never stores a request body: request buffering is
off (the body streams through to gunicorn as it arrives), response
buffering is off, and its temporary folders live in a private folder that
is removed when the server stops. Its error log goes through the same
redaction as ours (no time stamps, no client addresses, no request lines)
and there is no access log. Its own error pages (400, 408, 413, 414, 431,
501, 502...) are the portal's pages in the witness's language, rendered
when the server starts, with the same security headers, and no response
names the server software.

`serve` runs nginx and gunicorn as two child processes: gunicorn first,
nginx only once the app answers (no 502/503 page at start), and it stops
both and exits non-zero when either ends (`Supervisor`), so `make run`,
the Docker image and the tests share this one code path.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from flask import Flask

from portal.core.exitstatus import ExitStatus
from portal.server.appserver import render_page
from portal.server.web.i18n import LANGUAGES
from portal.server.web.security import STATIC_HEADERS

log = logging.getLogger("nginx")

# File descriptors for each process. nginx holds one per client connection
# and one more per request it passes on: 12,000 half-open connections (an
# attack measured on main) must leave room for the witnesses. nginx's
# `worker_connections` is set from the same number (`nginx_connections`),
# so the two are raised together.
WANTED_NOFILE = 65536
# Descriptors nginx needs besides connections: its log, listening sockets,
# the files of its error pages.
NGINX_RESERVED_FILES = 64
# Below this many connections `serve` warns that a flood of idle
# connections can reset witnesses' connections.
NGINX_CONNECTIONS_WANTED = 16384
# How long nginx waits for the app's answer once the whole request is
# passed on (and between two writes of a body the app does not read): a
# stopped or hung app gives the witness the portal's "not saved, try
# again" page after this long, never a silent wait. The app answers a
# submission within seconds of its last byte, however large.
UPSTREAM_TIMEOUT = 30.0
NGINX_DIRS = (Path("/usr/sbin"), Path("/usr/local/sbin"), Path("/usr/local/nginx/sbin"))
HEADERS_MORE = Path("/usr/lib/nginx/modules/ngx_http_headers_more_filter_module.so")
INSTALL_HINT = (
    "install it with `make system-deps` (Debian: apt-get install nginx "
    "libnginx-mod-http-headers-more-filter), or run `testimony-portal serve --no-front` "
    "for development only"
)
_PR_SET_PDEATHSIG = 1
_MAX_SOCKET_PATH = 100
# How long the app server may take to answer its first request.
APP_START_SECONDS = 60
# How long a stop waits for requests in flight (gunicorn's graceful timeout
# is 60 s) before it kills what is left. The container's stop timeout must
# be longer (docs/DEPLOYMENT.md: --stop-timeout 75).
STOP_SECONDS = 70
_SHORT_TMP = "/tmp"  # noqa: S108 (a private folder made by mkdtemp, only for the socket)

# Which of the portal's error pages stands for each status nginx answers
# itself. The status code the client sees is nginx's; the page is ours.
# 494 is nginx's name for "header block too large": it is sent as 431.
# 404 (a request for the internal error folder), 405 (TRACE, CONNECT) and
# 505 (a request line naming HTTP/2.0 or 9.9) would otherwise be nginx's own
# pages: no security headers and the word "nginx" in the body. A version
# nginx cannot parse is the client's mistake, so it is sent as 400.
PAGE_FOR_STATUS = {
    400: 400, 404: 404, 405: 405, 408: 400, 413: 413, 414: 400, 429: 429, 494: 400, 500: 500,
    501: 400, 502: 503, 503: 503, 504: 503, 505: 400,
}  # fmt: skip
SENT_STATUS = {494: 431, 502: 503, 504: 503, 505: 400}


def app_answers(upstream: Path, timeout: float = 5.0) -> bool:
    """True once the app server answers an HTTP request on its Unix socket.

    Any answer counts (a 400 for a Host not in PORTAL_ALLOWED_HOSTS too):
    the point is that a worker has taken the request, not what it said.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        try:
            probe.connect(str(upstream))
            probe.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            return probe.recv(16).startswith(b"HTTP/")
        except OSError:
            return False


class FrontError(Exception):
    """The front proxy cannot run; the message says why and what to do."""


@dataclass(frozen=True)
class FrontSettings:
    host: str
    port: int
    header_timeout: float
    body_timeout: float
    max_body_bytes: int
    nofile: int
    # The onion service's own port (PORTAL_ONION_PORT): PROXY protocol, per-circuit limits.
    onion_port: int | None = None


def raise_open_file_limit(wanted: int = WANTED_NOFILE) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `wanted`; returns the new soft limit.

    Children (nginx, gunicorn and its workers) inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def nginx_connections(nofile: int) -> int:
    """nginx's `worker_connections` for an open-file limit of `nofile`: all but a reserve."""
    return max(1024, nofile - NGINX_RESERVED_FILES)


def forbid_core_files() -> None:
    """A hard core-size limit of zero for this process and every child it starts.

    nginx, gunicorn and its workers all hold request bodies in memory; a
    core file of any of them would put testimony on disk in plaintext.
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def find_nginx() -> Path:
    found = shutil.which("nginx")
    candidates = [Path(found)] if found else []
    candidates += [d / "nginx" for d in NGINX_DIRS]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            if not HEADERS_MORE.is_file():
                raise FrontError(
                    f"the nginx module {HEADERS_MORE.name} is missing (it removes the "
                    f"Server header); {INSTALL_HINT}"
                )
            return path
    raise FrontError(f"nginx is not installed (the portal runs behind it); {INSTALL_HINT}")


def _listen(host: str, port: int) -> str:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{address} default_server backlog=4096"


# Per Tor circuit, on the onion port (see `onion_listen`). A Tor Browser
# sends all of one witness's requests to the portal over one circuit, at most
# 6 connections at a time; a page with its style sheet and images is under
# 10 requests. One circuit may have CIRCUIT_CONNECTIONS requests in
# progress at once (each upload in flight holds one) and make
# CIRCUIT_RATE requests a second, after a burst of CIRCUIT_BURST.
CIRCUIT_CONNECTIONS = 8
CIRCUIT_RATE = 2
CIRCUIT_BURST = 30
# tor's header is "PROXY TCP6 fc00:dead:beef:4dad::AABB:CCDD ::1 65535 42":
# the circuit's global identifier in the last 32 bits of the source address
# (tor's manual, HiddenServiceExportCircuitID), which nginx gives as
# $proxy_protocol_addr.


def onion_listen(settings: FrontSettings) -> str:
    """The onion service's listener, if configured: tor sends a PROXY header first.

    torrc: `HiddenServicePort 80 127.0.0.1:<onion port>` with
    `HiddenServiceExportCircuitID haproxy`. A connection without the header
    (anything but that tor) is closed unanswered.
    """
    if settings.onion_port is None:
        return ""
    host = settings.host
    address = f"[{host}]:{settings.onion_port}" if ":" in host else f"{host}:{settings.onion_port}"
    return (
        "        # The onion service's tor: a PROXY header names each connection's\n"
        "        # circuit (torrc: HiddenServiceExportCircuitID haproxy).\n"
        f"        listen {address} proxy_protocol backlog=4096;\n"
    )


def circuit_limit_zones(settings: FrontSettings) -> str:
    """http-level zones keyed on the Tor circuit; empty elsewhere, so nothing else counts.

    On the plain port $proxy_protocol_addr is empty, and nginx does not
    account requests whose key is empty: `make run`, health checks and the
    tests' plain listener are not limited by these zones.
    """
    if settings.onion_port is None:
        return ""
    return f"""
    # One key per Tor circuit: the PROXY header's source address. It never
    # reaches a log or the app.
    limit_conn_zone $proxy_protocol_addr zone=tor_circuit_conn:1m;
    limit_req_zone $proxy_protocol_addr zone=tor_circuit_req:2m rate={CIRCUIT_RATE}r/s;
"""


def circuit_limits(settings: FrontSettings) -> str:
    """location-level limits per Tor circuit: a refused request gets the portal's 429 page."""
    if settings.onion_port is None:
        return ""
    return f"""            limit_conn tor_circuit_conn {CIRCUIT_CONNECTIONS};
            limit_req zone=tor_circuit_req burst={CIRCUIT_BURST} nodelay;
            limit_conn_status 429;
            limit_req_status 429;
            limit_conn_log_level info;
            limit_req_log_level info;
"""


def _seconds(value: float) -> str:
    return f"{max(1, int(round(value)))}s"


def nginx_config(settings: FrontSettings, runtime: Path, upstream: Path) -> str:
    """The nginx configuration: everything it does is in this one text."""
    header_lines = "\n".join(
        f'            add_header {name} "{value}" always;' for name, value in STATIC_HEADERS.items()
    )
    error_pages = "\n".join(
        f"        error_page {status} "
        + (f"={SENT_STATUS[status]} " if status in SENT_STATUS else "")
        + f"/.portal-error/$portal_lang/$portal_method/{page}.html;"
        for status, page in PAGE_FOR_STATUS.items()
    )
    temp = runtime / "temp"
    # nginx started by root would run its workers as `nobody`, who cannot
    # enter the private folder; the Docker image runs as an unprivileged user.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return f"""# Written by `testimony-portal serve` (portal/server/front.py) at each start.
{user}daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {settings.nofile};
# Never a core file: one of a worker would hold request bodies (testimony)
# in plaintext. `serve` also runs nginx with a hard core limit of zero.
worker_rlimit_core 0;
# On a stop, requests in flight get as long as gunicorn gives them.
worker_shutdown_timeout 60s;
pid {runtime}/nginx.pid;
error_log stderr warn;
load_module {HEADERS_MORE};

events {{
    worker_connections {nginx_connections(settings.nofile)};
}}

http {{
    # No access log; no server name or version in any header or page.
    access_log off;
    log_not_found off;
    server_tokens off;
    more_clear_headers Server;

    types {{ text/html html; }}
    default_type application/octet-stream;
    charset utf-8;

    # Never a request body on disk: bodies stream through (see
    # proxy_request_buffering below) and these folders stay empty. They are
    # private to this run and removed when the server stops.
    client_body_in_file_only off;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;

    # The whole header block must arrive within this time (it is not reset
    # by each byte); a body may pause at most client_body_timeout between
    # two reads, and the app drops one that moves too slowly overall.
    client_header_timeout {_seconds(settings.header_timeout)};
    client_header_buffer_size 1k;
    large_client_header_buffers 4 8k;
    client_body_timeout {_seconds(settings.body_timeout)};
    client_body_buffer_size 64k;
    client_max_body_size {settings.max_body_bytes};
    send_timeout 60s;
    keepalive_timeout 10s;
    keepalive_requests 100;
    reset_timedout_connection on;

    map $uri $portal_lang {{
        ~^/ko(/|$) ko;
        ~^/zh(/|$) zh;
        default en;
    }}
    map $request_method $portal_method {{
        POST post;
        default get;
    }}

    upstream portal {{
        server unix:{upstream};
    }}
{circuit_limit_zones(settings)}
    server {{
        listen {_listen(settings.host, settings.port)};
{onion_listen(settings)}        server_name _;

{error_pages}

        location ^~ /.portal-error/ {{
            internal;
            root {runtime}/pages;
            etag off;
            if_modified_since off;
            more_clear_headers Last-Modified;
{header_lines}
            add_header Cache-Control "no-store" always;
        }}

        location / {{
            proxy_pass http://portal;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            # No "Connection: close" to gunicorn: with it, gunicorn closes at
            # once after an early answer (a refused form, a 413) while the
            # rest of the body is on its way, nginx's next write fails, and
            # if that comes before nginx has read the answer the witness gets
            # a 503 instead of the page that says what was wrong. Without
            # it, gunicorn drops the rest of the body until nginx, answer in
            # hand, closes the connection (appserver.adapt_gunicorn); with no
            # upstream `keepalive`, nginx never reuses a connection.
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_max_temp_file_size 0;
            # A stopped or hung app: the witness gets the "not saved" page
            # (504 is sent as 503) after at most UPSTREAM_TIMEOUT once the
            # request is passed on, or the body timeout while a body waits.
            proxy_connect_timeout 10s;
            proxy_send_timeout {_seconds(settings.body_timeout)};
            proxy_read_timeout {_seconds(UPSTREAM_TIMEOUT)};
{circuit_limits(settings)}        }}
    }}
}}
"""


def write_error_pages(app: Flask, root: Path) -> None:
    """Render the portal's own error pages for nginx: per language, for GET and POST."""
    for lang in LANGUAGES:
        for method in ("get", "post"):
            folder = root / ".portal-error" / lang / method
            folder.mkdir(parents=True, exist_ok=True)
            for page in sorted(set(PAGE_FOR_STATUS.values())):
                body = render_page(app, page, lang, method.upper())
                (folder / f"{page}.html").write_text(body, "utf-8")


def _die_with_parent() -> None:
    # If the supervisor is killed outright, its children must not live on
    # serving (or half-serving) witnesses. No child ever writes a core file.
    forbid_core_files()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


_NGINX_LINE = re.compile(
    r"^(?:\d{4}/\d\d/\d\d \d\d:\d\d:\d\d |nginx: )?\[(?P<level>\w+)\] (?:\d+#\d+: )?(?:\*\d+ )?"
    r"(?P<message>.*)$"
)
_LEVELS = {
    "emerg": logging.CRITICAL, "alert": logging.CRITICAL, "crit": logging.CRITICAL,
    "error": logging.ERROR, "warn": logging.WARNING, "notice": logging.INFO,
    "info": logging.INFO, "debug": logging.DEBUG,
}  # fmt: skip


# What nginx logs at `warn` or above when a client makes a mistake or goes
# away: a body too large, a broken chunked body, a body cut short (the app
# then stops reading and nginx's write to it fails). Logged at info: an
# attacker who sends garbage must not write lines at the operator's level.
_CLIENT_CAUSED = re.compile(
    r"^client |^(?:writev?|send|sendfile)\(\) failed \((?:32: Broken pipe|104: Connection "
    r"reset by peer)\) while sending request to upstream"
)


def nginx_log_record(line: str) -> tuple[int, str]:
    """nginx's error-log line as (level, message) without time, address or request.

    nginx appends the client's address, the request line, the Host header
    and the upstream after ", client: "; all of it is dropped. The rest still
    goes through the portal's redaction when it is logged. A client's own
    mistakes are logged at info whatever level nginx gives them.
    """
    match = _NGINX_LINE.match(line.strip())
    if not match:
        return logging.WARNING, line.strip()[:200]
    message = match.group("message").split(", client: ", 1)[0]
    level = _LEVELS.get(match.group("level"), logging.WARNING)
    if _CLIENT_CAUSED.match(message):
        level = min(level, logging.INFO)
    return level, message


class Supervisor:
    """Runs the gunicorn server, then nginx in front of it; both stop when either ends.

    Start-up order: the app server first, and nginx only once the app has
    answered a request on its socket, so that no witness ever gets a 502 or
    503 page while the portal starts (the port refuses connections until
    then). If either process dies, `serve`
    stops the other and exits with status 1 at once (it is woken by
    SIGCHLD), so that a container runtime or systemd restarts the whole
    portal rather than leaving half of it running.
    """

    def __init__(self, settings: FrontSettings, runtime: Path, stderr: IO[str]) -> None:
        self.settings = settings
        self.runtime = runtime
        self.stderr = stderr
        self.nginx: subprocess.Popen[bytes] | None = None
        self.app: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._pending = b""
        self._wakeup: tuple[int, int] | None = None

    def run(self, nginx: Path, app_command: Sequence[str], upstream: Path) -> ExitStatus:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        self._watch_children()
        try:
            self.app = subprocess.Popen(
                list(app_command),
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (no threads run here yet)
                # Its own process group, like nginx's: see _stop_children.
                process_group=0,
            )
            if not self._wait_for_app(upstream):
                return ExitStatus.OK  # stopped by a signal while starting
            self.nginx = self._start_nginx(nginx)
            self._wait_for_nginx()
            return self._watch()
        finally:
            self._stop_children()
            self._drain_nginx_log(0)
            self._unwatch_children()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stopping = True

    def _watch_children(self) -> None:
        """Wake the supervisor's wait at once when a child ends or a signal arrives."""
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        try:
            signal.set_wakeup_fd(write)
        except ValueError:  # not the main thread (a test): the 0.5 s poll remains
            os.close(read)
            os.close(write)
            return
        self._wakeup = (read, write)
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)

    def _unwatch_children(self) -> None:
        if self._wakeup is None:
            return
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        for fd in self._wakeup:
            os.close(fd)
        self._wakeup = None

    def _start_nginx(self, nginx: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                str(nginx),
                "-p",
                str(self.runtime),
                "-c",
                str(self.runtime / "nginx.conf"),
                "-e",
                "stderr",
            ],  # fmt: skip
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (no threads run here yet)
            # Its own process group, so that its workers can be stopped
            # even if its master process died first.
            process_group=0,
        )

    def _wait_for_app(self, upstream: Path) -> bool:
        """Until the app answers an HTTP request on its socket; False if stopped by a signal."""
        assert self.app is not None
        deadline = time.monotonic() + APP_START_SECONDS
        while not self._stopping:
            if self.app.poll() is not None:
                raise FrontError(
                    f"the app server stopped while starting (exit status {self.app.returncode}); "
                    "see the lines above"
                )
            if app_answers(upstream):
                return True
            if time.monotonic() > deadline:
                raise FrontError(f"the app server did not answer within {APP_START_SECONDS} s")
            self._sleep(0.05)
        return False

    def _wait_for_nginx(self) -> None:
        # nginx writes its pid file only once it listens: a port held by
        # another program (which would answer a probe) is told apart.
        assert self.nginx is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not self._stopping:
            if (self.runtime / "nginx.pid").exists():
                return
            self._drain_nginx_log(0.05)
            ended = self.nginx.poll()
            if ended is not None and ended != 1:
                # Stopped by a signal (or a clean stop) after it had started:
                # that is the watch's to report, as any later end would be.
                return
            if ended is not None:
                self._drain_nginx_log(0)
                raise FrontError(
                    f"the front proxy (nginx) could not start on "
                    f"{self.settings.host}:{self.settings.port}; see the nginx line above "
                    "(is the port already in use?)"
                )
        if not self._stopping:
            raise FrontError("the front proxy (nginx) did not start listening within 15 s")

    def _sleep(self, timeout: float) -> None:
        """Wait up to `timeout`, waking early on a signal or a child's end."""
        waits = [self._wakeup[0]] if self._wakeup else []
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select(waits, [], [], timeout)
            if ready:
                self._clear_wakeup()

    def _clear_wakeup(self) -> None:
        if self._wakeup is not None:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wakeup[0], 512):
                    pass

    def _watch(self) -> ExitStatus:
        assert self.nginx is not None and self.app is not None
        pair = (
            (self.app, "the app server", "the front proxy"),
            (self.nginx, "the front proxy (nginx)", "the app server"),
        )
        while not self._stopping:
            for process, name, other in pair:
                if process.poll() is not None:
                    print(
                        f"testimony-portal: {name} stopped (exit status "
                        f"{process.returncode}); stopping {other} too and exiting, so that "
                        "the service manager restarts the whole portal",
                        file=self.stderr,
                    )
                    return ExitStatus.ERROR
            self._drain_nginx_log(0.5)
        return ExitStatus.OK

    def _drain_nginx_log(self, timeout: float) -> None:
        if self.nginx is None or self.nginx.stderr is None:
            return
        pipe = self.nginx.stderr
        waits = [pipe.fileno(), *([self._wakeup[0]] if self._wakeup else [])]
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select(waits, [], [], timeout)
            if self._wakeup and self._wakeup[0] in ready:
                self._clear_wakeup()
            if pipe.fileno() not in ready:
                return
        data = os.read(pipe.fileno(), 65536)
        if not data:
            return
        *lines, self._pending = (self._pending + data).split(b"\n")
        for raw in lines:
            if raw.strip():
                level, message = nginx_log_record(raw.decode("utf-8", "replace"))
                log.log(level, "%s", message)

    def _stop_children(self) -> None:
        """Stop both, gracefully: requests in flight get gunicorn's graceful timeout.

        Each child leads its own process group, so that its workers are
        found even when their master died first (orphaned gunicorn workers
        would otherwise finish their requests with nobody left to supervise
        them, and nginx workers keep the port open).
        """
        # SIGQUIT is nginx's graceful stop: it stops accepting and lets
        # uploads in flight finish, as gunicorn does on SIGTERM.
        children = [
            (process, signal.SIGQUIT if process is self.nginx else signal.SIGTERM)
            for process in (self.app, self.nginx)
            if process is not None
        ]
        for process, graceful in children:
            if process.poll() is None:
                process.send_signal(graceful)
        deadline = time.monotonic() + STOP_SECONDS
        for process, graceful in children:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            _end_process_group(process.pid, graceful, deadline)


def _process_group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` still runs (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _end_process_group(pgid: int, graceful: signal.Signals, deadline: float) -> None:
    """Stop what is left of a child's process group: gracefully until `deadline`, then kill."""
    try:
        os.killpg(pgid, graceful)
    except (ProcessLookupError, PermissionError):
        return
    while time.monotonic() < deadline and _process_group_alive(pgid):
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_front(
    app: Flask,
    settings: FrontSettings,
    app_command: Sequence[str],
    stderr: IO[str],
) -> ExitStatus:
    """Serve through nginx: write its configuration and pages, run it and the app server."""
    nginx = find_nginx()
    forbid_core_files()
    if nginx_connections(settings.nofile) < NGINX_CONNECTIONS_WANTED:
        log.warning(
            "the open-file limit is %d: the front proxy can hold only %d connections, and a "
            "flood of idle ones would reset witnesses' connections; raise it to %d "
            "(ulimit -n, or podman/docker run --ulimit nofile=%d:%d)",
            settings.nofile, nginx_connections(settings.nofile), WANTED_NOFILE,
            WANTED_NOFILE, WANTED_NOFILE,
        )  # fmt: skip
    runtime = Path(tempfile.mkdtemp(prefix="testimony-portal-"))
    sockets = runtime
    try:
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (runtime / "temp" / name).mkdir(parents=True, mode=0o700)
        write_error_pages(app, runtime / "pages")
        if len(str(runtime / "app.sock")) > _MAX_SOCKET_PATH:
            # A Unix socket path has at most 107 bytes; TMPDIR can be deeper.
            sockets = Path(tempfile.mkdtemp(prefix="tp-", dir=_SHORT_TMP))
        upstream = sockets / "app.sock"
        (runtime / "nginx.conf").write_text(nginx_config(settings, runtime, upstream), "utf-8")
        command = [*app_command, "--unix-socket", str(upstream)]
        return Supervisor(settings, runtime, stderr).run(nginx, command, upstream)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
        if sockets != runtime:
            shutil.rmtree(sockets, ignore_errors=True)


def app_server_command(workers: int, threads: int, body_timeout: float) -> list[str]:
    """The command that runs the gunicorn side, in this same Python environment."""
    return [
        sys.executable, "-m", "portal.server.cli", "serve", "--no-front",
        "--workers", str(workers), "--threads", str(threads),
        "--body-timeout", str(body_timeout),
    ]  # fmt: skip
