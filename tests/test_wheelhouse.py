"""`make wheelhouse` gives a folder that installs the reviewer tool with no network."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

from tests.support import REPO


@pytest.mark.slow
def test_wheelhouse_installs_the_reviewer_tool_without_an_index(tmp_path: Path) -> None:
    house = tmp_path / "wheelhouse"
    subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "wheelhouse", f"WHEELHOUSE={house}"],
        check=True,
        capture_output=True,
    )
    assert any(house.glob("testimony_portal-*.whl"))
    assert any(house.glob("shamir_mnemonic-*.whl"))

    env_dir = tmp_path / "review-env"
    venv.create(env_dir, with_pip=True)
    subprocess.run(
        [
            str(env_dir / "bin" / "pip"),
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(house),
            "testimony-portal",
        ],
        check=True,
        capture_output=True,
    )
    # The installed tool works offline: make a key and show its recipient.
    result = subprocess.run(
        [
            str(env_dir / "bin" / "testimony-review"),
            "keygen",
            "--no-passphrase",
            "--out",
            str(tmp_path / "k.txt"),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.stdout.strip().startswith("age1")
