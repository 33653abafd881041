"""A lost receipt salt is loud (issue 21, point 3).

Without the deployment's salt every receipt derives another key and no
witness can read their replies again; a changed argon2id cost does the same.
With submissions or replies present, `check` fails and `serve` refuses to
start, naming the fix; every export carries a copy of the salt.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from portal.core.age import X25519Identity
from portal.core.exitstatus import ExitStatus
from portal.server.cli import main as portal_cli
from portal.server.config import Config, ConfigError
from portal.server.mailbox import KDF_RECORD_NAME, SALT_NAME
from portal.testing.live import free_port
from tests.review_support import make_store, submit
from tests.support import build_app


def _env(config: Config, **more: str) -> dict[str, str]:
    return {
        "PORTAL_DATA_DIR": str(config.data_dir),
        "PORTAL_RECIPIENTS": str(config.recipients_file),
        "PORTAL_REPLY_SIGNERS": str(config.reply_signers_file),
        "PORTAL_MIN_FREE_MB": "0",
        "PORTAL_RECEIPT_KDF_OPS": "1",
        "PORTAL_RECEIPT_KDF_MEMORY_KIB": "8",
        **more,
    }


def _portal(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = portal_cli(argv, env=env, stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def deployed(config: Config, identity: X25519Identity) -> Config:
    """A deployment that made its salt and holds one submission."""
    build_app(config)
    assert (config.data_dir / SALT_NAME).is_file()
    assert (config.data_dir / KDF_RECORD_NAME).is_file()
    submit(make_store(config.data_dir), [identity], "an account")
    return config


def test_a_lost_salt_fails_check_and_serve_naming_the_fix(deployed: Config) -> None:
    (deployed.data_dir / SALT_NAME).unlink()
    status, out, _err = _portal(["check"], _env(deployed))
    assert status == ExitStatus.ERROR
    assert "[PROBLEM] the receipt salt" in out and "Restore receipt-salt" in out
    with pytest.raises(ConfigError, match="Restore receipt-salt"):
        build_app(deployed)
    status, _out, err = _portal(["serve", "--no-front", "--port", str(free_port())], _env(deployed))
    assert status == ExitStatus.ERROR and "Restore receipt-salt" in err
    assert not (deployed.data_dir / SALT_NAME).exists()  # no new salt was made


def test_a_changed_kdf_cost_is_refused(deployed: Config) -> None:
    env = _env(deployed, PORTAL_RECEIPT_KDF_MEMORY_KIB="16")
    status, out, _err = _portal(["check"], env)
    assert status == ExitStatus.ERROR and "set them back" in out
    status, _out, err = _portal(["serve", "--no-front", "--port", str(free_port())], env)
    assert status == ExitStatus.ERROR and "set them back" in err


def test_an_empty_deployment_still_makes_its_salt(config: Config) -> None:
    status, out, _err = _portal(["check"], _env(config))
    assert "will be created at first start" in out
    build_app(config)
    assert (config.data_dir / SALT_NAME).is_file()


def test_export_copies_the_salt(deployed: Config, tmp_path: Path) -> None:
    status, _out, err = _portal(["export", str(tmp_path / "usb"), "--same-disk"], _env(deployed))
    assert status == ExitStatus.OK, err
    for name in (SALT_NAME, KDF_RECORD_NAME):
        assert (tmp_path / "usb" / name).read_bytes() == (deployed.data_dir / name).read_bytes()
