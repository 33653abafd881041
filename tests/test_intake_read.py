"""`read_limited` reads a Werkzeug `LimitedStream` exactly as its own `read` does.

The form parser reads an upload through `FormBudget`, which takes each
piece from Werkzeug's `LimitedStream` with `read_limited` instead of the
stream's `read` (two copies fewer per piece). Both are run on identical
streams, piece by piece, through short reads, the end of the limit, a
client that goes away, and errors from the wrapped stream; they must give
the same bytes, positions and exceptions.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wsgi import LimitedStream

from portal.server.web.request import FormBudget, read_limited


class Source:
    """A wrapped stream without `readinto`, as the portal's GuardedInput is.

    It hands out `data` in pieces of at most `short` bytes (a slow network),
    then raises `fail` (if any) instead of reporting the end.
    """

    def __init__(self, data: bytes, short: int, fail: type[Exception] | None) -> None:
        self._data = data
        self._short = short
        self._fail = fail
        self.objects: list[bytes] = []

    def read(self, size: int) -> bytes:
        if not self._data and self._fail is not None:
            raise self._fail("gone")
        piece, self._data = (
            self._data[: min(size, self._short)],
            self._data[min(size, self._short) :],
        )
        self.objects.append(piece)
        return piece


def run(reader: Any, stream: LimitedStream, sizes: list[int]) -> list[Any]:
    seen: list[Any] = []
    for size in sizes:
        try:
            seen.append(reader(stream, size))
        except (ClientDisconnected, RequestEntityTooLarge) as exc:
            seen.append(type(exc))
        seen.append(stream.tell())
    return seen


@given(
    body=st.binary(max_size=300),
    extra=st.integers(-50, 50),
    is_max=st.booleans(),
    short=st.integers(1, 400),
    fail=st.sampled_from([None, OSError, ValueError]),
    sizes=st.lists(st.integers(0, 200), max_size=12),
)
def test_read_limited_reads_as_limited_streams_own_read(
    body: bytes,
    extra: int,
    is_max: bool,
    short: int,
    fail: type[Exception] | None,
    sizes: list[int],
) -> None:
    limit = max(0, len(body) + extra)  # a declared length above, at or below the body
    theirs = LimitedStream(Source(body, short, fail), limit, is_max)  # type: ignore[arg-type]
    ours = LimitedStream(Source(body, short, fail), limit, is_max)  # type: ignore[arg-type]
    expected = run(lambda s, n: s.read(n), theirs, sizes)
    assert run(read_limited, ours, sizes) == expected


def test_the_pieces_are_the_wrapped_streams_own_objects() -> None:
    source = Source(b"x" * 200_000, 65_536, None)
    stream = LimitedStream(source, 200_000)  # type: ignore[arg-type]
    budget = FormBudget(stream, 1 << 20, lambda: 0)  # type: ignore[arg-type]
    pieces = [budget.read(65_536) for _ in range(4)]
    assert [len(p) for p in pieces] == [65_536, 65_536, 65_536, 200_000 - 3 * 65_536]
    assert all(p is o for p, o in zip(pieces, source.objects, strict=True))


def test_a_wrapped_stream_with_readinto_is_read_by_limited_streams_own_read() -> None:
    import io

    stream = LimitedStream(io.BytesIO(b"abc"), 3)
    budget = FormBudget(stream, 1 << 20, lambda: 0)  # type: ignore[arg-type]
    assert budget.read(10) == b"abc"
    assert budget.read(10) == b""


def test_the_budget_still_counts_what_read_limited_returns() -> None:
    stream = LimitedStream(Source(b"y" * 1000, 1000, None), 1000)  # type: ignore[arg-type]
    budget = FormBudget(stream, 500, lambda: 0)  # type: ignore[arg-type]
    with pytest.raises(RequestEntityTooLarge):
        budget.read(1000)
