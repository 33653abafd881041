"""A wheel built from the repository, installed into a fresh venv, serves the portal."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from portal.core.age import X25519Identity
from portal.testing.live import Client, free_port, start_server
from tests.support import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    [built] = out.glob("testimony_portal-*.whl")
    return built


@pytest.mark.slow  # builds the wheel
def test_wheel_contains_templates_and_static_files(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for page in ("base.html", "landing.html", "submit.html", "received.html", "error.html"):
        assert f"portal/templates/{page}" in names
    assert "portal/templates/_question.html" in names
    # The default questionnaire: without it the server refuses to start.
    assert "portal/core/questionnaires/default.toml" in names
    assert "portal/server/web/static/style.css" in names
    # The reviewers' desk speaks Korean and Chinese from its compiled catalogues.
    for lang in ("ko", "zh"):
        assert f"portal/review/desk/translations/{lang}/LC_MESSAGES/desk.mo" in names
    assert not any(name.startswith("tests/") for name in names)
    assert not any(name.startswith("portal/testing/") for name in names)


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_serves_the_form(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], check=True)
    assert (env_dir / "bin" / "testimony-portal").exists()
    assert (env_dir / "bin" / "testimony-review").exists()

    identity = X25519Identity.generate()
    identity_file = tmp_path / "identity.txt"
    identity_file.write_text(f"{identity}\n")
    # Run from a folder with no checkout in it, so only the wheel's files exist.
    server = start_server(
        tmp_path / "run",
        str(identity.recipient),
        identity_file,
        python=str(python),
        port=free_port(),
    )
    try:
        page = Client(server.url).last_page()  # the form's questions and templates ship
        assert 'name="testimony"' in page and 'name="consent"' in page
        css = Client(server.url).get("/static/style.css")
        assert css.status == 200
    finally:
        server.stop()
