"""The reply store on disk: day-precision times, idempotent adds, the daily reseal."""

from __future__ import annotations

import datetime as dt
import os
import random
import time
from pathlib import Path

import pytest

from portal.core.age import X25519Identity, encrypt
from portal.core.conversation import mailbox_name
from portal.server.mailbox import RESEAL_NEW, ReplyRejected, ReplyStore
from tests.support import TEST_SIGNING_KEY, add_signed


def _store(tmp_path: Path) -> ReplyStore:
    store = ReplyStore(tmp_path, [TEST_SIGNING_KEY.public])
    store.initialise()
    return store


def _reply(identity: X25519Identity, text: str) -> bytes:
    return encrypt(text.encode(), [identity.recipient])


def test_add_is_idempotent_and_keeps_only_the_day(tmp_path: Path) -> None:
    store = _store(tmp_path)
    witness = X25519Identity.generate()
    data = _reply(witness, "hello")
    box = mailbox_name(str(witness.recipient))
    assert add_signed(store, box, data) is True
    assert add_signed(store, box, data) is False
    (path,) = (store.root / box).glob("*.age")
    assert path.read_bytes() == data and path.stat().st_mtime % 86400 == 0
    assert (store.root / box).stat().st_mtime % 86400 == 0
    assert [r.text for r in store.read(witness)] == ["hello"]
    assert store.read(X25519Identity.generate()) == []


@pytest.mark.parametrize("name", ["", "../x", "A" * 64, "0" * 63])
def test_a_bad_mailbox_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ReplyRejected):
        add_signed(_store(tmp_path), name, _reply(X25519Identity.generate(), "x"))


def test_reseal_rewrites_every_reply_into_fresh_files_and_drops_expired_ones(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    witnesses = [X25519Identity.generate() for _ in range(3)]
    for n, witness in enumerate(witnesses):
        add_signed(store, mailbox_name(str(witness.recipient)), _reply(witness, f"reply {n}"))
        add_signed(store, mailbox_name(str(witness.recipient)), _reply(witness, f"second {n}"))
    expired = next((store.root / mailbox_name(str(witnesses[2].recipient))).glob("*.age"))
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(days=40)).timestamp()
    os.utime(expired, (old, old))
    before = {p.name: (p.stat().st_ino, p.read_bytes()) for p in store.root.rglob("*.age")}
    started = time.time()
    time.sleep(0.01)

    kept = store.reseal(days=30, rng=random.Random(1))

    assert kept == 5
    after = {p.name: p for p in store.root.rglob("*.age")}
    assert set(after) == set(before) - {expired.name}
    for name, path in after.items():
        inode, data = before[name]
        assert path.read_bytes() == data
        assert path.stat().st_ino != inode
        assert path.stat().st_ctime >= started
        assert path.stat().st_mtime % 86400 == 0
    assert not (tmp_path / RESEAL_NEW).exists()
    assert sorted(r.text for r in store.read(witnesses[0])) == ["reply 0", "second 0"]


def test_a_reseal_cut_off_before_its_swap_is_finished_at_the_next_start(tmp_path: Path) -> None:
    store = _store(tmp_path)
    witness = X25519Identity.generate()
    add_signed(store, mailbox_name(str(witness.recipient)), _reply(witness, "kept"))
    # As if the process died between the two renames of the swap.
    store.root.rename(tmp_path / RESEAL_NEW)
    _store(tmp_path)
    assert [r.text for r in store.read(witness)] == ["kept"]
    assert not (tmp_path / RESEAL_NEW).exists()


def test_receipts_mailboxes_and_replies_never_import_flask() -> None:
    import subprocess
    import sys

    code = (
        "import sys, portal.core.receipt, portal.server.mailbox, portal.core.conversation; "
        "import portal.review.reply; "
        "web = ('flask', 'jinja2', 'werkzeug', 'portal.server.web'); "
        "bad = [m for m in web if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_seal_command_also_rewrites_the_replies(tmp_path: Path) -> None:
    import io

    from portal.server.cli import main as portal_cli
    from portal.server.store import SubmissionStore

    SubmissionStore(tmp_path).initialise()
    store = _store(tmp_path)
    witness = X25519Identity.generate()
    add_signed(store, mailbox_name(str(witness.recipient)), _reply(witness, "kept"))
    (before,) = store.root.rglob("*.age")
    inode = before.stat().st_ino
    out = io.StringIO()
    status = portal_cli(
        ["seal"], env={"PORTAL_DATA_DIR": str(tmp_path)}, stdout=out, stderr=io.StringIO()
    )
    assert status == 0 and "1 reply(ies) rewritten" in out.getvalue()
    (after,) = store.root.rglob("*.age")
    assert after.stat().st_ino != inode
    assert [r.text for r in store.read(witness)] == ["kept"]
