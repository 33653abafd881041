"""Configuration and key loading: the server refuses to run with anything but public keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from portal.age import ScryptRecipient, X25519Identity, encrypt
from portal.config import Config, ConfigError, find_private_keys, load_recipients


def test_defaults_are_documented_values() -> None:
    config = Config.from_env({})
    assert config.max_upload_mb == 2048
    assert config.recipients_file == Path("keys/recipients.txt")
    assert config.log_level == "info"
    assert len(config.secret_key) == 32


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORTAL_MAX_UPLOAD_MB", "lots"),
        ("PORTAL_MAX_UPLOAD_MB", "-1"),
        ("PORTAL_LOG_LEVEL", "loud"),
    ],
)
def test_bad_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: value})


def test_config_is_frozen() -> None:
    config = Config.from_env({})
    with pytest.raises(AttributeError):
        config.max_upload_mb = 1  # type: ignore[misc]


def test_loads_recipients_skipping_comments(tmp_path: Path) -> None:
    a, b = X25519Identity.generate(), X25519Identity.generate()
    path = tmp_path / "recipients.txt"
    path.write_text(f"# org keys\n\n{a.recipient}\n# old key\n{b.recipient}\n")
    assert [str(r) for r in load_recipients(path)] == [str(a.recipient), str(b.recipient)]


def test_no_recipients_says_how_to_make_one(tmp_path: Path) -> None:
    path = tmp_path / "recipients.txt"
    path.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="testimony-review keygen"):
        load_recipients(path)


def test_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="testimony-review keygen"):
        load_recipients(tmp_path / "absent.txt")


def test_private_key_in_recipients_file_is_refused(tmp_path: Path) -> None:
    identity = X25519Identity.generate()
    path = tmp_path / "recipients.txt"
    path.write_text(f"{identity.recipient}\n{identity}\n")
    with pytest.raises(ConfigError, match="private key"):
        load_recipients(path)


def test_private_key_beside_recipients_file_is_refused(tmp_path: Path) -> None:
    identity = X25519Identity.generate()
    (tmp_path / "recipients.txt").write_text(f"{identity.recipient}\n")
    (tmp_path / "reviewer.key").write_text(f"# created by mistake\n{identity}\n")
    with pytest.raises(ConfigError, match="reviewer.key"):
        load_recipients(tmp_path / "recipients.txt")


def test_passphrase_protected_identity_beside_recipients_is_refused(tmp_path: Path) -> None:
    identity = X25519Identity.generate()
    (tmp_path / "recipients.txt").write_text(f"{identity.recipient}\n")
    sealed = encrypt(f"{identity}\n".encode(), [ScryptRecipient(b"pass", work_factor=2)])
    (tmp_path / "identity.age").write_bytes(sealed)
    assert find_private_keys(tmp_path / "recipients.txt") == [tmp_path / "identity.age"]
