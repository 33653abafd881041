"""Shared fixtures: an app on a temporary data directory, a test client, a live server.

`make_app(**changes)` builds the app with any `Config` field changed
(`make_app(max_files=3)`); `app` and `client` are the unchanged one. A test
marked `needs("age", "root", ...)` runs only where those exist (see
`tests/support.py` for the policy: fail in CI, skip elsewhere).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from portal.core.age import X25519Identity
from portal.core.replykey import KdfCost
from portal.server.config import Config
from portal.server.store import SubmissionStore
from portal.testing.live import LiveServer, start_server
from tests.support import (
    CHROMIUM_ARGS,
    app_config,
    build_app,
    require_front,
    require_root,
    require_tool,
)

MakeApp = Callable[..., Flask]

AGE_TESTKIT = Path(
    os.environ.get("AGE_TESTKIT", Path(__file__).resolve().parents[2] / "shared" / "age-testkit")
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts a real server (`make_server`, and so `live_server` and
    `front_server`) counts as `slow`, so `make test-fast` leaves it to `make test`.

    Each start costs about a second of CPU (gunicorn's master and workers, and
    nginx in front) and one to three seconds of waiting; together they were
    half of the fast suite's CPU time. A test that calls `start_server`
    itself is marked `slow` by hand.
    """
    for item in items:
        if "make_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def private_custody_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Reviewer-tool runs in tests log custody to a temporary file, never to $HOME."""
    path = tmp_path / "custody.jsonl"
    monkeypatch.setenv("TESTIMONY_REVIEW_CUSTODY", str(path))
    return path


@pytest.fixture(autouse=True)
def fast_identity_scrypt(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Identity files written in tests use a low scrypt work factor: fast, same code path.

    A test marked `production_kdf` keeps the production value (and proves it).
    """
    if request.node.get_closest_marker("production_kdf") is None:
        from portal.review import keys
        from tests.review_support import TEST_WORK_FACTOR

        monkeypatch.setattr(keys, "IDENTITY_WORK_FACTOR", TEST_WORK_FACTOR)


@pytest.fixture(autouse=True)
def fast_receipt_kdf(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Receipts derive their keys with a tiny argon2id cost in tests: fast, same code path.

    Servers started by tests inherit it through PORTAL_RECEIPT_KDF_*; a test
    marked `production_kdf` keeps the production cost (and proves it).
    """
    if request.node.get_closest_marker("production_kdf") is None:
        from portal.server import mailbox

        monkeypatch.setattr(mailbox, "DEFAULT_COST", KdfCost(1, 8 * 1024))
        monkeypatch.setenv("PORTAL_RECEIPT_KDF_OPS", "1")
        monkeypatch.setenv("PORTAL_RECEIPT_KDF_MEMORY_KIB", "8")


@pytest.fixture
def identity() -> X25519Identity:
    return X25519Identity.generate()


@pytest.fixture
def identity_file(tmp_path: Path, identity: X25519Identity) -> Path:
    path = tmp_path / "reviewer" / "identity.txt"
    path.parent.mkdir()
    path.write_text(f"# test identity\n{identity}\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def reviewer(tmp_path: Path) -> tuple[X25519Identity, Path]:
    """A reviewer's identity and its identity file (tmp_path/identity.txt)."""
    from tests.review_support import write_identity

    path = tmp_path / "identity.txt"
    return write_identity(path), path


@pytest.fixture
def store(tmp_path: Path) -> SubmissionStore:
    """An empty, initialised submission store in tmp_path/data."""
    from tests.review_support import make_store

    return make_store(tmp_path / "data")


@pytest.fixture
def config(tmp_path: Path, identity: X25519Identity) -> Config:
    return app_config(tmp_path, str(identity.recipient))


@pytest.fixture(autouse=True)
def needed_tools(request: pytest.FixtureRequest) -> None:
    """What a `needs(...)` marker names: external programs, or "root"."""
    for marker in request.node.iter_markers("needs"):
        for name in marker.args:
            if name == "root":
                require_root(request.node.name)
            elif name == "nginx":
                require_front()
            else:
                require_tool(name)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium through Playwright, one per test module."""
    from playwright.sync_api import sync_playwright

    chromium = require_tool("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def make_app(config: Config) -> MakeApp:
    """Build the app on this test's data directory, with `Config` fields changed
    (`make_app(max_files=3)`); see `build_app` for the other options."""
    return functools.partial(build_app, config)


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_server(
    tmp_path: Path, identity: X25519Identity, identity_file: Path
) -> Iterator[Callable[..., LiveServer]]:
    """Start a real server on loopback for `identity`, in tmp_path/server, with any
    `start_server` option (`make_server(env={"PORTAL_MAX_FILES": "2"})`); each one
    started is stopped when the test ends."""
    started: list[LiveServer] = []

    def factory(**options: Any) -> LiveServer:
        if options.get("front"):
            require_front()
        server = start_server(
            tmp_path / "server", str(identity.recipient), identity_file, **options
        )
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def live_server(make_server: Callable[..., LiveServer]) -> LiveServer:
    """A real gunicorn server on loopback, with its own data directory and TMPDIR."""
    return make_server()


@pytest.fixture
def front_server(make_server: Callable[..., LiveServer]) -> LiveServer:
    """The documented stack on loopback: nginx in front of gunicorn, as `make run` starts it."""
    return make_server(front=True)
