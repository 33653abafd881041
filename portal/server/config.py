"""Configuration, read once from `PORTAL_*` environment variables.

`Config.from_env()` is called by the app factory and the command line, never
at import time. Every variable is documented in README.md.
"""

from __future__ import annotations

import array
import fcntl
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from portal.core import questionnaire
from portal.core.age import (
    KeyFormatError,
    PublicKey,
    contains_secret_key,
    is_post_quantum,
    looks_encrypted_identity,
    parse_recipients,
)
from portal.core.layout import STAGING_DIR, SUBMISSIONS_DIR
from portal.core.questionnaire import Questionnaire


class ConfigError(Exception):
    """The configuration cannot work; the message says what to change."""


STORES = ("local", "s3")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# A request body must keep moving: every `PROGRESS_BYTES` of it (or the rest
# of the body, if less) must arrive within `BODY_PROGRESS_WINDOW` seconds, or
# the request is dropped (portal/server/web/body_guard.py). That is about 1.1 KiB/s:
# a Tor upload at 20 KB/s passes with eighteen times the margin, while a
# client that dribbles a byte every few seconds holds a server thread for one
# window at most. Here, not in the web package, so that the command line can
# show them without loading the web app.
PROGRESS_BYTES = 64 * 1024
BODY_PROGRESS_WINDOW = 60.0
# Files this size or larger in the keys folder are not key files; reading
# them whole to look for a private key would be a waste.
_KEY_SCAN_LIMIT = 1 << 20


def _random_secret() -> bytes:
    # Without a configured key each start gets a fresh random one: sessions
    # only carry CSRF tokens, so the cost of a restart is that a form opened
    # before it must be reloaded.
    return secrets.token_bytes(32)


@dataclass(frozen=True)
class Config:
    """Every setting (README.md's configuration table), each default named once.

    `from_env` reads `PORTAL_<FIELD>` (PORTAL_RECIPIENTS and
    PORTAL_QUESTIONNAIRE for the two file fields) and falls back to these
    defaults. A default of None is decided beside what it configures, as the
    comment above each such field says (the questionnaire file, the receipt's
    argon2id cost, the follow-up logins' budget).
    tests/test_config_defaults.py holds the README to them.
    """

    data_dir: Path = Path("instance/data")
    recipients_file: Path = Path("keys/recipients.txt")
    secret_key: bytes = field(repr=False, default_factory=_random_secret)
    max_upload_mb: int = 2048
    max_files: int = 100
    max_testimony_chars: int = 100_000
    min_free_mb: int = 1024
    rate_per_minute: int = 60
    rate_burst: int = 30
    # Follow-up logins' own budget; None: sized from the derivation's CPU
    # time at start (portal.server.web.followup).
    login_per_minute: int | None = None
    login_burst: int | None = None
    log_level: str = "info"
    allowed_hosts: tuple[str, ...] = ()
    onion_location: str | None = None
    tls: bool = False
    # None: the default questionnaire shipped in the package.
    questionnaire_file: Path | None = None
    # The conversation (issue 11): how long replies wait, and the receipt's
    # argon2id costs (None: portal.server.mailbox.DEFAULT_COST, measured and chosen).
    reply_days: int = 90
    receipt_kdf_ops: int | None = None
    receipt_kdf_memory_kib: int | None = None
    receipt_kdf_concurrency: int = 2
    # UTC hour and minute of the daily seal (docs/FORMAT.md), None when off;
    # with `seal_hourly` the seal runs at that minute of every hour.
    seal_time: tuple[int, int] | None = (4, 0)
    seal_hourly: bool = False
    staging_sweep_seconds: int = 60
    # Where committed submissions rest (issue 24): "local" (the data
    # directory, nothing to install) or "s3" (an S3-compatible bucket shared
    # by several nodes; the data directory is then each node's spool).
    store: str = "local"
    s3_endpoint: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = "portal"
    # How many nodes share the deployment's rate budget: each takes 1/nodes.
    nodes: int = 1
    # A second port for the onion service's tor only (PROXY protocol, limits
    # per Tor circuit: docs/DEPLOYMENT.md, section 2); None: no such listener.
    onion_port: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """The configuration from `PORTAL_*` variables; an unset one keeps its default."""
        env = os.environ if env is None else env
        secret = env.get("PORTAL_SECRET_KEY")
        log_level = env.get("PORTAL_LOG_LEVEL", cls.log_level).lower()
        if log_level not in LOG_LEVELS:
            raise ConfigError(
                f"PORTAL_LOG_LEVEL={log_level!r} is not one of {', '.join(LOG_LEVELS)}"
            )
        hosts = tuple(h.strip().lower() for h in env.get("PORTAL_ALLOWED_HOSTS", "").split(","))
        if store_needs_secret(env) and not secret:
            raise ConfigError(
                "PORTAL_STORE=s3 needs PORTAL_SECRET_KEY, the same on every node: forms drawn "
                "by one node are posted to another, and form claims are keyed with it "
                "(e.g. `openssl rand -hex 32`)"
            )
        seal_time = env.get("PORTAL_SEAL_TIME")
        hourly = seal_time is not None and seal_time.strip().lower() == "hourly"
        store = env.get("PORTAL_STORE", cls.store).strip().lower() or cls.store
        if store not in STORES:
            raise ConfigError(
                f"PORTAL_STORE={store!r} is not one of {', '.join(STORES)} "
                "(local: the data directory; s3: an S3-compatible bucket, see docs/DEPLOYMENT.md)"
            )
        return cls(
            data_dir=Path(env.get("PORTAL_DATA_DIR", cls.data_dir)),
            recipients_file=Path(env.get("PORTAL_RECIPIENTS", cls.recipients_file)),
            secret_key=secret.encode() if secret else _random_secret(),
            max_upload_mb=_positive_int(env, "PORTAL_MAX_UPLOAD_MB", cls.max_upload_mb),
            max_files=_positive_int(env, "PORTAL_MAX_FILES", cls.max_files),
            max_testimony_chars=_positive_int(
                env, "PORTAL_MAX_TESTIMONY_CHARS", cls.max_testimony_chars
            ),
            min_free_mb=_positive_int(env, "PORTAL_MIN_FREE_MB", cls.min_free_mb, allow_zero=True),
            rate_per_minute=_positive_int(env, "PORTAL_RATE_PER_MINUTE", cls.rate_per_minute),
            rate_burst=_positive_int(env, "PORTAL_RATE_BURST", cls.rate_burst),
            login_per_minute=_optional_int(env, "PORTAL_LOGIN_PER_MINUTE", cls.login_per_minute),
            login_burst=_optional_int(env, "PORTAL_LOGIN_BURST", cls.login_burst),
            log_level=log_level,
            allowed_hosts=tuple(h for h in hosts if h) or cls.allowed_hosts,
            onion_location=env.get("PORTAL_ONION_LOCATION") or cls.onion_location,
            tls=_flag(env, "PORTAL_TLS", cls.tls),
            questionnaire_file=Path(env["PORTAL_QUESTIONNAIRE"])
            if env.get("PORTAL_QUESTIONNAIRE")
            else cls.questionnaire_file,
            reply_days=_positive_int(env, "PORTAL_REPLY_DAYS", cls.reply_days),
            receipt_kdf_ops=_optional_int(env, "PORTAL_RECEIPT_KDF_OPS", cls.receipt_kdf_ops),
            receipt_kdf_memory_kib=_optional_int(
                env, "PORTAL_RECEIPT_KDF_MEMORY_KIB", cls.receipt_kdf_memory_kib
            ),
            receipt_kdf_concurrency=_positive_int(
                env, "PORTAL_RECEIPT_KDF_CONCURRENCY", cls.receipt_kdf_concurrency
            ),
            seal_time=(0, 0)
            if hourly
            else cls.seal_time
            if seal_time is None
            else _seal_time(seal_time),
            seal_hourly=hourly,
            staging_sweep_seconds=_positive_int(
                env, "PORTAL_STAGING_SWEEP_SECONDS", cls.staging_sweep_seconds
            ),
            store=store,
            s3_endpoint=env.get("PORTAL_S3_ENDPOINT") or cls.s3_endpoint,
            s3_bucket=env.get("PORTAL_S3_BUCKET") or cls.s3_bucket,
            s3_prefix=_s3_prefix(env.get("PORTAL_S3_PREFIX", cls.s3_prefix)),
            nodes=_positive_int(env, "PORTAL_NODES", cls.nodes),
            onion_port=_port(env, "PORTAL_ONION_PORT", cls.onion_port),
        )

    def __post_init__(self) -> None:
        if self.onion_location and not self.allowed_hosts:
            # Without a list of its names the server answers any Host header,
            # and a site reachable under two names must say which ones are
            # its own: an attacker's name would otherwise be accepted (and
            # could be echoed) as the portal's.
            raise ConfigError(
                "PORTAL_ONION_LOCATION is set but PORTAL_ALLOWED_HOSTS is not: list the names "
                "this server answers to, e.g. PORTAL_ALLOWED_HOSTS=example.org,"
                "xxxxxxxx.onion"
            )

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024


def _positive_int(env: Mapping[str, str], name: str, default: int, allow_zero: bool = False) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name}={raw!r} must be a positive number")
    return value


def load_questionnaire(config: Config, languages: Iterable[str]) -> Questionnaire:
    """The questionnaire the form asks (PORTAL_QUESTIONNAIRE, or the shipped default).

    Raises:
        ConfigError: one line naming the file, the line and the first mistake.
    """
    try:
        return questionnaire.load_questionnaire(
            config.questionnaire_file or questionnaire.DEFAULT_QUESTIONNAIRE, languages
        )
    except questionnaire.QuestionnaireError as exc:
        raise ConfigError(f"PORTAL_QUESTIONNAIRE: {exc}") from None


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    # A word that is neither yes nor no is refused: PORTAL_TLS=enabled
    # silently meaning "off" would drop Secure cookies and HSTS.
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(
        f"{name} must be one of {', '.join(_TRUE)} (on) or {', '.join(_FALSE)} (off), "
        f"not {env[name]!r}"
    )


def _optional_int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    if not env.get(name):
        return default
    return _positive_int(env, name, 0)


def store_needs_secret(env: Mapping[str, str]) -> bool:
    return env.get("PORTAL_STORE", "").strip().lower() == "s3"


def _s3_prefix(raw: str) -> str:
    """The key prefix without surrounding slashes; refused if it could climb out of itself."""
    prefix = raw.strip().strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ConfigError(
            f"PORTAL_S3_PREFIX={raw!r} has an empty, `.` or `..` part; use plain names "
            "separated by `/`, e.g. portal or org/portal"
        )
    if not re.fullmatch(r"[A-Za-z0-9._/-]*", prefix):
        raise ConfigError(
            f"PORTAL_S3_PREFIX={raw!r} may hold only letters, digits, `.`, `_`, `-` and `/`"
        )
    return prefix


def _port(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name, "").strip()
    if not raw or raw.lower() == "off":
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{name}={env[name]!r} is not a TCP port (1-65535) or off")
    return int(raw)


def _seal_time(raw: str) -> tuple[int, int] | None:
    if raw.strip().lower() == "off":
        return None
    match = re.fullmatch(r"\s*([01]?[0-9]|2[0-3]):([0-5][0-9])\s*", raw)
    if not match:
        raise ConfigError(
            f"PORTAL_SEAL_TIME={raw!r} is not a time of day: use HH:MM in UTC, "
            "e.g. 04:00, `hourly`, or `off` to run `testimony-portal seal` yourself"
        )
    return int(match.group(1)), int(match.group(2))


def find_private_keys(recipients_file: Path) -> list[Path]:
    """Files in the recipients' folder that hold an age private key.

    The server can only encrypt: a private key anywhere it reads keys from
    means someone copied the wrong file, and one seizure of the server would
    then reveal every testimony. Plain identities and passphrase-protected
    (age-encrypted) identity files are both found. Only real key material
    counts (the full Bech32 syntax, classic or post-quantum), not text that
    mentions the prefix, like the comment in the shipped recipients file.
    """
    found = []
    folder = recipients_file.parent if recipients_file.parent != Path("") else Path(".")
    candidates = [recipients_file] if recipients_file.exists() else []
    if folder.is_dir():
        candidates += [p for p in sorted(folder.iterdir()) if p != recipients_file]
    for path in candidates:
        try:
            if not path.is_file() or path.stat().st_size >= _KEY_SCAN_LIMIT:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if contains_secret_key(data) or looks_encrypted_identity(data):
            found.append(path)
    return found


def load_recipients(recipients_file: Path) -> list[PublicKey]:
    """The organisation's public keys, refusing private keys and empty files.

    Raises:
        ConfigError: with the exact fix for the operator.
    """
    keygen_hint = (
        "run `testimony-review keygen --out reviewer-identity.age` on the air-gapped "
        f"reviewer machine and copy the `age1...` line it prints into {recipients_file}"
    )
    private = find_private_keys(recipients_file)
    if private:
        names = ", ".join(str(p) for p in private)
        raise ConfigError(
            f"refusing to start: private key material found in {names}. The server must "
            "hold public keys only. Move that file to the offline reviewer machine (and "
            "treat the key as exposed if this server was ever online with it)."
        )
    try:
        text = recipients_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no recipients file at {recipients_file}: {keygen_hint}") from None
    except IsADirectoryError:
        raise ConfigError(
            f"PORTAL_RECIPIENTS={recipients_file} is a folder; give the file that lists the "
            "age public keys, e.g. keys/recipients.txt"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{recipients_file} is not UTF-8 text; it must list age public keys, one per line"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {recipients_file}: {exc.strerror or exc}") from None
    try:
        recipients = parse_recipients(text)
    except KeyFormatError as exc:
        raise ConfigError(f"{recipients_file}: {exc}") from None
    if not recipients:
        raise ConfigError(f"no recipients in {recipients_file}: {keygen_hint}")
    return recipients


def describe_protection(recipients: list[PublicKey]) -> tuple[bool, str]:
    """Whether new submissions are post-quantum protected, and one line saying so.

    `load_recipients` has already refused a post-quantum/classic mix, so the
    list is all of one kind.
    """
    if recipients and all(is_post_quantum(r) for r in recipients):
        return True, (
            "post-quantum: new submissions are encrypted with hybrid ML-KEM-768 + X25519 "
            "(mlkem768x25519); opening them needs age >= 1.3 or testimony-review"
        )
    return False, (
        "classic X25519 only: secure today, but ciphertext copied now could be opened by a "
        "future quantum computer. Move to post-quantum keys (docs/REVIEWER.md, "
        "'Moving to a post-quantum key')"
    )


# From linux/fs.h: read a file's attribute flags, and the "immutable" one.
_FS_IOC_GETFLAGS = 0x80086601
_FS_IMMUTABLE_FL = 0x00000010


def check_data_dir(data_dir: Path) -> str:
    """Make sure the portal can keep submissions under `data_dir`; say how it stands.

    The folder need not exist yet, but then the nearest existing folder
    above it must let the portal create it. Returns a line for `check`.

    Raises:
        ConfigError: one line naming what is wrong and how to fix it.
    """
    setting = f"PORTAL_DATA_DIR={data_dir}"
    existing = next((p for p in (data_dir, *data_dir.parents) if os.path.lexists(p)), Path("/"))
    if existing.is_symlink():
        raise ConfigError(
            f"{setting}: {existing} is a symbolic link; give the real folder's path instead"
        )
    if not existing.is_dir():
        what = "the data directory" if existing == data_dir else f"{existing}, a folder above it,"
        raise ConfigError(
            f"{setting}: {what} is a file, not a folder; choose a folder for the data directory"
        )
    to_check = [existing]
    if existing == data_dir:
        to_check += [data_dir / name for name in (STAGING_DIR, SUBMISSIONS_DIR)]
    for folder in to_check:
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise ConfigError(
                f"{setting}: {folder} is not a folder; move it away so the portal can create it"
            )
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"{setting}: {_why_not_writable(folder)}")
    if existing == data_dir:
        return f"data directory {data_dir} is writable"
    return f"data directory {data_dir} will be created (mode 0700) at start, in {existing}"


def _why_not_writable(folder: Path) -> str:
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        return (
            f"{folder} is on a read-only file system; mount it read-write "
            "(under Docker, give the data directory a writable volume)"
        )
    if _is_immutable(folder):
        return f"{folder} is marked immutable; run `chattr -i {folder}` as root"
    return (
        f"{folder} is not writable by this user (uid {os.geteuid()}); "
        f"make the user own it: `chown -R {os.geteuid()} {folder}` and `chmod 700 {folder}`"
    )


def _is_immutable(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        flags = array.array("l", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
        return bool(flags[0] & _FS_IMMUTABLE_FL)
    except OSError:  # a file system without attribute flags
        return False
    finally:
        os.close(fd)
