"""Load test: concurrent witnesses against the documented stack, then a full audit.

    python bench/load.py [--submissions 2000] [--clients 32] [--attack]
    python bench/load.py --followup-logins 200 [--clients 8]

Starts `testimony-portal serve` (nginx in front of gunicorn) on loopback with a throwaway key, lets
`--clients` threads submit a mix of text-only testimony and testimony with
attachments (random bytes, 1 KiB to `--max-kib`), and prints throughput and
latency. Then it opens every stored submission with the private key and
checks each against what was sent: a confirmed submission that is missing is
"lost"; one that fails to decrypt, or whose text, names, sizes or SHA-256
differ, is "corrupt". The exit status is non-zero unless both are 0.

With `--attack` it runs twice, on two fresh servers, and prints the two
side by side: once quiet, once while `--hostile` connections (a quarter
each: silent and dribbling, in the header block and in the body; each one
the server drops is opened again), `--junk-per-second` junk POSTs,
`--followup-flood` clients sending follow-up logins without pause (half of
them typo'd), `--sessionless-per-second` new connections each posting a
stalled body to a follow-up route without a session, and `--trickles`
login bodies at 1.5 KiB/s (portal/testing/attacks.py) keep coming. The
client's own cost (its threads, the CPU time it used, the load average) is
printed too: the client shares the machine with the server.

With `--followup-logins N`, it instead sends N follow-up logins (well-formed
random receipts, each one a full argon2id derivation at the production cost)
and prints logins per second, latency, and the memory the derivations need
at the configured concurrency next to the workers' measured peak.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import resource
import secrets
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from portal.core.age import X25519Identity  # noqa: E402
from portal.server.store import SubmissionStore  # noqa: E402
from portal.testing.attacks import FollowupFlood, SessionlessBodies, Trickle  # noqa: E402
from portal.testing.hostile import KINDS, HostileSwarm  # noqa: E402
from portal.testing.live import RECEIVED_MARKERS, Client, start_server  # noqa: E402


@dataclass
class Sent:
    marker: str
    files: list[tuple[str, int, str]]  # name, size, sha256


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    confirmed: list[Sent] = field(default_factory=list)
    refused: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    bytes_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_submission(number: int, attachment_share: float, max_kib: int) -> tuple[Sent, list]:
    rng = random.Random(number)
    marker = f"load-{number}-{secrets.token_hex(6)}"
    files = []
    if rng.random() < attachment_share:
        for index in range(rng.choice((1, 1, 2, 3))):
            data = rng.randbytes(rng.randint(1024, max_kib * 1024))
            files.append((f"{marker}-{index}.bin", data, "application/octet-stream"))
    sent = Sent(marker, [(n, len(d), hashlib.sha256(d).hexdigest()) for n, d, _ in files])
    return sent, files


def witness(
    url: str, jobs: list[int], lock: threading.Lock, results: Results, args: argparse.Namespace
) -> None:
    client = Client(url, timeout=300)
    while True:
        with lock:
            if not jobs:
                return
            number = jobs.pop()
        sent, files = make_submission(number, args.attachment_share, args.max_kib)
        start = time.perf_counter()
        try:
            response = client.submit(f"Testimony {sent.marker}\n증언 {number}", files)
        except OSError:
            with results.lock:
                results.errors += 1
            continue
        elapsed = time.perf_counter() - start
        with results.lock:
            results.latencies.append(elapsed)
            results.bytes_sent += sum(len(d) for _, d, _ in files)
            if response.status == 200 and all(m in response.body for m in RECEIVED_MARKERS):
                results.confirmed.append(sent)
            else:
                results.refused[response.status] = results.refused.get(response.status, 0) + 1


def audit(data_dir: Path, identity: X25519Identity, confirmed: list[Sent]) -> tuple[int, int, int]:
    """Open every stored submission; return (stored, lost, corrupt)."""
    from portal.testing.live import open_submission

    expected = {s.marker: s for s in confirmed}
    seen: set[str] = set()
    corrupt = 0
    store = SubmissionStore(data_dir)
    ids = store.ids()
    for submission_id in ids:
        try:
            manifest, files = open_submission(store.path(submission_id), [identity])
            marker = manifest["fields"]["testimony"].split()[1]
            sent = expected[marker]
            got = [(a["name"], a["size"], a["sha256"]) for a in manifest["attachments"]]
            if got != sent.files or len(files) != len(sent.files):
                raise ValueError("attachments differ from what was sent")
            seen.add(marker)
        except Exception as exc:  # every failure to open or match is corruption
            corrupt += 1
            print(f"  corrupt: {submission_id}: {type(exc).__name__}: {exc}", file=sys.stderr)
    lost = len(set(expected) - seen)
    return len(ids), lost, corrupt


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def junk_poster(url: str, per_second: float, stop: threading.Event, sent: list[int]) -> None:
    """Empty and tokenless POSTs, to a missing page and to the form, at a steady rate."""
    client = Client(url, timeout=30)
    paths = ("/ko/nowhere", "/ko/submit")
    number = 0
    while not stop.wait(1 / per_second):
        with contextlib.suppress(OSError):
            client.request(
                "POST",
                paths[number % 2],
                body=b"x=1",
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Content-Length": "3",
                },
            )
        number += 1
        sent[0] = number


def run_once(args: argparse.Namespace, attack: bool) -> dict[str, str]:
    identity = X25519Identity.generate()
    with tempfile.TemporaryDirectory(prefix="portal-load-") as tmp:
        root = Path(tmp)
        identity_file = root / "identity.txt"
        identity_file.write_text(f"{identity}\n")
        server = start_server(root / "server", str(identity.recipient), identity_file, front=True)
        results = Results()
        jobs = list(range(args.submissions))[::-1]
        lock = threading.Lock()
        threads = [
            threading.Thread(target=witness, args=(server.url, jobs, lock, results, args))
            for _ in range(args.clients)
        ]
        swarm = HostileSwarm("127.0.0.1", server.port, args.hostile, KINDS) if attack else None
        stop_junk = threading.Event()
        junk_sent = [0]
        junk = threading.Thread(
            target=junk_poster, args=(server.url, args.junk_per_second, stop_junk, junk_sent)
        )
        hostile_open = "-"
        attackers = (
            {
                "follow-up flood": FollowupFlood(server.url, args.followup_flood),
                "sessionless bodies": SessionlessBodies(
                    "127.0.0.1", server.port, args.sessionless_per_second
                ),
                "trickled logins": Trickle(server.url, "127.0.0.1", server.port, args.trickles),
            }
            if attack
            else {}
        )
        try:
            for attacker in attackers.values():
                attacker.start()
            if swarm is not None:
                swarm.start()
                junk.start()
                time.sleep(5)  # let the swarm reach the server's threads
            cpu_start = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - started
            cpu_end = resource.getrusage(resource.RUSAGE_SELF)
            load = os.getloadavg()[0]
            if swarm is not None:
                hostile_open = f"{swarm.open} open, {swarm.dropped} dropped and reopened"
        finally:
            stop_junk.set()
            if swarm is not None:
                junk.join()
                swarm.stop()
            for attacker in attackers.values():
                attacker.stop()
            server.stop()
        log_errors = sum(1 for line in server.log().splitlines() if line.startswith("[ERROR]"))
        stored, lost, corrupt = audit(server.data_dir, identity, results.confirmed)

    lat = results.latencies
    cpu = (cpu_end.ru_utime - cpu_start.ru_utime) + (cpu_end.ru_stime - cpu_start.ru_stime)
    client_threads = f"{args.clients} witnesses" + (
        f" + 1 swarm + 1 junk + {args.followup_flood} flood + 1 bodies + {args.trickles} trickles"
        if attack
        else ""
    )
    flood, bodies, trickle = (attackers.get(name) for name in (
        "follow-up flood", "sessionless bodies", "trickled logins"))  # fmt: skip
    return {
        "hostile connections": hostile_open if attack else "0",
        "follow-up logins sent (answers)": _answers(flood),
        "sessionless bodies (answers)": _answers(bodies)
        + (
            f", median held {statistics.median(bodies.held):.2f} s"
            if bodies and bodies.held
            else ""
        ),
        "trickled logins (answers)": _answers(trickle)
        + (f", longest held {max(trickle.held):.0f} s" if trickle and trickle.held else ""),
        "junk POSTs sent": f"{junk_sent[0]}" if attack else "0",
        "submissions sent": f"{args.submissions}",
        "confirmed (received page)": f"{len(results.confirmed)}",
        "refused (by status) / errors": f"{results.refused or 0} / {results.errors}",
        "attachment data sent": f"{results.bytes_sent / 2**20:.1f} MiB",
        "wall time": f"{wall:.1f} s",
        "submissions/s": f"{len(results.confirmed) / wall:.1f}",
        "latency p50": f"{statistics.median(lat) * 1000:.0f} ms" if lat else "-",
        "latency p99": f"{percentile(lat, 0.99) * 1000:.0f} ms" if lat else "-",
        "latency max": f"{max(lat) * 1000:.0f} ms" if lat else "-",
        "server log errors": f"{log_errors}",
        "stored submissions": f"{stored}",
        "result": f"lost {lost}, corrupt {corrupt}",
        "client: 1 process, threads": client_threads,
        "client CPU time (share of wall)": f"{cpu:.1f} s ({100 * cpu / wall:.0f}% of one core)",
        "load average (1 min) at the end": f"{load:.1f} on {os.cpu_count()} cores",
        "ok": "yes" if lost == 0 and corrupt == 0 and stored == len(results.confirmed) else "no",
    }


def _answers(attacker: object) -> str:
    if attacker is None:
        return "0"
    sent = getattr(attacker, "sent", 0)
    statuses = dict(getattr(attacker, "statuses", {}))
    return f"{sent} {statuses}"


def _worker_peaks(pid: int) -> list[int]:
    """Peak resident memory (VmHWM, bytes) of the Python processes under `pid` (not nginx)."""
    peaks = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            pending.append(int(child))
            try:
                comm = Path(f"/proc/{child}/comm").read_text().strip()
                status = Path(f"/proc/{child}/status").read_text()
            except OSError:
                continue
            if comm.startswith("nginx"):
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) * 1024)
    return peaks


def followup_logins(count: int, clients: int) -> int:
    """Follow-up logins per second at the production argon2id cost."""
    from urllib.parse import urlencode

    from portal.core.receipt import new_receipt
    from portal.server.mailbox import DEFAULT_COST
    from portal.testing.live import csrf_token

    workers, concurrency = 2, 2
    env = {
        "PORTAL_RECEIPT_KDF_OPS": str(DEFAULT_COST.opslimit),
        "PORTAL_RECEIPT_KDF_MEMORY_KIB": str(DEFAULT_COST.memlimit // 1024),
        "PORTAL_RECEIPT_KDF_CONCURRENCY": str(concurrency),
        # What the derivations can do, not what the logins' budget lets through.
        "PORTAL_LOGIN_PER_MINUTE": "1000000",
        "PORTAL_LOGIN_BURST": "1000000",
    }
    identity = X25519Identity.generate()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    jobs = list(range(count))
    with tempfile.TemporaryDirectory(prefix="portal-followup-") as tmp:
        root = Path(tmp)
        identity_file = root / "identity.txt"
        identity_file.write_text(f"{identity}\n")
        server = start_server(
            root / "server", str(identity.recipient), identity_file, env=env, front=True
        )

        def login() -> None:
            client = Client(server.url)
            token = csrf_token(client.get("/followup").body)
            while True:
                with lock:
                    if not jobs:
                        return
                    jobs.pop()
                body = urlencode({"csrf_token": token, "receipt": new_receipt().display()}).encode()
                start = time.perf_counter()
                response = client.request(
                    "POST",
                    "/followup",
                    body=body,
                    headers={
                        "Content-Type": "application/x-www-form-urlencoded",
                        "Content-Length": str(len(body)),
                    },
                )
                with lock:
                    latencies.append(time.perf_counter() - start)
                    statuses[response.status] = statuses.get(response.status, 0) + 1

        threads = [threading.Thread(target=login) for _ in range(clients)]
        try:
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - started
            peaks = _worker_peaks(server.process.pid)
        finally:
            server.stop()
    ok = statuses.get(200, 0)
    need = workers * concurrency * DEFAULT_COST.memlimit
    rows = [
        ("argon2id cost", f"opslimit {DEFAULT_COST.opslimit}, "
         f"memlimit {DEFAULT_COST.memlimit // 2**20} MiB"),
        ("clients / workers / derivations per worker", f"{clients} / {workers} / {concurrency}"),
        ("logins sent / answered 200", f"{count} / {ok} (statuses {statuses})"),
        ("follow-up logins/s", f"{ok / wall:.2f}"),
        ("latency p50 / p99", f"{statistics.median(latencies) * 1000:.0f} ms / "
         f"{percentile(latencies, 0.99) * 1000:.0f} ms"),
        ("memory for derivations at this concurrency",
         f"{need // 2**20} MiB ({workers} workers x {concurrency} x "
         f"{DEFAULT_COST.memlimit // 2**20} MiB)"),
        ("measured peak RSS per Python process",
         ", ".join(f"{p // 2**20} MiB" for p in peaks) or "-"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    print(f"{'follow-up logins: nginx + gunicorn, production argon2id cost':^{width + 30}}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    return 0 if ok == count else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--attachment-share",
        type=float,
        default=0.5,
        help="share of submissions with attachments (default %(default)s)",
    )
    parser.add_argument(
        "--max-kib", type=int, default=256, help="largest attachment in KiB (default %(default)s)"
    )
    parser.add_argument(
        "--attack", action="store_true", help="also run under attack and print both side by side"
    )
    parser.add_argument("--hostile", type=int, default=1000, help="hostile connections")
    parser.add_argument("--junk-per-second", type=float, default=20, help="junk POSTs a second")
    parser.add_argument(
        "--followup-flood", type=int, default=32, help="clients flooding follow-up logins"
    )
    parser.add_argument(
        "--sessionless-per-second",
        type=float,
        default=50,
        help="new connections a second, each a follow-up POST without a session",
    )
    parser.add_argument("--trickles", type=int, default=20, help="login bodies at 1.5 KiB/s")
    parser.add_argument(
        "--followup-logins",
        type=int,
        metavar="N",
        help="instead: measure N follow-up logins at the production argon2id cost",
    )
    args = parser.parse_args(argv)
    if args.followup_logins:
        return followup_logins(args.followup_logins, args.clients)

    runs = {"quiet": run_once(args, attack=False)}
    if args.attack:
        runs["under attack"] = run_once(args, attack=True)
    names = [name for name in runs["quiet"] if name != "ok"]
    width = max(len(name) for name in names)
    columns = list(runs)
    col = max(28, *(len(run[n]) for run in runs.values() for n in names))
    print("load test: nginx in front of gunicorn (2 workers), loopback, fresh server per run")
    print(f"  {'':<{width}}  " + "  ".join(f"{c:<{col}}" for c in columns))
    for name in names:
        print(f"  {name:<{width}}  " + "  ".join(f"{runs[c][name]:<{col}}" for c in columns))
    ok = all(run["ok"] == "yes" for run in runs.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
