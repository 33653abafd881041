"""Helpers only the tests use; what tests and benchmarks share is in `portal.testing`.

One policy for what a test needs from the machine (an external program, root):
when the `CI` environment variable is set the test fails, since CI installs
every tool and runs as root (`.ci/run`); elsewhere it is skipped with the
reason and how to get it (`-ra` lists the reasons). Use `require_tool`,
`require_root` or the `needs` marker; never a bare `return` or a `skipif`,
which would pass in CI without testing anything. What no package can give
(a kernel without vfat, a file system without birth times or `chattr +i`)
is `unsupported_here`: a visible skip everywhere, CI included.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import io
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import pytest
from flask import Flask
from playwright.sync_api import ViewportSize

from portal.server.config import Config

REPO = Path(__file__).resolve().parents[1]

# Debian's Chromium (never a downloaded one), headless, quiet on the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORTS: dict[str, ViewportSize] = {
    "phone": {"width": 360, "height": 740},
    "desktop": {"width": 1280, "height": 800},
}

# How to get each external program the tests use (`make system-deps` installs most of them).
INSTALL = {
    "age": "apt install age",
    "age-keygen": "apt install age",
    "jq": "apt install jq",
    "chromium": "apt install chromium",
    "node": "apt install nodejs npm",
    "nginx": "make server-deps",
    "chattr": "apt install e2fsprogs",
    "mount": "apt install mount",
    "mkfs.vfat": "apt install dosfstools (make system-deps)",
    "gpg": "apt install gnupg",
    "tor": "apt install tor (make system-deps)",
    "tor-gencert": "apt install tor (make system-deps)",
    "ss": "apt install iproute2 (make system-deps)",
    "exiftool": "apt install libimage-exiftool-perl (make system-deps)",
    "mat2": "apt install mat2 (make system-deps)",
}


def translate(lang: str, message: str) -> str:
    """`message` as the portal's catalogue for `lang` has it."""
    from babel.support import Translations

    from portal.server.web.i18n import TRANSLATIONS_DIR

    return Translations.load(str(TRANSLATIONS_DIR), [lang]).gettext(message)


def unavailable(reason: str) -> NoReturn:
    """Fail when CI is set, skip with `reason` elsewhere: the one policy for a missing need."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (required because CI is set)", pytrace=False)
    pytest.skip(reason)


def unsupported_here(reason: str) -> NoReturn:
    """Skip, even in CI, for what this kernel or file system cannot do and no package provides."""
    pytest.skip(f"{reason} (this kernel or file system cannot; no package provides it)")


def require_tool(name: str, install: str | None = None) -> str:
    """The path of the external program `name`, or fail in CI / skip elsewhere.

    The sbin folders count too: mkfs.vfat, nginx and mount live there, and a
    user's PATH often lacks them."""
    path = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if path is None:
        unavailable(f"{name} is not installed ({install or INSTALL.get(name, 'see README')})")
    return path


def require_front() -> None:
    """nginx and its headers-more module, for the documented stack (`front=True`)."""
    from portal.server.front import FrontError, find_nginx

    try:
        find_nginx()
    except FrontError as exc:
        unavailable(str(exc))


def require_root(why: str) -> None:
    """Root, for what `why` names (mounting a file system...), or fail in CI / skip elsewhere."""
    if os.geteuid() != 0:
        unavailable(f"{why} needs root (CI runs as root)")


@contextlib.contextmanager
def mounted_tmpfs(mountpoint: Path, options: str) -> Iterator[Path]:
    """A real tmpfs with mount `options` at `mountpoint`, unmounted afterwards whatever happens."""
    require_root("mounting a tmpfs")
    mount = require_tool("mount")
    mountpoint.mkdir(exist_ok=True)
    subprocess.run([mount, "-t", "tmpfs", "-o", options, "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def app_config(root: Path, recipient: str, **settings: Any) -> Config:
    """A configuration on `root` (keys/ and data/ inside) with no disk floor and no rate
    limit in the way; `settings` change any `Config` field."""
    keys = root / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    (keys / "recipients.txt").write_text(f"{recipient}\n")
    defaults: dict[str, Any] = {
        "data_dir": root / "data",
        "recipients_file": keys / "recipients.txt",
        "secret_key": b"test secret key, not for production",
        "min_free_mb": 0,
        "rate_per_minute": 100_000,
        "rate_burst": 100_000,
    }
    return Config(**{**defaults, **settings})


def build_app(
    config: Config, *, failing_routes: bool = False, testing: bool = True, **changes: Any
) -> Flask:
    """The app on `config` with any field changed; the `make_app` fixture calls this.

    `failing_routes=True` adds test-only views that fail with 403 and 500;
    `testing=False` builds it as production does (without Flask's TESTING).
    """
    from portal.server.web import create_app

    flags = {"TESTING": True} if testing else {}
    app = create_app(dataclasses.replace(config, **changes), **flags)
    return add_failing_routes(app) if failing_routes else app


class FileWrapper(io.RawIOBase):
    """A file the store writes through its `opener` seam; subclasses change `write`."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw

    def write(self, data: Any) -> int:
        return self._raw.write(data)

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        super().close()
        self._raw.close()


class FailingFile(FileWrapper):
    """A file that fails with ENOSPC once a shared byte budget is spent."""

    def __init__(self, raw: BinaryIO, budget: list[int]) -> None:
        super().__init__(raw)
        self._budget = budget

    def write(self, data: Any) -> int:
        if len(data) > self._budget[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._budget[0] -= len(data)
        return self._raw.write(data)


def failing_after(budget: int) -> Callable[[int], BinaryIO]:
    """A store opener whose files together accept `budget` bytes, then fail with ENOSPC."""
    shared = [budget]

    def opener(fd: int) -> BinaryIO:
        return FailingFile(open(fd, "wb", buffering=0), shared)  # type: ignore[return-value]

    return opener


_STATX_BTIME = 0x800
_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100


def birth_time_ns(path: Path) -> int | None:
    """The birth time from statx(2), or None when the file system does not keep one."""
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(256)
    result = libc.statx(_AT_FDCWD, os.fsencode(path), _AT_SYMLINK_NOFOLLOW, _STATX_BTIME, buffer)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(path))
    mask = int.from_bytes(buffer.raw[0:4], "little")
    if not mask & _STATX_BTIME:
        return None
    seconds = int.from_bytes(buffer.raw[80:88], "little", signed=True)
    nanoseconds = int.from_bytes(buffer.raw[88:92], "little")
    return seconds * 1_000_000_000 + nanoseconds


def assert_nothing_kept(data_dir: Path) -> None:
    """No committed submission and no staging left: what a refused request must leave."""
    from portal.server.store import SubmissionStore

    store = SubmissionStore(data_dir)
    assert store.ids() == []
    assert list(store.staging_dir.iterdir()) == [], "staging was not cleaned"


def add_failing_routes(app: Any) -> Any:
    """Add test-only views that fail with 403 and with a bug (500), in every language.

    Nothing in the portal raises 403 and nothing should raise 500; these
    routes let tests see those error pages all the same.
    """
    from flask import abort

    def forbidden(lang: str = "en") -> None:
        abort(403)

    def broken(lang: str = "en") -> None:
        raise RuntimeError("a bug in a view")

    for name, view in (("forbidden", forbidden), ("broken", broken)):
        app.add_url_rule(f"/test-{name}", f"test_{name}", view)
        app.add_url_rule(f"/<lang:lang>/test-{name}", f"test_{name}_lang", view)
    return app
