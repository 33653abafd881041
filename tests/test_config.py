"""Configuration and key loading: the server refuses to run with anything but public keys."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from portal.core.age import MLKEM768X25519Identity, ScryptRecipient, X25519Identity, encrypt
from portal.core.exitstatus import ExitStatus
from portal.server import cli
from portal.server.config import Config, ConfigError, find_private_keys, load_recipients


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
        ("PORTAL_TLS", "enabled"),
        ("PORTAL_TLS", "ture"),
    ],
)
def test_bad_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: value})


@pytest.mark.parametrize(
    ("value", "tls"),
    [("1", True), ("on", True), ("YES", True), ("true ", True), ("0", False), ("off", False),
     ("no", False), ("", False)],
)  # fmt: skip
def test_tls_flag_reads_yes_and_no_words(value: str, tls: bool) -> None:
    # "on" once meant off, silently dropping Secure cookies and HSTS.
    assert Config.from_env({"PORTAL_TLS": value}).tls is tls


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


def test_a_folder_or_binary_file_as_recipients_is_named_without_an_errno(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "keys"
    folder.mkdir()
    with pytest.raises(ConfigError, match="is a folder; give the file") as caught:
        load_recipients(folder)
    assert "Errno" not in str(caught.value)
    binary = tmp_path / "recipients.txt"
    binary.write_bytes(b"\xff\xfe age1")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_recipients(binary)


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


# --- post-quantum recipients, real key detection, clear line errors ------------------

SHIPPED_RECIPIENTS = Path(__file__).resolve().parents[1] / "keys" / "recipients.txt"


def pq_identity() -> MLKEM768X25519Identity:
    return MLKEM768X25519Identity.generate()


@pytest.mark.parametrize("kind", ["post-quantum", "classic"])
def test_shipped_recipients_file_plus_a_real_recipient_loads(tmp_path: Path, kind: str) -> None:
    # The shipped file's comment mentions "AGE-SECRET-KEY-..."; only real key
    # material may trip the private-key check.
    shipped = SHIPPED_RECIPIENTS.read_text()
    assert "AGE-SECRET-KEY-" in shipped
    identity = pq_identity() if kind == "post-quantum" else X25519Identity.generate()
    path = tmp_path / "recipients.txt"
    path.write_text(f"{shipped}{identity.recipient}\n")
    assert find_private_keys(path) == []
    assert load_recipients(path) == [identity.recipient]


@pytest.mark.parametrize(
    "secret",
    [
        lambda: str(pq_identity()),
        lambda: str(pq_identity()).lower(),
        lambda: str(X25519Identity.generate()),
        lambda: f"# pasted by mistake: {X25519Identity.generate()} (oops)",
    ],
    ids=["pq", "pq-lowercase", "classic", "classic-inside-a-comment"],
)
def test_real_private_keys_are_found_anywhere_in_the_keys_folder(
    tmp_path: Path, secret: Callable[[], str]
) -> None:
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"{SHIPPED_RECIPIENTS.read_text()}{pq_identity().recipient}\n")
    (tmp_path / "backup.txt").write_text(f"{secret()}\n")
    with pytest.raises(ConfigError, match=r"private key material found in .*backup\.txt"):
        load_recipients(recipients)


def test_mentions_of_the_prefix_are_not_key_material(tmp_path: Path) -> None:
    path = tmp_path / "recipients.txt"
    path.write_text(
        "# never paste AGE-SECRET-KEY-... or AGE-SECRET-KEY-PQ-1... lines here\n"
        f"{pq_identity().recipient}\n"
    )
    assert find_private_keys(path) == []


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFake reviewer@laptop", "SSH public key"),
        ("{recipient} # Alice's laptop", "text after the key"),
        ("Alice's key is below", "not an age public key"),
    ],
    ids=["ssh", "trailing-comment", "junk"],
)
def test_bad_recipients_line_gives_one_clear_error(
    tmp_path: Path, line: str, expected: str
) -> None:
    path = tmp_path / "recipients.txt"
    recipient = pq_identity().recipient
    path.write_text(f"# keys\n{recipient}\n{line.format(recipient=recipient)}\n")
    with pytest.raises(ConfigError) as info:
        load_recipients(path)
    message = str(info.value)
    assert f"{path}: line 3: " in message
    assert expected in message
    assert "age1pq1" in message  # says what is expected
    assert "\n" not in message


def test_mixing_post_quantum_and_classic_recipients_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "recipients.txt"
    path.write_text(f"{X25519Identity.generate().recipient}\n{pq_identity().recipient}\n")
    with pytest.raises(ConfigError, match="line 2 is post-quantum but line 1 is not"):
        load_recipients(path)


def _check(tmp_path: Path, recipients: str) -> tuple[int, str]:
    (tmp_path / "recipients.txt").write_text(recipients)
    out = io.StringIO()
    env = {
        "PORTAL_DATA_DIR": str(tmp_path / "data"),
        "PORTAL_RECIPIENTS": str(tmp_path / "recipients.txt"),
        "PORTAL_MIN_FREE_MB": "1",
    }
    status = cli.main(["check"], env=env, stdout=out, stderr=io.StringIO())
    return status, out.getvalue()


def test_check_reports_post_quantum_protection(tmp_path: Path) -> None:
    status, out = _check(tmp_path, f"{pq_identity().recipient}\n{pq_identity().recipient}\n")
    assert status == ExitStatus.OK, out
    assert "[ok] protection: post-quantum" in out


def test_check_notes_classic_only_protection(tmp_path: Path) -> None:
    status, out = _check(tmp_path, f"{X25519Identity.generate().recipient}\n")
    assert status == ExitStatus.OK, out
    assert "[note] protection: classic X25519 only" in out


def test_check_and_serve_refuse_a_mix(tmp_path: Path) -> None:
    mixed = f"{pq_identity().recipient}\n{X25519Identity.generate().recipient}\n"
    status, out = _check(tmp_path, mixed)
    assert status == ExitStatus.ERROR
    assert "[PROBLEM]" in out and "mixed" in out
    err = io.StringIO()
    env = {
        "PORTAL_DATA_DIR": str(tmp_path / "data"),
        "PORTAL_RECIPIENTS": str(tmp_path / "recipients.txt"),
    }
    assert cli.main(["serve"], env=env, stdout=io.StringIO(), stderr=err) == ExitStatus.ERROR
    assert "line 2 is not" in err.getvalue() and "Traceback" not in err.getvalue()
