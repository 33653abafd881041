"""PORTAL_STORE=s3 against a real SeaweedFS: settings, claims, publishing, export and purge.

The multi-node run (three `serve` processes, a node killed, the store
restarted) is in test_multinode.py; here each part is proved on its own.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from portal.core.age import X25519Identity
from portal.server.archive import open_archive
from portal.server.cli import main as portal_cli
from portal.server.config import Config
from portal.server.intake import store_submission
from portal.server.objectstore import CLAIM_LIFETIME, ObjectArchive
from portal.server.store import ArchiveUnavailable, FormClaim, SubmissionStore
from portal.server.web.onetime import FORM_LIFETIME
from portal.testing.live import open_submission
from portal.testing.seaweed import READER, SeaweedFS
from tests.objectstore_support import free_port_in_range, keys_under, s3_env, seaweed

__all__ = ["seaweed"]  # the module-scoped fixture, imported for pytest

# A real SeaweedFS and `serve` subprocesses: about a minute, so `make test` only.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::ResourceWarning")]


def _bucket(seaweed: SeaweedFS) -> str:
    name = f"t-{random.getrandbits(40):010x}"
    seaweed.make_bucket(name)
    return name


def _setenv(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> dict[str, str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return dict(os.environ)


def _node_env(tmp_path: Path, identity: X25519Identity) -> dict[str, str]:
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    (keys / "recipients.txt").write_text(f"{identity.recipient}\n")
    return {
        "PORTAL_DATA_DIR": str(tmp_path / "data"),
        "PORTAL_RECIPIENTS": str(keys / "recipients.txt"),
        "PORTAL_MIN_FREE_MB": "0",
    }


def _check(env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = portal_cli(["check"], env=env, stdout=out, stderr=err)
    return int(status), out.getvalue(), err.getvalue()


def _serve(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    port = free_port_in_range()
    return subprocess.run(
        [sys.executable, "-m", "portal.server.cli", "serve", "--no-front", "--port", str(port)],
        env={"PATH": os.environ["PATH"], "HOME": str(cwd), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


BAD_SETTINGS = {
    "unreachable endpoint": ("endpoint", "cannot reach the object store"),
    "wrong credentials": ("credentials", "refused the credentials"),
    "missing bucket": ("bucket", "does not exist"),
    "bucket without write permission": ("readonly", "can read but not write"),
}


def _bad(kind: str, seaweed: SeaweedFS, bucket: str) -> dict[str, str]:
    if kind == "endpoint":
        return s3_env(
            seaweed, bucket, PORTAL_S3_ENDPOINT=f"http://127.0.0.1:{free_port_in_range()}"
        )
    if kind == "credentials":
        return s3_env(seaweed, bucket, AWS_SECRET_ACCESS_KEY="not-the-secret")
    if kind == "bucket":
        return s3_env(seaweed, "no-such-bucket-here")
    return {
        **s3_env(seaweed, bucket),
        **dict(zip(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), READER, strict=True)),
    }


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_bad_object_store_settings_are_one_clear_line_from_check_and_serve(
    case: str,
    seaweed: SeaweedFS,
    tmp_path: Path,
    identity: X25519Identity,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kind, expected = BAD_SETTINGS[case]
    bucket = _bucket(seaweed)
    env = {**_node_env(tmp_path, identity), **_bad(kind, seaweed, bucket)}
    status, out, err = _check(_setenv(monkeypatch, env))
    assert status != 0
    [line] = [line for line in out.splitlines() if "PORTAL_STORE=s3" in line]
    assert line.startswith("[PROBLEM]") and expected in line, out
    assert "Traceback" not in out + err

    served = _serve(env, tmp_path)
    assert served.returncode != 0
    lines = [line for line in served.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], served.stderr
    assert "Traceback" not in served.stdout + served.stderr
    # Never a silent fall back to the local disk: nothing was set up to take submissions.
    assert not (tmp_path / "data" / "submissions").exists() or not any(
        (tmp_path / "data" / "submissions").iterdir()
    )


def test_s3_without_a_shared_secret_key_is_refused(tmp_path: Path, seaweed: SeaweedFS) -> None:
    env = s3_env(seaweed, "any-bucket")
    del env["PORTAL_SECRET_KEY"]
    status, _out, err = _check(env)
    assert status != 0 and "PORTAL_SECRET_KEY" in err and len(err.splitlines()) == 1


def test_check_passes_on_a_good_bucket_and_warns_when_it_keeps_versions(
    seaweed: SeaweedFS, tmp_path: Path, identity: X25519Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _bucket(seaweed)
    env = _setenv(monkeypatch, {**_node_env(tmp_path, identity), **s3_env(seaweed, bucket)})
    status, out, _err = _check(env)
    assert status == 0, out
    assert "[ok] submissions rest in bucket" in out and "[warning]" not in out
    seaweed.client().put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    status, out, _err = _check(env)
    assert status == 0
    [warning] = [line for line in out.splitlines() if line.startswith("[warning]")]
    assert "versioning" in warning and "--purge" in warning


def _archive(seaweed: SeaweedFS, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             name: str = "data") -> ObjectArchive:  # fmt: skip
    _setenv(monkeypatch, s3_env(seaweed, bucket))
    config = Config.from_env({**os.environ, "PORTAL_DATA_DIR": str(tmp_path / name)})
    spool = SubmissionStore(config.data_dir)
    spool.initialise()
    archive = open_archive(config, spool)
    assert isinstance(archive, ObjectArchive)
    return archive


def test_a_form_is_claimed_once_across_nodes_with_a_conditional_write(
    seaweed: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _bucket(seaweed)
    first = _archive(seaweed, bucket, tmp_path, monkeypatch, "a")
    second = _archive(seaweed, bucket, tmp_path, monkeypatch, "b")
    assert first.claim_form("form-1") is FormClaim.CLAIMED
    assert second.claim_form("form-1") is FormClaim.STORING
    first.release_form("form-1")  # its submission failed: the form may be sent again
    assert second.claim_form("form-1") is FormClaim.CLAIMED
    second.form_stored("form-1")
    assert first.claim_form("form-1") is FormClaim.STORED
    # The bucket holds a keyed hash, never the form's value.
    names = [o["Key"] for o in keys_under(seaweed.client(), bucket, "portal/claims/")]
    assert len(names) == 1 and "form-1" not in names[0]
    assert CLAIM_LIFETIME > FORM_LIFETIME


def test_the_receipt_salt_is_shared_by_every_node(
    seaweed: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _bucket(seaweed)
    first = _archive(seaweed, bucket, tmp_path, monkeypatch, "a")
    second = _archive(seaweed, bucket, tmp_path, monkeypatch, "b")
    salt = first.receipt_salt()
    assert len(salt) == 16 and second.receipt_salt() == salt


def _record_puts(archive: ObjectArchive) -> list[str]:
    """The keys of every PutObject this archive's client sends, in order (observed, not mocked)."""
    keys: list[str] = []
    archive._client().meta.events.register(
        "before-call.s3.PutObject", lambda params, **_: keys.append(params["url_path"])
    )
    return keys


def _arrive(spool: SubmissionStore, identity: X25519Identity, count: int) -> list[str]:
    return [
        store_submission(
            spool,
            [identity.recipient],
            {"testimony": f"account {n}"},
            [("a.txt", "text/plain", b"x" * n)],
        )
        for n in range(count)
    ]


def test_publish_moves_the_spool_in_random_order_manifest_last_at_batch_time(
    seaweed: SeaweedFS, tmp_path: Path, identity: X25519Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _bucket(seaweed)
    archive = _archive(seaweed, bucket, tmp_path, monkeypatch)
    arrived = _arrive(archive.spool, identity, 40)
    time.sleep(1.5)  # arrivals and the batch fall in different seconds
    puts = _record_puts(archive)
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with archive.spool.maintenance():
        report = archive.publish()
    end = dt.datetime.now(dt.UTC)
    assert report.ok and report.published == 40 and archive.spool.ids() == []
    # Every submission's manifest comes after its attachment.
    order = [key.rsplit("/submissions/", 1)[1] for key in puts]
    for submission_id in arrived:
        assert order.index(f"{submission_id}/files/1.age") < order.index(
            f"{submission_id}/testimony.age"
        )
    # Published in an order that is not the order of arrival (1 in 40! by chance).
    published = [key.split("/")[0] for key in order if key.endswith("testimony.age")]
    assert sorted(published) == sorted(arrived) and published != arrived
    objects = keys_under(seaweed.client(), bucket, "portal/submissions/")
    assert len(objects) == 80
    assert all(start <= o["LastModified"] <= end + dt.timedelta(seconds=1) for o in objects)
    assert archive.ids() == sorted(arrived)


def test_a_publish_while_the_store_is_away_loses_nothing(
    seaweed: SeaweedFS, tmp_path: Path, identity: X25519Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _bucket(seaweed)
    archive = _archive(seaweed, bucket, tmp_path, monkeypatch)
    arrived = _arrive(archive.spool, identity, 5)
    away = ObjectArchive(
        archive.spool, bucket=bucket, prefix="portal",
        endpoint=f"http://127.0.0.1:{free_port_in_range()}", claim_key=b"k", attempts=1,
    )  # fmt: skip
    with archive.spool.maintenance():
        report = away.publish()
    assert report.stopped and "cannot reach" in report.stopped and report.published == 0
    assert archive.spool.ids() == sorted(arrived)
    with pytest.raises(ArchiveUnavailable):
        away.verify()
    with archive.spool.maintenance():
        assert archive.publish().published == 5
    assert archive.ids() == sorted(arrived)


def test_an_interrupted_publish_shows_no_partial_submission_and_finishes_later(
    seaweed: SeaweedFS, tmp_path: Path, identity: X25519Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _bucket(seaweed)
    archive = _archive(seaweed, bucket, tmp_path, monkeypatch)
    [submission_id] = _arrive(archive.spool, identity, 1)
    # Cut after the attachment is in the bucket, before the manifest.
    client = archive._client()

    def cut(params: dict[str, Any], **_: Any) -> None:
        if params["url_path"].endswith("testimony.age"):
            raise KeyboardInterrupt

    client.meta.events.register("before-call.s3.PutObject", cut)
    with pytest.raises(KeyboardInterrupt), archive.spool.maintenance():
        archive._publish_one(submission_id, random.Random(1))
    client.meta.events.unregister("before-call.s3.PutObject", cut)
    assert keys_under(seaweed.client(), bucket, "portal/submissions/")  # the attachment
    assert archive.ids() == []  # ...but no submission
    assert archive.spool.ids() == [submission_id]
    with archive.spool.maintenance():
        assert archive.publish().published == 1
    assert archive.ids() == [submission_id]
    assert len(keys_under(seaweed.client(), bucket, "portal/submissions/")) == 2


def test_export_verifies_every_object_then_purges_the_bucket(
    seaweed: SeaweedFS, tmp_path: Path, identity: X25519Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _bucket(seaweed)
    archive = _archive(seaweed, bucket, tmp_path, monkeypatch)
    arrived = _arrive(archive.spool, identity, 3)
    with archive.spool.maintenance():
        archive.publish()
    # One object altered in the bucket (its node's SHA-256 kept): never exported, never purged.
    victim = sorted(arrived)[0]
    key = f"portal/submissions/{victim}/files/1.age"
    client = seaweed.client()
    meta = client.head_object(Bucket=bucket, Key=key)["Metadata"]
    client.put_object(Bucket=bucket, Key=key, Body=b"tampered", Metadata=meta)
    env = {**os.environ, "PORTAL_DATA_DIR": str(tmp_path / "elsewhere")}
    out, err = io.StringIO(), io.StringIO()
    usb = tmp_path / "usb"
    status = portal_cli(["export", str(usb), "--purge"], env=env, stdout=out, stderr=err)
    assert status != 0 and victim in err.getvalue() and "SHA-256" in err.getvalue()
    assert "2 purged from the bucket" in out.getvalue()
    assert archive.ids() == [victim]
    for submission_id in sorted(arrived)[1:]:
        manifest, files = open_submission(usb / "submissions" / submission_id, [identity])
        assert manifest["id"] == submission_id and len(files) == 1
    assert not (usb / "submissions" / victim).exists()
    assert not (tmp_path / "elsewhere").exists()  # an export needs no data directory


def test_replies_that_cannot_be_read_are_a_503_never_an_empty_mailbox(
    seaweed: SeaweedFS, tmp_path: Path, identity: X25519Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    from portal.server.web import create_app
    from portal.testing.live import csrf_token, post_form

    def _submit(client: Any) -> str:
        page = post_form(client, {"testimony": "an account"}).get_data(as_text=True)
        match = re.search(r'id="receipt"[^>]*>([0-9 ]+)<', page)
        assert match, "no receipt"
        return match.group(1)

    def _followup(client: Any, receipt: str) -> Any:
        token = csrf_token(client.get("/followup").get_data(as_text=True))
        return client.post("/followup", data={"csrf_token": token, "receipt": receipt})

    bucket = _bucket(seaweed)
    env = _setenv(monkeypatch, {**_node_env(tmp_path, identity), **s3_env(seaweed, bucket)})
    app = create_app(Config.from_env(env))
    client = app.test_client()
    receipt = _submit(client)
    assert _followup(client, receipt).status_code == 200
    spool = app.extensions["portal"].store
    away = ObjectArchive(
        spool, bucket=bucket, prefix="portal",
        endpoint=f"http://127.0.0.1:{free_port_in_range()}", claim_key=b"k", attempts=1,
    )  # fmt: skip
    app.extensions["portal.core.conversation"].replies = away.replies()
    page = _followup(client, receipt)
    assert page.status_code == 503
    assert "No replies yet" not in page.get_data(as_text=True)
