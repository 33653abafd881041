"""`serve` as a supervisor: nginx starts only once the app answers; either one dying stops both.

A container runtime or systemd restarts a service only when its main
process exits, so half a portal (nginx answering 503 with no app behind
it, or an app nobody can reach) must never keep running. And a witness
must never get an error page because the portal is starting.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from portal.testing.live import LiveServer


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _gunicorn_master(server: LiveServer) -> int:
    [master] = [
        pid
        for pid in _descendants(server.process.pid)
        if "--unix-socket" in _cmdline(pid) and _parent(pid) == server.process.pid
    ]
    return master


def _nginx_master(server: LiveServer) -> int:
    [master] = [
        pid for pid in _descendants(server.process.pid) if _cmdline(pid).startswith("nginx: master")
    ]
    return master


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_no_error_page_and_no_critical_line_while_the_portal_starts(
    make_server: Callable[..., LiveServer],
) -> None:
    """Until the app answers, the port refuses connections; the first answer is the page."""
    answers: list[int] = []
    server = make_server(front=True, answers=answers)
    assert answers == [200], f"answers while starting: {answers}"
    log = server.log()
    assert "CRITICAL" not in log and "[crit]" not in log, log


@pytest.mark.parametrize("who", ["nginx", "gunicorn"])
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_either_half_dying_stops_the_whole_portal_with_status_1(
    front_server: LiveServer, who: str, how: signal.Signals
) -> None:
    """nginx or gunicorn ending, however, makes `serve` stop the other and exit 1."""
    everything = _descendants(front_server.process.pid)
    victim = _nginx_master(front_server) if who == "nginx" else _gunicorn_master(front_server)
    os.kill(victim, how)
    # A generous bound only so that a broken supervisor cannot hang the suite.
    assert front_server.process.wait(timeout=90) == 1
    name = "the front proxy (nginx)" if who == "nginx" else "the app server"
    assert f"testimony-portal: {name} stopped" in front_server.log()
    assert "restarts the whole portal" in front_server.log()
    left = [pid for pid in everything if _alive(pid)]
    assert not left, [_cmdline(pid) for pid in left]
    with pytest.raises(OSError):
        front_server.client().get("/")
