"""Werkzeug's multipart decoder, without two regular expressions compiled per request.

Werkzeug's `MultipartDecoder` compiles two regular expressions for each
request, each with the request's boundary in it. Browsers draw a new
boundary for every form they send, so Python's cache of compiled
expressions never helps, and compiling them was about half of parsing a
text submission (0.3 of 0.6 ms of CPU; docs/BENCHMARKS.md).

`BoundaryFinder` finds what those expressions find, the same way: the
boundary is a literal, so it is found with `bytes.find`, and only the
boundary-independent rest of each expression (line break before, dashes,
white space and line break after) is matched, with one expression compiled
once. Everything else is Werkzeug's own decoder, unchanged; the decoder is
installed as the one Werkzeug's form parser uses (`install`), and reads
each part's Content-Disposition through `part_options`, which keeps the
parsed form of the few short values a browser's form sends.
`tests/test_multipart.py` checks event by event, on generated bodies cut
into random pieces, that both decoders decode alike.
"""

from __future__ import annotations

import functools
import re

from werkzeug import formparser
from werkzeug import http as werkzeug_http
from werkzeug.sansio import multipart as werkzeug_multipart

# What follows the boundary in Werkzeug's expressions: "--" (the last
# boundary) with optional white space and line break, or white space and a
# line break. `werkzeug_multipart.LINE_BREAK` is CRLF, LF or CR.
_LINE_BREAK = werkzeug_multipart.LINE_BREAK
_AFTER = re.compile(rb"(--[^\S\n\r]*%s?|[^\S\n\r]*%s)" % (_LINE_BREAK, _LINE_BREAK), re.MULTILINE)
# Werkzeug's decoder is built with this boundary and then given the real one:
# its expressions for this one come from Python's cache of compiled expressions.
_STAND_IN = b"portal-stand-in-boundary"


class Found:
    """What `BoundaryFinder.search` found: the parts of a match Werkzeug reads."""

    __slots__ = ("_after", "_end", "_start")

    def __init__(self, start: int, end: int, after: bytes) -> None:
        self._start, self._end, self._after = start, end, after

    def start(self) -> int:
        return self._start

    def end(self) -> int:
        return self._end

    def group(self, index: int) -> bytes:
        if index != 1:
            raise IndexError("only the part after the boundary is a group")
        return self._after


class BoundaryFinder:
    """`search` as Werkzeug's compiled boundary expression's, for one boundary.

    With `line_break="required"` it is Werkzeug's `boundary_re`
    (LINE_BREAK "--" boundary AFTER), with `"optional"` its `preamble_re`
    (LINE_BREAK? "--" boundary AFTER). A match is the leftmost one that
    starts at or after `pos`, as `re.Pattern.search` gives.
    """

    def __init__(self, boundary: bytes, *, line_break: str) -> None:
        if line_break not in ("required", "optional"):
            raise ValueError("line_break is 'required' or 'optional'")
        self._needle = b"--" + boundary
        self._required = line_break == "required"

    def search(self, data: bytes | bytearray, pos: int = 0) -> Found | None:
        needle = self._needle
        at = data.find(needle, pos)
        while at != -1:
            after = _AFTER.match(data, at + len(needle))
            if after is not None:
                start = self._start(data, at, pos)
                if start is not None:
                    return Found(start, after.end(), after.group(1))
            at = data.find(needle, at + 1)
        return None

    def _start(self, data: bytes | bytearray, at: int, pos: int) -> int | None:
        # The line break before "--": the longest one that starts at or after `pos`.
        if at - 2 >= pos and data[at - 2 : at] == b"\r\n":
            return at - 2
        if at - 1 >= pos and data[at - 1 : at] in (b"\r", b"\n"):
            return at - 1
        return None if self._required else at


class PortalMultipartDecoder(werkzeug_multipart.MultipartDecoder):
    """Werkzeug's decoder with `BoundaryFinder`s in place of its two per-boundary expressions."""

    def __init__(
        self,
        boundary: bytes,
        max_form_memory_size: int | None = None,
        *,
        max_parts: int | None = None,
    ) -> None:
        super().__init__(_STAND_IN, max_form_memory_size, max_parts=max_parts)
        self.boundary = boundary
        # Werkzeug calls only `search(data[, pos])` on these, and reads the
        # match's `start()`, `end()` and `group(1)`.
        self.preamble_re = BoundaryFinder(boundary, line_break="optional")  # type: ignore[assignment]
        self.boundary_re = BoundaryFinder(boundary, line_break="required")  # type: ignore[assignment]


# A part's Content-Disposition is read with this many characters at most
# from the kept answers (`part_options`); longer ones are parsed each time.
MAX_KEPT_OPTIONS_CHARS = 256


@functools.lru_cache(maxsize=256)
def _kept_options(value: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    kind, options = werkzeug_http.parse_options_header(value)
    return kind, tuple(options.items())


def part_options(value: str | None) -> tuple[str, dict[str, str]]:
    """`werkzeug.http.parse_options_header`, keeping the answers for short values.

    A browser's form sends the same part headers every time
    (`form-data; name="testimony"`); parsing one takes about 8 us, for
    every part of every form. Each caller gets its own dictionary.
    """
    if value is None or len(value) > MAX_KEPT_OPTIONS_CHARS:
        return werkzeug_http.parse_options_header(value)
    kind, options = _kept_options(value)
    return kind, dict(options)


def install() -> None:
    """Make Werkzeug's form parser decode multipart bodies with `PortalMultipartDecoder`.

    Its decoder also reads each part's Content-Disposition with `part_options`.
    """
    formparser.MultipartDecoder = PortalMultipartDecoder  # type: ignore[attr-defined]
    werkzeug_multipart.parse_options_header = part_options  # type: ignore[attr-defined]
