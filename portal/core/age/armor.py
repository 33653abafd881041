"""ASCII armor: strict PEM with the label "AGE ENCRYPTED FILE".

Armor is malleable unless it is parsed strictly, so the reader accepts exactly
one encoding of each file: 64-column lines, canonical padded base64, no PEM
headers. The only tolerances are the ones the spec allows: LF or CRLF line
endings, and whitespace around the PEM block.
"""

from __future__ import annotations

import base64
import binascii
from typing import Protocol

from portal.core.age._format import BufferedSource
from portal.core.age.errors import ArmorError

BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
END = b"-----END AGE ENCRYPTED FILE-----"
COLUMNS_PER_LINE = 64
BYTES_PER_LINE = COLUMNS_PER_LINE // 4 * 3

# Whitespace allowed around the block is capped so that a stream of blanks
# cannot keep the reader busy forever.
MAX_WHITESPACE = 1024

_READ_SIZE = 64 * 1024
# Longer than any valid line, including the allowance for leading whitespace.
_MAX_LINE = 4096


class Sink(Protocol):
    """Anything with a file's write(): a file, a socket wrapper, a staging file."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int | None: ...


def write_all(out: Sink, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = out.write(view)
        # Raw (unbuffered) files may write only part of the data.
        view = view[written if written is not None else len(view) :]


class ArmorWriter:
    """Encodes bytes written to it as an armored block on `out`."""

    def __init__(self, out: Sink) -> None:
        self._out = out
        self._pending = bytearray()
        write_all(out, BEGIN + b"\n")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encode every complete 48-byte line; keep the remainder for later."""
        self._pending += data
        whole = len(self._pending) - len(self._pending) % BYTES_PER_LINE
        if whole:
            write_all(self._out, _wrap(binascii.b2a_base64(self._pending[:whole], newline=False)))
            del self._pending[:whole]

    def close(self) -> None:
        """Encode the final, padded line and the END line. Leaves `out` open."""
        final = base64.b64encode(self._pending) + b"\n" if self._pending else b""
        self._pending.clear()
        write_all(self._out, final + END + b"\n")


def _wrap(encoded: bytes) -> bytearray:
    """Break base64 text (a multiple of 64 characters) into LF-terminated lines."""
    lines = len(encoded) // COLUMNS_PER_LINE
    width = COLUMNS_PER_LINE + 1
    out = bytearray(lines * width)
    # One strided copy per column instead of one slice per line: a handful of
    # C-level loops whatever the size.
    for column in range(COLUMNS_PER_LINE):
        out[column::width] = encoded[column::COLUMNS_PER_LINE]
    out[COLUMNS_PER_LINE::width] = b"\n" * lines
    return out


class ArmorReader:
    """Decodes an armored block from `src`, a batch of lines at a time.

    Errors surface as ArmorError from read(), when the malformed line is
    reached, so the decoder never needs the whole file in memory.
    """

    def __init__(self, src: BufferedSource) -> None:
        self._src = src
        self._text = b""
        self._pos = 0
        self._eof = False
        self._started = False
        self._final_seen = False
        self._slow_lines = 0
        self._done = False
        self._decoded = bytearray()

    def read(self, size: int = -1, /) -> bytes:
        """Return up to `size` decoded bytes; b"" only at the end of the block."""
        while (size < 0 or len(self._decoded) < size) and not self._done:
            self._decode_more()
        if size < 0:
            size = len(self._decoded)
        data = bytes(self._decoded[:size])
        del self._decoded[:size]
        return data

    def _fill(self) -> bool:
        # Append more raw text to the buffer; False at the end of the input.
        if self._eof:
            return False
        data = self._src.read(_READ_SIZE)
        if not data:
            self._eof = True
            return False
        self._text = self._text[self._pos :] + data
        self._pos = 0
        return True

    def _line(self) -> bytes:
        """Return the next line without its LF or CRLF."""
        while (end := self._text.find(b"\n", self._pos)) < 0:
            if len(self._text) - self._pos > _MAX_LINE:
                raise ArmorError("invalid armor: line too long")
            if not self._fill():
                if self._pos == len(self._text):
                    raise ArmorError("invalid armor: unexpected end of file")
                end = len(self._text)
                break
        line = self._text[self._pos : end]
        self._pos = end + 1
        return line[:-1] if line.endswith(b"\r") else line

    def _start(self) -> None:
        skipped = 0
        try:
            while not (line := self._line()).strip():
                # Blank lines before the block are allowed, within reason.
                skipped += len(line) + 1
                if skipped > MAX_WHITESPACE:
                    raise ArmorError("invalid armor: too much leading whitespace")
        except ArmorError:
            line = b""
        if line != BEGIN:
            # Binary files were routed elsewhere, so this is not an age file.
            raise ArmorError(
                "not an age file: expected 'age-encryption.org/v1' or an armor line "
                "'-----BEGIN AGE ENCRYPTED FILE-----'"
            )
        self._started = True

    def _decode_more(self) -> None:
        if not self._started:
            self._start()
        if self._decode_full_lines():
            return
        line = self._line()
        if self._slow_lines:
            self._slow_lines -= 1
        if line == END:
            self._finish()
            return
        if self._final_seen:
            raise ArmorError("invalid armor: data after the final short line")
        if len(line) > COLUMNS_PER_LINE:
            raise ArmorError("invalid armor: line longer than 64 columns")
        if len(line) < COLUMNS_PER_LINE or line.endswith(b"="):
            # A short or padded line must be the last one before END.
            self._final_seen = True
            self._decoded += _decode_final(line)
        else:
            self._decoded += _decode(line)

    def _decode_full_lines(self) -> bool:
        """Decode a run of full 64-column lines with a few C-level calls.

        Returns False when the next line needs the line-by-line path: END,
        the final line, or anything irregular.
        """
        if self._final_seen or self._slow_lines:
            return False
        if len(self._text) - self._pos < 2 * (COLUMNS_PER_LINE + 2):
            self._fill()
        text, pos = self._text, self._pos
        # The first line's ending (LF or CRLF) sets the width of the run.
        eol = b"\r\n" if text.startswith(b"\r\n", pos + COLUMNS_PER_LINE) else b"\n"
        width = COLUMNS_PER_LINE + len(eol)
        lines = (len(text) - pos) // width
        for offset in range(len(eol)):
            column = text[pos + COLUMNS_PER_LINE + offset : pos + lines * width : width]
            lines -= len(column.lstrip(eol[offset : offset + 1]))
        region = text[pos : pos + lines * width]
        if (
            not lines
            or region.count(b"\n") != lines
            or region.count(b"\r") != lines * (len(eol) - 1)
            or b"=" in region
        ):
            # Take this stretch line by line, rather than retrying the fast
            # path after every line.
            self._slow_lines = max(lines, 1)
            return False
        self._decoded += _decode(region.replace(eol, b""))
        self._pos += len(region)
        return True

    def _finish(self) -> None:
        # Only whitespace, and not too much of it, may follow the END line.
        trailing = self._text[self._pos :]
        while len(trailing) < MAX_WHITESPACE and self._fill():
            trailing = self._text
        if trailing.strip():
            raise ArmorError("invalid armor: data after the END line")
        if len(trailing) >= MAX_WHITESPACE:
            raise ArmorError("invalid armor: too much trailing whitespace")
        self._done = True


def _decode(full_lines: bytes) -> bytes:
    # Full 64-column lines without padding always decode canonically, so
    # strict mode (alphabet only, no padding) is all the checking they need.
    try:
        return binascii.a2b_base64(full_lines, strict_mode=True)
    except binascii.Error:
        raise ArmorError("invalid armor: invalid base64 character") from None


def _decode_final(line: bytes) -> bytes:
    if not line:
        raise ArmorError("invalid armor: empty line")
    try:
        decoded = binascii.a2b_base64(line, strict_mode=True)
    except binascii.Error:
        raise ArmorError("invalid armor: invalid base64 in the last line") from None
    if base64.b64encode(decoded) != line:
        raise ArmorError("invalid armor: non-canonical base64 in the last line")
    return decoded
