"""`check` and `serve` name a missing /tmp or /dev/shm mount in one line, before anything starts.

With a read-only root and no tmpfs on /tmp, `serve` used to print "serving
on..." and then exit 70 "unexpected error (FileNotFoundError)", while
`check` said all was well. The real read-only container is in
tests/test_container.py; here the folders are made unusable by pointing the
portal at ones that do not exist.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest

from portal.server import scratch
from portal.server.appserver import gunicorn_options
from portal.server.cli import main
from portal.server.config import Config


@pytest.fixture
def env(tmp_path: Path, config: Config) -> dict[str, str]:
    return {
        "PORTAL_DATA_DIR": str(config.data_dir),
        "PORTAL_RECIPIENTS": str(config.recipients_file),
        "PORTAL_MIN_FREE_MB": "0",
    }


@pytest.fixture
def no_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Python's temporary folder is gone, as /tmp is on a read-only root without a tmpfs."""
    gone = tmp_path / "no-tmp-mounted"
    monkeypatch.setattr(tempfile, "tempdir", str(gone))
    monkeypatch.delenv("TMPDIR", raising=False)
    return gone


@pytest.fixture
def no_shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    gone = tmp_path / "no-shm-mounted"
    monkeypatch.setattr(scratch, "HEARTBEAT_DIR", gone)
    return gone


def _run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    out = io.StringIO()
    status = main(argv, env=env, stdout=out, stderr=out)
    return status, out.getvalue()


def test_check_names_a_missing_tmp_mount(env: dict[str, str], no_tmp: Path) -> None:
    status, text = _run(["check"], env)
    assert status == 1
    [line] = [line for line in text.splitlines() if str(no_tmp) in line]
    assert line.startswith("[PROBLEM] no writable temporary folder")
    assert f"--tmpfs {no_tmp}:size=16m,mode=1777" in line
    assert "all checks passed" not in text


def test_check_names_a_missing_dev_shm_mount(env: dict[str, str], no_shm: Path) -> None:
    status, text = _run(["check"], env)
    assert status == 1
    [line] = [line for line in text.splitlines() if str(no_shm) in line]
    assert line.startswith(f"[PROBLEM] {no_shm} is read-only or missing")


def test_check_passes_with_both_folders(env: dict[str, str]) -> None:
    status, text = _run(["check"], env)
    assert status == 0, text
    assert "temporary folder" not in text


@pytest.mark.parametrize("missing", ["no_tmp", "no_shm"])
def test_serve_refuses_at_once_with_one_line(
    env: dict[str, str], missing: str, request: pytest.FixtureRequest
) -> None:
    gone = request.getfixturevalue(missing)
    status, text = _run(["serve", "--port", "28099"], env)
    assert status == 1
    [line] = text.strip().splitlines()
    assert line.startswith("testimony-portal: ") and str(gone) in line
    assert "serving on" not in text and "unexpected error" not in text


def test_serve_without_nginx_needs_only_dev_shm(env: dict[str, str], no_tmp: Path) -> None:
    assert scratch.scratch_problems(front=False) == []
    assert scratch.scratch_problems(front=True) != []


def test_the_checked_folder_is_the_one_gunicorn_uses(config: Config) -> None:
    options = gunicorn_options(config, "unix:/nowhere", 1, 1)
    assert Path(options["worker_tmp_dir"]) == scratch.HEARTBEAT_DIR
