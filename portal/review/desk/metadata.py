"""Identifying metadata in attachments (GPS position, serial numbers, authors), read by exiftool.

A witness's photo can carry where it was taken and the serial number of the
camera; a document, its author and the computer it was written on. The desk
shows such fields with a warning before anything is forwarded.

The files are hostile: Debian's exiftool (libimage-exiftool-perl) reads them
in a separate process, with a limit on its address space and CPU time and a
wall-clock timeout, so a file crafted to exhaust or crash a parser can only
stop that process. It gets the path after `--`, and its output is parsed as
JSON and shown escaped like any witness text.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

EXIFTOOL = "exiftool"
TIME_LIMIT_S = 20
CPU_LIMIT_S = 15
MEMORY_LIMIT = 768 * 1024 * 1024
MAX_OUTPUT = 4 * 1024 * 1024
# Tag names (after exiftool's family-1 group) that can point to a person, a
# place or a device.
_IDENTIFYING = re.compile(
    r"GPS|Serial|Author|Artist|Creator|Owner|Make$|Model|Software|HostComputer|Device|"
    r"Company|Manager|LastModifiedBy|Producer|CameraID|ImageUniqueID|Location|City|"
    r"Country|State|Sub-location|Email|By-line|Contact|UserName|Copyright|Rights|"
    r"Lens(Serial|Make|Model)|InternalSerial|Latitude|Longitude|Comment|Title|Subject",
    re.IGNORECASE,
)
# Groups that describe the file on this disk or exiftool itself, not what the witness sent.
_OWN_GROUPS = ("ExifTool", "System", "File")


class MetadataUnavailable(Exception):
    """exiftool is missing, failed, or was stopped at a limit; the message says which."""


@dataclass(frozen=True)
class Finding:
    tag: str
    value: str


def _limits() -> None:
    # Runs in the child between fork and exec.
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT_S, CPU_LIMIT_S))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def identifying_metadata(path: Path) -> list[Finding]:
    """The fields in one file that may identify a person, place or device.

    Raises:
        MetadataUnavailable: exiftool is not installed, failed on the file,
            or went past its time or memory limit.
    """
    program = shutil.which(EXIFTOOL)
    if program is None:
        raise MetadataUnavailable("exiftool is not installed (Debian: libimage-exiftool-perl)")
    try:
        done = subprocess.run(
            [program, "-json", "-G1", "-a", "-s", "--", str(path)],
            capture_output=True,
            timeout=TIME_LIMIT_S,
            preexec_fn=_limits,  # noqa: PLW1509 (no threads in the child: it execs at once)
            check=False,
            stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        )
    except subprocess.TimeoutExpired:
        raise MetadataUnavailable(f"exiftool took more than {TIME_LIMIT_S} s") from None
    except OSError as exc:
        raise MetadataUnavailable(f"exiftool could not run: {exc.strerror}") from None
    if done.returncode < 0:
        raise MetadataUnavailable(f"exiftool was stopped (signal {-done.returncode})")
    try:
        parsed = json.loads(done.stdout[:MAX_OUTPUT])
        fields = parsed[0] if isinstance(parsed, list) and parsed else {}
    except (ValueError, UnicodeDecodeError):
        raise MetadataUnavailable("exiftool's output could not be read") from None
    if not isinstance(fields, dict):
        return []
    findings = []
    for tag, value in fields.items():
        group, _, name = str(tag).partition(":")
        if group in _OWN_GROUPS or not name or not _IDENTIFYING.search(name):
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        findings.append(Finding(str(tag), text[:500]))
    return findings
