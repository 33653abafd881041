"""The project's container image, built and run with podman as an operator would (tests only).

- `Podman`: podman with a private store, run state and configuration under
  one folder (nothing touches the machine's /var/lib/containers), removed
  by `cleanup()`. Two settings this kind of machine needs are in its
  containers.conf: `runtime = "runc"` (crun refuses a cgroup v1 "hybrid"
  host) and default ulimits within the hard limits the sandbox allows.
- `standin_base`: no container registry is reachable where the tests run,
  so the Dockerfile's base (python:3.11-slim, pinned by digest) is replaced
  with a stand-in made from Debian packages by mmdebstrap: bookworm's
  Python 3.11 with pip and venv, set up like the official image (see
  `STANDIN_NOTES`). The root file system is cached as a tar file in
  `BASE_CACHE`, keyed on everything that goes into it, so only the first
  run on a machine pays for it.
- `documented_run_command`: the `docker run` command of docs/DEPLOYMENT.md,
  section 1, read from the file and changed for podman and the test only in
  the ways that page's "With podman" note names.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

# Where the stand-in base's root file system is cached between runs.
BASE_CACHE = Path("/var/tmp/testimony-portal-tests")  # noqa: S108 (root-owned, 0700)
BASE_NAME = "localhost/testimony-portal-standin-base"
# Bumped when the recipe below changes in a way its text does not show.
STANDIN_VERSION = "1"
STANDIN_NOTES = """\
What differs from the official python:3.11-slim, and why:
- Python is Debian bookworm's 3.11 (/usr/bin/python3); /usr/local/bin/python,
  python3, pip and pip3 are links, so the names resolve as in the official image.
- Debian marks its Python "externally managed" (PEP 668); the official image
  does not, so the marker is removed (pip installs system-wide, as there).
- The machine's extra CA certificates (/usr/local/share/ca-certificates), if
  any, are added, because pip inside the build reaches PyPI as the host does
  (through a TLS-inspecting proxy on the test machines).
- APT is set up as in Debian's official images (docker-clean etc.).
"""
MMDEBSTRAP_OPTIONS = [
    "--variant=minbase",
    "--mode=root",
    "--format=tar",
    "--include=python3,python3-venv,python3-pip,ca-certificates",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
    '--customize-hook=mkdir -p "$1/usr/local/bin"'
    ' && ln -sf /usr/bin/python3 "$1/usr/local/bin/python"'
    ' && ln -sf /usr/bin/python3 "$1/usr/local/bin/python3"'
    ' && ln -sf /usr/bin/pip3 "$1/usr/local/bin/pip"'
    ' && ln -sf /usr/bin/pip3 "$1/usr/local/bin/pip3"',
    "--customize-hook="
    + " && ".join(
        f'echo {shlex.quote(line)} > "$1/etc/apt/apt.conf.d/{name}"'
        for name, line in (
            (
                "docker-clean",
                'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
                '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; }; '
                'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
                '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; }; '
                'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";',
            ),
            ("docker-no-languages", 'Acquire::Languages "none";'),
            ("docker-gzip-indexes", 'Acquire::GzipIndexes "true";'),
        )
    ),
    '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin'
    ' "$1"/var/cache/apt/archives/*.deb',
]
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")
SUITE = "bookworm"
IMPORT_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
]
# The Debian packages the container tests need on the host (.ci/run and the
# Makefile's system-deps install them).
HOST_PACKAGES = "podman runc netavark aardvark-dns catatonit iptables uidmap mmdebstrap"


class ContainerError(Exception):
    """A podman or mmdebstrap step failed; the message ends with its output."""


def _run(command: Sequence[str], *, timeout: float, **kwargs: object) -> str:
    try:
        done = subprocess.run(  # type: ignore[call-overload]
            list(command), capture_output=True, text=True, timeout=timeout, **kwargs
        )
    except subprocess.TimeoutExpired as exc:
        raise ContainerError(f"{shlex.join(command)} did not finish in {timeout} s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise ContainerError(f"{shlex.join(command)} failed ({done.returncode}):\n{tail}")
    return str(done.stdout)


class Podman:
    """podman with its own store under `root` (a short path: podman puts sockets there)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        conf = root / "containers.conf"
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = 1048576 if hard == resource.RLIM_INFINITY else hard
        self.nofile = nofile
        # podman lowers its own NPROC to 32768 at start; a container may ask no more.
        conf.write_text(
            "[containers]\n"
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc=32768:32768"]\n'
            "[engine]\n"
            'runtime = "runc"\n'
        )
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        self.base = ["podman", "--root", str(root / "storage"), "--runroot", str(root / "run")]

    def machine_run_args(self) -> list[str]:
        """`podman run` options this machine needs before the documented ones.

        Once a command gives any `--ulimit`, podman drops containers.conf's
        default ulimits and asks for its own (nofile 1048576, nproc above
        32768), which this sandbox refuses; the documented `--ulimit`s that
        follow override these two where they name the same limit.
        """
        return ["--ulimit", f"nofile={self.nofile}:{self.nofile}", "--ulimit", "nproc=32768:32768"]

    def command(self, *args: str) -> list[str]:
        return [*self.base, *args]

    def __call__(self, *args: str, timeout: float = 300) -> str:
        return _run(self.command(*args), timeout=timeout, env=self.env)

    def run_status(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run podman and return its result whatever the exit status."""
        return subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout, env=self.env
        )

    def cleanup(self) -> None:
        """Remove every container, volume and image of this store, then the store itself."""
        for args in (("rm", "-af", "-t", "0"), ("volume", "prune", "-f"), ("rmi", "-af")):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.run_status(*args, timeout=120)
        for mount in sorted(_mounts_under(self.root), reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point.startswith(prefix):
            mounts.append(point)
    return mounts


def _apt_sources() -> str:
    """The machine's Debian sources for SUITE, for mmdebstrap to read (deb822 or one-line)."""
    paragraphs = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for paragraph in re.split(r"\n\s*\n", path.read_text()):
            if re.search(rf"^Suites:.*\b{SUITE}\b", paragraph, re.MULTILINE):
                paragraphs.append(paragraph.strip())
    if paragraphs:
        return "\n\n".join(paragraphs) + "\n"
    lines = []
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.list")]:
        if path.is_file():
            lines += [
                line
                for line in path.read_text().splitlines()
                if line.startswith("deb ") and f" {SUITE}" in line
            ]
    return "\n".join(lines) + ("\n" if lines else "")


def _extra_cas() -> list[Path]:
    return sorted(EXTRA_CA_DIR.glob("*.crt")) if EXTRA_CA_DIR.is_dir() else []


def standin_key() -> str:
    """A digest of everything that goes into the stand-in base."""
    inputs = {
        "version": STANDIN_VERSION,
        "suite": SUITE,
        "options": MMDEBSTRAP_OPTIONS,
        "sources": _apt_sources(),
        "cas": [hashlib.sha256(p.read_bytes()).hexdigest() for p in _extra_cas()],
        "changes": IMPORT_CHANGES,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def standin_rootfs(cache: Path = BASE_CACHE) -> tuple[Path, bool]:
    """The stand-in's root file system as a tar file; True if it was made now (not cached)."""
    key = standin_key()
    tar = cache / f"python-3.11-slim-standin-{key}.tar"
    if tar.is_file():
        return tar, False
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    options = list(MMDEBSTRAP_OPTIONS)
    cas = _extra_cas()
    if cas:
        copies = " && ".join(f'cp {shlex.quote(str(p))} "$1{EXTRA_CA_DIR}/"' for p in cas)
        options.append(
            f'--customize-hook=mkdir -p "$1{EXTRA_CA_DIR}" && {copies}'
            ' && chroot "$1" update-ca-certificates >/dev/null'
        )
    partial = tar.with_suffix(f".partial-{os.getpid()}")
    sources = _apt_sources()
    try:
        _run(
            ["mmdebstrap", *options, SUITE, str(partial), *(["-"] if sources else [])],
            timeout=1800,
            input=sources,
        )
        os.replace(partial, tar)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    # Older stand-ins (other inputs) are of no further use.
    for old in cache.glob("python-3.11-slim-standin-*.tar"):
        if old != tar:
            old.unlink()
    return tar, True


def standin_base(podman: Podman) -> str:
    """Import the (cached) stand-in base into `podman`'s store; return its reference."""
    tar, _made = standin_rootfs()
    reference = f"{BASE_NAME}:{standin_key()}"
    changes = [arg for change in IMPORT_CHANGES for arg in ("--change", change)]
    podman("import", *changes, str(tar), reference, timeout=600)
    return reference


def build_image(podman: Podman, context: Path, base: str, tag: str) -> float:
    """`podman build` of the unchanged Dockerfile on `base`; returns the seconds it took.

    `--format docker` keeps HEALTHCHECK (the OCI format has no such field and
    podman drops it); `--pull=never`: no registry is reachable.
    """
    start = time.monotonic()
    podman(
        "build", "--pull=never", "--format", "docker", "--layers=false",
        "--build-arg", f"BASE={base}", "-t", tag, str(context),
        timeout=1800,
    )  # fmt: skip
    return time.monotonic() - start


def documented_run_command(deployment_md: Path) -> list[str]:
    """The `docker run` command of section 1 of docs/DEPLOYMENT.md, split into arguments."""
    text = deployment_md.read_text("utf-8")
    match = re.search(r"```sh\n(?:.*\n)*?(docker run (?:.*\\\n)*.*)\n", text)
    if match is None:
        raise ContainerError(f"no `docker run` command in {deployment_md}")
    return shlex.split(match.group(1).replace("\\\n", " "))


def podman_run_args(
    documented: Sequence[str],
    replace: dict[str, str],
    drop: Sequence[tuple[str, str]] = (),
    nofile_cap: int | None = None,
) -> list[str]:
    """The documented `docker run` arguments (after `docker run`), for podman and this test.

    The changes for podman are those the page's "With podman" note names:
    `--read-only-tmpfs=false` after `--read-only`, `--log-driver k8s-file`
    for `local`, no `--log-opt max-file=2`. `replace` maps a documented
    argument (a volume, a port, the secret's shell expression...) to what
    the test uses instead, and `drop` removes option-value pairs; each must
    be in the command, so the test notices when the page changes.
    `nofile_cap` lowers a documented `--ulimit nofile=` above it: a machine
    whose hard open-file limit not even root can raise (the test sandbox:
    20,000) cannot start a container that asks for more.
    """
    if list(documented[:2]) != ["docker", "run"]:
        raise ContainerError(f"not a `docker run` command: {shlex.join(documented)}")
    args = list(documented[2:])
    pairs = list(zip(args, args[1:], strict=False))
    missing = [key for key in replace if key not in args]
    missing += [" ".join(pair) for pair in drop if pair not in pairs]
    if missing:
        raise ContainerError(f"docs/DEPLOYMENT.md's command no longer has {missing}")
    out: list[str] = []
    index = 0
    while index < len(args):
        pair = tuple(args[index : index + 2])
        if pair in drop or pair == ("--log-opt", "max-file=2"):
            index += 2
            continue
        if pair == ("--log-driver", "local"):
            out += ["--log-driver", "k8s-file"]
            index += 2
            continue
        if pair[0] == "--ulimit" and pair[1].startswith("nofile=") and nofile_cap:
            soft, hard = (int(n) for n in pair[1].removeprefix("nofile=").split(":"))
            out += ["--ulimit", f"nofile={min(soft, nofile_cap)}:{min(hard, nofile_cap)}"]
            index += 2
            continue
        out.append(replace.get(args[index], args[index]))
        if args[index] == "--read-only":
            out.append("--read-only-tmpfs=false")
        index += 1
    return out


def wait_for_exit(podman: Podman, name: str, timeout: float = 120) -> int:
    """The container's exit code once it has stopped."""
    return int(podman("wait", name, timeout=timeout).strip())


# Host ports the container tests may publish on (the Tor tests use 27500-27800).
PORTS = range(28080, 28100)


def free_ports_in(count: int, ports: range = PORTS) -> list[int]:
    """`count` ports of `ports` that nothing listens on now (another run may use the others)."""
    found: list[int] = []
    for port in ports:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise ContainerError(f"fewer than {count} free ports from {ports.start} to {ports.stop - 1}")


def short_root(prefix: str = "tp-podman-") -> Path:
    """A private folder with a short path for a podman store (sockets live under it)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # noqa: S108
