"""Small openings closed (issue 19: N4-N10): logs, core files, headers, names and symlinks.

In process, without a live server: the nginx configuration `serve` writes,
how nginx's and gunicorn's lines are levelled and bounded, the headers and
redirects the app sends, and what `import-replies` and the stores do with
hostile names and planted symbolic links.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from portal.core.age import X25519Identity, encrypt
from portal.core.conversation import mailbox_name
from portal.server.appserver import FloodGuard, QuietLogger
from portal.server.cli import main as portal_cli
from portal.server.config import Config, ConfigError
from portal.server.front import (
    UPSTREAM_TIMEOUT,
    FrontSettings,
    nginx_config,
    nginx_connections,
    nginx_log_record,
)
from portal.server.mailbox import ReplyRejected, ReplyStore
from portal.server.store import StoreError, SubmissionStore
from portal.server.web.security import MAX_ONION_LOCATION_PATH


def _settings(nofile: int = 65536) -> FrontSettings:
    return FrontSettings(
        host="127.0.0.1", port=8080, header_timeout=10, body_timeout=60,
        max_body_bytes=1 << 30, nofile=nofile,
    )  # fmt: skip


def _directive(config: str, name: str) -> str:
    match = re.search(rf"^\s*{name} ([^;]+);", config, re.MULTILINE)
    assert match, f"no {name} in the nginx configuration"
    return match.group(1)


def test_nginx_writes_no_core_and_holds_connections_up_to_its_file_limit(tmp_path: Path) -> None:
    """N5, N7: `worker_rlimit_core 0`; connections and the file limit raised together."""
    for nofile in (20000, 65536):
        config = nginx_config(_settings(nofile), tmp_path, tmp_path / "app.sock")
        assert _directive(config, "worker_rlimit_core") == "0"
        connections = int(_directive(config, "worker_connections"))
        assert int(_directive(config, "worker_rlimit_nofile")) == nofile
        assert connections == nginx_connections(nofile)
        # 12,000 idle connections and the witnesses (two descriptors each) still fit.
        assert 12_000 + 2 * 1024 <= connections < nofile


def test_a_hung_app_is_given_up_on_within_the_upstream_timeout(tmp_path: Path) -> None:
    """B5k: nginx waits for the app's answer at most UPSTREAM_TIMEOUT, then sends our 503 page."""
    config = nginx_config(_settings(), tmp_path, tmp_path / "app.sock")
    assert _directive(config, "proxy_read_timeout") == f"{int(UPSTREAM_TIMEOUT)}s"
    assert re.search(r"error_page 504 =503 \S+/503\.html;", config)


CLIENT_LINES = [
    "2026/12/07 08:00:00 [error] 12#12: *5 client intended to send too large body: "
    '99999999999 bytes, client: 127.0.0.1, server: _, request: "POST /submit HTTP/1.1"',
    "2026/12/07 08:00:00 [error] 12#12: *7 client sent invalid chunked body, client: 127.0.0.1",
    "2026/12/07 08:00:00 [error] 12#12: *9 writev() failed (32: Broken pipe) while sending "
    "request to upstream, client: 127.0.0.1, server: _",
]


@pytest.mark.parametrize("line", CLIENT_LINES)
def test_a_clients_mistake_is_not_logged_at_warning(line: str) -> None:
    """N6: what a client can make nginx say is logged at info."""
    level, message = nginx_log_record(line)
    assert level == logging.INFO
    assert "127.0.0.1" not in message and "POST" not in message


def test_the_proxys_own_failures_keep_their_level() -> None:
    line = "2026/12/07 08:00:00 [crit] 12#12: *1 connect() to unix:/x/app.sock failed (2: No such)"
    assert nginx_log_record(line)[0] == logging.CRITICAL


def test_gunicorns_malformed_request_line_is_info() -> None:
    logger = QuietLogger.__new__(QuietLogger)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger.error_log = logging.getLogger("test.gunicorn.error")
    logger.error_log.handlers = [Keep()]
    logger.error_log.setLevel(logging.DEBUG)
    logger.warning("Invalid request from ip=127.0.0.1: Invalid HTTP request line: 'x'")
    logger.warning("Worker timeout")
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(message: str, *args: Any, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("nginx", level, __file__, 1, message, args, None)


def test_a_repeated_line_is_let_through_a_few_times_then_counted() -> None:
    """N6: garbage cannot write more than a burst of each kind of line, then one per period."""
    clock = Clock()
    guard = FloodGuard(burst=20, every=10.0, clock=clock)
    kept = [guard.filter(_record("%s", f"client sent {n} bytes")) for n in range(10_000)]
    assert sum(kept) == 20
    # A different line is not held back by the flood of the first.
    assert guard.filter(_record("%s", "upstream timed out"))
    clock.now += 10
    later = _record("%s", "client sent 5 bytes")
    assert guard.filter(later)
    assert "9980 more like it" in later.getMessage()


def _app(make_app: Any, **settings: Any) -> Any:
    return make_app(**settings).test_client()


def test_onion_location_never_carries_a_long_path(make_app: Any) -> None:
    """N10: a 4 KiB path made nginx refuse the response (503); it is left out instead."""
    onion = "http://" + "a" * 56 + ".onion"
    client = _app(make_app, onion_location=onion, allowed_hosts=("localhost",))
    response = client.get("/" + "x" * 4096)
    value = response.headers["Onion-Location"]
    assert value == onion + "/"
    assert len(value) <= len(onion) + MAX_ONION_LOCATION_PATH
    assert client.get("/ko/submit").headers["Onion-Location"] == onion + "/ko/submit"


def test_a_redirect_never_names_the_host_the_request_gave(make_app: Any) -> None:
    """N10: Werkzeug's slash redirect used to echo the Host header as the redirect's host."""
    client = _app(make_app)
    response = client.get("/ko", headers={"Host": "evil.example"})
    assert response.status_code in (301, 308)
    location = response.headers["Location"]
    assert "evil.example" not in location and location.startswith("/ko")


def test_an_onion_address_without_allowed_hosts_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="PORTAL_ALLOWED_HOSTS"):
        Config.from_env({"PORTAL_ONION_LOCATION": "http://x.onion"})
    config = Config.from_env(
        {"PORTAL_ONION_LOCATION": "http://x.onion", "PORTAL_ALLOWED_HOSTS": "x.onion"}
    )
    assert config.allowed_hosts == ("x.onion",)


def _reply(identity: X25519Identity) -> bytes:
    return encrypt(b"a reply", [identity.recipient])


def test_import_replies_prints_hostile_names_on_one_escaped_line(tmp_path: Path) -> None:
    """N8: a newline in a file name forged a line of the command's output."""
    outbox = tmp_path / "outbox"
    box = outbox / mailbox_name(str(X25519Identity.generate().recipient))
    box.mkdir(parents=True)
    (box / "x\n0 reply(ies) imported, 0 already here, 0 refused\x1b[2J.txt").write_bytes(b"x")
    SubmissionStore(tmp_path / "data").initialise()
    err = io.StringIO()
    portal_cli(
        ["import-replies", str(outbox)],
        env={"PORTAL_DATA_DIR": str(tmp_path / "data")},
        stdout=io.StringIO(),
        stderr=err,
    )
    lines = err.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "\\n0 reply(ies)" in lines[0] and "\x1b" not in lines[0]


def test_a_planted_mailbox_symlink_is_not_followed(tmp_path: Path) -> None:
    """N9: replies/<mailbox> pointing elsewhere: nothing is written there."""
    store = ReplyStore(tmp_path / "data")
    store.initialise()
    witness = X25519Identity.generate()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (store.root / mailbox_name(str(witness.recipient))).symlink_to(elsewhere)
    with pytest.raises(ReplyRejected, match="symbolic link"):
        store.add(mailbox_name(str(witness.recipient)), _reply(witness))
    assert list(elsewhere.iterdir()) == []
    assert store.read(witness) == []


def test_a_planted_staging_symlink_is_not_followed(tmp_path: Path) -> None:
    """N9: a submission's files/ folder pointing elsewhere: nothing is written there."""
    store = SubmissionStore(tmp_path / "data")
    store.initialise()
    staging = store.begin()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (staging.path / "files").symlink_to(elsewhere)
    with pytest.raises(StoreError, match="symbolic link"):
        staging.create_attachment()
    staging.discard()
    assert list(elsewhere.iterdir()) == []
