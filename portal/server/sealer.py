"""The sealer: a helper process that hashes, encrypts and writes a large upload.

An upload's CPU is the parsing of the body on the request's thread and, on
each piece, SHA-256, the age encryption and the write of the ciphertext.
hashlib and cryptography let go of the interpreter lock while they work,
but a thread in the worker must take the lock back after every call (each
64 KiB chunk's encryption, each write), and it waits for it while the
request's thread runs Python. Measured through the real server, that wait
was a third of the piece work's time (docs/BENCHMARKS.md, "Round 4"). A
separate process has its own lock, so none of that wait remains.

Each gunicorn worker has one sealer (`SealerPool`), started when the worker
starts. A request whose body is at least `SEALER_MIN_BODY` hands its file
parts to the sealer if it is free, one file at a time; any other file is
sealed in the worker as before (`portal.server.intake.PieceWorker`). What
the sealer does is what the worker would do, byte for byte: an age file to
the same recipients, written through the same free-space floor (its lock is
the workers' own, inherited), and the plaintext's SHA-256 and size for the
manifest. The worker still creates, fsyncs and commits the file.

The plaintext reaches the sealer through shared memory: an anonymous memory
file (memfd, never in any file system) of `SLOTS` slots of `SLOT_BYTES`,
which the request's thread fills and the sealer empties. Messages go over a
Unix socket pair, with the staged file's descriptor passed in the first.
The sealer drops a file's state once it is done (and the worker then frees
the ring's pages), refuses core dumps like the worker (`forbid_core_dumps`),
gets no environment but where the portal package is (no secret key, no
settings), ignores Ctrl-C, and ends when its worker's end of the socket
closes, which the kernel does also when the worker is killed.

In the sealer, one thread encrypts and writes each slot while a second
hashes it; a slot is given back once both are done with it.
"""

from __future__ import annotations

import array
import contextlib
import errno
import hashlib
import json
import logging
import mmap
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

from portal.core.age import Recipient, Writer, parse_recipients
from portal.core.fsio import open_unbuffered, start_writeback
from portal.server.freespace import FreeSpaceFloor
from portal.server.hardening import forbid_core_dumps

# A request whose body is at least this large hands its files to the sealer.
# Smaller ones cost less in the worker than a round trip to another process.
SEALER_MIN_BODY = 8 * 1024 * 1024
SLOTS = 8
SLOT_BYTES = 1024 * 1024
# The sealer starts write-back every this many bytes, as `StagedFile` does.
SYNC_EVERY = 32 * 1024 * 1024
# The longest the worker waits for one answer (a slot back, a file done):
# only a sealer that has stopped working takes this long.
ANSWER_SECONDS = 120.0

_MESSAGE_BYTES = 4096
# worker -> sealer
_OPEN, _DATA, _CLOSE, _ABORT = b"O", b"D", b"C", b"A"
# sealer -> worker: a slot given back, a failure (at most once a file), and
# the one answer that ends each file: DONE (the file is complete) or ENDED
# (it was dropped, or failed).
_FREE, _FAILED, _DONE, _ENDED = b"F", b"E", b"K", b"X"
# sealer -> worker, once: it has started (imports done, hardened).
_READY = b"R"
_SLOT = struct.Struct("<cII")  # kind, slot, length
_DONE_MSG = struct.Struct("<c32sQ")  # kind, SHA-256, size
_FAILED_MSG = struct.Struct("<ci")  # kind, errno; the message follows


T = TypeVar("T")
_log = logging.getLogger("portal")


class SealerError(OSError):
    """The sealer stopped or failed; nothing of the file it was sealing is kept."""


def _send(sock: socket.socket, message: bytes, fds: Sequence[int] = ()) -> None:
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([message], ancillary)


# --------------------------------------------------------------------------
# The worker's side


class Sealer:
    """The worker's handle on one sealer process, sealing one file at a time."""

    def __init__(
        self, recipients: Sequence[Recipient], floor_root: Path | None, floor_bytes: int,
        floor_lock_fd: int | None,
    ) -> None:  # fmt: skip
        ring_fd = os.memfd_create("portal-sealer-ring", os.MFD_CLOEXEC)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            os.ftruncate(ring_fd, SLOTS * SLOT_BYTES)
            self._ring = mmap.mmap(ring_fd, SLOTS * SLOT_BYTES)
            passed = [theirs.fileno(), ring_fd]
            if floor_lock_fd is not None:
                passed.append(floor_lock_fd)
            config = {
                "socket": theirs.fileno(),
                "ring": ring_fd,
                "recipients": [str(r) for r in recipients],
                "floor_root": None if floor_root is None else os.path.abspath(floor_root),
                "floor_bytes": floor_bytes,
                "floor_lock": floor_lock_fd,
            }
            self._process = subprocess.Popen(
                [sys.executable, "-m", "portal.server.sealer", json.dumps(config)],
                pass_fds=passed,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=_child_environment(),
            )
        except BaseException:
            ours.close()
            if hasattr(self, "_ring"):
                self._ring.close()
            raise
        finally:
            os.close(ring_fd)
            theirs.close()
        ours.settimeout(ANSWER_SECONDS)
        self._socket = ours
        self._free = list(range(SLOTS))
        self._slot: int | None = None
        self._filled = 0
        self._failure: SealerError | None = None
        self._written = 0
        self._open = False
        self._ready = False
        self.broken = False
        self._finalizer = weakref.finalize(self, _stop, ours, self._process)

    @property
    def pid(self) -> int:
        return self._process.pid

    def wait_ready(self) -> None:
        """Wait until the process has started; raises `SealerError` if it could not."""
        while not self._ready:
            self._receive()

    def open(self, fd: int) -> None:
        """Start sealing a new file into `fd` (the staged file; it stays the caller's)."""
        if self._open or self.broken:
            raise SealerError(errno.EBUSY, "the sealer is not free")
        self._free = list(range(SLOTS))
        self._slot, self._filled, self._failure = None, 0, None
        self._written = 0
        self._call(lambda: _send(self._socket, _OPEN, [fd]))
        self._open = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            self._raise_failure()
            if self._slot is None:
                self._slot = self._take_slot()
                self._filled = 0
            start = self._slot * SLOT_BYTES + self._filled
            size = min(len(view), SLOT_BYTES - self._filled)
            self._ring[start : start + size] = view[:size]
            self._filled += size
            self._written += size
            view = view[size:]
            if self._filled == SLOT_BYTES:
                self._hand_over()

    def close(self) -> tuple[str, int]:
        """Finish the file; returns the plaintext's SHA-256 (hex) and size."""
        self._raise_failure()
        self._hand_over()
        self._call(lambda: self._socket.send(_CLOSE))
        kind, message = self._until_ended()
        if kind != _DONE:
            raise self._failure or SealerError(errno.EIO, "the sealer could not finish the file")
        _, digest, size = _DONE_MSG.unpack(message)
        if size != self._written:
            # Never seen; if it were, the file would not be what the witness sent.
            raise SealerError(errno.EIO, "the sealer sealed a different number of bytes")
        return digest.hex(), size

    def abort(self) -> None:
        """Drop the file being sealed; the sealer is then free again (or `broken`)."""
        if self._open and not self.broken:
            with contextlib.suppress(SealerError):
                self._call(lambda: self._socket.send(_ABORT))
                self._until_ended()
        self._open = False

    def _until_ended(self) -> tuple[bytes, bytes]:
        while True:
            kind, message = self._receive()
            if kind in (_DONE, _ENDED):
                self._open = False
                # The sealer is done with every slot: free the ring's pages,
                # so no plaintext stays in memory after the file.
                self._ring.madvise(mmap.MADV_REMOVE)
                return kind, message

    def stop(self) -> None:
        self.broken = True
        self._finalizer()

    def _hand_over(self) -> None:
        if self._slot is not None and self._filled:
            slot, size = self._slot, self._filled
            self._slot, self._filled = None, 0
            self._call(lambda: self._socket.send(_SLOT.pack(_DATA, slot, size)))

    def _take_slot(self) -> int:
        while not self._free:
            self._receive()
            self._raise_failure()
        return self._free.pop()

    def _receive(self) -> tuple[bytes, bytes]:
        message = self._call(lambda: self._socket.recv(_MESSAGE_BYTES))
        if not message:
            self._broke("the sealer process ended")
        kind = message[:1]
        if kind == _FREE:
            self._free.append(_SLOT.unpack(message)[1])
        elif kind == _READY:
            self._ready = True
        elif kind == _FAILED and self._failure is None:
            self._failure = _failure(message)
        return kind, message

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _call(self, action: Callable[[], T]) -> T:
        if self.broken:
            raise SealerError(errno.EPIPE, "the sealer process has stopped")
        try:
            return action()
        except TimeoutError:
            self._broke(f"the sealer did not answer within {ANSWER_SECONDS:.0f} s")
        except OSError as exc:
            self._broke(f"the sealer process ended ({exc.strerror or exc})")

    def _broke(self, reason: str) -> NoReturn:
        self.stop()
        raise SealerError(errno.EPIPE, reason)


def _failure(message: bytes) -> SealerError:
    _, code = _FAILED_MSG.unpack_from(message)
    text = message[_FAILED_MSG.size :].decode("utf-8", "replace")
    return SealerError(code, text)


def _stop(sock: socket.socket, process: subprocess.Popen[bytes]) -> None:
    # Closing our end is the sealer's sign to end; then collect it.
    sock.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _child_environment() -> dict[str, str]:
    # Nothing of the worker's environment (its secret key above all): only
    # where the portal package is, for a portal not installed as a package.
    package_root = str(Path(__file__).resolve().parents[2])
    return {"PYTHONPATH": package_root, "PYTHONDONTWRITEBYTECODE": "1"}


class SealerPool:
    """This worker's sealers: started after the fork, lent out one file at a time."""

    def __init__(
        self, recipients: Sequence[Recipient], floor_root: Path | None = None,
        floor_bytes: int = 0, floor_lock_fd: int | None = None, size: int = 1,
    ) -> None:  # fmt: skip
        self._recipients = recipients
        self._floor = (floor_root, floor_bytes, floor_lock_fd)
        self._size = size
        self._lock = threading.Lock()
        self._idle: list[Sealer] = []
        self._lent = 0
        self._pid = 0

    def start(self) -> None:
        """Start this process's sealers now, so the first large upload does not wait for them."""
        with self._lock:
            self._after_fork()
            started: list[Sealer] = []
            while len(self._idle) + len(started) + self._lent < self._size:
                sealer = self._new()
                if sealer is None:
                    break
                started.append(sealer)
            for sealer in started:
                # The worker serves once its sealer can: the process's start
                # (about 0.2 s, 20 MiB) is not paid by the first upload.
                try:
                    sealer.wait_ready()
                except SealerError as exc:
                    _log.warning("the sealer did not start (%s); sealing in the worker", exc)
                else:
                    self._idle.append(sealer)

    def take(self) -> Sealer | None:
        """A free sealer, or None when every one is sealing (the caller seals itself)."""
        with self._lock:
            self._after_fork()
            while self._idle and self._idle[-1].broken:
                self._idle.pop()
            if self._idle:
                sealer: Sealer | None = self._idle.pop()
            elif self._lent < self._size:
                sealer = self._new()
            else:
                return None
            if sealer is not None:
                self._lent += 1
            return sealer

    def give_back(self, sealer: Sealer) -> None:
        """Take a sealer back; a file it has not finished is dropped first."""
        sealer.abort()
        with self._lock:
            if self._pid != os.getpid():
                return
            self._lent -= 1
            if not sealer.broken:
                self._idle.append(sealer)

    def stop(self) -> None:
        with self._lock:
            for sealer in self._idle:
                sealer.stop()
            self._idle.clear()

    def _new(self) -> Sealer | None:
        try:
            return Sealer(self._recipients, *self._floor)
        except OSError as exc:
            # No process (a pids limit, no memory): uploads are sealed in
            # the worker, as they are while the sealer is busy.
            _log.warning("cannot start a sealer process (%s); sealing in the worker", exc)
            return None

    def _after_fork(self) -> None:
        # Sealers started before a fork belong to the parent: a worker has its own.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._idle = []
            self._lent = 0


# --------------------------------------------------------------------------
# The sealer's side


class _Job:
    """One file being sealed: encrypted and written here, hashed on a second thread."""

    def __init__(self, fd: int, recipients: Sequence[Recipient], floor: FreeSpaceFloor | None,
                 ring: memoryview, sock: socket.socket) -> None:  # fmt: skip
        self._file = open_unbuffered(fd) if floor is None else floor.opener(fd)
        self._ring = ring
        self._sock = sock
        self._send_lock = threading.Lock()
        self._sha256 = hashlib.sha256()
        self._size = 0
        self._unsynced = 0
        self._pending: dict[int, int] = {}
        self._pending_lock = threading.Lock()
        self.error: OSError | None = None
        self._hashing: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._hasher = threading.Thread(target=self._hash, name="sealer-hash", daemon=True)
        self._hasher.start()
        try:
            self._writer: Writer | None = Writer(self._file, recipients)
        except OSError as exc:
            self._writer = None
            self._fail(exc)

    def data(self, slot: int, size: int) -> None:
        if not 0 <= slot < SLOTS or not 0 < size <= SLOT_BYTES:
            raise ValueError("a slot outside the ring")
        with self._pending_lock:
            self._pending[slot] = 2
        self._hashing.put((slot, size))
        if self.error is None and self._writer is not None:
            try:
                self._writer.write(self._ring[slot * SLOT_BYTES : slot * SLOT_BYTES + size])
                self._size += size
                self._unsynced += size
                if self._unsynced >= SYNC_EVERY:
                    start_writeback(self._file.fileno())
                    self._unsynced = 0
            except OSError as exc:
                self._fail(exc)
        self._done_with(slot)

    def _hash(self) -> None:
        while (item := self._hashing.get()) is not None:
            slot, size = item
            self._sha256.update(self._ring[slot * SLOT_BYTES : slot * SLOT_BYTES + size])
            self._done_with(slot)

    def _done_with(self, slot: int) -> None:
        with self._pending_lock:
            self._pending[slot] -= 1
            done = self._pending[slot] == 0
        if done:
            self.send(_SLOT.pack(_FREE, slot, 0))

    def send(self, message: bytes) -> None:
        with self._send_lock:
            self._sock.send(message)

    def _fail(self, exc: OSError) -> None:
        if self.error is None:
            self.error = exc
            text = (exc.strerror or str(exc)).encode()[:1024]
            self.send(_FAILED_MSG.pack(_FAILED, exc.errno or errno.EIO) + text)

    def finish(self, *, keep: bool) -> None:
        self._hashing.put(None)
        self._hasher.join()
        if keep and self.error is None and self._writer is not None:
            try:
                self._writer.close()
            except OSError as exc:
                self._fail(exc)
        with contextlib.suppress(OSError):
            self._file.close()
        if keep and self.error is None:
            self.send(_DONE_MSG.pack(_DONE, self._sha256.digest(), self._size))
        else:
            self.send(_ENDED)


def _serve(config: dict[str, object]) -> None:
    forbid_core_dumps()
    sock = socket.socket(fileno=int(config["socket"]))  # type: ignore[call-overload]
    ring_map = mmap.mmap(int(config["ring"]), SLOTS * SLOT_BYTES)  # type: ignore[call-overload]
    ring = memoryview(ring_map)
    recipients = parse_recipients("\n".join(config["recipients"]))  # type: ignore[arg-type]
    floor = None
    if config["floor_root"] is not None and config["floor_lock"] is not None:
        floor = FreeSpaceFloor(
            Path(str(config["floor_root"])),
            int(config["floor_bytes"]),  # type: ignore[call-overload]
            lock_fd=int(config["floor_lock"]),  # type: ignore[call-overload]
        )
    job: _Job | None = None
    sock.send(_READY)
    while True:
        message, ancillary, _flags, _addr = sock.recvmsg(_MESSAGE_BYTES, socket.CMSG_SPACE(4))
        if not message:
            return  # the worker closed its end, or ended
        kind = message[:1]
        fds = [fd for level, type_, data in ancillary
               if level == socket.SOL_SOCKET and type_ == socket.SCM_RIGHTS
               for fd in array.array("i", data[: len(data) - len(data) % 4])]  # fmt: skip
        if kind == _OPEN and job is None and len(fds) == 1:
            job = _Job(fds[0], recipients, floor, ring, sock)
        elif kind == _DATA and job is not None:
            _, slot, size = _SLOT.unpack(message)
            job.data(slot, size)
        elif kind in (_CLOSE, _ABORT) and job is not None:
            job.finish(keep=kind == _CLOSE)
            job = None
        else:
            for fd in fds:
                os.close(fd)
            # The worker broke the protocol: end; it sees the sealer gone.
            raise ValueError("unexpected message")


def main() -> None:
    # Ctrl-C at `make run` reaches the whole process group: the sealer ends
    # with its worker (when the worker's end of the socket closes), not
    # before it, in the middle of a file.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _serve(json.loads(sys.argv[1]))
    except Exception as exc:  # one line in the server's log, never a traceback
        # The worker sees the socket close and refuses the file it was sending.
        print(f"testimony-portal sealer: stopped ({type(exc).__name__})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
