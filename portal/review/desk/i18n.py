"""The desk's own words in Korean, English and Chinese: gettext catalogues read with the stdlib.

The catalogues are made with the same Babel tooling as the witness pages
(docs/TRANSLATING.md): `translations/desk.pot` is extracted from this
package, each language's `.po` is translated and compiled to `.mo`, and the
`.mo` files are read here with `gettext`, so the reviewer's machine needs
no Babel at run time. English is the source language.
"""

from __future__ import annotations

import functools
import gettext
from pathlib import Path

from portal.review.desk.settings import LANGUAGES

DOMAIN = "desk"
TRANSLATIONS = Path(__file__).parent / "translations"
# The name of each language in itself, for the language menu.
NAMES = {"ko": "한국어", "en": "English", "zh": "中文"}
# BCP 47 tags for <html lang>.
TAGS = {"ko": "ko", "en": "en", "zh": "zh-Hans"}


@functools.cache
def catalogue(language: str) -> gettext.NullTranslations:
    """The translations of one of LANGUAGES (English is the source text itself)."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown desk language {language!r}")
    if language == "en":
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, localedir=TRANSLATIONS, languages=[language])
