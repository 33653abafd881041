"""The desk's search: exact answers for 1- to 3-syllable Korean words, Chinese, Latin, mixes.

The index is built from real opened folders (submissions stored as the
server stores them, opened with `testimony-review open`), and every query
is checked against the set of testimonies that truly contain it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from portal.review.desk.search import (
    Filters,
    Results,
    SearchIndex,
    index_terms,
    normalise,
    parse_query,
)
from tests.desk_support import Witness, open_submissions

TEXTS = {
    "A": "1998년 회령 보위부 구류장에서 고문을 당했습니다.",
    "B": "회령시 근처 교화소에서 일했습니다. 고문은 보지 못했습니다.",
    "C": "청진 보위부원들이 사람들을 때렸습니다.",
    "D": "보위와 부서가 다릅니다.",
    "E": "I saw prisoners in HOERYONG; the KPA unit, 6.25 war veterans.",
    "F": "我在会宁看到了酷刑。",
    "G": "KPA부대 명령서를 보았습니다.",
}


@dataclass
class Indexed:
    index: SearchIndex
    # The key in TEXTS of each submission id.
    names: dict[str, str]

    def search(self, filters: Filters) -> Results:
        return self.index.search(filters)

    def set_cases(self, statuses: dict[str, str], tags: dict[str, list[str]]) -> None:
        self.index.set_cases(statuses, tags)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Indexed:
    tmp = tmp_path_factory.mktemp("search")
    languages = {"E": "en", "F": "zh"}
    witnesses = [
        Witness(text, language=languages.get(key, "ko"), files=[("a.txt", b"x")] * (key == "A"))
        for key, text in TEXTS.items()
    ]
    opened = open_submissions(tmp, witnesses)
    index = SearchIndex(opened.root)
    result = index.refresh()
    assert result.added == len(TEXTS) and not result.refused
    return Indexed(index, dict(zip(opened.ids, TEXTS, strict=True)))


def found(index: Indexed, **filters: Any) -> set[str]:
    results = index.search(Filters(**filters))
    assert results.total == len(results.hits)
    return {index.names[hit.submission] for hit in results.hits}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("회령", {"A", "B"}),
        ("고문", {"A", "B"}),
        ("령", {"A", "B", "G"}),  # 명령서 holds it too
        ("보위부", {"A", "C"}),
        ("보위", {"A", "C", "D"}),
        ("부원", {"C"}),
        ("ryong", {"E"}),
        ("Hoeryong", {"E"}),
        ("会宁", {"F"}),
        ("酷", {"F"}),
        ("KPA부대", {"G"}),
        ("kpa", {"E", "G"}),
        ("6.25", {"E"}),
        ("회령 고문", {"A", "B"}),
        ("회령 보위부", {"A"}),
        ("평양", set()),
        ("1998년", {"A"}),
    ],
)
def test_a_query_finds_exactly_the_testimonies_that_hold_it(
    index: Indexed, query: str, expected: set[str]
) -> None:
    truth = {
        k
        for k, text in TEXTS.items()
        if all(w in normalise(text) for w in normalise(query).split())
    }
    assert truth == expected  # the table itself is right
    assert found(index, text=query) == expected


def test_filters_combine_with_search(index: Indexed) -> None:
    assert found(index, language="en") == {"E"}
    assert found(index, text="보위", language="ko") == {"A", "C", "D"}
    assert found(index, attachments="yes") == {"A"}
    assert found(index, attachments="no", text="회령") == {"B"}
    assert found(index, consent="ask") == set(TEXTS)  # no consent answer counts as ask
    ids = {v: k for k, v in index.names.items()}
    index.set_cases({ids["B"]: "verified"}, {ids["C"]: ["청진"], ids["A"]: ["청진", "고문"]})
    assert found(index, status="verified") == {"B"}
    assert found(index, status="new", text="회령") == {"A"}
    assert found(index, tag="청진") == {"A", "C"}
    assert found(index, tag="고문", text="회령") == {"A"}
    index.set_cases({}, {})


def test_punctuation_alone_is_an_exact_substring_search(index: Indexed) -> None:
    assert found(index, text=";") == {"E"}
    assert parse_query(";").match is None


def test_terms_cover_every_occurrence_of_a_single_character() -> None:
    # The last character of a run is indexed alone, so a one-character query finds it too.
    assert sorted(index_terms("보위부").split()) == ["보위", "부", "위부"]
    assert sorted(index_terms(normalise("KPA부대")).split()) == ["a", "kpa", "pa", "대", "부대"]
    assert index_terms("회") == "회"
    assert parse_query("회").match == '"회"*'


def test_the_index_is_rebuilt_when_damaged_and_follows_the_opened_folder(tmp_path: Path) -> None:
    opened = open_submissions(tmp_path, [Witness("회령에서 고문"), Witness("청진")])
    index = SearchIndex(opened.root)
    index.refresh()
    index.close()
    index.path.write_bytes(b"not a database" * 100)
    rebuilt = SearchIndex(opened.root)
    assert rebuilt.refresh().added == 2
    assert rebuilt.search(Filters(text="고문")).total == 1
    # An edited testimony.json is refused, not indexed: the index never trusts changed files.
    manifest = opened.root / opened.ids[0] / "testimony.json"
    manifest.write_bytes(manifest.read_bytes().replace("고문".encode(), "평양".encode()))
    result = rebuilt.refresh()
    assert set(result.refused) == {opened.ids[0]}
    assert rebuilt.search(Filters(text="평양")).total == 0
    assert rebuilt.search(Filters(text="고문")).total == 0
    rebuilt.close()


def test_an_index_of_another_schema_is_started_again(tmp_path: Path) -> None:
    opened = open_submissions(tmp_path, [Witness("회령")])
    path = opened.root / ".desk" / "index.sqlite"
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE meta (key TEXT, value TEXT)")
        db.execute("INSERT INTO meta VALUES ('schema', 'desk-index/0')")
    index = SearchIndex(opened.root)
    assert index.refresh().added == 1
    assert index.search(Filters(text="회령")).total == 1
    index.close()
