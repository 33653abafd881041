"""Safe local file names for attachments whose names a witness's browser chose.

A name in a manifest is untrusted data: it may hold path separators, `..`,
NUL and other control characters, a right-to-left override that makes
`gpj.exe` look like `exe.jpg`, a thousand characters, a Windows device name,
or two names that differ only by case or Unicode normalisation and so collide
on the reviewer's file system. `safe_name()` turns any string into one plain
path component; `NameAllocator` hands out names unique within one folder and
creates each file with O_EXCL, so nothing is ever overwritten even where the
file system folds case in ways the allocator did not predict.
"""

from __future__ import annotations

import errno
import os
import unicodedata
from pathlib import Path

from portal.core.fsio import FILE_MODE, open_new

# File names are limited to 255 bytes on ext4, btrfs, APFS and exFAT (there in
# UTF-16 units). Staying well under leaves room for a " (12)" suffix and for
# the temporary name a writer may add beside it.
MAX_NAME_BYTES = 150
MAX_SUFFIX_CHARS = 16
FALLBACK_STEM = "attachment"

# Characters that separate paths or are forbidden in names on Windows, macOS
# or common USB file systems (FAT, exFAT, NTFS).
_FORBIDDEN = frozenset('/\\:*?"<>|')

# Device names Windows reserves in every folder, with any extension.
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"COM{c}" for c in "123456789¹²³"]
    + [f"LPT{c}" for c in "123456789¹²³"]
)


def _allowed(ch: str) -> bool:
    # Cc: control characters (NUL, newline, escape). Cf: format characters,
    # among them the bidirectional overrides and isolates (U+202A-U+202E,
    # U+2066-U+2069) and zero-width characters that make one name look like
    # another. Cs, Co, Cn: surrogates, private use and unassigned code points,
    # which render unpredictably. Zl, Zp: line and paragraph separators.
    category = unicodedata.category(ch)
    return category[0] != "C" and category not in ("Zl", "Zp") and ch not in _FORBIDDEN


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


def _split_suffix(name: str) -> tuple[str, str]:
    stem, dot, suffix = name.rpartition(".")
    if dot and stem and 0 < len(suffix) <= MAX_SUFFIX_CHARS and suffix.isalnum():
        return stem, "." + suffix
    return name, ""


def safe_name(name: str, fallback: str = FALLBACK_STEM) -> str:
    """Return one harmless path component derived from an untrusted name.

    The result is NFC-normalised, has no separators, control or format
    characters, does not start with a dot (no hidden files, no `.`/`..`) or a
    dash (no option look-alikes), does
    not end with a dot or space (Windows drops them), is not a Windows device
    name and fits in MAX_NAME_BYTES of UTF-8. It keeps a short extension.
    """
    text = unicodedata.normalize("NFC", name)
    text = "".join(ch if _allowed(ch) else "_" for ch in text)
    # Whitespace other than the plain space (tabs are Cc already; this catches
    # no-break and ideographic spaces) becomes a space, then runs collapse.
    text = " ".join(text.split())
    # A leading "-" would make the name read as an option to a command such
    # as `rm` or `xdg-open` typed in this folder.
    text = text.lstrip(" ._-").rstrip(" ._")
    if not text:
        text = fallback
    stem, suffix = _split_suffix(text)
    stem = stem.rstrip(" .") or fallback
    if stem.split(".")[0].upper() in _WINDOWS_RESERVED:
        stem = "_" + stem
    suffix = _truncate_utf8(suffix, MAX_SUFFIX_CHARS + 1)
    stem = _truncate_utf8(stem, MAX_NAME_BYTES - len(suffix.encode("utf-8"))).rstrip(" .")
    return (stem or fallback) + suffix


def collision_key(name: str) -> str:
    """The form under which two names collide on a case-folding, normalising file system."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


class NameAllocator:
    """Unique names inside one folder, each created with O_EXCL as it is handed out.

    `reserved` names (the tool's own files in that folder) are never handed
    out, whatever their case. A taken name gets a numbered suffix:
    `photo.jpg`, `photo (2).jpg`, `photo (3).jpg`.
    """

    def __init__(self, directory: Path, reserved: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self._taken = {collision_key(name) for name in reserved}

    def _candidates(self, base: str) -> list[str]:
        stem, suffix = _split_suffix(base)
        return [base] + [f"{stem} ({n}){suffix}" for n in range(2, 10_000)]

    def create(self, untrusted_name: str, mode: int = FILE_MODE) -> str:
        """Create an empty file under a safe, unused name; return that name.

        Raises:
            FileExistsError: no free name was found (ten thousand tries).
        """
        for candidate in self._candidates(safe_name(untrusted_name)):
            key = collision_key(candidate)
            if key in self._taken:
                continue
            try:
                fd = open_new(self.directory / candidate, mode)
            except FileExistsError:
                # The file system saw a collision the allocator did not (its
                # case folding differs from Python's): take the next number.
                self._taken.add(key)
                continue
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    self._taken.add(key)
                    continue
                raise
            os.close(fd)
            self._taken.add(key)
            return candidate
        raise FileExistsError(errno.EEXIST, "no free name", untrusted_name)
