"""Which attachments the reviewer's pages may link to: only types known to be inert.

A link in `index.html` is a `file://` URL, and a browser decides how to show
a local file from its name: `.html`, but also `.shtm`, `.xhtm`, `.rss`,
`.atom`, `.svg` and many more, are rendered as documents that run script.
A list of dangerous types is never complete, so the rule is the other way
round: a file is linked only if its extension belongs to a small set of
raster image, audio and video types that browsers show in a media viewer
(which runs no script), *and* its first bytes are that kind of media.
Plain text is never linked; the tool shows its start, escaped, on its own
page. Everything else is listed as "not linked" with the reason.
"""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass

from portal.core.fsio import READ_FLAGS

# How much of a file is read to decide; also the most text shown on a page.
SNIFF_BYTES = 64 * 1024

IMAGE, AUDIO, VIDEO, TEXT = "image", "audio", "video", "text"


def _png(head: bytes) -> bool:
    return head.startswith(b"\x89PNG\r\n\x1a\n")


def _jpeg(head: bytes) -> bool:
    return head.startswith(b"\xff\xd8\xff")


def _gif(head: bytes) -> bool:
    return head[:6] in (b"GIF87a", b"GIF89a")


def _webp(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def _bmp(head: bytes) -> bool:
    return head[:2] == b"BM"


def _mp3(head: bytes) -> bool:
    return head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)


def _ogg(head: bytes) -> bool:
    return head[:4] == b"OggS"


def _wav(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WAVE"


def _flac(head: bytes) -> bool:
    return head[:4] == b"fLaC"


def _iso_media(head: bytes) -> bool:
    # MP4, M4A and M4V all start with an ISO base media `ftyp` box.
    return head[4:8] == b"ftyp"


def _webm(head: bytes) -> bool:
    return head[:4] == b"\x1a\x45\xdf\xa3"


# Extension -> (what it is, the check its first bytes must pass). Each is a
# type Chromium and Firefox show in a built-in image or media viewer when
# opened from disk.
_MEDIA = {
    ".png": (IMAGE, _png),
    ".jpg": (IMAGE, _jpeg),
    ".jpeg": (IMAGE, _jpeg),
    ".gif": (IMAGE, _gif),
    ".webp": (IMAGE, _webp),
    ".bmp": (IMAGE, _bmp),
    ".mp3": (AUDIO, _mp3),
    ".ogg": (AUDIO, _ogg),
    ".oga": (AUDIO, _ogg),
    ".opus": (AUDIO, _ogg),
    ".wav": (AUDIO, _wav),
    ".flac": (AUDIO, _flac),
    ".m4a": (AUDIO, _iso_media),
    ".mp4": (VIDEO, _iso_media),
    ".m4v": (VIDEO, _iso_media),
    ".webm": (VIDEO, _webm),
    ".ogv": (VIDEO, _ogg),
}
_TEXT_SUFFIXES = frozenset({".txt", ".text", ".log", ".csv", ".tsv", ".md"})


@dataclass(frozen=True)
class Decision:
    """How the pages show one attachment: `kind` is set only for a linkable or text file."""

    kind: str | None
    reason: str

    @property
    def linked(self) -> bool:
        return self.kind in (IMAGE, AUDIO, VIDEO)


def looks_like_text(head: bytes) -> bool:
    """UTF-8 without NUL or other control characters than tab and line breaks."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    try:
        text = decoder.decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return not any(ch < " " and ch not in "\t\n\r\f" for ch in text)


def decide(name: str, head: bytes) -> Decision:
    """Decide from a file's (safe) name and its first bytes whether a page may link it."""
    suffix = os.path.splitext(name)[1].lower()
    if suffix in _MEDIA:
        kind, check = _MEDIA[suffix]
        if check(head):
            return Decision(kind, f"{kind}, opened in the browser's {kind} viewer")
        return Decision(
            None, f"not linked: named {suffix} but its content is not that kind of {kind}"
        )
    if suffix in _TEXT_SUFFIXES:
        if looks_like_text(head):
            return Decision(TEXT, "plain text, shown on the submission's page")
        return Decision(None, f"not linked: named {suffix} but its content is not plain text")
    what = f"{suffix} files" if suffix else "files without an extension"
    return Decision(
        None,
        f"not linked: {what} are not a type known to be safe to open in a browser; "
        "open it deliberately, in a sandbox or a disposable virtual machine",
    )


def read_head(path: str | os.PathLike[str]) -> bytes:
    """The first SNIFF_BYTES of a file the tool wrote (never following a link)."""
    fd = os.open(path, READ_FLAGS)
    with open(fd, "rb") as handle:
        return handle.read(SNIFF_BYTES)


def is_linkable(name: str, kind: str) -> bool:
    """True if a file of this name may be linked as `kind` (the extension half of `decide`)."""
    entry = _MEDIA.get(os.path.splitext(name)[1].lower())
    return entry is not None and entry[0] == kind and kind in (IMAGE, AUDIO, VIDEO)
