"""The upload fast paths of issue 14 keep their bounds and lose no byte.

`bench/bench_speed.py` measures what these buy; here only what must hold:
the body is received from the socket in the watchdog's unit, and the staged
file's writer thread gets whole pieces, at most a bounded number at a time,
with every byte in order on disk.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from flask import Flask
from gunicorn import util as gunicorn_util
from gunicorn.http import unreader as gunicorn_unreader
from gunicorn.http import wsgi as gunicorn_wsgi

from portal.server.appserver import adapt_gunicorn
from portal.server.store import StagedFile, SubmissionStore
from portal.server.web.body_guard import PROGRESS_BYTES
from tests.support import FileWrapper


def test_gunicorn_still_has_the_body_recv_limit_the_portal_sets() -> None:
    # gunicorn 27 reads up to `max_body_chunk` at once; if a later version
    # renames it, the portal's setting would silently do nothing.
    assert isinstance(gunicorn_unreader.SocketUnreader.max_body_chunk, int)


def test_a_body_is_received_in_the_watchdogs_unit(app: Flask) -> None:
    saved = (
        gunicorn_wsgi.Response,
        gunicorn_util.write_error,
        gunicorn_unreader.SocketUnreader.max_body_chunk,
    )
    try:
        adapt_gunicorn(app)
        left, right = socket.socketpair()
        with left, right:
            payload = os.urandom(1024 * 1024)
            sender = threading.Thread(target=left.sendall, args=(payload,))
            sender.start()
            reader = gunicorn_unreader.SocketUnreader(right)
            received = b""
            while len(received) < len(payload):
                piece = reader.chunk(size_hint=len(payload) - len(received))
                assert 0 < len(piece) <= PROGRESS_BYTES
                received += piece
            sender.join()
            assert received == payload
    finally:
        (
            gunicorn_wsgi.Response,
            gunicorn_util.write_error,
            gunicorn_unreader.SocketUnreader.max_body_chunk,
        ) = saved


@pytest.mark.parametrize("write_size", [1, 4097, 65536 + 16, 300_001])
def test_pieces_keep_every_byte_in_order(tmp_path: Path, write_size: int) -> None:
    store = SubmissionStore(tmp_path / "data")
    store.initialise()
    staging = store.begin()
    _relpath, staged = staging.create_attachment()
    # Past the inline part, through several pieces, ending mid-piece.
    total = StagedFile.INLINE_BYTES + 3 * StagedFile.PIECE_BYTES + 12_345
    data = os.urandom(total)
    view = memoryview(data)
    for start in range(0, total, write_size):
        staged.write(view[start : start + write_size])
    assert staged.threaded
    staged.finish()
    assert staged.path.read_bytes() == data
    staging.discard()


class _BlockedFile(FileWrapper):
    """A file whose writes wait until released, recording what they got."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__(raw)
        self.release = threading.Event()
        self.sizes: list[int] = []

    def write(self, data: Any) -> int:
        self.release.wait(timeout=120)
        self.sizes.append(len(data))
        return super().write(data)


def test_a_stalled_disk_holds_a_bounded_amount_in_memory(tmp_path: Path) -> None:
    files: list[_BlockedFile] = []

    def opener(fd: int) -> _BlockedFile:
        files.append(_BlockedFile(open(fd, "wb", buffering=0)))  # noqa: SIM115 - closed by the store
        return files[-1]

    store = SubmissionStore(tmp_path / "data", opener=opener)  # type: ignore[arg-type]
    store.initialise()
    staging = store.begin()
    _relpath, staged = staging.create_attachment()
    (raw,) = files
    raw.release.set()  # the inline part goes through
    chunk = os.urandom(64 * 1024 + 16)  # what the age writer hands over
    while not staged.threaded:
        staged.write(chunk)
    raw.release.clear()  # now the disk stalls
    accepted = 0
    stop = threading.Event()

    def produce() -> None:
        nonlocal accepted
        while not stop.is_set():
            staged.write(chunk)
            accepted += len(chunk)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    # Wait until the producer is blocked by the full queue (its count stops).
    last = -1
    while accepted != last:
        last = accepted
        time.sleep(0.5)
    bound = (StagedFile.QUEUE_DEPTH + 2) * StagedFile.PIECE_BYTES + len(chunk)
    assert accepted <= bound, (accepted, bound)
    stop.set()
    raw.release.set()
    producer.join(timeout=120)
    staged.finish()
    # The thread was handed whole pieces, not the writer's 64 KiB chunks.
    threaded_writes = raw.sizes[1:]
    assert max(threaded_writes) >= StagedFile.PIECE_BYTES
    staging.discard()


# --- open: the ciphertext hash covers every byte read, and the rest ---


def test_open_of_a_large_attachment_records_the_ciphertext_hash(tmp_path: Path) -> None:
    # The hash must cover every byte of the file, trailing ones included: the
    # custody log's ciphertext hash is what courts compare.
    from portal.core.fsio import sha256_file
    from portal.review.opening.decrypt import HashingReader

    data = os.urandom(3 << 20)
    path = tmp_path / "big.bin"
    path.write_bytes(data + b"trailing")
    with path.open("rb", buffering=0) as raw:
        reader = HashingReader(raw)
        buffer = memoryview(bytearray(1 << 20))
        assert reader.readinto(buffer) == 1 << 20 and buffer == data[: 1 << 20]
        assert reader.read(5) == data[1 << 20 : (1 << 20) + 5]
        reader.drain()
        digest = reader.hexdigest()
    assert digest == sha256_file(path)
    assert reader.size == len(data) + len(b"trailing")
