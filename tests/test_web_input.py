"""The request body reader: read-ahead in large blocks, same bytes, errors become 400."""

from __future__ import annotations

import io

import pytest
from werkzeug.exceptions import ClientDisconnected

from portal.server.web.body_guard import GuardedInput


class CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        self.sizes.append(-1 if size is None else size)
        return super().read(size)


def test_small_reads_return_the_same_bytes_from_large_blocks() -> None:
    data = bytes(range(256)) * 20_000  # about 5 MiB
    source = CountingStream(data)
    guarded = GuardedInput(source)
    pieces = []
    while piece := guarded.read(65_536):
        pieces.append(piece)
    assert b"".join(pieces) == data
    # Few, large reads from the server instead of one per 64 KiB.
    assert min(size for size in source.sizes) >= GuardedInput.READ_AHEAD
    assert len(source.sizes) <= len(data) // GuardedInput.READ_AHEAD + 2


def test_readline_and_read_all_see_buffered_bytes_first() -> None:
    guarded = GuardedInput(CountingStream(b"first line\nsecond line\nrest"))
    assert guarded.read(3) == b"fir"
    assert guarded.readline() == b"st line\n"
    assert guarded.readline(4) == b"seco"
    assert guarded.read() == b"nd line\nrest"


def test_a_server_parse_error_becomes_a_client_error() -> None:
    class Broken(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise ValueError("invalid chunk size b'zz'")

    with pytest.raises(ClientDisconnected) as info:
        GuardedInput(Broken()).read(10)  # type: ignore[arg-type]  # a stream that fails
    assert "zz" not in str(info.value)


@pytest.mark.parametrize(
    ("headers", "timed"),
    [
        ({}, False),
        ({"CONTENT_LENGTH": "0"}, False),
        ({"CONTENT_LENGTH": "12"}, True),
        ({"HTTP_TRANSFER_ENCODING": "chunked"}, True),
    ],
)
def test_only_a_request_with_a_body_gets_the_bodys_socket_timeout(headers, timed) -> None:
    import socket

    from portal.server.web.body_guard import GuardedInputMiddleware

    seen: list[float | None] = []

    def app(environ, start_response):
        seen.append(environ["gunicorn.socket"].gettimeout())
        return [b""]

    guard = GuardedInputMiddleware(app, window=7.0)
    left, right = socket.socketpair()
    with left, right:
        right.setblocking(True)
        environ = {"gunicorn.socket": right, "wsgi.input": io.BytesIO(b""), **headers}
        guard(environ, lambda *a: None)
    assert seen == [7.0 if timed else None]
