"""The `testimony-portal` command: check and serve refuse clearly, never with a traceback."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from portal.core.age import X25519Identity
from portal.core.exitstatus import ExitStatus
from portal.server.cli import main
from tests.support import mounted_tmpfs, require_root, require_tool, unsupported_here


def run(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(argv, env=env, stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def env_for(tmp_path: Path, recipients: str) -> dict[str, str]:
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    (keys / "recipients.txt").write_text(recipients)
    return {
        "PORTAL_DATA_DIR": str(tmp_path / "data"),
        "PORTAL_RECIPIENTS": str(keys / "recipients.txt"),
        "PORTAL_MIN_FREE_MB": "1",
        "PORTAL_SECRET_KEY": "x" * 32,
    }


def test_check_passes_on_a_good_setup(tmp_path: Path) -> None:
    env = env_for(tmp_path, f"{X25519Identity.generate().recipient}\n")
    status, out, _ = run(["check"], env)
    assert status == ExitStatus.OK, out
    assert "1 recipient(s)" in out
    assert "PROBLEM" not in out


def test_check_reports_missing_recipients(tmp_path: Path) -> None:
    status, out, _ = run(["check"], env_for(tmp_path, "# none yet\n"))
    assert status == ExitStatus.ERROR
    assert "[PROBLEM] no recipients" in out


def test_check_reports_loose_permissions(tmp_path: Path) -> None:
    env = env_for(tmp_path, f"{X25519Identity.generate().recipient}\n")
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    status, out, _ = run(["check"], env)
    assert status == ExitStatus.ERROR
    assert "chmod 700" in out


def test_check_reports_too_little_free_space(tmp_path: Path) -> None:
    env = env_for(tmp_path, f"{X25519Identity.generate().recipient}\n")
    env["PORTAL_MIN_FREE_MB"] = str(1 << 40)
    status, out, _ = run(["check"], env)
    assert status == ExitStatus.ERROR
    assert "PORTAL_MIN_FREE_MB" in out


def test_serve_with_a_private_key_exits_with_the_fix(tmp_path: Path) -> None:
    identity = X25519Identity.generate()
    env = env_for(tmp_path, f"{identity}\n")
    status, _, err = run(["serve", "--port", "1"], env)
    assert status == ExitStatus.ERROR
    assert "private key" in err
    assert "Traceback" not in err


def test_bad_setting_is_named(tmp_path: Path) -> None:
    env = env_for(tmp_path, f"{X25519Identity.generate().recipient}\n")
    env["PORTAL_MAX_UPLOAD_MB"] = "a lot"
    status, _, err = run(["check"], env)
    assert status == ExitStatus.ERROR
    assert "PORTAL_MAX_UPLOAD_MB" in err


def serve_in_a_process(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`serve` run as the console script runs it: a new Python process, its own exit."""
    return subprocess.run(
        [sys.executable, "-m", "portal.server.cli", "serve", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_console_script_serve_refuses_without_recipients(tmp_path: Path) -> None:
    env = env_for(tmp_path, "")
    proc = serve_in_a_process(env)
    assert proc.returncode == 1
    assert "testimony-review keygen" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- a data directory the portal cannot use: one clear line from check and serve


def refused_by_check_and_serve(env: dict[str, str], *words: str) -> None:
    """`check` reports the problem and fails; `serve` says it in one line and fails."""
    status, out, _ = run(["check"], env)
    assert status == ExitStatus.ERROR, out
    assert "all checks passed" not in out
    problems = [line for line in out.splitlines() if line.startswith("[PROBLEM]")]
    assert problems, out
    assert all(word in problems[0] for word in words), out
    assert not any(line.startswith("[ok] data directory") for line in out.splitlines()), out
    status, _, err = run(["serve", "--port", "1"], env)
    assert status == ExitStatus.ERROR
    assert len(err.strip().splitlines()) == 1, err
    assert all(word in err for word in words), err
    assert "Traceback" not in err


def test_data_directory_under_a_file_is_refused(tmp_path: Path) -> None:
    env = env_for(tmp_path, f"{X25519Identity.generate().recipient}\n")
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    env["PORTAL_DATA_DIR"] = str(tmp_path / "notes.txt" / "data")
    refused_by_check_and_serve(env, "notes.txt", "is a file, not a folder")
    env["PORTAL_DATA_DIR"] = str(tmp_path / "notes.txt")
    refused_by_check_and_serve(env, "notes.txt", "is a file, not a folder")


def test_console_script_serve_under_a_file_prints_no_traceback(tmp_path: Path) -> None:
    env = env_for(tmp_path, f"{X25519Identity.generate().recipient}\n")
    (tmp_path / "notes.txt").write_text("a file")
    env["PORTAL_DATA_DIR"] = str(tmp_path / "notes.txt" / "data")
    proc = serve_in_a_process(env)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "is a file, not a folder" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system holding a prepared data directory, remounted read-only."""
    with mounted_tmpfs(tmp_path / "ro-disk", "size=4m") as disk:
        for name in ("staging", "submissions"):
            (disk / "data" / name).mkdir(mode=0o700, parents=True)
        (disk / "data").chmod(0o700)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        yield disk


def test_data_directory_on_a_read_only_mount_is_refused(tmp_path: Path, read_only_disk) -> None:
    env = env_for(tmp_path, f"{X25519Identity.generate().recipient}\n")
    env["PORTAL_DATA_DIR"] = str(read_only_disk / "data")
    refused_by_check_and_serve(env, str(read_only_disk / "data"), "read-only file system")
    # Not there yet, on a read-only disk: it could not be created.
    env["PORTAL_DATA_DIR"] = str(read_only_disk / "new-data")
    refused_by_check_and_serve(env, str(read_only_disk), "read-only file system")


def make_immutable(path: Path) -> None:
    require_root("chattr +i")
    chattr = require_tool("chattr")
    if subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode != 0:
        unsupported_here(f"{path}: this file system has no chattr +i (ext4, xfs and btrfs do)")


@pytest.fixture
def immutable_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "data"
    for name in ("staging", "submissions"):
        (folder / name).mkdir(mode=0o700, parents=True)
    folder.chmod(0o700)
    make_immutable(folder)
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=False)


def test_immutable_data_directory_is_refused(tmp_path: Path, immutable_dir: Path) -> None:
    env = env_for(tmp_path, f"{X25519Identity.generate().recipient}\n")
    env["PORTAL_DATA_DIR"] = str(immutable_dir)
    refused_by_check_and_serve(env, str(immutable_dir), "immutable", "chattr -i")


def test_immutable_staging_folder_is_refused(tmp_path: Path) -> None:
    env = env_for(tmp_path, f"{X25519Identity.generate().recipient}\n")
    data = tmp_path / "data"
    for name in ("staging", "submissions"):
        (data / name).mkdir(mode=0o700, parents=True)
    data.chmod(0o700)
    staging = data / "staging"
    make_immutable(staging)
    try:
        refused_by_check_and_serve(env, str(staging), "immutable")
    finally:
        subprocess.run(["chattr", "-i", str(staging)], check=False)


def test_check_names_the_data_directory_as_writable_only_when_it_is(tmp_path: Path) -> None:
    env = env_for(tmp_path, f"{X25519Identity.generate().recipient}\n")
    (tmp_path / "data").mkdir(mode=0o700)
    status, out, _ = run(["check"], env)
    assert status == ExitStatus.OK, out
    assert f"[ok] data directory {tmp_path / 'data'} is writable" in out


@pytest.mark.parametrize(
    "flags",
    [
        ["--header-timeout", "nan"],
        ["--body-timeout", "inf"],
        ["--header-timeout", "-1"],
        ["--port", "99999"],
        ["--port", "0"],
    ],
)
def test_serve_refuses_meaningless_numbers_in_one_line(tmp_path: Path, flags: list[str]) -> None:
    # nan and inf used to reach the server's deadline arithmetic and end in a
    # traceback; port 99999 reached nginx and its config error.
    env = env_for(tmp_path, f"{X25519Identity.generate().recipient}\n")
    status, out, err = run(["serve", *flags], env)
    assert status == ExitStatus.USAGE
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err + out
    assert "serving on" not in err


def test_an_unexpected_error_is_one_line_without_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from portal.server.cli import cmd_export

    def broken(*_args: object) -> int:
        raise RuntimeError("message that could quote a client")

    monkeypatch.setattr(cmd_export, "run", broken)
    err = io.StringIO()
    status = main(
        ["export", str(tmp_path / "dest")],
        env={"PORTAL_DATA_DIR": str(tmp_path / "data")},
        stdout=io.StringIO(),
        stderr=err,
    )
    assert status == ExitStatus.BUG
    [line] = err.getvalue().strip().splitlines()
    assert "RuntimeError" in line and "could quote" not in line and "Traceback" not in line


# --- the command line itself: argparse never exits the process


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        ([], "COMMAND"),
        (["frobnicate"], "frobnicate"),
        (["serve", "--port", "eighty"], "--port"),
        (["serve", "--no-such-flag"], "--no-such-flag"),
        (["export"], "dest"),
        (["seal", "--all", "extra"], "extra"),
    ],
)
def test_a_usage_error_returns_usage_with_one_line_naming_it(
    tmp_path: Path, argv: list[str], named: str
) -> None:
    status, out, err = run(argv, {"PORTAL_DATA_DIR": str(tmp_path / "data")})
    assert status == ExitStatus.USAGE
    [line] = err.strip().splitlines()
    assert named in line and "--help" in line, line
    assert out == ""
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["export", "-h"]])
def test_help_is_printed_to_stdout_and_returns_ok(argv: list[str]) -> None:
    status, out, err = run(argv, {})
    assert status == ExitStatus.OK
    assert out.startswith("usage: testimony-portal") and err == ""


def test_main_returns_the_shared_exit_status_enum(tmp_path: Path) -> None:
    status = main(["seal"], env={"PORTAL_DATA_DIR": str(tmp_path / "none")}, stderr=io.StringIO())
    assert type(status) is ExitStatus and status == ExitStatus.ERROR


def test_console_script_usage_error_exits_2_without_a_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "portal.server.cli", "serve", "--port", "eighty"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == ExitStatus.USAGE
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
