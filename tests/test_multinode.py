"""Three portal nodes on one bucket of a real SeaweedFS: nothing lost, nothing twice.

Three `testimony-portal serve` processes, each with its own spool and port,
take more than 2,000 submissions spread over them while one node is killed
in the middle of an upload (and started again on its spool) and the object
store is stopped and started again under load. Then every node publishes,
and the bucket, exported and opened, must hold every acknowledged
submission exactly once; every object's LastModified must be the time of a
publish, and a publish must not keep the order of arrival. A form replayed
on another node is stored once; a reply imported once is read and deleted
through other nodes.
"""

from __future__ import annotations

import datetime as dt
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from portal.core.age import X25519Identity
from portal.testing.live import (
    RECEIVED_MARKERS,
    LiveServer,
    MultipartBody,
    open_submission,
    start_server,
)
from portal.testing.seaweed import SeaweedFS
from tests.conversation_support import delete_replies, open_followup, receipt_of, replies_on
from tests.objectstore_support import (
    free_port_in_range,
    keys_under,
    kill_tree,
    s3_env,
    start_seaweed,
)
from tests.review_support import open_args, review
from tests.support import TEST_SIGNING_KEY, signing_key_file

T0 = time.monotonic()


def _log(what: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {what}", file=sys.stderr, flush=True)


pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::ResourceWarning")]

# Acknowledged submissions to reach; attempts cut by the kill come on top.
TOTAL = 2050
CLIENTS = 6
BUCKET = "portal-nodes"
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None


@dataclass
class Run:
    """What the load saw: acknowledged markers, attempts, and the publish windows."""

    acked: list[str] = field(default_factory=list)
    attempts: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    windows: list[tuple[dt.datetime, dt.datetime]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _received(status: int, body: str) -> bool:
    return status == 200 and all(marker in body for marker in RECEIVED_MARKERS)


def _submit(node: LiveServer, marker: str, with_file: bool) -> bool:
    client = node.client()
    client.timeout = 60
    files = [("note.txt", marker.encode() * 20, "text/plain")] if with_file else []
    answer = client.submit(f"testimony {marker}", files)
    return _received(answer.status, answer.body)


def _portal(node: LiveServer, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portal.server.cli", *args],
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(node.data_dir.parent),
            "PORTAL_DATA_DIR": str(node.data_dir),
            "PORTAL_RECIPIENTS": str(node.data_dir.parent / "keys" / "recipients.txt"),
            "PORTAL_REPLY_SIGNERS": str(node.data_dir.parent / "keys" / "reply-signers.txt"),
            "PORTAL_MIN_FREE_MB": "0",
            **{k: v for k, v in os.environ.items() if k.startswith("PORTAL_RECEIPT_KDF_")},
            **env,
        },
        capture_output=True,
        text=True,
        timeout=600,
    )


def _publish(node: LiveServer, env: dict[str, str], run: Run) -> subprocess.CompletedProcess[str]:
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    done = _portal(node, env, "seal")
    run.windows.append((start, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)))
    return done


def _stalled_upload(node: LiveServer, started: threading.Event, killed: threading.Event,
                    outcome: list[str]) -> None:  # fmt: skip
    """An upload that is half-way through its body when the node is killed."""
    client = node.client()
    fields = {**client.form_fields(), "testimony": "in flight when the node died"}
    body = MultipartBody(fields, [("video.bin", b"v" * (1 << 20), "application/octet-stream")])

    def trickle() -> object:
        for number, chunk in enumerate(body):
            yield chunk
            if number == len(fields):  # the fields are sent, the file's head too
                started.set()
                killed.wait(60)

    try:
        answer = client.request(
            "POST",
            "/submit",
            body=trickle(),  # type: ignore[arg-type]
            headers={"Content-Type": body.content_type, "Content-Length": str(body.length)},
        )
        outcome.append(f"answered {answer.status}")
    except OSError:
        outcome.append("cut")


def _spearman(values: list[float], ranks: list[float]) -> float:
    def rank(xs: list[float]) -> list[float]:
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        out = [0.0] * len(xs)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    a, b = rank(values), rank(ranks)
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b, strict=True))
    var_a = sum((x - mean_a) ** 2 for x in a) ** 0.5
    var_b = sum((y - mean_b) ** 2 for y in b) ** 0.5
    return cov / (var_a * var_b) if var_a and var_b else 0.0


def test_three_nodes_lose_nothing_and_store_nothing_twice_through_a_kill_and_a_store_restart(
    tmp_path: Path, identity: X25519Identity, identity_file: Path
) -> None:
    seaweed: SeaweedFS = start_seaweed(tmp_path / "seaweed")
    nodes: list[LiveServer] = []
    try:
        seaweed.make_bucket(BUCKET)
        env = s3_env(seaweed, BUCKET, PORTAL_SEAL_TIME="off", PORTAL_NODES="3")
        recipient = str(identity.recipient)

        def start(number: int, port: int | None = None) -> LiveServer:
            root = tmp_path / f"node{number}"
            return start_server(
                root,
                recipient,
                identity_file,
                env=env,
                port=port or free_port_in_range(),
                reply_signers=[str(TEST_SIGNING_KEY.public)],
            )

        nodes = [start(n) for n in range(3)]
        _log("nodes up")
        run = Run()
        arrival: dict[str, int] = {}
        counter = iter(range(10**9))
        stop = threading.Event()

        def client_loop(offset: int) -> None:
            turn = offset
            while not stop.is_set():
                with run.lock:
                    # The load runs until the main thread has done its part (a
                    # bound on attempts keeps a broken run from going for ever).
                    if run.attempts >= 4 * TOTAL:
                        return
                    number = next(counter)
                    run.attempts += 1
                marker = f"m{number:05d}x"
                node = nodes[turn % 3]
                turn += 1
                try:
                    ok = _submit(node, marker, with_file=number % 4 == 0)
                except (OSError, AssertionError, http.client.HTTPException) as exc:
                    # A node killed mid-answer cuts the connection, before
                    # or during the body (IncompleteRead): counted, retried.
                    with run.lock:
                        run.errors[type(exc).__name__] += 1
                    time.sleep(0.05)
                    continue
                if ok:
                    with run.lock:
                        arrival[marker] = len(run.acked)
                        run.acked.append(marker)
                else:
                    with run.lock:
                        run.errors["not received"] += 1

        threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()

        def wait_for(acked: int) -> None:
            while len(run.acked) < acked and any(t.is_alive() for t in threads):
                time.sleep(0.05)

        # A node killed in the middle of an upload, then started again on its spool.
        wait_for(400)
        started, killed = threading.Event(), threading.Event()
        outcome: list[str] = []
        uploader = threading.Thread(
            target=_stalled_upload, args=(nodes[1], started, killed, outcome)
        )
        uploader.start()
        assert started.wait(30)
        time.sleep(0.3)
        kill_tree(nodes[1].process.pid)
        killed.set()
        uploader.join(60)
        assert outcome and not outcome[0].startswith("answered 200"), outcome
        nodes[1].process.wait()
        nodes[1] = start(1, nodes[1].port)
        _log("node 1 restarted")

        # A publish under load.
        wait_for(750)
        published = _publish(nodes[0], env, run)
        assert published.returncode == 0, published.stderr
        _log("publish under load done")

        # The object store stopped under load: the nodes keep accepting into their spools.
        wait_for(950)
        _log("stopping the store")
        seaweed.stop()
        _log("store stopped")
        acked_before_outage = len(run.acked)
        wait_for(acked_before_outage + 250)
        assert len(run.acked) >= acked_before_outage + 250, run.errors
        refused = _publish(nodes[2], env, run)
        assert refused.returncode != 0 and "cannot reach the object store" in refused.stderr
        assert "Traceback" not in refused.stderr
        seaweed.start()
        _log("store restarted")
        # ...and the load goes on after it is back.
        restarted_at = len(run.acked)
        wait_for(max(TOTAL, restarted_at + 100))
        assert len(run.acked) >= max(TOTAL, restarted_at + 100), run.errors
        stop.set()

        for thread in threads:
            thread.join(600)
        assert not any(t.is_alive() for t in threads)
        _log("load done")

        # A form posted to one node and replayed, with its cookie, on another.
        client = nodes[0].client()
        fields = {**client.form_fields(), "testimony": "testimony replayed-form"}
        body = MultipartBody(fields, [])
        headers = {"Content-Type": body.content_type, "Content-Length": str(body.length)}
        first = client.request("POST", "/submit", body=iter(body), headers=headers)
        assert _received(first.status, first.body)
        client.port = nodes[2].port
        replay = client.request("POST", "/submit", body=iter(body), headers=headers)
        assert _received(replay.status, replay.body)

        # Every node publishes what its spool holds.
        for node in nodes:
            done = _publish(node, env, run)
            assert done.returncode == 0, done.stderr
            assert not any((node.data_dir / "submissions").iterdir())
            _log("a node published")

        acked = set(run.acked)
        assert len(acked) == len(run.acked) >= 2000, (len(run.acked), run.errors)

        # No object has a LastModified outside a publish.
        s3 = seaweed.client()
        objects = keys_under(s3, BUCKET, "portal/submissions/")
        for item in objects:
            assert any(a <= item["LastModified"] <= b for a, b in run.windows), item

        # Exported, purged and opened: each acknowledged submission exactly once. The
        # export's fsyncs go to memory (a USB stick's speed is not under test here).
        usb = Path(tempfile.mkdtemp(dir=SCRATCH)) / "usb"
        exported = _portal(nodes[0], env, "export", str(usb), "--purge")
        assert exported.returncode == 0, exported.stderr
        assert keys_under(s3, BUCKET, "portal/submissions/") == []
        _log("exported")
        seen: Counter[str] = Counter()
        published_at: dict[str, dt.datetime] = {}
        stamps = {
            item["Key"].split("/")[2]: item["LastModified"]
            for item in objects
            if item["Key"].endswith("/testimony.age")
        }
        for folder in (usb / "submissions").iterdir():
            manifest, files = open_submission(folder, [identity])
            marker = manifest["fields"]["testimony"].removeprefix("testimony ")
            seen[marker] += 1
            published_at[marker] = stamps[folder.name]
            if files:
                assert list(files.values()) == [marker.encode() * 20]
        duplicates = [m for m, n in seen.items() if n > 1]
        assert duplicates == []
        assert acked <= set(seen), sorted(acked - set(seen))[:10]
        assert seen["replayed-form"] == 1
        # Whatever was not acknowledged (cut by the kill) is there at most once too.
        assert set(seen) - acked - {"replayed-form"} <= {f"m{n:05d}x" for n in range(4 * TOTAL)}

        # Within one publish, objects are not in the order their submissions arrived.
        for start_at, end_at in run.windows:
            batch = [m for m in acked if start_at <= published_at[m] <= end_at]
            times = [published_at[m].timestamp() for m in batch]
            if len(batch) > 100 and len(set(times)) > 1:
                rho = _spearman(times, [float(arrival[m]) for m in batch])
                assert abs(rho) < 0.5, (len(batch), rho)

        shutil.rmtree(usb.parent)
        _reply_through_other_nodes(nodes, env, run, tmp_path, identity_file, s3)
    finally:
        for node in nodes:
            kill_tree(node.process.pid)
        seaweed.stop()


def _reply_through_other_nodes(
    nodes: list[LiveServer],
    env: dict[str, str],
    run: Run,
    tmp_path: Path,
    identity_file: Path,
    s3: object,
) -> None:
    """A reply imported once is read through a second node and deleted through a third."""
    witness = nodes[0].client()
    receipt = receipt_of(witness.submit("an account that gets a reply", []).body)
    assert _publish(nodes[0], env, run).returncode == 0
    usb, out, custody = tmp_path / "usb-reply", tmp_path / "opened", tmp_path / "custody.jsonl"
    assert _portal(nodes[0], env, "export", str(usb), "--purge").returncode == 0
    assert review(open_args(usb, identity_file, out, custody)).status == 0
    (sid,) = [p.name for p in out.iterdir() if p.is_dir()]
    message = tmp_path / "reply.txt"
    message.write_text("답장: 고맙습니다.", "utf-8")
    outbox = tmp_path / "outbox"
    made = review(
        ["reply", sid, "--from", out, "--message-file", message, "--out", outbox,
         "--custody", custody, "--signing-key", signing_key_file(tmp_path / "signer")]
    )  # fmt: skip
    assert made.status == 0, made.err
    imported = _portal(nodes[2], env, "import-replies", str(outbox))
    assert imported.returncode == 0, imported.stderr
    replies = keys_under(s3, BUCKET, "portal/replies/")
    # The reply and its signature (issue 21).
    assert sorted(item["Key"].rsplit(".", 1)[1] for item in replies) == ["age", "sig"]
    assert not (nodes[2].data_dir / "replies").exists() or not any(
        (nodes[2].data_dir / "replies").iterdir()
    )
    reader = nodes[1].client()
    page = open_followup(reader, receipt)
    assert replies_on(page.body) == ["답장: 고맙습니다."]
    other = nodes[2].client()
    page = open_followup(other, receipt)
    assert delete_replies(other, page.body).status == 200
    # Only its tombstone stays, so the same outbox cannot bring it back.
    left = keys_under(s3, BUCKET, "portal/replies/")
    assert [item["Key"].rsplit(".", 1)[1] for item in left] == ["deleted"]
    again = _portal(nodes[2], env, "import-replies", str(outbox))
    assert again.returncode == 0 and again.stdout.startswith("0 reply(ies) imported")
    assert replies_on(open_followup(nodes[1].client(), receipt).body) == []
