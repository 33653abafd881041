"""The reviewer's tools respect the witness's consent; old submissions still open; the table.

`forward` sends a submission only if the witness said "yes", or "anonymous"
with every identifying answer left out; "ask", "no" and no answer at all
(older submissions) are refused unless the reviewer overrides, with a reason
that the custody log and the bundle record.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import pytest

from portal.core.age import X25519Identity, decrypt
from portal.core.questionnaire import DEFAULT_QUESTIONNAIRE, load_questionnaire
from portal.review.cli import ExitStatus
from portal.review.custody import CustodyLog
from portal.server.store import SubmissionStore
from tests.review_support import craft, make_store, open_args, review, write_identity

QUESTIONNAIRE = load_questionnaire(DEFAULT_QUESTIONNAIRE, ("en", "ko", "zh"))
KOREAN = {
    "testimony": "청진 집결소에서 있었던 일입니다.",
    "when": "2019년 겨울",
    "where": "함경북도 청진",
    "how_known": "saw,heard",
    "confirm": "같은 방에 있던 김 아무개",
}


class Opened:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.identity = write_identity(tmp_path / "id.txt")
        self.store: SubmissionStore = make_store(tmp_path / "data")
        self.out = tmp_path / "out"
        self.custody = tmp_path / "custody.jsonl"
        self.partner = X25519Identity.generate()
        self.bundles = 0

    def submit(self, fields: dict[str, str], language: str = "ko", v1: bool = False) -> str:
        from portal.server.intake import Submission

        if v1:
            return craft(self.store, self.identity.recipient, lambda sid, atts: v1_manifest(sid))
        submission = Submission(self.store, [self.identity.recipient])
        return submission.commit(fields, language, questionnaire=QUESTIONNAIRE.sealed(language))

    def open(self) -> None:
        run = review(open_args(self.store.root, self.tmp / "id.txt", self.out, self.custody))
        assert run.status == ExitStatus.OK, run.err

    def forward(self, *args: str) -> tuple[object, Path]:
        self.bundles += 1
        bundle = self.tmp / f"bundle-{self.bundles}.tar.age"
        run = review(["forward", *args, "--from", self.out, "--to", str(self.partner.recipient),
                      "--out", bundle, "--custody", self.custody, "--reviewer", "R"])  # fmt: skip
        return run, bundle

    def members(self, bundle: Path) -> dict[str, bytes]:
        data = decrypt(bundle.read_bytes(), [self.partner])
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def v1_manifest(sid: str) -> bytes:
    """What the server wrote before the questionnaire: format 1, only the free text."""
    document = {
        "format": "testimony-portal/submission/1",
        "id": sid,
        "received": "2026-11-01",
        "language": "ko",
        "fields": {"testimony": "질문지 이전의 증언"},
        "attachments": [],
    }
    return json.dumps(document, ensure_ascii=False, indent=1).encode()


@pytest.fixture
def box(tmp_path: Path) -> Opened:
    return Opened(tmp_path)


def test_an_old_version_1_submission_still_opens(box: Opened) -> None:
    sid = box.submit({}, v1=True)
    box.open()
    manifest = json.loads((box.out / sid / "testimony.json").read_text("utf-8"))
    assert manifest["format"] == "testimony-portal/submission/1"
    page = (box.out / sid / "testimony.html").read_text("utf-8")
    assert "질문지 이전의 증언" in page


@pytest.mark.parametrize(
    ("consent", "shown"),
    [(None, "no consent answer (counts as 'ask'"), ("no", "consent 'no'"),
     ("ask", "consent 'ask'")],
)  # fmt: skip
def test_forward_refuses_without_consent_naming_submission_and_consent(
    box: Opened, consent: str | None, shown: str
) -> None:
    sid = box.submit({} if consent is None else {"consent": consent}, v1=consent is None)
    box.open()
    run, bundle = box.forward(sid)
    assert run.status == ExitStatus.ERROR  # type: ignore[attr-defined]
    assert f"submission {sid} has {shown}" in run.err  # type: ignore[attr-defined]
    assert "--override-consent REASON" in run.err and "Traceback" not in run.err  # type: ignore[attr-defined]
    assert not bundle.exists()
    assert [e.data["action"] for e in CustodyLog(box.custody).entries()] == ["open"]


def test_forward_sends_with_yes_and_records_the_consent(box: Opened) -> None:
    sid = box.submit({**KOREAN, "consent": "yes"})
    box.open()
    run, bundle = box.forward(sid)
    assert run.status == ExitStatus.OK, run.err  # type: ignore[attr-defined]
    members = box.members(bundle)
    assert json.loads(members[f"{sid}/testimony.json"])["fields"]["confirm"] == KOREAN["confirm"]
    assert json.loads(members["consent.json"]) == [{"submission": sid, "consent": "yes"}]
    last = list(CustodyLog(box.custody).entries())[-1].data
    assert last["consent"] == [{"submission": sid, "consent": "yes"}]


def test_anonymous_consent_requires_the_identifying_answers_to_be_left_out(box: Opened) -> None:
    sid = box.submit({**KOREAN, "consent": "anonymous"})
    box.open()
    run, bundle = box.forward(sid)
    assert run.status == ExitStatus.ERROR  # type: ignore[attr-defined]
    assert "identifying answers 'confirm' would be sent" in run.err  # type: ignore[attr-defined]
    assert "--omit-field confirm" in run.err and not bundle.exists()  # type: ignore[attr-defined]
    run, bundle = box.forward(sid, "--omit-field", "confirm")
    assert run.status == ExitStatus.OK, run.err  # type: ignore[attr-defined]
    sent = json.loads(box.members(bundle)[f"{sid}/testimony.json"])
    assert "confirm" not in sent["fields"] and sent["fields"]["where"] == KOREAN["where"]
    # Without an identifying answer there is nothing to leave out.
    bare = box.submit({"testimony": "짧은 증언", "consent": "anonymous"})
    box.open()
    assert box.forward(bare)[0].status == ExitStatus.OK  # type: ignore[attr-defined]


def test_an_override_is_recorded_with_its_reason_in_the_custody_log_and_the_bundle(
    box: Opened,
) -> None:
    refused = box.submit({**KOREAN, "consent": "no"})
    old = box.submit({}, v1=True)
    box.open()
    run, _bundle = box.forward(refused, old)
    assert run.status == ExitStatus.ERROR  # type: ignore[attr-defined]
    assert refused in run.err and old in run.err  # type: ignore[attr-defined]
    empty = review(["forward", refused, "--from", box.out, "--to", str(box.partner.recipient),
                    "--out", box.tmp / "x.age", "--override-consent", " "])  # fmt: skip
    assert empty.status == ExitStatus.USAGE and "needs a reason" in empty.err
    reason = "the witness agreed by phone on 2026-11-20 (call log 17)"
    run, bundle = box.forward(refused, old, "--override-consent", reason)
    assert run.status == ExitStatus.OK, run.err  # type: ignore[attr-defined]
    last = list(CustodyLog(box.custody).entries())[-1].data
    assert last["action"] == "forward"
    by_id = {item["submission"]: item for item in last["consent"]}
    assert by_id[refused] == {"submission": refused, "consent": "no", "override_reason": reason}
    assert by_id[old]["consent"] == "ask" and by_id[old]["override_reason"] == reason
    members = box.members(bundle)
    assert {item["submission"]: item for item in json.loads(members["consent.json"])} == by_id
    readme = members["README.txt"].decode()
    assert f"SENT WITHOUT THAT CONSENT, reason given: {reason}" in readme
    # A later bundle for these submissions carries the earlier override in custody.jsonl.
    run, later = box.forward(refused, "--override-consent", "again")
    custody = [json.loads(x) for x in box.members(later)["custody.jsonl"].splitlines()]
    assert any(
        item.get("override_reason") == reason
        for line in custody
        for item in line.get("consent", [])
    )


def test_open_shows_each_answer_under_its_question_with_the_english_label(box: Opened) -> None:
    sid = box.submit({**KOREAN, "consent": "anonymous"})
    box.open()
    page = (box.out / sid / "testimony.html").read_text("utf-8")
    assert "무슨 일이 있었습니까?" in page and "(<bdi>What happened?</bdi>" in page
    assert "직접 보았습니다; 다른 사람에게서 들었습니다" in page
    assert "I saw it myself; Others told me about it" in page
    where = page.index("어디에서 있었던 일입니까?")
    assert where < page.index(KOREAN["where"]) < page.index("누구에게 책임이 있습니까?")
    assert "No answer." in page  # "who was responsible" was not answered


def test_table_writes_one_csv_row_per_submission_with_korean_intact(box: Opened) -> None:
    first = box.submit({**KOREAN, "consent": "yes"})
    second = box.submit({"testimony": '=HYPERLINK("http://x")', "consent": "no"}, language="en")
    old = box.submit({}, v1=True)
    box.open()
    table = box.tmp / "answers.csv"
    run = review(["table", "--from", box.out, "--out", table, "--custody", box.custody])
    assert run.status == ExitStatus.OK, run.err
    raw = table.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM spreadsheet programs need for UTF-8
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert list(rows[0]) == [
        "submission", "received", "language", "questionnaire_id", "questionnaire_version",
        "questionnaire_sha256", "questionnaire_known", "consent_effective",
        *[q.id for q in QUESTIONNAIRE.questions if q.type not in ("files", "notice")],
        "attachments",
    ]  # fmt: skip
    by_id = {row["submission"]: row for row in rows}
    assert set(by_id) == {first, second, old}
    assert (
        by_id[first]["where"] == "함경북도 청진"
        and by_id[first]["testimony"] == KOREAN["testimony"]
    )
    assert by_id[first]["how_known"] == "saw,heard"
    assert by_id[first]["questionnaire_id"] == "grave-violations"
    assert by_id[old]["testimony"] == "질문지 이전의 증언" and by_id[old]["questionnaire_id"] == ""
    assert by_id[old]["consent_effective"] == "ask" and by_id[second]["consent_effective"] == "no"
    # A cell a spreadsheet would run as a formula is defused.
    assert by_id[second]["testimony"] == '\'=HYPERLINK("http://x")'


def test_table_as_json_lines_keeps_exact_values(box: Opened) -> None:
    sid = box.submit({**KOREAN, "testimony": "=1+1 그대로", "consent": "ask"})
    box.open()
    table = box.tmp / "answers.jsonl"
    run = review(
        ["table", "--from", box.out, "--out", table, "--format", "jsonl", "--custody", box.custody]
    )
    assert run.status == ExitStatus.OK, run.err
    [line] = table.read_text("utf-8").splitlines()
    row = json.loads(line)
    assert row["submission"] == sid and row["answers"]["testimony"] == "=1+1 그대로"
    assert row["questionnaire"]["id"] == "grave-violations" and row["consent_effective"] == "ask"


def test_table_refuses_a_manifest_changed_after_opening(box: Opened) -> None:
    sid = box.submit({**KOREAN, "consent": "yes"})
    box.open()
    path = box.out / sid / "testimony.json"
    path.write_text(path.read_text("utf-8").replace("청진", "평양"), "utf-8")
    run = review(["table", "--from", box.out, "--out", box.tmp / "t.csv", "--custody", box.custody])
    assert run.status == ExitStatus.INTEGRITY and "was changed after it was opened" in run.err
    assert not (box.tmp / "t.csv").exists()


def _manifest_with(questionnaire: object, fmt: str = "testimony-portal/submission/2") -> bytes:
    document = json.loads(v1_manifest("a" * 24))
    document["format"] = fmt
    document["questionnaire"] = questionnaire
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: "not an object",
        lambda s: {**s, "sha256": "F" * 64},
        lambda s: {**s, "questions": {}},
        lambda s: {**s, "questions": [*s["questions"], s["questions"][0]]},
        lambda s: {**s, "questions": [{**s["questions"][0], "label": 7}]},
        lambda s: {**s, "questions": [{**s["questions"][0], "identifying": "yes"}]},
        lambda s: {**s, "questions": [{**s["questions"][-1], "choices": [{"id": "yes"}]}]},
    ],
)
def test_a_malformed_sealed_questionnaire_is_refused(damage) -> None:
    from portal.core.manifest import ManifestError, parse_manifest

    sealed = QUESTIONNAIRE.sealed("ko").to_json()
    assert parse_manifest(_manifest_with(sealed)).questionnaire is not None
    with pytest.raises(ManifestError, match="questionnaire"):
        parse_manifest(_manifest_with(damage(sealed)))


def test_a_version_1_manifest_cannot_carry_a_questionnaire() -> None:
    from portal.core.manifest import ManifestError, parse_manifest

    bad = _manifest_with(QUESTIONNAIRE.sealed("en").to_json(), fmt="testimony-portal/submission/1")
    with pytest.raises(ManifestError, match="version 1 manifest cannot hold a questionnaire"):
        parse_manifest(bad)


def test_hostile_question_texts_are_shown_as_text(box: Opened) -> None:
    sealed = QUESTIONNAIRE.sealed("ko").to_json()
    sealed["language"] = '"><script>'
    sealed["questions"][0]["label"] = "<script>alert('q')</script>"
    sealed["questions"][-1]["choices"][0]["label_en"] = "<img src=x onerror=alert(1)>"

    def manifest(sid: str, _attachments: object) -> bytes:
        document = json.loads(_manifest_with(sealed))
        document.update(id=sid, fields={"testimony": "x", "consent": "yes"})
        return json.dumps(document).encode()

    sid = craft(box.store, box.identity.recipient, manifest)
    box.open()
    page = (box.out / sid / "testimony.html").read_text("utf-8")
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#x27;q&#x27;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


# ------------------------------------------------- consent in a conversation


def submit_in_thread(
    box: Opened, witness: X25519Identity, consent: str, *, followup: bool = True, text: str = "후속"
) -> str:
    """A submission of the conversation of `recipient`, as the follow-up form (or the first
    form) seals it."""
    from portal.server.intake import Submission

    questionnaire = QUESTIONNAIRE.followup() if followup else QUESTIONNAIRE
    submission = Submission(box.store, [box.identity.recipient])
    return submission.commit(
        {"testimony": text, "consent": consent},
        "ko",
        # Proven by the witness's key, as the server seals it (issue 21).
        reply_identity=witness,
        questionnaire=questionnaire.sealed("ko"),
    )


@pytest.fixture
def thread() -> X25519Identity:
    return X25519Identity.generate()


def test_a_followup_that_answers_yes_forwards_without_override(
    box: Opened, thread: X25519Identity
) -> None:
    submit_in_thread(box, thread, "ask", followup=False)
    later = submit_in_thread(box, thread, "yes")
    box.open()
    run, bundle = box.forward(later)
    assert run.status == ExitStatus.OK, run.err  # type: ignore[attr-defined]
    members = box.members(bundle)
    assert json.loads(members["consent.json"])[0]["consent"] == "yes"
    assert b"SENT WITHOUT THAT CONSENT" not in members["README.txt"]


def test_the_same_as_before_takes_the_first_answer_of_the_conversation(
    box: Opened, thread: X25519Identity
) -> None:
    first = submit_in_thread(box, thread, "yes", followup=False)
    same = submit_in_thread(box, thread, "same")
    box.open()
    run, bundle = box.forward(same)
    assert run.status == ExitStatus.OK, run.err  # type: ignore[attr-defined]
    members = box.members(bundle)
    [record] = json.loads(members["consent.json"])
    assert record == {
        "submission": same,
        "consent": "yes",
        "consent_answer": "same",
        "same_as": [first],
    }
    assert f"as in {first}" in members["README.txt"].decode()


def test_the_same_as_a_refusal_is_refused(box: Opened, thread: X25519Identity) -> None:
    submit_in_thread(box, thread, "no", followup=False)
    same = submit_in_thread(box, thread, "same")
    box.open()
    run, bundle = box.forward(same)
    assert run.status == ExitStatus.ERROR  # type: ignore[attr-defined]
    assert "consent 'same as before', which is 'no'" in run.err  # type: ignore[attr-defined]
    assert not bundle.exists()


def test_the_same_as_before_with_no_earlier_answer_counts_as_ask(
    box: Opened, thread: X25519Identity
) -> None:
    other = X25519Identity.generate()
    submit_in_thread(box, other, "yes", followup=False)  # another conversation's yes
    same = submit_in_thread(box, thread, "same")
    box.open()
    run, _bundle = box.forward(same)
    assert run.status == ExitStatus.ERROR  # type: ignore[attr-defined]
    assert "no earlier answer of this conversation is in the folder" in run.err  # type: ignore[attr-defined]


def test_answers_of_one_day_that_differ_count_as_the_most_careful(
    box: Opened, thread: X25519Identity
) -> None:
    submit_in_thread(box, thread, "yes", followup=False)
    submit_in_thread(box, thread, "ask")
    same = submit_in_thread(box, thread, "same")
    box.open()
    run, _bundle = box.forward(same)
    assert run.status == ExitStatus.ERROR  # type: ignore[attr-defined]
    assert "which is 'ask'" in run.err  # type: ignore[attr-defined]


def test_same_is_no_answer_where_the_sealed_question_never_offered_it(
    box: Opened, thread: X25519Identity
) -> None:
    submit_in_thread(box, thread, "yes", followup=False)
    crafted = submit_in_thread(box, thread, "same", followup=False)
    box.open()
    run, _bundle = box.forward(crafted)
    assert run.status == ExitStatus.ERROR  # type: ignore[attr-defined]
    assert "no consent answer (counts as 'ask'" in run.err  # type: ignore[attr-defined]


def test_table_shows_the_consent_a_same_as_before_resolves_to(
    box: Opened, thread: X25519Identity
) -> None:
    first = submit_in_thread(box, thread, "anonymous", followup=False)
    same = submit_in_thread(box, thread, "same")
    box.open()
    table = box.tmp / "answers.jsonl"
    run = review(
        ["table", "--from", box.out, "--out", table, "--format", "jsonl", "--custody", box.custody]
    )
    assert run.status == ExitStatus.OK, run.err
    rows = {row["submission"]: row for row in map(json.loads, table.read_text().splitlines())}
    assert rows[same]["answers"]["consent"] == "same"
    assert rows[same]["consent_effective"] == rows[first]["consent_effective"] == "anonymous"
