"""The `testimony-portal` command: check and serve refuse clearly, never with a traceback."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from portal.age import X25519Identity
from portal.cli import ExitStatus, main


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


def test_console_script_serve_refuses_without_recipients(tmp_path: Path) -> None:
    env = env_for(tmp_path, "")
    proc = subprocess.run(
        [sys.executable, "-m", "portal.cli", "serve", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "testimony-review keygen" in proc.stderr
    assert "Traceback" not in proc.stderr
