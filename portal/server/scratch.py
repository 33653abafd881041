"""The two memory-backed folders `serve` writes outside the data directory, checked at start.

`serve` writes nginx's configuration, its error pages and its (always
empty) temporary folders, and gunicorn's socket, to a private folder in the
temporary folder (`TMPDIR`, else `/tmp`); gunicorn's workers keep their
heartbeat files in `/dev/shm` (`appserver.gunicorn_options`). On a
read-only root file system each must be a tmpfs (`docker run --read-only
--tmpfs /tmp:size=16m,mode=1777 --tmpfs /dev/shm:size=16m`, see
docs/DEPLOYMENT.md). Without them `serve` used to print "serving on..." and
then die with an unexpected error while `check` passed; now both name the
missing mount in one line before anything starts.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

# gunicorn's worker_tmp_dir (portal.server.appserver.gunicorn_options).
HEARTBEAT_DIR = Path("/dev/shm")  # noqa: S108 (a memory file system, not a shared temp folder)
MOUNT_HINT = "docker run --tmpfs {path}:size=16m{mode} (docs/DEPLOYMENT.md, section 1)"


def _temp_candidate() -> str:
    """The folder Python would try first: TMPDIR if set, else /tmp."""
    return os.environ.get("TMPDIR") or tempfile.tempdir or "/tmp"  # noqa: S108


def temp_dir_problem() -> str | None:
    """One line naming the missing writable temporary folder, or None if there is one."""
    try:
        folder = tempfile.mkdtemp(prefix="testimony-portal-check-")
    except OSError:
        path = _temp_candidate()
        return (
            f"no writable temporary folder: {path} is read-only or missing (with a read-only "
            "root, mount a tmpfs there: "
            + MOUNT_HINT.format(path=path, mode=",mode=1777")
            + "); serve keeps nginx's configuration and the app's socket there"
        )
    with contextlib.suppress(OSError):
        os.rmdir(folder)
    return None


def heartbeat_dir_problem(path: Path | None = None) -> str | None:
    """One line naming a missing or read-only /dev/shm, or None if gunicorn can write there."""
    path = path or HEARTBEAT_DIR
    try:
        fd, name = tempfile.mkstemp(prefix="testimony-portal-check-", dir=path)
    except OSError:
        return (
            f"{path} is read-only or missing: mount a tmpfs there ("
            + MOUNT_HINT.format(path=path, mode="")
            + "); the app server keeps its workers' heartbeat files there"
        )
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return None


def scratch_problems(*, front: bool = True) -> list[str]:
    """Everything `serve` (with nginx in front, unless `front` is False) cannot write to."""
    problems = [heartbeat_dir_problem()]
    if front:
        problems.insert(0, temp_dir_problem())
    return [problem for problem in problems if problem]
