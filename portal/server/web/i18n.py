"""Languages: chosen in the URL (`/ko/...`), never in a cookie or by headers.

Tor Browser always announces en-US, so Accept-Language says nothing about
the witness; the language menu on every page is the only way to choose.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, request
from flask_babel import Babel
from werkzeug.routing import BaseConverter

DEFAULT_LANGUAGE = "en"
# Each language named in itself, for the menu; its BCP 47 tag for <html lang>
# (zh-Hans makes browsers pick Simplified Chinese glyphs rather than Japanese
# or Traditional ones for the shared Han characters); text direction for <html dir>.
LANGUAGES: dict[str, dict[str, str]] = {
    "en": {"name": "English", "tag": "en", "dir": "ltr"},
    "ko": {"name": "한국어", "tag": "ko", "dir": "ltr"},
    "zh": {"name": "简体中文", "tag": "zh-Hans", "dir": "ltr"},
}
# Where the language menu leads from each page: the same page in the other
# language where that is a plain GET; from anything else (an error, the answer
# to a POST) to the landing page, since a POST cannot be repeated by a link.
_MENU_TARGETS = {
    "pages.landing": "pages.landing",
    "submit.form": "submit.form",
    "submit.receive": "pages.landing",
    "followup.form": "followup.form",
}
TRANSLATIONS_DIR = Path(__file__).resolve().parent / "translations"

babel = Babel()


class LanguageConverter(BaseConverter):
    """Matches a URL prefix naming a language other than the default.

    English lives at `/` and `/submit`; `/en/...` is not a second address.
    """

    regex = "|".join(code for code in LANGUAGES if code != DEFAULT_LANGUAGE)


def language_from_path(path: str) -> str:
    first = path.lstrip("/").split("/", 1)[0]
    return first if first in LANGUAGES and first != DEFAULT_LANGUAGE else DEFAULT_LANGUAGE


def current_language() -> str:
    # Taken from the path, not from the matched route, so that error pages
    # (404s included) speak the language of the address that failed.
    return language_from_path(request.path)


def init_app(app: Flask) -> None:
    app.url_map.converters["lang"] = LanguageConverter
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(TRANSLATIONS_DIR))
    babel.init_app(app, locale_selector=current_language)

    @app.context_processor
    def language_context() -> dict[str, object]:
        lang = current_language()
        return {
            "lang": lang,
            "lang_tag": LANGUAGES[lang]["tag"],
            "lang_dir": LANGUAGES[lang]["dir"],
            "languages": LANGUAGES,
            "menu_endpoint": _MENU_TARGETS.get(request.endpoint or "", "pages.landing"),
        }
