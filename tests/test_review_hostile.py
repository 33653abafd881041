"""Issue 9: every crafted submission is refused alone, every record proves what it says.

Each crafted submission here is made as an attacker would make one: with the
project's own writer and the organisation's public key only (see
`review_support.craft`).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from portal.core.age import X25519Identity, encrypt
from portal.core.layout import new_id
from portal.core.manifest import Attachment
from portal.review import custody, report
from portal.review.cli import ExitStatus, cmd_verify
from portal.review.custody import CustodyLog
from portal.review.opening import Opener
from portal.server import store as store_module
from portal.server.store import SubmissionStore
from tests.review_support import (
    craft,
    flip_byte,
    honest_manifest,
    open_args,
    open_into,
    review,
    submit,
)


def _document(sid: str, attachments: list[Attachment], **changes: Any) -> dict[str, Any]:
    document = json.loads(honest_manifest()(sid, attachments))
    document.update(changes)
    return document


def _raw(text: str) -> bytes:
    return text.encode("utf-8")


# Each maker returns a manifest the server would never write.
CRAFTED: dict[str, Any] = {
    "5000-digit size": lambda sid, atts: _raw(
        json.dumps(_document(sid, atts)).replace(f'"size": {atts[0].size}', '"size": ' + "9" * 5000)
    ),
    "surrogate in testimony": lambda sid, atts: _raw(
        json.dumps(_document(sid, atts, fields={"testimony": "a\ud800b"}))
    ),
    "surrogate in a field name": lambda sid, atts: _raw(
        json.dumps(_document(sid, atts, fields={"testimony": "x", "con\udfffact": "y"}))
    ),
    "surrogate in an attachment name": lambda sid, atts: _raw(
        json.dumps(_document(sid, atts)).replace('"name": "a.txt"', '"name": "\\ud800.txt"')
    ),
    "deep nesting": lambda sid, atts: _raw(
        json.dumps(_document(sid, atts, extra="NEST")).replace(
            '"NEST"', "[" * 50_000 + "]" * 50_000
        )
    ),
    "NaN": lambda sid, atts: _raw(json.dumps(_document(sid, atts, extra=float("nan")))),
    "duplicate key": lambda sid, atts: _raw(
        json.dumps(_document(sid, atts))[:-1] + ', "fields": {"testimony": "other"}}'
    ),
    "trailing data": lambda sid, atts: _raw(json.dumps(_document(sid, atts)) + "  {}"),
    "fields of the wrong shape": lambda sid, atts: _raw(
        json.dumps(_document(sid, atts, fields=[["testimony", "x"]]))
    ),
}


def test_crafted_manifests_each_fail_alone_while_the_others_open(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    good = [submit(store, [identity], f"good {n}", [("g.txt", b"good")]) for n in range(2)]
    bad = {
        name: craft(store, identity.recipient, maker, [("a.txt", b"abc")])
        for name, maker in CRAFTED.items()
    }

    run = open_into(tmp_path, store.root, key)

    assert run.status == ExitStatus.INTEGRITY, run.err
    assert "Traceback" not in run.err
    for name, sid in bad.items():
        assert f"NOT OPENED: {sid}: tampered or damaged: manifest" in run.err, name
        assert not (tmp_path / "out" / sid).exists(), name
    for sid in good:
        assert (tmp_path / "out" / sid / "g.txt").read_bytes() == b"good"
    index = (tmp_path / "out" / "index.html").read_text("utf-8")
    assert all(sid in index for sid in [*good, *bad.values()])
    # The same on every rerun: the culprits are named again, the others re-verified.
    again = open_into(tmp_path, store.root, key)
    assert again.status == ExitStatus.INTEGRITY and "Traceback" not in again.err
    assert all(f"NOT OPENED: {sid}" in again.err for sid in bad.values())
    assert f"{good[0]}: already opened" in again.err


def test_manifest_padded_with_trailing_spaces_opens(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    padded = craft(
        store,
        identity.recipient,
        lambda sid, atts: honest_manifest()(sid, atts) + b" " * 4096,
        [("a.txt", b"abc")],
    )
    run = open_into(tmp_path, store.root, key)
    assert run.status == ExitStatus.OK, run.err
    assert (tmp_path / "out" / padded / "a.txt").read_bytes() == b"abc"


def test_an_unexpected_error_in_one_submission_makes_only_that_one_not_opened(
    tmp_path: Path,
    store: SubmissionStore,
    reviewer: tuple[X25519Identity, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    identity, key = reviewer
    good = submit(store, [identity], "fine")
    cursed = submit(store, [identity], "trips a bug")
    render = report.render_submission_page

    def buggy(record: Any, manifest: Any, texts: Any = None) -> str:
        if manifest["fields"]["testimony"] == "trips a bug":
            raise RuntimeError("a bug nobody anticipated")
        return render(record, manifest, texts)

    monkeypatch.setattr(report, "render_submission_page", buggy)
    run = open_into(tmp_path, store.root, key)
    assert run.status == ExitStatus.ERROR
    assert f"NOT OPENED: {cursed}: unexpected error: RuntimeError: a bug nobody" in run.err
    assert (tmp_path / "out" / good / "testimony.json").exists()
    assert not (tmp_path / "out" / cursed).exists()
    assert cursed in (tmp_path / "out" / "index.html").read_text()


def test_no_command_ends_in_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(ctx: Any, args: Any) -> ExitStatus:
        raise RuntimeError("something\nunforeseen")

    monkeypatch.setattr(cmd_verify, "cmd_custody_verify", boom)
    run = review(["custody", "verify"])
    assert run.status == ExitStatus.BUG
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and "unexpected error (RuntimeError: something unforeseen)" in lines[0]
    assert "Traceback" not in run.err


def test_the_console_script_prints_no_traceback_for_a_crafted_export(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    craft(store, identity.recipient, CRAFTED["surrogate in testimony"], [("a.txt", b"a")])
    result = subprocess.run(
        [sys.executable, "-m", "portal.review.cli", *map(str, open_args(
            store.root, key, tmp_path / "out", tmp_path / "c.jsonl"))],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == ExitStatus.INTEGRITY, result.stderr
    assert "Traceback" not in result.stderr and (tmp_path / "out" / "index.html").exists()


# ---------------------------------------------------------------- 2: re-runs re-verify


def _index_row(tmp_path: Path, sid: str) -> str:
    """The index table's row for one submission (its id is in the last cell)."""
    index = (tmp_path / "out" / "index.html").read_text("utf-8")
    end = index.rindex(f"<code>{sid}</code>")
    return index[index.rindex("<tr>", 0, end) : end]


def test_a_second_export_with_other_ciphertext_of_the_same_sizes_is_not_already_opened(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    sid = submit(store, [identity], "original", [("a.txt", b"original content")])
    assert open_into(tmp_path, store.root, key).status == ExitStatus.OK
    # Another export: same submission id, same sizes, other content.
    attachment = store.path(sid) / "files" / "1.age"
    forged = encrypt(b"forged! content!", [identity.recipient])
    assert len(forged) == attachment.stat().st_size
    attachment.write_bytes(forged)

    run = open_into(tmp_path, store.root, key)

    assert run.status == ExitStatus.INTEGRITY
    assert f"NOT OPENED: {sid}: changed since opened" in run.err
    assert "already opened" not in run.err.split("NOT OPENED")[0].split(sid)[-1]
    assert "SHA-256 verified" not in _index_row(tmp_path, sid)
    assert "NOT verified" in _index_row(tmp_path, sid)


def test_a_bit_flip_in_the_original_ciphertext_is_caught_on_rerun(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    sid = submit(store, [identity], "x", [("a.bin", bytes(100_000))])
    assert open_into(tmp_path, store.root, key).status == ExitStatus.OK
    flip_byte(store.path(sid) / "files" / "1.age", 50_000)
    run = open_into(tmp_path, store.root, key)
    assert run.status == ExitStatus.INTEGRITY
    assert f"NOT OPENED: {sid}: changed since opened" in run.err and "1.age" in run.err


def test_an_opened_file_edited_without_changing_its_size_is_caught_on_rerun(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    sid = submit(store, [identity], "x", [("a.txt", b"pay 100")])
    other = submit(store, [identity], "y", [("b.txt", b"untouched")])
    assert open_into(tmp_path, store.root, key).status == ExitStatus.OK
    (tmp_path / "out" / sid / "a.txt").write_bytes(b"pay 900")
    run = open_into(tmp_path, store.root, key)
    assert run.status == ExitStatus.INTEGRITY
    assert f"NOT OPENED: {sid}: changed since opened" in run.err
    assert "NOT verified" in _index_row(tmp_path, sid)
    # The untouched one was hashed again just now, and the index says so.
    assert '<span class="ok">SHA-256 verified</span>' in _index_row(tmp_path, other)


def test_verify_rehashes_an_opened_folder_against_manifests_and_custody(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    first = submit(store, [identity], "first", [("a.txt", b"abc")])
    second = submit(store, [identity], "second", [("b.txt", b"def")])
    assert open_into(tmp_path, store.root, key).status == ExitStatus.OK
    log = tmp_path / "custody.jsonl"
    out = tmp_path / "out"

    run = review(["verify", out, "--custody", log, "--src", store.root])
    assert run.status == ExitStatus.OK, run.err
    assert run.out.splitlines() == sorted([f"ok {first}", f"ok {second}"])

    (out / first / "a.txt").write_bytes(b"abd")
    run = review(["verify", out, "--custody", log])
    assert run.status == ExitStatus.INTEGRITY
    assert f"CHANGED {first}: " in run.out and f"ok {second}" in run.out

    flip_byte(store.path(second) / "files" / "1.age", -3)
    run = review(["verify", out, second, "--custody", log, "--src", store.root])
    assert run.status == ExitStatus.INTEGRITY and f"CHANGED {second}: " in run.out


def test_verify_refuses_an_opened_folder_the_custody_log_does_not_vouch_for(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    sid = submit(store, [identity], "x", [("a.txt", b"abc")])
    assert open_into(tmp_path, store.root, key).status == ExitStatus.OK
    other_log = CustodyLog(tmp_path / "other.jsonl")
    other_log.append(custody.Action.OPEN, "Someone", submission="A" * 24)
    run = review(["verify", tmp_path / "out", "--custody", other_log.path])
    assert run.status == ExitStatus.INTEGRITY
    assert f"CHANGED {sid}: the custody log has no entry for its opening" in run.out


def test_verify_of_a_folder_with_no_opened_submissions_is_not_a_pass(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    # "0 of 0 verified" with exit 0 would read as a pass to a court.
    identity, key = reviewer
    submit(store, [identity], "x")
    assert open_into(tmp_path, store.root, key).status == ExitStatus.OK
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    run = review(["verify", wrong, "--custody", tmp_path / "custody.jsonl"])
    assert run.status == ExitStatus.ERROR, run.err
    assert "no opened submissions in" in run.err and "Traceback" not in run.err


@pytest.mark.parametrize("jobs", ["0", "-3"])
def test_open_refuses_a_job_count_below_one(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path], jobs: str
) -> None:
    identity, key = reviewer
    submit(store, [identity], "x")
    args = open_args(store.root, key, tmp_path / "out", tmp_path / "custody.jsonl")
    run = review([*args, "--jobs", jobs])
    assert run.status == ExitStatus.ERROR
    assert "--jobs" in run.err and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- 5 and 6: custody


def test_open_verifies_the_custody_log_once_however_many_submissions(
    tmp_path: Path,
    store: SubmissionStore,
    reviewer: tuple[X25519Identity, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    identity, key = reviewer
    for n in range(6):
        submit(store, [identity], f"n{n}")
    reads = []
    entries = CustodyLog.entries

    def counting(self: CustodyLog) -> Any:
        reads.append(self.path)
        return entries(self)

    monkeypatch.setattr(CustodyLog, "entries", counting)
    assert open_into(tmp_path, store.root, key).status == ExitStatus.OK
    assert len(reads) == 1
    assert CustodyLog(tmp_path / "custody.jsonl").verify().count == 6


def test_open_and_forward_print_the_new_head_to_write_down(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    sid = submit(store, [identity], "x", [("a.txt", b"a")], fields={"consent": "yes"})
    run = open_into(tmp_path, store.root, key)
    log = CustodyLog(tmp_path / "custody.jsonl")
    head = log.verify().head
    assert f"1 entries, head {head}" in run.err and "Write this head" in run.err
    partner = X25519Identity.generate().recipient
    run = review(["forward", sid, "--from", tmp_path / "out", "--to", partner,
                  "--out", tmp_path / "b.age", "--custody", log.path])  # fmt: skip
    assert run.status == ExitStatus.OK, run.err
    assert f"2 entries, head {log.verify().head}" in run.err


@pytest.mark.parametrize("damage", ["deleted", "emptied", "deleted with its head file"])
def test_a_missing_or_emptied_log_next_to_opened_submissions_is_an_error(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path], damage: str
) -> None:
    identity, key = reviewer
    submit(store, [identity], "x")
    assert open_into(tmp_path, store.root, key).status == ExitStatus.OK
    log = CustodyLog(tmp_path / "custody.jsonl")
    if damage == "emptied":
        log.path.write_bytes(b"")
    else:
        log.path.unlink()
    if damage == "deleted with its head file":
        log.anchor_path.unlink()
    new = submit(store, [identity], "new")

    run = open_into(tmp_path, store.root, key)

    assert run.status == ExitStatus.INTEGRITY, run.err
    assert not (tmp_path / "out" / new).exists()
    assert "Nothing was opened" in run.err


@pytest.mark.parametrize("damage", ["cut last line", "edit last line"])
def test_a_cut_or_edited_tail_is_caught_by_the_next_run(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path], damage: str
) -> None:
    identity, key = reviewer
    submit(store, [identity], "x")
    submit(store, [identity], "y")
    assert open_into(tmp_path, store.root, key).status == ExitStatus.OK
    log = CustodyLog(tmp_path / "custody.jsonl")
    lines = log.path.read_bytes().splitlines(keepends=True)
    if damage == "cut last line":
        lines = lines[:-1]
    else:
        entry = json.loads(lines[-1])
        entry["reviewer"] = "Somebody Else"
        lines[-1] = custody.canonical(entry) + b"\n"
    log.path.write_bytes(b"".join(lines))

    run = open_into(tmp_path, store.root, key)
    assert run.status == ExitStatus.INTEGRITY and "last head this tool wrote" in run.err
    run = review(["custody", "verify", "--custody", log.path])
    assert run.status == ExitStatus.INTEGRITY


# ---------------------------------------------------------------- 7: smaller defects


def test_an_attachment_encrypted_to_another_key_than_its_manifest_is_tampered(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    sid = craft(
        store,
        identity.recipient,
        honest_manifest(),
        [("a.txt", b"swapped in")],
        file_recipient=X25519Identity.generate().recipient,
    )
    run = open_into(tmp_path, store.root, key)
    assert run.status == ExitStatus.INTEGRITY
    assert f"NOT OPENED: {sid}: tampered or damaged: files/1.age is encrypted to another key" in (
        run.err
    )


def test_a_symlinked_submissions_folder_in_an_export_is_refused(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    submit(store, [identity], "elsewhere")
    export = tmp_path / "export"
    export.mkdir()
    (export / "submissions").symlink_to(store.submissions_dir)
    run = open_into(tmp_path, export, key)
    assert run.status == ExitStatus.ERROR
    assert "is a symbolic link, not a folder; not followed" in run.err
    assert not (tmp_path / "out").exists()


def test_a_safe_name_never_starts_with_a_dash(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    names = ["-rf", "--help.txt", "-", "- -x.jpg", "._-hidden"]
    sid = submit(store, [identity], "x", [(name, b"x") for name in names])
    assert open_into(tmp_path, store.root, key).status == ExitStatus.OK
    written = [p.name for p in (tmp_path / "out" / sid).iterdir()]
    assert len(written) == len(names) + 3
    assert not any(name.startswith(("-", ".")) for name in written)


def test_new_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # 3,000 ids: with one in 64 starting with "-", the chance that none does
    # would be below 1e-20.
    assert not any(new_id().startswith("-") for _ in range(3000))
    draws = iter(["-" + "a" * 23, "b" * 24])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda _n: next(draws))
    assert new_id() == "b" * 24


def test_every_command_accepts_an_existing_id_that_starts_with_a_dash(
    tmp_path: Path,
    store: SubmissionStore,
    reviewer: tuple[X25519Identity, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    identity, key = reviewer
    dash_id = "-" + "x" * 23
    monkeypatch.setattr(store_module, "new_id", lambda: dash_id)
    consent = {"consent": "yes"}
    assert submit(store, [identity], "old id", [("a.txt", b"a")], fields=consent) == dash_id
    assert open_into(tmp_path, store.root, key).status == ExitStatus.OK
    partner = str(X25519Identity.generate().recipient)
    base = ["forward", "--from", tmp_path / "out", "--to", partner,
            "--custody", tmp_path / "custody.jsonl"]  # fmt: skip

    run = review([*base, "--out", tmp_path / "one.age", "--", dash_id])
    assert run.status == ExitStatus.OK, run.err
    run = review([*base, "--out", tmp_path / "two.age", f"--id={dash_id}"])
    assert run.status == ExitStatus.OK, run.err
    run = review(["verify", "--custody", tmp_path / "custody.jsonl", "--",
                  tmp_path / "out", dash_id])  # fmt: skip
    assert run.status == ExitStatus.OK and f"ok {dash_id}" in run.out
    run = review(["verify", tmp_path / "out", f"--id={dash_id}",
                  "--custody", tmp_path / "custody.jsonl"])  # fmt: skip
    assert run.status == ExitStatus.OK and f"ok {dash_id}" in run.out
    # Without `--` the id reads as an option: a usage error that says what to do.
    run = review([*base, "--out", tmp_path / "three.age", dash_id])
    assert run.status == ExitStatus.USAGE
    assert "goes after `--`, or as --id=ID" in run.err


@pytest.mark.slow  # 60 MB through open
def test_a_60_mb_testimony_makes_a_small_page_and_keeps_the_full_text_as_a_file(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, _key = reviewer
    testimony = ("증언 " * 10 + "testimony line\n") * 720_000
    size = len(testimony.encode())
    assert size > 60_000_000
    sid = craft(store, identity.recipient, honest_manifest({"testimony": testimony}), [])
    tracemalloc.start()
    try:
        Opener(tmp_path / "out", [identity], jobs=1).open_all(store.root)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    folder = tmp_path / "out" / sid
    page = (folder / "testimony.html").stat().st_size
    assert page < 2 << 20, f"testimony.html is {page} bytes"
    assert (folder / "testimony.txt").read_text("utf-8") == testimony
    assert "The full text is in <bdi>testimony.txt</bdi>" in (folder / "testimony.html").read_text()
    # The manifest streams to disk and through the decoder; what is held is
    # its text while it is parsed (about 2.4 times its UTF-8 size in all),
    # nothing like the 775 MiB (13 times) of before.
    assert peak < 3 * size, f"peak Python memory {peak} bytes for a {size}-byte testimony"


def test_the_hidden_work_factor_option_is_gone(tmp_path: Path) -> None:
    run = review(["keygen", "--out", tmp_path / "k.age", "--no-passphrase", "--work-factor", "1"])
    assert run.status == ExitStatus.USAGE and "--work-factor" in run.err
    assert not (tmp_path / "k.age").exists()


@pytest.mark.slow
def test_a_killed_open_leaves_only_its_work_folder_which_the_next_run_sweeps(
    tmp_path: Path, store: SubmissionStore, reviewer: tuple[X25519Identity, Path]
) -> None:
    identity, key = reviewer
    done = submit(store, [identity], "small, opened first")
    args = open_args(store.root, key, tmp_path / "out", tmp_path / "custody.jsonl")
    assert review(args).status == ExitStatus.OK
    big = submit(store, [identity], "big", [("video.mp4", os.urandom(1 << 20) * 160)])
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "portal.review.cli", *map(str, args), "--jobs", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    partial = out / f".partial-{big}"

    def decrypting() -> bool:
        # The attachment is decrypted into a temporary file in the work folder.
        try:
            return any(p.stat().st_size > 0 for p in partial.glob(".video.mp4.*.tmp"))
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not decrypting():
        time.sleep(0.002)
    process.kill()
    process.wait(timeout=60)
    if not decrypting():
        stderr = process.stderr.read() if process.stderr else b""
        pytest.fail(f"the run ended before it could be killed: {stderr!r}")

    # What REVIEWER.md says remains: the work folder of the submission being
    # decrypted, with partial plaintext, and nothing else new.
    assert sorted(p.name for p in out.iterdir()) == sorted([".partial-" + big, done, "index.html"])
    run = review(["verify", out, "--custody", tmp_path / "custody.jsonl"])
    assert f".partial-{big} was left by an interrupted `open`" in run.err
    run = review(args)
    assert run.status == ExitStatus.OK, run.err
    assert sorted(p.name for p in out.iterdir()) == sorted([big, done, "index.html"])


def test_production_identity_files_keep_work_factor_18_while_tests_lower_it(
    tmp_path: Path,
) -> None:
    # The autouse fixture lowers the module constant; the CLI reads it at call
    # time, so production (where nothing patches it) uses age's default of 18.
    from portal.review import keys

    assert keys.IDENTITY_WORK_FACTOR < 18
    passphrase = tmp_path / "p.txt"
    passphrase.write_text("a long enough passphrase\n")
    run = review(["keygen", "--out", tmp_path / "k.age", "--passphrase-file", passphrase])
    assert run.status == ExitStatus.OK, run.err
    header = (tmp_path / "k.age").read_bytes().split(b"\n")[1].split()
    assert header[3] == str(keys.IDENTITY_WORK_FACTOR).encode()
    code = "import portal.review.keys as k; print(k.IDENTITY_WORK_FACTOR)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "18"
