"""The desk over HTTP: who may drive it, what a change records, what reply and forward do.

Each test opens real submissions with `testimony-review open` and talks to a
real desk on 127.0.0.1 with raw HTTP requests, so the guards are tested as
an attacker would meet them (any Host header, any Origin, no token).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from portal.core.age import X25519Identity, decrypt
from portal.review.cli import ExitStatus
from portal.review.custody import CustodyLog
from portal.review.desk.settings import DeskSettings, SettingsError, load_settings
from portal.review.record import OpenedRecord
from tests.desk_support import (
    REVIEWER,
    Witness,
    base_path,
    found_ids,
    open_submissions,
    post,
    request,
    running_desk,
)
from tests.review_support import review, tree
from tests.support import require_tool

HOSTILE = "<script>document.title='PWNED'</script><img src=x onerror=alert(1)>"
# A 1x1 JPEG; exiftool writes GPS, serial and author into it in the test.
TINY_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////////////////"
    "////////////////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAAAAAAAAAAAAAAAP/aAAgBAQAB"
    "PxA="
)


def _opened_tree(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in tree(root).items() if not k.startswith(".desk/")}


def test_requests_without_the_secret_or_with_a_wrong_host_are_refused(tmp_path: Path) -> None:
    opened = open_submissions(tmp_path, [Witness("회령")])
    with running_desk(opened) as desk:
        assert desk.httpd.server_address[0] == "127.0.0.1"
        good = request(desk, base_path(desk))
        assert good.status == 200 and "회령" in good.body
        secret = desk.state.secret
        for path in ("/", "/ko/", f"/{secret[:-1]}/ko/", f"/{secret}x/ko/", "/favicon.ico"):
            answer = request(desk, path)
            assert answer.status == 404, path
            assert secret not in answer.body and "회령" not in answer.body
        # DNS rebinding: a hostile site's name resolving to 127.0.0.1 arrives with its own Host.
        for host in ("evil.example", f"evil.example:{desk.port}", f"localhost:{desk.port}", ""):
            answer = request(desk, base_path(desk), headers={"Host": host})
            assert answer.status == 421, host
            assert "회령" not in answer.body


def test_forms_from_another_site_or_without_the_token_are_refused(tmp_path: Path) -> None:
    opened = open_submissions(tmp_path, [Witness("회령")])
    sid = opened.ids[0]
    log = CustodyLog(opened.custody)
    before = log.verify().count
    with running_desk(opened) as desk:
        path = base_path(desk) + "change"
        form = {"key": sid, "change": "status", "value": "verified"}
        own = f"http://{desk.state.host}"
        attempts = [
            ({"csrf_token": desk.state.csrf, **form}, {"Origin": "http://evil.example"}),
            ({"csrf_token": desk.state.csrf, **form}, {"Origin": "null"}),
            ({"csrf_token": desk.state.csrf, **form}, {"Sec-Fetch-Site": "cross-site"}),
            ({"csrf_token": desk.state.csrf, **form}, {"Sec-Fetch-Site": "same-site"}),
            (form, {"Origin": own}),
            ({"csrf_token": "0" * 43, **form}, {"Origin": own}),
        ]
        for sent, headers in attempts:
            answer = request(desk, path, method="POST", form=sent, headers=headers)
            assert answer.status == 403, (sent.get("csrf_token"), headers)
        assert log.verify().count == before
        # The desk's own form, for contrast.
        assert post(desk, path, form).status == 303
    assert log.verify().count == before + 1


def test_every_page_carries_a_policy_that_allows_no_script_and_no_outside_request(
    tmp_path: Path,
) -> None:
    opened = open_submissions(tmp_path, [Witness("회령")])
    with running_desk(opened) as desk:
        for path in (base_path(desk), base_path(desk) + f"case/{opened.ids[0]}", "/"):
            headers = request(desk, path).headers
            policy = headers["content-security-policy"]
            assert "default-src 'none'" in policy
            assert "script-src" not in policy and "http" not in policy
            assert headers["x-frame-options"] == "DENY"
            assert headers["referrer-policy"] == "same-origin"
            assert headers["cache-control"] == "no-store"


def test_status_tags_and_notes_are_custody_entries_and_the_opened_files_stay_as_they_were(
    tmp_path: Path,
) -> None:
    opened = open_submissions(tmp_path, [Witness("회령 보위부"), Witness("청진")])
    sid, other = opened.ids
    before = _opened_tree(opened.root)
    with running_desk(opened) as desk:
        change = base_path(desk) + "change"
        for kind, value in [
            ("status", "verified"),
            ("tag", "회령"),
            ("tag", "보위부"),
            ("untag", "보위부"),
            ("note", "증언자의 진술이 다른 증언과 맞습니다. <b>확인</b>"),
        ]:
            answer = post(desk, change, {"key": sid, "change": kind, "value": value})
            assert answer.status == 303, answer.body
        assert post(desk, change, {"key": sid, "change": "status", "value": "nope"}).status == 409
        assert post(desk, change, {"key": sid, "change": "tag", "value": " "}).status == 409
        case = request(desk, base_path(desk) + f"case/{sid}").body
        assert "&lt;b&gt;확인&lt;/b&gt;" in case and REVIEWER in case
        listed = request(desk, base_path(desk) + "?status=verified&tag=%ED%9A%8C%EB%A0%B9")
        assert found_ids(listed.body) == {sid}
        assert found_ids(request(desk, base_path(desk) + "?status=new").body) == {other}
    entries = [e.entry for e in CustodyLog(opened.custody).entries()]
    case_entries = [e for e in entries if e.action == "case"]
    assert [(e.details["change"], e.details["value"]) for e in case_entries] == [
        ("status", "verified"),
        ("tag", "회령"),
        ("tag", "보위부"),
        ("untag", "보위부"),
        ("note", "증언자의 진술이 다른 증언과 맞습니다. <b>확인</b>"),
    ]
    assert {e.reviewer for e in case_entries} == {REVIEWER}
    assert all(e.details["submission"] == sid for e in case_entries)
    CustodyLog(opened.custody).verify()
    assert _opened_tree(opened.root) == before
    # The desk's index folder does not trouble the other commands.
    checked = review(["verify", opened.root, "--custody", opened.custody])
    assert checked.status == ExitStatus.OK, checked.err


def test_a_hostile_submission_is_shown_as_text_and_its_active_files_are_never_served(
    tmp_path: Path,
) -> None:
    files = [
        ("x.svg", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'),
        ("x.html", HOSTILE.encode()),
        ("evil\u202egpj.exe", b"MZ"),
        (f"{HOSTILE}.png", b"\x89PNG\r\n\x1a\n" + HOSTILE.encode()),
        ("notes.txt", b"plain text " + HOSTILE.encode()),
    ]
    opened = open_submissions(
        tmp_path, [Witness(HOSTILE, files=files, fields={HOSTILE: HOSTILE, "consent": HOSTILE})]
    )
    sid = opened.ids[0]
    with running_desk(opened) as desk:
        base = base_path(desk)
        for path in (base, base + f"case/{sid}", base + f"?q={sid}"):
            elements = _elements(request(desk, path).body)
            assert {tag for tag, _attrs in elements} <= SAFE_TAGS
            handlers = [a for _t, attrs in elements for a, _v in attrs if a.startswith("on")]
            assert handlers == []
        case = request(desk, base + f"case/{sid}").body
        assert "&lt;script&gt;" in case
        assert "[U+202E]" in case  # the override is shown, not obeyed
        assert "plain text &lt;script&gt;" in case  # a text file's start, shown as text
        for number in (1, 2, 3, 5):
            answer = request(desk, base + f"file/{sid}/{number}")
            assert answer.status == 403, number
        # The fourth is a PNG by its (made safe) name and by its first bytes, as the static
        # index would link it: it is served as an image, in a sandbox.
        links = re.findall(r'href="([^"]+/file/[^"]+)"', case)
        assert links == [base + f"file/{sid}/4"]
        served = request(desk, links[0])
        assert served.headers["content-type"] == "image/png"
        assert served.headers["content-security-policy"].startswith("sandbox;")


SAFE_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "nav", "ul", "ol", "li", "a",
    "strong", "span", "bdi", "main", "h1", "h2", "h3", "p", "div", "form", "input", "label",
    "select", "option", "button", "table", "caption", "thead", "tbody", "tr", "th", "td",
    "code", "section", "textarea", "fieldset", "legend",
}  # fmt: skip


def _elements(page: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    found: list[tuple[str, list[tuple[str, str | None]]]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append((tag, attrs))

    Collect().feed(page)
    return found


def test_identifying_metadata_is_found_by_exiftool_and_shown_with_a_warning(tmp_path: Path) -> None:
    exiftool = require_tool("exiftool")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(TINY_JPEG)
    subprocess.run(
        [exiftool, "-q", "-overwrite_original", "-GPSLatitude=42.44", "-GPSLatitudeRef=N",
         "-GPSLongitude=129.75", "-GPSLongitudeRef=E", "-SerialNumber=CAM-4417",
         "-Artist=<b>Kim</b>", str(photo)],
        check=True,
    )  # fmt: skip
    opened = open_submissions(
        tmp_path, [Witness("사진", files=[("photo.jpg", photo.read_bytes())])]
    )
    sid = opened.ids[0]
    with running_desk(opened) as desk:
        case = request(desk, base_path(desk, "en") + f"case/{sid}").body
        assert "Warning: this file holds metadata" in case
        assert "CAM-4417" in case and "GPSLatitude" in case and "&lt;b&gt;Kim&lt;/b&gt;" in case
        assert "SHA-256 verified now" in case
        served = request(desk, base_path(desk) + f"file/{sid}/1")
        assert served.status == 200
        assert served.headers["content-type"] == "image/jpeg"
        assert served.headers["content-security-policy"].startswith("sandbox;")


def test_a_reply_and_a_forward_go_through_the_reviewer_commands_and_consent_is_enforced(
    tmp_path: Path,
) -> None:
    witness = X25519Identity.generate()
    partner = X25519Identity.generate()
    opened = open_submissions(
        tmp_path,
        [
            Witness("회령에서 본 것을 씁니다.", reply_key=witness, fields={"consent": "yes"}),
            Witness("보내지 마십시오.", fields={"consent": "no"}),
        ],
    )
    allowed, refused = opened.ids
    settings = DeskSettings(outbox=tmp_path / "outbox", bundles=tmp_path / "bundles")
    with running_desk(opened, settings) as desk:
        answer = post(
            desk, base_path(desk) + f"reply/{allowed}", {"message": "고맙습니다. 더 알려 주십시오."}
        )
        assert answer.status == 303, answer.body
        replies = list((tmp_path / "outbox").rglob("*.age"))
        assert len(replies) == 1
        assert (
            decrypt(replies[0].read_bytes(), [witness]).rstrip(b"\0").decode()
            == "고맙습니다. 더 알려 주십시오."
        )
        case = request(desk, answer.headers["location"]).body
        assert "고맙습니다. 더 알려 주십시오." in case  # in the conversation
        assert found_ids(request(desk, base_path(desk) + "?q=%EC%95%8C%EB%A0%A4").body) == {allowed}

        no = post(
            desk, base_path(desk) + f"forward/{refused}", {"recipient": str(partner.recipient)}
        )
        assert no.status == 409 and "consent" in no.body
        assert not list((tmp_path / "bundles").glob("*.age"))

        yes = post(
            desk, base_path(desk) + f"forward/{allowed}", {"recipient": str(partner.recipient)}
        )
        assert yes.status == 303, yes.body
        bundles = list((tmp_path / "bundles").glob("*.age"))
        assert len(bundles) == 1
        with tarfile.open(fileobj=io.BytesIO(decrypt(bundles[0].read_bytes(), [partner]))) as tar:
            names = tar.getnames()
        assert f"{allowed}/testimony.json" in names and "consent.json" in names
        assert "암호화된 묶음을 만들었습니다" in request(desk, yes.headers["location"]).body
    actions = [
        (e.entry.action, e.entry.details.get("value")) for e in CustodyLog(opened.custody).entries()
    ]
    assert ("reply", None) in actions and ("forward", None) in actions
    assert ("case", "answered") in actions and ("case", "forwarded") in actions


def test_the_desk_command_prints_its_address_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    opened = open_submissions(tmp_path, [Witness("회령")])
    env = {**os.environ, "TESTIMONY_REVIEW_CUSTODY": str(opened.custody), "HOME": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "portal.review.cli", "desk", str(opened.root), "--reviewer", "K"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/[A-Za-z0-9_-]{43}/ko/", url), url
        import urllib.request

        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (loopback)
            assert "증언 검토 데스크" in response.read().decode()
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "The desk has stopped." in err and "Traceback" not in err


def test_settings_are_checked_member_by_member(tmp_path: Path) -> None:
    path = tmp_path / "desk.toml"
    assert load_settings(path, required=False) == DeskSettings()
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(path, required=True)
    path.write_text('language = "ko"\nstatuses = ["접수", "조사 중", "종결"]\n', "utf-8")
    assert load_settings(path, required=True).statuses == ("접수", "조사 중", "종결")
    for bad in (
        'language = "fr"',
        "statuses = []",
        'statuses = ["a", "a"]',
        'colour = "red"',
        "x =",
    ):
        path.write_text(bad, "utf-8")
        with pytest.raises(SettingsError):
            load_settings(path, required=True)


def test_the_organisations_own_statuses_replace_the_default_list(tmp_path: Path) -> None:
    opened = open_submissions(tmp_path, [Witness("회령"), Witness("청진")])
    settings = DeskSettings(statuses=("접수", "법률 검토", "종결"))
    with running_desk(opened, settings) as desk:
        sid, other = opened.ids
        assert (
            post(
                desk,
                base_path(desk) + "change",
                {"key": sid, "change": "status", "value": "법률 검토"},
            ).status
            == 303
        )
        assert (
            post(
                desk,
                base_path(desk) + "change",
                {"key": sid, "change": "status", "value": "verified"},
            ).status
            == 409
        )
        page = request(desk, base_path(desk) + "?status=%EB%B2%95%EB%A5%A0+%EA%B2%80%ED%86%A0").body
        assert found_ids(page) == {sid}
        # A case nobody has touched has the organisation's first status.
        page = request(desk, base_path(desk) + "?status=%EC%A0%91%EC%88%98").body
        assert found_ids(page) == {other}


def test_a_damaged_custody_log_is_shown_and_nothing_is_recorded(tmp_path: Path) -> None:
    opened = open_submissions(tmp_path, [Witness("회령")])
    with running_desk(opened) as desk:
        lines = opened.custody.read_bytes().splitlines(keepends=True)
        opened.custody.write_bytes(lines[0].replace(b"Test Reviewer", b"Someone Else"))
        time.sleep(0.01)
        sid = opened.ids[0]
        case = request(desk, base_path(desk, "en") + f"case/{sid}").body
        assert "The custody log fails its check" in case
        answer = post(
            desk, base_path(desk, "en") + "change", {"key": sid, "change": "tag", "value": "x"}
        )
        assert answer.status == 409
    assert b'"tag"' not in opened.custody.read_bytes()
    json.loads(opened.custody.read_bytes().splitlines()[0])


def test_an_anonymous_forward_carries_mat2_cleaned_copies_beside_the_untouched_originals(
    tmp_path: Path,
) -> None:
    exiftool = require_tool("exiftool")
    require_tool("mat2")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(TINY_JPEG)
    subprocess.run(
        [exiftool, "-q", "-overwrite_original", "-GPSLatitude=42.44", "-GPSLatitudeRef=N",
         "-SerialNumber=CAM-4417", str(photo)],
        check=True,
    )  # fmt: skip
    original = photo.read_bytes()
    opened = open_submissions(
        tmp_path,
        [Witness("사진을 보냅니다.", files=[("photo.jpg", original), ("exe", b"MZ")],
                 fields={"consent": "anonymous"})],
    )  # fmt: skip
    sid = opened.ids[0]
    partner = X25519Identity.generate()
    settings = DeskSettings(bundles=tmp_path / "bundles")
    with running_desk(opened, settings) as desk:
        case = request(desk, base_path(desk) + f"case/{sid}").body
        assert 'name="clean" value="yes" checked' in case
        answer = post(
            desk,
            base_path(desk) + f"forward/{sid}",
            {"recipient": str(partner.recipient), "clean": "yes"},
        )
        assert answer.status == 303, answer.body
    [bundle] = (tmp_path / "bundles").glob("*.age")
    with tarfile.open(fileobj=io.BytesIO(decrypt(bundle.read_bytes(), [partner]))) as tar:
        members = {m.name: _read(tar, m) for m in tar.getmembers()}
    files = {e.file: e for e in _record(opened.root / sid).attachments}
    kept = members[f"{sid}/{_file_named(files, 'photo.jpg')}"]
    assert kept == original  # the original is untouched
    cleaned = members[f"{sid}/cleaned/{_file_named(files, 'photo.jpg')}"]
    assert cleaned != original and b"CAM-4417" not in cleaned
    check = tmp_path / "cleaned.jpg"
    check.write_bytes(cleaned)
    shown = subprocess.run([exiftool, "-s", "-GPSLatitude", "-SerialNumber", str(check)],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert shown.strip() == ""
    sums = members["SHA256SUMS"].decode()
    assert hashlib.sha256(original).hexdigest() in sums
    assert hashlib.sha256(cleaned).hexdigest() in sums
    assert "cleaned" in members["README.txt"].decode()
    [forward] = [
        e.entry for e in CustodyLog(opened.custody).entries() if e.entry.action == "forward"
    ]
    records = {r["file"]: r for r in forward.details["cleaned"]}
    photo_record = records[_file_named(files, "photo.jpg")]
    assert photo_record["original_sha256"] == hashlib.sha256(original).hexdigest()
    assert photo_record["cleaned_sha256"] == hashlib.sha256(cleaned).hexdigest()
    assert "not_cleaned" in records[_file_named(files, "exe")]


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    assert handle is not None
    return handle.read()


def _record(folder: Path) -> OpenedRecord:
    return OpenedRecord.from_json(json.loads((folder / "opened.json").read_bytes()))


def _file_named(files: dict[str, Any], name: str) -> str:
    return next(f for f, e in files.items() if e.name == name)


def test_the_desk_refuses_a_custody_log_that_is_not_the_one_the_folder_was_opened_with(
    tmp_path: Path,
) -> None:
    opened = open_submissions(tmp_path, [Witness("회령")])
    run = review(["desk", opened.root, "--custody", tmp_path / "other.jsonl"])
    assert run.status == ExitStatus.INTEGRITY
    assert "missing or empty" in run.err and "Traceback" not in run.err
    assert not (tmp_path / "other.jsonl").exists()


def test_desk_mistakes_get_one_line_and_no_traceback(tmp_path: Path) -> None:
    opened = open_submissions(tmp_path, [Witness("회령")])
    bad_settings = tmp_path / "desk.toml"
    bad_settings.write_text('language = "fr"\n', "utf-8")
    for argv in (
        ["desk", tmp_path / "missing"],
        ["desk", opened.root, "--port", "70000"],
        ["desk", opened.root, "--settings", bad_settings],
        ["desk", opened.root, "--settings", tmp_path / "absent.toml"],
    ):
        run = review([*argv, "--custody", opened.custody])
        assert run.status == ExitStatus.ERROR, (argv, run.err)
        assert run.err.count("\n") == 1 and "Traceback" not in run.err, run.err


def test_a_followups_same_as_before_shows_the_consent_of_its_conversation(
    tmp_path: Path,
) -> None:
    from tests.questionnaire_support import QUESTIONNAIRE

    witness = X25519Identity.generate()
    first = Witness(
        "처음 증언입니다.",
        reply_key=witness,
        fields={"consent": "yes"},
        questionnaire=QUESTIONNAIRE.sealed("ko"),
    )
    later = Witness(
        "덧붙입니다.",
        reply_key=witness,
        fields={"consent": "same"},
        questionnaire=QUESTIONNAIRE.followup().sealed("ko"),
    )
    alone = Witness(
        "다른 대화입니다.",
        reply_key=X25519Identity.generate(),
        fields={"consent": "same"},
        questionnaire=QUESTIONNAIRE.followup().sealed("ko"),
    )
    opened = open_submissions(tmp_path, [first, later, alone])
    with running_desk(opened) as desk:
        pages = [request(desk, base_path(desk, "en") + f"case/{sid}").body for sid in opened.ids]
    consent_row = re.compile(r"<th scope=\"row\">Consent</th><td>(.*?)</td>", re.S)
    rows = [consent_row.search(page) for page in pages]
    assert all(rows), pages[1][:2000]
    first_row, later_row, alone_row = (row.group(1) for row in rows if row)
    assert later_row == first_row and "counts as" not in later_row
    assert "counts as" in alone_row  # no earlier answer in its conversation: ask first
