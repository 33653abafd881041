"""A partner can check the custody lines a bundle carries, from docs/FORMAT.md alone (issue 21, 10).

The verifier below is written in JavaScript for node, with nothing of this
project: it follows the spec in docs/FORMAT.md ("The custody log") to check
that each line is canonical JSON, that consecutive lines chain by SHA-256,
that the last line's hash is the head the sender's log shows, and that each
attachment's SHA-256 in an `open` line is that of the file in the bundle.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from portal.core.age import X25519Identity, decrypt
from portal.review.cli import ExitStatus
from portal.review.custody import CustodyLog
from tests.review_support import make_store, open_args, review, submit, write_identity

REVIEWER = '검토자 \u2028 "quoted" \\ \x01 \x7f'
VERIFIER = r"""
const fs = require("fs"), path = require("path"), crypto = require("crypto");
const dir = process.argv[2];
const sha256 = (bytes) => crypto.createHash("sha256").update(bytes).digest("hex");
// Canonical form: keys sorted, no spaces, UTF-8, strings escaped as JSON requires.
const canonical = (v) => Array.isArray(v) ? "[" + v.map(canonical).join(",") + "]"
  : (v !== null && typeof v === "object")
    ? "{" + Object.keys(v).sort()
        .map((k) => JSON.stringify(k) + ":" + canonical(v[k])).join(",") + "}"
    : JSON.stringify(v);
const raw = fs.readFileSync(path.join(dir, "custody-log.jsonl"));
const lines = raw.toString("utf8").split("\n");
if (lines.pop() !== "") throw new Error("the last line has no newline");
let prev = null, result = [];
for (const line of lines) {
  const entry = JSON.parse(line);
  if (canonical(entry) !== line) throw new Error(`line seq ${entry.seq} is not canonical`);
  if (entry.format !== "testimony-review/custody/1") throw new Error("not a custody entry");
  if (prev && prev.seq + 1 === entry.seq && entry.prev !== prev.hash)
    throw new Error(`line ${entry.seq} does not chain to line ${prev.seq}`);
  if (entry.action === "open") {
    for (const a of entry.attachments) {
      const file = fs.readFileSync(path.join(dir, entry.submission, a.file));
      if (sha256(file) !== a.sha256) throw new Error(`${a.file} differs from the log`);
    }
  }
  prev = { seq: entry.seq, hash: sha256(Buffer.from(line, "utf8")) };
  result.push(prev);
}
console.log(JSON.stringify(result));
"""


def _bundle(tmp_path: Path, count: int) -> tuple[Path, list[str], CustodyLog]:
    reviewer = write_identity(tmp_path / "id.txt")
    store = make_store(tmp_path / "data")
    ids = [
        submit(store, [reviewer], f"증언 {n} \u2028 \"quoted\" \\ \x01", [(f"p{n}.jpg", b"x" * n)],
               fields={"consent": "yes"})
        for n in range(count)
    ]  # fmt: skip
    custody = tmp_path / "custody.jsonl"
    # A reviewer name with characters JSON escapes, or does not, in every form.
    argv = open_args(store.root, tmp_path / "id.txt", tmp_path / "out", custody)
    argv[argv.index("Test Reviewer")] = REVIEWER
    assert review(argv).status == 0
    partner = X25519Identity.generate()
    bundle = tmp_path / "b.age"
    run = review(
        ["forward", *ids, "--from", tmp_path / "out", "--to", str(partner.recipient),
         "--out", bundle, "--custody", custody]
    )  # fmt: skip
    assert run.status == ExitStatus.OK, run.err
    unpacked = tmp_path / "partner"
    with tarfile.open(fileobj=io.BytesIO(decrypt(bundle.read_bytes(), [partner]))) as tar:
        tar.extractall(unpacked, filter="data")
    return unpacked, ids, CustodyLog(custody)


def _verify(folder: Path) -> subprocess.CompletedProcess[str]:
    script = folder.parent / "verify.js"
    script.write_text(VERIFIER)
    return subprocess.run(
        ["node", str(script), str(folder)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.needs("node")
def test_an_independent_verifier_checks_the_bundle_custody_lines(tmp_path: Path) -> None:
    folder, ids, log = _bundle(tmp_path, 3)
    result = _verify(folder)
    assert result.returncode == 0, result.stderr
    checked = json.loads(result.stdout)
    ours = [e for e in log.entries() if e.entry.action == "open"]
    assert [c["seq"] for c in checked] == [e.line_number for e in ours] == [1, 2, 3]
    assert [c["hash"] for c in checked] == [e.hash for e in ours]
    # The head the README names is the sender's log head when the bundle was made.
    readme = (folder / "README.txt").read_text()
    assert (
        f"log had 3 entries and its head\n(the SHA-256 of its last line) was {ours[-1].hash}"
        in (readme)
    )

    # A partner notices an edited line, an edited attachment, and a broken chain.
    lines = (folder / "custody-log.jsonl").read_text("utf-8").splitlines(keepends=True)
    (folder / "custody-log.jsonl").write_text(
        lines[0].replace("검토자", "someone") + "".join(lines[1:])
    )
    assert _verify(folder).returncode != 0
    (folder / "custody-log.jsonl").write_text("".join(lines))
    (folder / ids[1] / "p1.jpg").write_bytes(b"y")
    assert "differs from the log" in _verify(folder).stderr


def test_a_bundle_carries_no_reply_entry_thread_or_mailbox(tmp_path: Path) -> None:
    # Issue 21, point 14: what THREAT_MODEL.md says bundles carry is what they carry.
    from portal.core.conversation import mailbox_name, thread_id
    from tests.support import signing_key_file

    reviewer = write_identity(tmp_path / "id.txt")
    witness = X25519Identity.generate()
    store = make_store(tmp_path / "data")
    sid = submit(store, [reviewer], "증언", fields={"consent": "yes"}, reply_identity=witness)
    custody = tmp_path / "custody.jsonl"
    out = tmp_path / "out"
    assert review(open_args(store.root, tmp_path / "id.txt", out, custody)).status == 0
    message = tmp_path / "m.txt"
    message.write_text("감사합니다")
    replied = review(
        ["reply", sid, "--from", out, "--message-file", message, "--out", tmp_path / "outbox",
         "--custody", custody, "--signing-key", signing_key_file(tmp_path / "signer")]
    )  # fmt: skip
    assert replied.status == ExitStatus.OK, replied.err
    partner = X25519Identity.generate()
    bundle = tmp_path / "b.age"
    run = review(
        ["forward", sid, "--from", out, "--to", str(partner.recipient), "--out", bundle,
         "--custody", custody]
    )  # fmt: skip
    assert run.status == ExitStatus.OK, run.err
    with tarfile.open(fileobj=io.BytesIO(decrypt(bundle.read_bytes(), [partner]))) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    everything = b"".join(members.values())
    for secret in (str(witness.recipient), thread_id(str(witness.recipient)),
                   mailbox_name(str(witness.recipient))):  # fmt: skip
        assert secret.encode() not in everything
    actions = [json.loads(line)["action"] for line in members["custody.jsonl"].splitlines()]
    assert actions == ["open"]
