"""The age v1 header: stanzas, strict base64, parsing and serialization.

The header is text, but it is handled as bytes throughout so that nothing is
silently decoded, normalized or re-encoded on its way to the MAC.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from portal.core.age.errors import HeaderError

INTRO = b"age-encryption.org/"
VERSION_LINE = b"age-encryption.org/v1\n"
STANZA_PREFIX = b"-> "
MAC_PREFIX = b"---"
COLUMNS_PER_LINE = 64
BYTES_PER_LINE = COLUMNS_PER_LINE // 4 * 3
MAC_SIZE = 32

# A header is a few hundred bytes per recipient. The cap only exists so that a
# hostile file cannot make us buffer an unbounded "header" in memory.
MAX_HEADER_SIZE = 4 * 1024 * 1024
MAX_LINE_SIZE = 64 * 1024

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64encode(data: bytes) -> str:
    """Encode as standard base64 without padding, as the spec requires."""
    return base64.b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: bytes | str) -> bytes:
    """Decode unpadded, canonical standard base64, rejecting anything else.

    Raises:
        ValueError: the text has padding, characters outside the alphabet,
            an impossible length, or non-zero trailing bits. Accepting any of
            those would make the header malleable.
    """
    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    if raw.translate(None, _B64_ALPHABET) or len(raw) % 4 == 1:
        raise ValueError("invalid base64")
    decoded = binascii.a2b_base64(raw + b"=" * (-len(raw) % 4), strict_mode=True)
    if base64.b64encode(decoded).rstrip(b"=") != raw:
        raise ValueError("non-canonical base64")
    return decoded


def _is_argument(arg: bytes) -> bool:
    # Arguments are 1*VCHAR: printable ASCII without spaces.
    return bool(arg) and all(0x21 <= c <= 0x7E for c in arg)


@dataclass(frozen=True)
class Stanza:
    """One recipient stanza: a type, its arguments, and a binary body."""

    type: str
    args: tuple[str, ...]
    body: bytes

    def __post_init__(self) -> None:
        for arg in (self.type, *self.args):
            if not _is_argument(arg.encode("ascii", "replace")):
                raise ValueError(f"invalid stanza argument {arg!r}")

    def marshal(self) -> bytes:
        """Serialize as an argument line and a body wrapped at 64 columns."""
        line = b" ".join(a.encode("ascii") for a in (self.type, *self.args))
        encoded = b64encode(self.body).encode("ascii")
        body_lines = [
            encoded[i : i + COLUMNS_PER_LINE] for i in range(0, len(encoded), COLUMNS_PER_LINE)
        ]
        # The body always ends with a line shorter than 64 columns, which is
        # how readers find its end; it is empty if the last full line was full.
        if not body_lines or len(body_lines[-1]) == COLUMNS_PER_LINE:
            body_lines.append(b"")
        return STANZA_PREFIX + line + b"\n" + b"".join(b + b"\n" for b in body_lines)


def stanza_args(stanza: Stanza, count: int, expected: str) -> tuple[str, ...]:
    """The arguments of a stanza, which must be exactly `count` (`expected` names them).

    Raises:
        HeaderError: another number of arguments.
    """
    if len(stanza.args) != count:
        raise HeaderError(f"malformed {stanza.type} stanza: expected {expected}")
    return stanza.args


def stanza_bytes(stanza: Stanza, index: int, name: str, size: int) -> bytes:
    """Argument `index` of a stanza: canonical unpadded base64 of exactly `size` bytes.

    Raises:
        HeaderError: not canonical base64, or another length.
    """
    try:
        value = b64decode(stanza.args[index])
    except ValueError:
        raise HeaderError(
            f"malformed {stanza.type} stanza: {name} is not canonical base64"
        ) from None
    if len(value) != size:
        raise HeaderError(f"malformed {stanza.type} stanza: {name} is not {size} bytes")
    return value


def stanzas_of_type(
    stanzas: Sequence[Stanza], stanza_type: str, arg_name: str, arg_size: int
) -> Iterator[tuple[Stanza, bytes]]:
    """Each stanza of `stanza_type`, with its one argument decoded (`arg_size` bytes).

    What X25519 and mlkem768x25519 stanzas share: an identity tries each
    stanza of its type in turn.

    Raises:
        HeaderError: such a stanza has another number of arguments, or its
            argument is not canonical base64 of `arg_size` bytes.
    """
    for stanza in stanzas:
        if stanza.type == stanza_type:
            stanza_args(stanza, 1, "exactly one argument")
            yield stanza, stanza_bytes(stanza, 0, arg_name, arg_size)


@dataclass(frozen=True)
class Header:
    """A parsed header: its stanzas, its MAC, and the exact bytes the MAC covers."""

    stanzas: tuple[Stanza, ...]
    mac: bytes
    mac_input: bytes


def marshal_without_mac(stanzas: Sequence[Stanza]) -> bytes:
    """Serialize the header up to and including "---", the input to the MAC."""
    return VERSION_LINE + b"".join(s.marshal() for s in stanzas) + MAC_PREFIX


def marshal_mac(mac: bytes) -> bytes:
    """Serialize the rest of the MAC line that follows "---"."""
    return b" " + b64encode(mac).encode("ascii") + b"\n"


class ByteSource(Protocol):
    """The part of a binary file object that the reader needs."""

    def read(self, size: int = ..., /) -> bytes: ...


class BufferedSource:
    """A read buffer over a file object, with peek and line reading.

    The header must be read line by line without losing the payload bytes that
    follow it, and armor detection must look ahead without consuming anything.
    """

    def __init__(self, src: ByteSource | BinaryIO) -> None:
        self._src = src
        self._buf = bytearray()
        self._eof = False

    def _fill(self, size: int) -> None:
        # Read until at least `size` bytes are buffered or the source ends.
        while len(self._buf) < size and not self._eof:
            data = self._src.read(max(size - len(self._buf), 64 * 1024))
            if not data:
                self._eof = True
            else:
                self._buf += data

    def peek(self, size: int) -> bytes:
        """Return up to `size` upcoming bytes without consuming them."""
        self._fill(size)
        return bytes(self._buf[:size])

    def read(self, size: int) -> bytes:
        """Return exactly `size` bytes, or fewer only at the end of the source."""
        if not self._buf:
            # Fast path for the payload: hand the source's own bytes through.
            data = self._src.read(size)
            if len(data) == size or not data:
                self._eof = self._eof or not data
                return data
            self._buf += data
        self._fill(size)
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def readinto(self, view: memoryview) -> int:
        """Fill `view`; return the byte count, short only at the end of the source."""
        size = len(view)
        filled = min(len(self._buf), size)
        if filled:
            view[:filled] = self._buf[:filled]
            del self._buf[:filled]
        readinto = getattr(self._src, "readinto", None)
        while filled < size and not self._eof:
            if readinto is not None:
                got = readinto(view[filled:]) or 0
            else:
                data = self._src.read(size - filled)
                got = len(data)
                view[filled : filled + got] = data
            if not got:
                self._eof = True
            filled += got
        return filled

    def readline(self, limit: int) -> bytes:
        """Return the next line including its LF, or the rest of the source.

        Raises:
            ValueError: no LF within `limit` bytes.
        """
        start = 0
        while (end := self._buf.find(b"\n", start)) < 0:
            if len(self._buf) > limit:
                raise ValueError("line too long")
            if self._eof:
                end = len(self._buf) - 1
                break
            start = len(self._buf)
            self._fill(start + 1)
        line = bytes(self._buf[: end + 1])
        del self._buf[: end + 1]
        return line


def parse_header(src: BufferedSource) -> Header:
    """Parse a v1 header, leaving `src` positioned at the payload nonce.

    Raises:
        HeaderError: the header does not follow the v1 grammar exactly.
    """
    consumed = 0

    def next_line() -> bytes:
        nonlocal consumed
        try:
            line = src.readline(MAX_LINE_SIZE)
        except ValueError:
            raise HeaderError("header line too long") from None
        consumed += len(line)
        if consumed > MAX_HEADER_SIZE:
            raise HeaderError("header too large")
        if not line.endswith(b"\n"):
            raise HeaderError("unexpected end of file in the header")
        return line

    first = next_line()
    if first != VERSION_LINE:
        if first.startswith(INTRO):
            raise HeaderError(f"unsupported age format version {first[len(INTRO) : -1]!r}")
        raise HeaderError("not an age file: missing 'age-encryption.org/v1' line")
    mac_input = bytearray(first)
    stanzas: list[Stanza] = []
    line = next_line()
    while not line.startswith(MAC_PREFIX):
        if not line.startswith(STANZA_PREFIX):
            raise HeaderError("malformed header: expected a stanza or the MAC line")
        mac_input += line
        stanzas.append(_parse_stanza(line, next_line, mac_input))
        line = next_line()
    if not stanzas:
        raise HeaderError("header has no recipient stanzas")
    if not line.startswith(MAC_PREFIX + b" "):
        raise HeaderError("malformed MAC line")
    try:
        mac = b64decode(line[len(MAC_PREFIX) + 1 : -1])
    except ValueError:
        raise HeaderError("malformed MAC: not canonical base64") from None
    if len(mac) != MAC_SIZE:
        raise HeaderError("malformed MAC: wrong length")
    mac_input += MAC_PREFIX
    return Header(tuple(stanzas), mac, bytes(mac_input))


def _parse_stanza(arg_line: bytes, next_line: Callable[[], bytes], mac_input: bytearray) -> Stanza:
    args = arg_line[len(STANZA_PREFIX) : -1].split(b" ")
    if not all(_is_argument(a) for a in args):
        raise HeaderError("malformed stanza: empty argument or invalid character")
    encoded = bytearray()
    while True:
        line = next_line()
        mac_input += line
        body_line = line[:-1]
        if len(body_line) > COLUMNS_PER_LINE:
            raise HeaderError("malformed stanza: body line longer than 64 columns")
        encoded += body_line
        # A line shorter than 64 columns, possibly empty, ends the body.
        if len(body_line) < COLUMNS_PER_LINE:
            break
    try:
        body = b64decode(bytes(encoded))
    except ValueError:
        raise HeaderError("malformed stanza body: not canonical base64") from None
    decoded = [a.decode("ascii") for a in args]
    return Stanza(decoded[0], tuple(decoded[1:]), body)
