"""The image, built from the unchanged Dockerfile and run exactly as docs/DEPLOYMENT.md says.

podman builds the Dockerfile (`--format docker`, so the HEALTHCHECK stays)
on a stand-in for python:3.11-slim made from Debian packages
(`portal.testing.container`), then runs the `docker run` command of
DEPLOYMENT.md section 1, read from the page: read-only root, tmpfs on /tmp
and /dev/shm, a volume on /data, the recipients file mounted read-only, a
non-root user, every capability dropped, `--init`, a stop timeout of 75 s.
A Korean testimony with a file goes in; a 32 MiB one is sealed by one of
the sealer processes inside the container; a slow upload is in flight when the
container is stopped (SIGTERM): it is stored, then the container exits 0;
`testimony-review open` reads the volume's ciphertext and the text and the
files' SHA-256 match. Killing nginx or gunicorn inside makes the container
exit 1 and its restart policy start it again.

Marked `container` and `slow`: `make test` and CI run it (CI fails without
podman, tests/support.py), `make test-fast` leaves it out. It publishes on
host ports 28080-28099 only (`free_ports_in`). Measurements go to the test's output (`-s`) and to
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from portal.testing.container import (
    Podman,
    build_image,
    documented_run_command,
    free_ports_in,
    podman_run_args,
    short_root,
    standin_base,
    wait_for_exit,
)
from portal.testing.live import Client, MultipartBody, form_fields
from tests.support import REPO, require_root, require_tool

pytestmark = [pytest.mark.slow, pytest.mark.container]

DEPLOYMENT = REPO / "docs" / "DEPLOYMENT.md"
IMAGE = "localhost/testimony-portal:test"
ONION = "testimonyportalcontainertest" + "a" * 28 + ".onion"
KOREAN = "2019년 봄, 저는 수용소에서 강제 노동을 목격했습니다. 제가 직접 명령을 전달했습니다."


def measured(what: str, value: str) -> None:
    """Print a measurement (shown with -s) for docs/BENCHMARKS.md."""
    print(f"\n[measured] {what}: {value}", file=sys.stderr)


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    require_root("podman with a private store")
    for tool in ("podman", "runc", "mmdebstrap"):
        require_tool(tool, "make system-deps (Debian: apt-get install podman runc mmdebstrap)")
    engine = Podman(short_root())
    try:
        yield engine
    finally:
        engine.cleanup()


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    start = time.monotonic()
    base = standin_base(podman)
    measured("stand-in base (cached rootfs + import)", f"{time.monotonic() - start:.1f} s")
    seconds = build_image(podman, REPO, base, IMAGE)
    measured("podman build of the Dockerfile", f"{seconds:.1f} s")
    return IMAGE


@pytest.fixture(scope="module")
def reviewer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A reviewer identity (host side) and the recipients file to mount read-only."""
    root = tmp_path_factory.mktemp("reviewer")
    identity = root / "identity.txt"
    done = subprocess.run(
        [sys.executable, "-m", "portal.review.cli", "keygen", "--no-passphrase",
         "--out", str(identity)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    recipients = root / "recipients.txt"
    recipients.write_text(done.stdout)
    recipients.chmod(0o644)
    # The organisation's reply signing key: its public half is mounted as
    # docs/DEPLOYMENT.md says, beside the recipients.
    signed = subprocess.run(
        [sys.executable, "-m", "portal.review.cli", "keygen", "--signing", "--no-passphrase",
         "--out", str(root / "signing.age")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    (root / "reply-signers.txt").write_text(signed.stdout)
    (root / "reply-signers.txt").chmod(0o644)
    return identity, recipients


def run_args(
    podman: Podman,
    name: str,
    recipients: Path,
    ports: list[int],
    *,
    drop: tuple[tuple[str, str], ...] = (),
) -> list[str]:
    """docs/DEPLOYMENT.md's command for this test: its own name, volume, key, ports, image."""
    port, onion_port = ports
    documented = documented_run_command(DEPLOYMENT)
    replace = {
        "portal": name,
        "portal-data:/data": f"{name}-data:/data",
        "/etc/testimony-portal/recipients.txt:/keys/recipients.txt:ro": (
            f"{recipients}:/keys/recipients.txt:ro"
        ),
        "/etc/testimony-portal/reply-signers.txt:/keys/reply-signers.txt:ro": (
            f"{recipients.parent / 'reply-signers.txt'}:/keys/reply-signers.txt:ro"
        ),
        "PORTAL_SECRET_KEY=$(cat /etc/testimony-portal/secret-key)": (
            f"PORTAL_SECRET_KEY={secrets.token_hex(32)}"
        ),
        "PORTAL_ALLOWED_HOSTS=youronionaddress.onion": f"PORTAL_ALLOWED_HOSTS={ONION}",
        "127.0.0.1:8080:8080": f"127.0.0.1:{port}:8080",
        "127.0.0.1:8081:8081": f"127.0.0.1:{onion_port}:8081",
        "testimony-portal": IMAGE,
    }
    args = podman_run_args(documented, replace, drop, nofile_cap=podman.nofile)
    return ["run", *podman.machine_run_args(), *args]


def wait_until_served(
    client: Client, process_alive: Callable[[], bool], limit: float = 120
) -> list[int]:
    """Every answer to GET / until the first 200 (a refused connection is not an answer)."""
    answers: list[int] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            status = client.get("/").status
        except OSError:
            assert process_alive(), "the container stopped while starting"
            time.sleep(0.02)
            continue
        answers.append(status)
        if status == 200:
            return answers
    raise AssertionError(f"no 200 within {limit} s; answers: {answers}")


@dataclass
class Deployed:
    podman: Podman
    name: str
    port: int
    first_200_seconds: float
    answers: list[int]
    stored: dict[str, bytes] = field(default_factory=dict)  # attachment sha256 -> bytes

    def client(self) -> Client:
        return Client(f"http://127.0.0.1:{self.port}", timeout=120, host_header=ONION)

    def running(self) -> bool:
        state = self.podman.run_status("inspect", self.name, "--format", "{{.State.Running}}")
        return state.stdout.strip() == "true"

    def inspect(self, template: str) -> str:
        return self.podman("inspect", self.name, "--format", template).strip()


@pytest.fixture(scope="module")
def deployed(podman: Podman, image: str, reviewer: tuple[Path, Path]) -> Deployed:
    name = "portal-test"
    start = time.monotonic()
    ports = free_ports_in(2)
    port = ports[0]
    podman(*run_args(podman, name, reviewer[1], ports))
    probe = Client(f"http://127.0.0.1:{port}", timeout=10, host_header=ONION)
    deployment = Deployed(podman, name, port, 0.0, [])
    answers = wait_until_served(probe, deployment.running)
    deployment.first_200_seconds = time.monotonic() - start
    deployment.answers = answers
    measured("podman run -> first 200", f"{deployment.first_200_seconds:.2f} s")
    return deployment


def test_it_starts_without_an_error_page(deployed: Deployed) -> None:
    assert deployed.answers == [200], f"answers while starting: {deployed.answers}"
    logs = deployed.podman.run_status("logs", deployed.name)
    assert "CRITICAL" not in logs.stdout + logs.stderr


def test_it_runs_as_the_documentation_says(deployed: Deployed) -> None:
    assert deployed.inspect("{{.Config.User}}") == "10001:10001"
    assert deployed.inspect("{{.HostConfig.ReadonlyRootfs}}") == "true"
    assert deployed.inspect("{{.HostConfig.Init}}") == "true"
    assert deployed.inspect("{{.Config.StopTimeout}}") == "75"
    assert deployed.inspect("{{.HostConfig.RestartPolicy.Name}}") == "unless-stopped"
    status = deployed.podman(
        "exec", deployed.name, "sh", "-c",
        "id -u; id -g; grep -E '^Cap(Eff|Prm|Bnd):' /proc/self/status; ulimit -c; ulimit -n;"
        " cat /proc/1/cmdline | tr '\\0' ' '; echo;"
        " grep -E ' /(tmp|dev/shm|data|keys/recipients.txt|) ' /proc/mounts",
    )  # fmt: skip
    lines = status.splitlines()
    assert lines[:2] == ["10001", "10001"]
    assert all(line.endswith("0000000000000000") for line in lines[2:5]), lines[2:5]
    [nofile] = [a for a in documented_run_command(DEPLOYMENT) if a.startswith("nofile=")]
    wanted = min(int(nofile.split("=")[1].split(":")[0]), deployed.podman.nofile)
    assert lines[5:7] == ["0", str(wanted)]
    assert "serve" not in lines[7].split()[0], "process 1 must be the init, not the portal"
    mounts = {line.split()[1]: line.split() for line in lines[8:]}
    assert mounts["/"][3].startswith("ro"), mounts["/"]
    assert mounts["/tmp"][2] == "tmpfs" and mounts["/dev/shm"][2] == "tmpfs"
    assert mounts["/keys/recipients.txt"][3].startswith("ro")
    assert mounts["/data"][3].startswith("rw")
    # DEPLOYMENT.md: run `docker exec portal testimony-portal check` after every change.
    check = deployed.podman.run_status("exec", deployed.name, "testimony-portal", "check")
    assert check.returncode == 0 and "all checks passed" in check.stdout, check.stdout


def test_the_healthcheck_passes_with_allowed_hosts_set(deployed: Deployed) -> None:
    """HEALTHCHECK is kept (docker format) and passes, though the portal refuses 127.0.0.1."""
    check = deployed.inspect("{{.Config.Healthcheck.Test}}")
    assert "testimony-portal health" in check, check
    assert Client(f"http://127.0.0.1:{deployed.port}").get("/").status == 400
    result = deployed.podman.run_status("healthcheck", "run", deployed.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert deployed.inspect("{{.State.Health.Status}}") == "healthy"


def test_a_korean_testimony_with_a_file(deployed: Deployed) -> None:
    client = deployed.client()
    page = client.get("/ko/")
    assert page.status == 200 and '<html lang="ko"' in page.body
    assert "server" not in page.headers
    evidence = "증거 사진 대신: ".encode() + os.urandom(50_000)
    response = client.submit(KOREAN, [("증거.bin", evidence, "application/octet-stream")], "ko")
    assert response.status == 200 and 'class="notice ok"' in response.body
    deployed.stored[hashlib.sha256(evidence).hexdigest()] = evidence


# The image has no ps: the sealers' CPU ticks (utime + stime), read from /proc
# (stat stays readable for a process that is not dumpable; io does not).
_SEALER_TICKS = (
    "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null"
    " | grep -q -- 'portal.server.seale[r]'"
    " && set -- $(cut -d')' -f2 $p/stat) && echo $((${12} + ${13})); done; true"
)


def test_a_large_upload_is_sealed_by_a_sealer_inside_the_container(deployed: Deployed) -> None:
    before = [
        int(t) for t in deployed.podman("exec", deployed.name, "sh", "-c", _SEALER_TICKS).split()
    ]
    assert len(before) == 2, f"one sealer per worker, found {len(before)}"
    upload = os.urandom(32 * 1024 * 1024)
    response = deployed.client().submit(
        KOREAN, [("큰 파일.bin", upload, "application/octet-stream")], "ko"
    )
    assert response.status == 200 and 'class="notice ok"' in response.body
    after = [
        int(t) for t in deployed.podman("exec", deployed.name, "sh", "-c", _SEALER_TICKS).split()
    ]
    # Hashing and encrypting 32 MiB takes the sealer tens of clock ticks.
    assert sum(after) - sum(before) >= 3, (before, after)
    deployed.stored[hashlib.sha256(upload).hexdigest()] = upload
    logs = deployed.podman.run_status("logs", deployed.name)
    assert "sealing in the worker" not in logs.stdout + logs.stderr


def _slow_body(body: MultipartBody, started: threading.Event, pause: float) -> Iterator[bytes]:
    """The body in 64 KiB pieces with a pause between them, as a slow Tor upload arrives."""
    sent = 0
    for piece in body:
        for offset in range(0, len(piece), 65536):
            yield piece[offset : offset + 65536]
            sent += 1
            if sent == 4:
                started.set()
            time.sleep(pause)


def test_sigterm_lets_the_upload_in_flight_finish_then_exits_cleanly(
    deployed: Deployed, reviewer: tuple[Path, Path], tmp_path: Path
) -> None:
    client = deployed.client()
    fields = {**form_fields(client.get("/ko/submit").body), "testimony": KOREAN + " (느린 업로드)"}
    fields["consent"] = "yes"
    upload = os.urandom(3 * 1024 * 1024)
    body = MultipartBody(fields, [("느린.bin", upload, "application/octet-stream")])
    started = threading.Event()
    result: list[object] = []

    def send() -> None:
        try:
            result.append(
                client.request(
                    "POST",
                    "/ko/submit",
                    body=_slow_body(body, started, 0.08),
                    headers={"Content-Type": body.content_type, "Content-Length": str(body.length)},
                )  # fmt: skip
            )
        except Exception as exc:  # noqa: BLE001 (reported by the assertion below)
            result.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    assert started.wait(60)
    stop_start = time.monotonic()
    # `podman stop` sends SIGTERM and waits for the documented --stop-timeout (75 s).
    deployed.podman("stop", deployed.name, timeout=120)
    stopped_after = time.monotonic() - stop_start
    sender.join(120)
    [answer] = result
    assert not isinstance(answer, Exception), answer
    assert answer.status == 200 and 'class="notice ok"' in answer.body  # type: ignore[attr-defined]
    code = wait_for_exit(deployed.podman, deployed.name)
    measured(
        "SIGTERM (podman stop) -> exit, with a 3 MiB upload in flight", f"{stopped_after:.2f} s"
    )
    assert code == 0, f"exit status {code}"
    assert stopped_after < 75, "the stop timeout killed it"
    deployed.stored[hashlib.sha256(upload).hexdigest()] = upload

    logs = deployed.podman.run_status("logs", deployed.name)
    text = logs.stdout + logs.stderr
    for forbidden in ("127.0.0.1", "10.88.", "client:", "GET /", "POST /", "Traceback", ONION):
        assert forbidden not in text, f"{forbidden!r} in the container's log:\n{text}"

    # The volume holds ciphertext only, and the reviewer tool opens it.
    mountpoint = Path(deployed.podman("volume", "inspect", f"{deployed.name}-data",
                                      "--format", "{{.Mountpoint}}").strip())  # fmt: skip
    stored_files = [p for p in (mountpoint / "submissions").rglob("*") if p.is_file()]
    assert stored_files and all(
        p.read_bytes().startswith(b"age-encryption.org/v1\n") for p in stored_files
    )
    assert not any(KOREAN.encode() in p.read_bytes() for p in stored_files)
    opened = tmp_path / "opened"
    done = subprocess.run(
        [sys.executable, "-m", "portal.review.cli", "open", str(mountpoint),
         "--identity", str(reviewer[0]), "--out", str(opened),
         "--custody", str(tmp_path / "custody.jsonl")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    texts = [
        json.dumps(json.loads(p.read_text("utf-8")), ensure_ascii=False)
        for p in opened.glob("*/testimony.json")
    ]
    # The Korean testimony, the large upload and the slow one.
    assert len(texts) == 3 and all(KOREAN in text for text in texts)
    assert any("느린 업로드" in text for text in texts)
    sums = {
        hashlib.sha256(p.read_bytes()).hexdigest()
        for p in opened.glob("*/**/*")
        if p.is_file() and p.name != "testimony.json"
    }
    assert set(deployed.stored) <= sums, "an attachment did not open to its SHA-256"


def test_a_read_only_root_without_a_tmp_tmpfs_is_refused_in_one_line(
    podman: Podman, image: str, reviewer: tuple[Path, Path]
) -> None:
    """The documented command without `--tmpfs /tmp`: check and serve name the mount."""
    name = "portal-no-tmp"
    args = run_args(
        podman, name, reviewer[1], free_ports_in(2),
        drop=(("--restart", "unless-stopped"), ("--tmpfs", "/tmp:size=16m,mode=1777")),
    )  # fmt: skip
    args.remove("-d")
    args.insert(1, "--rm")
    check = podman.run_status(*args, "testimony-portal", "check")
    assert check.returncode == 1, check.stdout + check.stderr
    [problem] = [line for line in check.stdout.splitlines() if "/tmp" in line]
    assert problem.startswith("[PROBLEM] no writable temporary folder: /tmp")
    assert "--tmpfs /tmp:size=16m,mode=1777" in problem

    serve = podman.run_status(*args, timeout=120)
    assert serve.returncode == 1, serve.stdout + serve.stderr
    lines = [line for line in serve.stderr.splitlines() if line.startswith("testimony-portal")]
    assert len(lines) == 1 and "/tmp" in lines[0] and "serving on" not in serve.stderr, serve.stderr
    assert "unexpected error" not in serve.stderr and "Traceback" not in serve.stderr


@pytest.mark.parametrize("who", ["nginx", "gunicorn"])
def test_a_dying_half_stops_the_container_and_the_restart_policy_starts_it_again(
    podman: Podman, image: str, reviewer: tuple[Path, Path], who: str
) -> None:
    name = f"portal-kill-{who}"
    ports = free_ports_in(2)
    port = ports[0]
    podman(*run_args(podman, name, reviewer[1], ports))
    client = Client(f"http://127.0.0.1:{port}", timeout=10, host_header=ONION)

    def running() -> bool:
        state = podman.run_status("inspect", name, "--format", "{{.State.Running}}")
        return state.stdout.strip() == "true"

    wait_until_served(client, running)
    # The image has no ps or pkill: the master is the oldest (lowest pid) process
    # whose command line matches (the brackets keep this script from matching itself).
    pattern = "nginx: maste[r]" if who == "nginx" else "--unix-socke[t]"
    kill = (
        "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null"
        f" | grep -q -- '{pattern}' && echo ${{p#/proc/}}; done"
        " | sort -n | head -1 | { read -r pid && kill -9 $pid; }"
    )
    podman("exec", name, "sh", "-c", kill)
    deadline = time.monotonic() + 120
    restarts = "0"
    while time.monotonic() < deadline:
        restarts = podman("inspect", name, "--format", "{{.RestartCount}}").strip()
        if restarts != "0":
            break
        time.sleep(0.1)
    assert restarts == "1", "the container did not stop and restart"
    logs = podman.run_status("logs", name)
    stopped = "the front proxy (nginx) stopped" if who == "nginx" else "the app server stopped"
    assert f"testimony-portal: {stopped}" in logs.stdout + logs.stderr
    # And it serves again, without an error page while it starts.
    assert wait_until_served(client, lambda: True) == [200]
    podman("rm", "-f", "-t", "0", name)
