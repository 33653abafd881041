"""The chain-of-custody log: append-only, hash-chained; editing, reordering or deleting shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portal.review.cli import ExitStatus
from portal.review.custody import (
    GENESIS,
    Action,
    CustodyError,
    CustodyLog,
    canonical,
    line_hash,
)
from tests.review_support import make_store, open_args, review, submit, write_identity


@pytest.fixture
def log(tmp_path: Path) -> CustodyLog:
    log = CustodyLog(tmp_path / "custody" / "custody.jsonl")
    for number in range(1, 6):
        log.append(Action.OPEN, "Reviewer A", submission=f"submission{number:02d}xxxxxxxxxxxxxx")
    return log


def _lines(log: CustodyLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def _write(log: CustodyLog, lines: list[bytes]) -> None:
    log.path.write_bytes(b"".join(lines))


def test_each_entry_carries_the_hash_of_the_one_before(log: CustodyLog) -> None:
    entries = list(log.entries())
    assert [e.data["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].data["prev"] == GENESIS
    for before, after in zip(entries, entries[1:], strict=False):
        assert after.data["prev"] == line_hash(before.raw)
    result = log.verify()
    assert result.count == 5 and result.head == entries[-1].hash
    assert oct(log.path.stat().st_mode & 0o777) == "0o600"


def test_an_edited_line_is_detected(log: CustodyLog) -> None:
    lines = _lines(log)
    entry = json.loads(lines[1])
    entry["reviewer"] = "Someone Else"
    lines[1] = canonical(entry) + b"\n"
    _write(log, lines)
    with pytest.raises(CustodyError, match="line 3 does not carry the hash of line 2"):
        log.verify()


def test_an_edit_that_breaks_the_canonical_form_is_detected(log: CustodyLog) -> None:
    lines = _lines(log)
    lines[4] = lines[4].replace(b'"action":"open"', b'"action": "open"')
    _write(log, lines)
    with pytest.raises(CustodyError, match="line 5 is not in canonical form"):
        log.verify()


def test_a_deleted_line_is_detected(log: CustodyLog) -> None:
    lines = _lines(log)
    del lines[2]
    _write(log, lines)
    with pytest.raises(CustodyError, match="line 3 has the wrong sequence number"):
        log.verify()


def test_reordered_lines_are_detected(log: CustodyLog) -> None:
    lines = _lines(log)
    lines[1], lines[2] = lines[2], lines[1]
    _write(log, lines)
    with pytest.raises(CustodyError, match="line 2"):
        log.verify()


def test_a_deleted_last_line_is_caught_by_the_head_kept_beside_the_log(log: CustodyLog) -> None:
    _write(log, _lines(log)[:-1])
    with pytest.raises(CustodyError, match="has only 4 entries: the last head this tool wrote"):
        log.verify()


def test_an_edited_last_line_is_caught_by_the_head_kept_beside_the_log(
    log: CustodyLog,
) -> None:
    lines = _lines(log)
    entry = json.loads(lines[-1])
    entry["reviewer"] = "Someone Else"
    lines[-1] = canonical(entry) + b"\n"
    _write(log, lines)
    # Still a valid chain: nothing after the last line carries its hash.
    with pytest.raises(CustodyError, match="holds another line 5 than was written"):
        log.verify()


def test_an_emptied_or_missing_log_is_caught_by_the_head_kept_beside_the_log(
    log: CustodyLog,
) -> None:
    log.path.write_bytes(b"")
    with pytest.raises(CustodyError, match="has only 0 entries"):
        log.verify()
    log.path.unlink()
    with pytest.raises(CustodyError, match="has only 0 entries"):
        log.verify()
    run = review(["custody", "verify", "--custody", log.path])
    assert run.status == ExitStatus.INTEGRITY and "has only 0 entries" in run.err


def test_a_deleted_last_line_is_caught_by_the_recorded_head(log: CustodyLog) -> None:
    head = log.verify().head
    # Someone with write access cuts the log and removes the head file too.
    _write(log, _lines(log)[:-1])
    log.anchor_path.unlink()
    # The shortened chain is still a valid chain; only the head written down shows it.
    assert log.verify().count == 4
    with pytest.raises(CustodyError, match="removed from the end"):
        log.verify(expect_head=head)


def test_a_rewritten_chain_is_caught_by_the_recorded_head(log: CustodyLog, tmp_path: Path) -> None:
    head = log.verify().head
    forged = CustodyLog(tmp_path / "forged.jsonl")
    for entry in log.entries():
        details = {k: v for k, v in entry.data.items() if k not in {"seq", "prev", "time"}}
        details["reviewer"] = "Forger"
        forged.append(details.pop("action"), details.pop("reviewer"), **details)
    log.path.write_bytes(forged.path.read_bytes())
    log.anchor_path.write_bytes(forged.anchor_path.read_bytes())
    # A forger who rewrites the log and its head file together is caught only
    # by a head kept somewhere else.
    assert log.verify().count == 5
    with pytest.raises(CustodyError, match="not in the log"):
        log.verify(expect_head=head)


def test_a_head_recorded_earlier_is_still_found_after_more_entries(log: CustodyLog) -> None:
    head = log.verify().head
    log.append(Action.FORWARD, "Reviewer B", submissions=["x"])
    result = log.verify(expect_head=head)
    assert result.expected_head_line == 5 and result.count == 6


def test_appending_to_a_damaged_log_is_refused(log: CustodyLog) -> None:
    lines = _lines(log)
    del lines[0]
    _write(log, lines)
    with pytest.raises(CustodyError):
        log.append(Action.OPEN, "Reviewer A", submission="y")
    assert _lines(log) == lines


def test_a_cut_off_final_line_is_detected(log: CustodyLog) -> None:
    log.path.write_bytes(log.path.read_bytes()[:-10])
    with pytest.raises(CustodyError, match="incomplete"):
        log.verify()


def test_details_cannot_overwrite_the_chain_fields(tmp_path: Path) -> None:
    log = CustodyLog(tmp_path / "c.jsonl")
    entry = log.append(Action.OPEN, "A", prev="f" * 64, seq=99)
    assert entry.data["prev"] == GENESIS and entry.data["seq"] == 1


def test_custody_verify_command_reports_head_and_count_or_the_damage(
    log: CustodyLog,
) -> None:
    run = review(["custody", "verify", "--custody", log.path])
    assert run.status == ExitStatus.OK
    head = log.verify().head
    assert run.out.strip() == f"ok: 5 entries, head {head}"
    assert "--expect-head" in run.err

    _write(log, _lines(log)[:-1])
    run = review(["custody", "verify", "--custody", log.path, "--expect-head", head])
    assert run.status == ExitStatus.INTEGRITY
    assert "INTEGRITY FAILURE" in run.err and "Traceback" not in run.err


def test_the_log_location_comes_from_the_environment(log: CustodyLog) -> None:
    run = review(["custody", "verify"], env={"TESTIMONY_REVIEW_CUSTODY": str(log.path)})
    assert run.status == ExitStatus.OK and "5 entries" in run.out


def test_open_refuses_to_work_with_a_damaged_custody_log(tmp_path: Path) -> None:
    identity = write_identity(tmp_path / "id.txt")
    store = make_store(tmp_path / "data")
    submit(store, [identity], "x")
    custody = tmp_path / "custody.jsonl"
    custody.write_text('{"not":"a chain"}\n')
    run = review(open_args(store.root, tmp_path / "id.txt", tmp_path / "out", custody))
    assert run.status == ExitStatus.INTEGRITY
    assert "Nothing was opened" in run.err and "--custody NEW-FILE" in run.err
    assert not (tmp_path / "out").exists()


def test_the_default_log_lives_in_the_users_data_folder(tmp_path: Path) -> None:
    run = review(["custody", "verify"], env={"HOME": str(tmp_path)})
    assert run.status == ExitStatus.ERROR
    assert f"{tmp_path}/.local/share/testimony-review/custody.jsonl" in run.err
