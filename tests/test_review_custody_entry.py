"""The custody entry as one type: what is written reads back equal, and the readers use it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portal.review.custody import (
    CUSTODY_FORMAT,
    GENESIS,
    Action,
    CustodyDamaged,
    CustodyEntry,
    CustodyLog,
    canonical,
)


def test_an_appended_entry_reads_back_equal_and_in_canonical_form(tmp_path: Path) -> None:
    log = CustodyLog(tmp_path / "custody.jsonl")
    written = log.append(
        Action.OPEN,
        "Reviewer 검토자",
        submission="S" * 24,
        manifest={"file": "testimony.json", "sha256": "a" * 64, "ciphertext_sha256": "b" * 64},
        attachments=[{"path": "files/1.age", "file": "a.txt", "size": 1, "sha256": "c" * 64}],
    )
    [read] = list(log.entries())
    assert read == written
    raw = (tmp_path / "custody.jsonl").read_bytes()
    assert raw == canonical(json.loads(raw)) + b"\n" == read.entry.to_bytes() + b"\n"
    entry = read.entry
    assert (entry.seq, entry.prev, entry.action) == (1, GENESIS, "open")
    assert entry.reviewer == "Reviewer 검토자" and entry.submissions == ("S" * 24,)
    opening = entry.opening
    assert opening is not None and opening.manifest_sha256 == "a" * 64
    assert opening.files == (("a.txt", "c" * 64),)
    assert entry.forwarding is None


def test_a_forward_entry_is_read_through_its_type(tmp_path: Path) -> None:
    log = CustodyLog(tmp_path / "custody.jsonl")
    log.append(
        Action.FORWARD,
        "R",
        submissions=["A" * 24, "B" * 24],
        omitted_fields=["contact"],
        consent=[{"submission": "A" * 24, "consent": "yes"}, "odd"],
    )
    [read] = list(log.entries())
    forwarding = read.entry.forwarding
    assert forwarding is not None and read.entry.opening is None
    assert forwarding.submissions == ("A" * 24, "B" * 24)
    assert forwarding.consent_for({"A" * 24}) == [{"submission": "A" * 24, "consent": "yes"}]
    assert forwarding.consent_for({"B" * 24}) == []
    assert log.entries_for({"B" * 24}) == [read]


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"format": "other/1", "seq": 1},
        {"format": CUSTODY_FORMAT, "seq": "1"},
        {"format": CUSTODY_FORMAT, "seq": True},
    ],
)
def test_a_line_that_is_not_an_entry_is_damage(data: object) -> None:
    with pytest.raises(CustodyDamaged):
        CustodyEntry.from_json(data, "line 1")
