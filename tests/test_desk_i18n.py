"""The desk's own catalogue: extracted from its code, complete in ko and zh, compiled in step.

The desk is translated with the same Babel tooling as the witness pages, in
a catalogue of its own (`portal/review/desk/translations/desk.pot`), read at
run time with the standard library's gettext.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from portal.review.desk import pages
from portal.review.desk.i18n import TRANSLATIONS, catalogue
from portal.review.desk.settings import LANGUAGES

DESK = Path(pages.__file__).parent
TRANSLATED = [code for code in LANGUAGES if code != "en"]
HANGUL = re.compile("[\uac00-\ud7a3]")
HAN = re.compile("[\u4e00-\u9fff]")


def read(path: Path) -> Catalog:
    with path.open("rb") as f:
        return read_po(f)


def po(lang: str) -> Path:
    return TRANSLATIONS / lang / "LC_MESSAGES" / "desk.po"


def source_messages() -> set[str]:
    with (DESK / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    return {
        message if isinstance(message, str) else message[0]
        for _f, _l, message, _c, _x in extract_from_dir(DESK, method_map, options_map)
    }


def test_the_template_holds_every_message_of_the_desk_and_no_other() -> None:
    in_source = source_messages()
    in_template = {m.id for m in read(TRANSLATIONS / "desk.pot") if m.id}
    assert len(in_source) > 80
    assert in_source == in_template, "run the desk's extract command in docs/TRANSLATING.md"


def test_the_witness_pages_catalogue_leaves_the_desk_out() -> None:
    repo = Path(__file__).parents[1]
    with (repo / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    files = {name for name, *_rest in extract_from_dir(repo, method_map, options_map)}
    assert files, "the witness pages' extraction found nothing"
    assert [f for f in files if f.startswith("portal/review/desk/")] == []


@pytest.mark.parametrize("lang", TRANSLATED)
def test_each_language_translates_every_message_with_its_placeholders(lang: str) -> None:
    catalogue_ = read(po(lang))
    template = {m.id for m in read(TRANSLATIONS / "desk.pot") if m.id}
    entries = {m.id: m for m in catalogue_ if m.id}
    assert template - entries.keys() == set()
    assert [m.id for m in entries.values() if not m.string or m.fuzzy] == []
    placeholder = re.compile(r"%\(\w+\)[sd]")
    for message in entries.values():
        assert sorted(placeholder.findall(str(message.id))) == sorted(
            placeholder.findall(str(message.string))
        ), message.id


@pytest.mark.parametrize("lang", TRANSLATED)
def test_the_compiled_catalogue_is_what_its_source_compiles_to(lang: str) -> None:
    compiled = io.BytesIO()
    write_mo(compiled, read(po(lang)))
    assert po(lang).with_suffix(".mo").read_bytes() == compiled.getvalue(), (
        f"{lang}: desk.mo is out of date: run the desk's compile command in docs/TRANSLATING.md"
    )


def test_korean_is_in_one_register_and_never_says_dangsin() -> None:
    for message in read(po("ko")):
        if message.id:
            text = str(message.string)
            assert "당신" not in text
            # Full sentences end in the 합니다체, never in 해요체 or 반말.
            if text.endswith(".") and HANGUL.search(text):
                assert re.search(r"(니다|십시오)\.$", text), text


@pytest.mark.parametrize("lang", TRANSLATED)
def test_every_phrase_of_the_pages_is_in_the_language(lang: str) -> None:
    script = HANGUL if lang == "ko" else HAN
    words = pages.words(lang)
    assert catalogue(lang).gettext("Search") != "Search"
    untranslated = [k for k, v in words.items() if not script.search(v) and k not in ("Pages",)]
    assert untranslated == []
