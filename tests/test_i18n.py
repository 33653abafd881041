"""Translations: every shipped language complete, compiled catalogues in step with their sources.

English is the source language: its catalogue is `messages.pot`, which must
hold every string the code and templates show. Each other language must
translate every one of them, with nothing fuzzy and the same placeholders.
"""

from __future__ import annotations

import io
import re

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from portal.server.web.i18n import DEFAULT_LANGUAGE, LANGUAGES, TRANSLATIONS_DIR
from tests.support import REPO

TRANSLATED = [code for code in LANGUAGES if code != DEFAULT_LANGUAGE]
# Keywords as in docs/TRANSLATING.md: Flask-Babel's defaults plus `_l` (lazy_gettext).
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None, "_l": None}


def read_catalogue(path) -> Catalog:
    with path.open("rb") as f:
        return read_po(f)


def po_path(lang: str):
    return TRANSLATIONS_DIR / lang / "LC_MESSAGES" / "messages.po"


def source_messages() -> set[str]:
    """Every msgid in the code and templates, extracted the way babel.cfg says."""
    with (REPO / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    found: set[str] = set()
    for _filename, _lineno, message, _comments, _context in extract_from_dir(
        REPO, method_map, options_map, keywords=KEYWORDS
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


def _text(message_part: str | tuple[str, ...] | list[str] | None) -> str:
    """A catalogue entry's text; a plural entry's forms as one string."""
    if isinstance(message_part, str):
        return message_part
    return "\n".join(message_part or ())


def _singular(message_id: str | tuple[str, ...] | list[str]) -> str:
    """A catalogue entry's id as the source names it: a plural entry by its singular."""
    return message_id if isinstance(message_id, str) else message_id[0]


def template_messages() -> set[str]:
    return {_singular(m.id) for m in read_catalogue(REPO / "messages.pot") if m.id}


def test_template_holds_every_message_in_the_source() -> None:
    in_source, in_template = source_messages(), template_messages()
    assert in_source, "extraction found nothing: is babel.cfg right?"
    assert in_source - in_template == set(), "run the extract command in docs/TRANSLATING.md"
    assert in_template - in_source == set(), "messages.pot has strings the code no longer uses"


@pytest.mark.parametrize("lang", list(LANGUAGES))
def test_shipped_language_is_complete(lang: str) -> None:
    if lang == DEFAULT_LANGUAGE:
        # The source strings are the English text; complete means extracted.
        assert source_messages() <= template_messages()
        return
    catalogue = read_catalogue(po_path(lang))
    assert catalogue.fuzzy is False, f"{lang}: the catalogue header is marked fuzzy"
    entries = {_singular(message.id): message for message in catalogue if message.id}
    missing = sorted(template_messages() - entries.keys())
    assert missing == [], f"{lang}: not in the catalogue (run pybabel update): {missing}"
    untranslated = sorted(m.id for m in entries.values() if not m.string)
    fuzzy = sorted(m.id for m in entries.values() if m.fuzzy)
    assert untranslated == [], f"{lang}: untranslated: {untranslated}"
    assert fuzzy == [], f"{lang}: fuzzy (needs checking, then remove the flag): {fuzzy}"


@pytest.mark.parametrize("lang", TRANSLATED)
def test_translations_keep_every_placeholder(lang: str) -> None:
    catalogue = read_catalogue(po_path(lang))
    problems = [(message.id, [str(e) for e in errors]) for message, errors in catalogue.check()]
    assert problems == []
    # Babel's check only looks at entries flagged python-format; look at all of them.
    placeholder = re.compile(r"%\(\w+\)[sd]")
    for message in catalogue:
        if message.id:
            assert sorted(placeholder.findall(_text(message.id))) == sorted(
                placeholder.findall(_text(message.string))
            ), message.id


@pytest.mark.parametrize("lang", TRANSLATED)
def test_compiled_catalogue_matches_its_source(lang: str) -> None:
    """The committed .mo is what `pybabel compile` makes of the committed .po."""
    compiled = io.BytesIO()
    write_mo(compiled, read_catalogue(po_path(lang)))
    committed = po_path(lang).with_suffix(".mo").read_bytes()
    assert committed == compiled.getvalue(), (
        f"{lang}: messages.mo is out of date: "
        "run `pybabel compile -d portal/server/web/translations`"
    )


def test_wtforms_messages_follow_the_page_language_from_catalogues_parsed_once(app) -> None:
    from portal.server.web.forms import _wtforms_catalogue
    from portal.server.web.submit import _new_form

    _wtforms_catalogue.cache_clear()
    seen = {}
    for path in ("/ko/submit", "/ko/submit", "/zh/submit", "/submit"):
        with app.test_request_context(path):
            form = _new_form()
            seen[path] = form.meta.get_translations(form).gettext("This field is required.")
    assert seen["/ko/submit"] == "이 항목은 필수입니다."
    assert seen["/submit"] == "This field is required."
    assert seen["/zh/submit"] not in (seen["/submit"], seen["/ko/submit"])
    assert _wtforms_catalogue.cache_info().misses == 3  # ko, zh, en: each parsed once
