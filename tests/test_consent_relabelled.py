"""Crafted questionnaires cannot relabel consent (issue 21, point 9).

The consent question's words and the `identifying` flags are sealed in the
manifest by the server. A crafted manifest that claims the shipped
questionnaire's SHA-256 but shows the witness other words (`yes` labelled
"never pass this on"), or that seals an unknown questionnaire, must not
count as consent: `forward` treats it as `ask`, and refuses a relabelled one
with exit 3; `table` says which it was.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path
from typing import Any

import pytest

from portal.core.age import X25519Identity
from portal.core.manifest import SealedQuestionnaire, build_manifest
from portal.core.questionnaire import DEFAULT_QUESTIONNAIRE, load_questionnaire
from portal.review.cli import ExitStatus
from tests.review_support import craft, make_store, open_args, review, write_identity

LANGUAGES = ("en", "ko", "zh")
DEFAULT = load_questionnaire(DEFAULT_QUESTIONNAIRE, LANGUAGES)


def _relabel_yes(sealed: SealedQuestionnaire) -> SealedQuestionnaire:
    questions = []
    for question in sealed.questions:
        if question.id == "consent":
            choices = tuple(
                dataclasses.replace(
                    c, label="절대 전달하지 마십시오", label_en="Never pass this on"
                )
                if c.id == "yes"
                else c
                for c in question.choices
            )
            question = dataclasses.replace(question, choices=choices)
        questions.append(question)
    return dataclasses.replace(sealed, questions=tuple(questions))


def _unflag(sealed: SealedQuestionnaire) -> SealedQuestionnaire:
    questions = tuple(dataclasses.replace(q, identifying=False) for q in sealed.questions)
    return dataclasses.replace(sealed, questions=questions)


class Desk:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.identity = write_identity(tmp_path / "id.txt")
        self.store = make_store(tmp_path / "data")
        self.out = tmp_path / "out"
        self.custody = tmp_path / "custody.jsonl"

    def craft(self, sealed: SealedQuestionnaire, answer: str) -> str:
        fields = {"testimony": "청진에서 본 일", "consent": answer}
        return craft(
            self.store,
            self.identity.recipient,
            lambda sid, atts: build_manifest(sid, fields, "ko", atts, questionnaire=sealed),
        )

    def open(self) -> None:
        run = review(open_args(self.store.root, self.tmp / "id.txt", self.out, self.custody))
        assert run.status == ExitStatus.OK, run.err

    def forward(self, sid: str, *extra: Any) -> Any:
        bundle = self.tmp / f"{sid}-{len(extra)}.age"
        return review(
            ["forward", sid, "--from", self.out, "--to", str(X25519Identity.generate().recipient),
             "--out", bundle, "--custody", self.custody, *extra]
        )  # fmt: skip

    def table(self, *extra: Any) -> dict[str, dict[str, str]]:
        path = self.tmp / "t.csv"
        path.unlink(missing_ok=True)
        run = review(
            ["table", "--from", self.out, "--out", path, "--custody", self.custody, *extra]
        )
        assert run.status == ExitStatus.OK, run.err
        rows = csv.DictReader(io.StringIO(path.read_text("utf-8-sig")))
        return {row["submission"]: row for row in rows}


@pytest.fixture
def desk(tmp_path: Path) -> Desk:
    return Desk(tmp_path)


def test_a_relabelled_consent_is_refused_with_exit_3(desk: Desk) -> None:
    genuine = desk.craft(DEFAULT.sealed("ko"), "yes")
    relabelled = desk.craft(_relabel_yes(DEFAULT.sealed("ko")), "yes")
    desk.open()
    assert desk.forward(genuine).status == ExitStatus.OK
    run = desk.forward(relabelled)
    assert run.status == ExitStatus.INTEGRITY and run.err.count("\n") == 1, run.err
    assert "relabelled" in run.err
    rows = desk.table()
    assert rows[genuine]["questionnaire_known"] == "yes"
    assert rows[genuine]["consent_effective"] == "yes"
    assert rows[relabelled]["questionnaire_known"] == "relabelled"
    assert rows[relabelled]["consent_effective"] == "ask"
    verify = review(["verify", desk.out, "--custody", desk.custody])
    assert verify.status == ExitStatus.INTEGRITY
    assert f"ok {genuine}" in verify.out
    assert f"CHANGED {relabelled}: its sealed questionnaire claims" in verify.out


def test_identifying_flags_come_from_the_known_file(desk: Desk) -> None:
    # "anonymous" with every identifying flag cleared would let a name go out.
    sid = desk.craft(_unflag(DEFAULT.sealed("ko")), "anonymous")
    desk.open()
    run = desk.forward(sid)
    assert run.status == ExitStatus.INTEGRITY and "relabelled" in run.err


def test_an_unknown_questionnaire_counts_as_ask_until_it_is_given(desk: Desk) -> None:
    custom = desk.tmp / "ours.toml"
    custom.write_bytes(
        DEFAULT_QUESTIONNAIRE.read_bytes().replace(b'version = "', b'version = "ours-', 1)
    )
    ours = load_questionnaire(custom, LANGUAGES)
    assert ours.sha256 != DEFAULT.sha256
    sid = desk.craft(ours.sealed("ko"), "yes")
    desk.open()
    run = desk.forward(sid)
    assert run.status == ExitStatus.ERROR and "not one you know" in run.err
    assert desk.table()[sid]["questionnaire_known"] == "unknown"
    assert desk.table()[sid]["consent_effective"] == "ask"
    assert desk.forward(sid, "--questionnaire", custom).status == ExitStatus.OK
    assert desk.table("--questionnaire", custom)[sid]["consent_effective"] == "yes"


def test_a_consent_question_left_out_of_the_sealed_questions_gives_no_consent(desk: Desk) -> None:
    sealed = DEFAULT.sealed("ko")
    without = dataclasses.replace(
        sealed, questions=tuple(q for q in sealed.questions if q.id != "consent")
    )
    sid = desk.craft(without, "yes")
    desk.open()
    assert desk.forward(sid).status == ExitStatus.ERROR
    assert desk.table()[sid]["consent_effective"] == "ask"
