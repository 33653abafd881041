"""The desk's settings: a small TOML file the organisation writes once.

    # ~/.config/testimony-review/desk.toml  (or --settings FILE)
    language = "ko"                 # ko, en or zh: the desk's own words
    statuses = ["new", "in-review", "verified", "answered", "forwarded", "closed"]
    outbox = "/media/reviewer/OUTBOX"   # replies (default: outbox beside the opened folder)
    bundles = "/home/reviewer/bundles"  # forward bundles (default: bundles beside it)

    [[partners]]
    name = "Legal partner"
    key = "age1pq1..."

Every member is optional. A status list of the organisation's own replaces
the default one; its first entry is what a case starts with.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LANGUAGES = ("ko", "en", "zh")
DEFAULT_LANGUAGE = "ko"
DEFAULT_STATUSES = ("new", "in-review", "verified", "answered", "forwarded", "closed")
SETTINGS_NAME = "desk.toml"
_STATUS_RE = re.compile(r"[^\x00-\x1f\x7f]{1,40}")


class SettingsError(Exception):
    """The settings file cannot be used; the message names the member and the fix."""


@dataclass(frozen=True)
class Partner:
    name: str
    key: str


@dataclass(frozen=True)
class DeskSettings:
    language: str = DEFAULT_LANGUAGE
    statuses: tuple[str, ...] = DEFAULT_STATUSES
    outbox: Path | None = None
    bundles: Path | None = None
    partners: tuple[Partner, ...] = field(default_factory=tuple)

    @property
    def first_status(self) -> str:
        return self.statuses[0]


def default_path(env: Mapping[str, str]) -> Path:
    home = env.get("HOME") or str(Path.home())
    config = env.get("XDG_CONFIG_HOME") or str(Path(home) / ".config")
    return Path(config) / "testimony-review" / SETTINGS_NAME


def load_settings(path: Path, *, required: bool) -> DeskSettings:
    """The settings in `path`; the defaults if it does not exist and is not `required`.

    Raises:
        SettingsError: the file cannot be read, is not TOML, or a member is wrong.
    """
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        if required:
            raise SettingsError(f"the settings file {path} does not exist") from None
        return DeskSettings()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read the settings file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path} is not valid TOML ({exc}); fix the line it names") from None
    return _parse(data, path)


def _parse(data: Mapping[str, Any], path: Path) -> DeskSettings:
    unknown = sorted(set(data) - {"language", "statuses", "outbox", "bundles", "partners"})
    if unknown:
        raise SettingsError(f"{path}: unknown setting {unknown[0]!r}; check the spelling")
    language = data.get("language", DEFAULT_LANGUAGE)
    if language not in LANGUAGES:
        raise SettingsError(f"{path}: language must be one of {', '.join(LANGUAGES)}")
    statuses = data.get("statuses", list(DEFAULT_STATUSES))
    if (
        not isinstance(statuses, list)
        or not statuses
        or not all(isinstance(s, str) and _STATUS_RE.fullmatch(s) for s in statuses)
        or len(set(statuses)) != len(statuses)
    ):
        raise SettingsError(
            f"{path}: statuses must be a list of distinct names of 1 to 40 characters"
        )
    partners = []
    for item in data.get("partners", []):
        if not isinstance(item, dict) or not all(
            isinstance(item.get(k), str) and item.get(k) for k in ("name", "key")
        ):
            raise SettingsError(f"{path}: each [[partners]] needs a name and a key")
        partners.append(Partner(item["name"], item["key"].strip()))
    return DeskSettings(
        language=language,
        statuses=tuple(statuses),
        outbox=_path(data, "outbox", path),
        bundles=_path(data, "bundles", path),
        partners=tuple(partners),
    )


def _path(data: Mapping[str, Any], key: str, where: Path) -> Path | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise SettingsError(f"{where}: {key} must be a folder path")
    return Path(value).expanduser()
