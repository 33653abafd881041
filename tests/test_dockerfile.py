"""The Dockerfile as operators expect it, checked without building it (test_container builds it).

Its run example is DEPLOYMENT.md's command; the base is pinned by digest
and overridable for the tests' stand-in; every Python package is pinned by
hash and installed with --require-hashes; the lock files agree with
pyproject.toml; the build context is an allow-list; the HEALTHCHECK runs
`testimony-portal health`, which passes under PORTAL_ALLOWED_HOSTS.
"""

from __future__ import annotations

import io
import re
import shlex
import tomllib
from collections.abc import Callable
from pathlib import Path

from packaging.requirements import Requirement

from portal.server.cli import main
from portal.testing.container import documented_run_command
from portal.testing.live import Client, LiveServer, free_port
from tests.support import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text("utf-8")


def _example_in_dockerfile() -> list[str]:
    comment = [line[2:] for line in DOCKERFILE.splitlines() if line.startswith("#   ")]
    text = "\n".join(comment)
    start = text.index("docker run")
    end = text.index("\n\n", start) if "\n\n" in text[start:] else len(text)
    return shlex.split(text[start:end].replace("\\\n", " "))


def test_the_dockerfiles_run_example_is_deployment_mds_command() -> None:
    assert _example_in_dockerfile() == documented_run_command(REPO / "docs" / "DEPLOYMENT.md")


def test_the_documented_command_runs_it_as_operators_expect() -> None:
    args = documented_run_command(REPO / "docs" / "DEPLOYMENT.md")
    joined = " ".join(args)
    for expected in (
        "--init", "--stop-timeout 75", "--read-only", "--tmpfs /tmp:size=16m,mode=1777",
        "--tmpfs /dev/shm:size=16m", "--cap-drop ALL", "--security-opt no-new-privileges",
        "--ulimit core=0", "--restart unless-stopped", ":/keys/recipients.txt:ro",
        "-p 127.0.0.1:8080:8080",
    ):  # fmt: skip
        assert expected in joined, expected


def test_the_base_is_pinned_by_digest_and_can_be_replaced_for_the_tests() -> None:
    [default] = re.findall(r"^ARG BASE=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert re.fullmatch(r"docker\.io/library/python:3\.11-slim@sha256:[0-9a-f]{64}", default)
    froms = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    assert froms and all(base == "${BASE}" for base in froms)


def test_the_image_has_a_fixed_non_root_user_and_a_healthcheck() -> None:
    assert re.search(r"^USER 10001:10001$", DOCKERFILE, re.MULTILINE)
    assert "groupadd --system --gid 10001 portal" in DOCKERFILE
    assert "useradd --system --uid 10001 --gid 10001" in DOCKERFILE
    assert re.search(r'^\s+CMD \["testimony-portal", "health"', DOCKERFILE, re.MULTILINE)


def _locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile --generate-hashes file."""
    text = path.read_text().replace("\\\n", " ")
    locked = {}
    for line in text.splitlines():
        if not line or line.startswith((" ", "#")):
            continue
        requirement, *options = line.split()
        name, version = requirement.split("==")
        hashes = [o.split(":", 1)[1] for o in options if o.startswith("--hash=sha256:")]
        locked[name.lower()] = (version, hashes)
    return locked


def test_every_python_package_is_pinned_by_hash_and_installed_with_require_hashes() -> None:
    for lock in ("requirements.lock", "requirements-build.lock"):
        locked = _locked(REPO / lock)
        assert locked, lock
        for name, (version, hashes) in locked.items():
            assert re.fullmatch(r"[0-9][0-9a-z.]*", version), (lock, name)
            assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name
        folder = "/tmp/" if lock == "requirements.lock" else ""
        assert f"--require-hashes --only-binary :all: -r {folder}{lock}" in DOCKERFILE


def test_the_lock_file_satisfies_pyproject() -> None:
    """A dependency added or changed in pyproject.toml without `make lock` fails here."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    locked = _locked(REPO / "requirements.lock")
    # The image installs the `s3` extra too (one image for every deployment).
    specs = project["project"]["dependencies"] + project["project"]["optional-dependencies"]["s3"]
    for spec in specs:
        requirement = Requirement(spec)
        name = requirement.name.lower().replace("_", "-")
        assert name in locked, f"{name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(locked[name][0]), f"{name}: run `make lock`"
    [build] = project["build-system"]["requires"]
    requirement = Requirement(build)
    assert requirement.specifier.contains(_locked(REPO / "requirements-build.lock")["hatchling"][0])


def test_the_build_context_is_an_allow_list_without_keys_or_instance() -> None:
    lines = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert allowed == {
        "pyproject.toml", "README.md", "requirements.lock", "requirements-build.lock",
        "portal", "templates",
    }  # fmt: skip
    copied = set()
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            copied.update(line.split()[1:-1])
    assert copied == allowed, "the context holds exactly what the Dockerfile copies"


def test_health_passes_under_the_allowed_host_and_fails_when_nothing_answers(
    make_server: Callable[..., LiveServer],
) -> None:
    onion = "a" * 56 + ".onion"
    server = make_server(env={"PORTAL_ALLOWED_HOSTS": onion}, host_header=onion)
    # 127.0.0.1 is not the onion's name.
    assert Client(server.url).get("/").status == 400
    env = {"PORTAL_ALLOWED_HOSTS": onion, "PORTAL_DATA_DIR": str(server.data_dir)}
    err = io.StringIO()
    status = main(["health", "--port", str(server.port)], env=env, stderr=err)
    assert status == 0, err.getvalue()
    status = main(["health", "--port", str(server.port)], env={}, stderr=err)
    assert status == 1 and "answered 400, not 200" in err.getvalue()
    err = io.StringIO()
    status = main(["health", "--port", str(free_port())], env=env, stderr=err)
    [line] = err.getvalue().splitlines()
    assert status == 1 and line.startswith("testimony-portal: health: no answer on 127.0.0.1:")
