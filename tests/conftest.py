"""Shared fixtures: an app on a temporary data directory, a test client, a live server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from portal.age import X25519Identity
from portal.config import Config
from tests.support import LiveServer, start_server

AGE_TESTKIT = Path(
    os.environ.get("AGE_TESTKIT", Path(__file__).resolve().parents[2] / "shared" / "age-testkit")
)


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
        from portal import mailbox

        monkeypatch.setattr(mailbox, "DEFAULT_COST", mailbox.KdfCost(1, 8 * 1024))
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
def config(tmp_path: Path, identity: X25519Identity) -> Config:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "recipients.txt").write_text(f"{identity.recipient}\n")
    return Config(
        data_dir=tmp_path / "data",
        recipients_file=keys / "recipients.txt",
        secret_key=b"test secret key, not for production",
        min_free_mb=0,
        rate_per_minute=100_000,
        rate_burst=100_000,
    )


@pytest.fixture
def app(config: Config):  # type: ignore[no-untyped-def]
    from portal.web import create_app

    app = create_app(config, TESTING=True)
    yield app


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture
def live_server(
    tmp_path: Path, identity: X25519Identity, identity_file: Path
) -> Iterator[LiveServer]:
    """A real gunicorn server on loopback, with its own data directory and TMPDIR."""
    server = start_server(tmp_path / "server", str(identity.recipient), identity_file)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def front_server(
    tmp_path: Path, identity: X25519Identity, identity_file: Path
) -> Iterator[LiveServer]:
    """The documented stack on loopback: nginx in front of gunicorn, as `make run` starts it."""
    server = start_server(tmp_path / "server", str(identity.recipient), identity_file, front=True)
    try:
        yield server
    finally:
        server.stop()
