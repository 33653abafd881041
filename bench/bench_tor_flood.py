"""What a flood of the onion service does to a witness, on a private Tor network.

Starts the private Tor network of the tests (`portal.testing.tornet`) with
docs/DEPLOYMENT.md's torrc and the portal behind it, and a second client
tor, the flooder: it opens each request on a new circuit (new SOCKS
credentials), so each one costs the service an introduction and a
rendezvous. It does not follow the service's call for proof of work: it
is never restarted, so it keeps the descriptor it cached before the flood,
which asks for no effort (tor itself adds a puzzle when it retries a failed
introduction; the efforts queued are printed). The witness is the other
client tor. It measures, for a witness on a new
circuit each time: opening the Korean form and submitting it, while quiet,
during the flood before the service asks for proof of work, and during the
flood after, once the witness's tor has the new descriptor (Tor Browser
solves the puzzle by itself, as tor does).

tor raises the suggested effort only at its periodic update (every 300 s,
not configurable) and only when its rendezvous queue is not empty then, so
by default the queue is made small (`--pow-rate 1 --pow-burst 1`) to make
the defence act within one run; `--pow-rate 25 --pow-burst 250` measures
the documented values. Takes 7-10 minutes.

    python bench/bench_tor_flood.py [--flood 24] [--pow-rate 1] [--pow-burst 1]
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portal.core.age import X25519Identity  # noqa: E402
from portal.testing.live import RECEIVED_MARKERS, start_server  # noqa: E402
from portal.testing.tornet import SocksClient, TorNetwork, first_page  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Ports 27650-27689: apart from the tests' network (27500-27539).
BASE_PORT = 27650
HS_UPDATE_PERIOD = 300


def documented_torrc(rate: int, burst: int) -> str:
    text = (REPO / "docs" / "DEPLOYMENT.md").read_text("utf-8")
    start = text.index("`/etc/tor/torrc`:\n\n```\n") + len("`/etc/tor/torrc`:\n\n```\n")
    torrc = text[start : text.index("```", start)]
    torrc = re.sub(
        r"^HiddenServicePoWQueueRate \d+$", f"HiddenServicePoWQueueRate {rate}", torrc, flags=re.M
    )
    return re.sub(
        r"^HiddenServicePoWQueueBurst \d+$",
        f"HiddenServicePoWQueueBurst {burst}",
        torrc,
        flags=re.M,
    )


def suggested_effort(net: TorNetwork) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{net.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    match = re.search(r"^tor_hs_pow_suggested_effort\S* (\S+)$", text, re.M)
    return float(match[1]) if match else None


def witness(net: TorNetwork, timeout: float = 120) -> dict[str, object]:
    """A witness on a new circuit: open the Korean form, submit it; the times and the outcome."""
    client = SocksClient(
        f"http://{net.hostname}", net.socks_port, f"w-{secrets.token_hex(6)}", timeout
    )
    started = time.monotonic()
    try:
        form = client.get("/ko/submit")
        form_s = time.monotonic() - started
        if form.status != 200:
            return {"ok": False, "form_s": form_s, "error": f"form {form.status}"}
        response = client.submit(
            "홍수 중의 증언입니다. (bench)", [("메모.txt", b"note", "text/plain")], "ko"
        )
    except OSError as exc:
        return {
            "ok": False,
            "form_s": None,
            "error": str(exc)[:80],
            "total_s": time.monotonic() - started,
        }
    ok = response.status == 200 and any(m in response.body for m in RECEIVED_MARKERS)
    return {"ok": ok, "form_s": round(form_s, 2), "total_s": round(time.monotonic() - started, 2)}


class Flood:
    """`loops` threads, each request on a new circuit of the flooder tor, none solving puzzles."""

    def __init__(self, net: TorNetwork, loops: int) -> None:
        self.net, self.loops = net, loops
        self.stop = threading.Event()
        self.sent = self.answered = 0
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._loop, args=(k,), daemon=True) for k in range(loops)
        ]

    def _loop(self, k: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            client = SocksClient(
                f"http://{self.net.hostname}", self.net.flooder_socks_port, f"f{k}-{i}", 10
            )
            try:
                status = client.get("/").status
            except OSError:
                status = 0
            with self.lock:
                self.sent += 1
                self.answered += status == 200

    def __enter__(self) -> Flood:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def efforts(net: TorNetwork, since: int = 0) -> dict[str, int]:
    found = [
        m[1]
        for m in (
            re.search(r"effort: (\d+)", line)
            for line in net.log_lines("Enqueued rendezvous request with effort")
        )
        if m
    ]
    counts: dict[str, int] = {}
    for value in found[since:]:
        counts[value] = counts.get(value, 0) + 1
    return counts


def summary(samples: list[dict[str, object]]) -> str:
    ok = [s for s in samples if s["ok"]]
    times = [float(s["total_s"]) for s in ok]  # type: ignore[arg-type]
    median = (
        f"median {statistics.median(times):.1f} s, max {max(times):.1f} s"
        if times
        else "no success"
    )
    return f"{len(ok)}/{len(samples)} stored, {median}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=24, help="parallel flooding loops")
    parser.add_argument("--pow-rate", type=int, default=1)
    parser.add_argument("--pow-burst", type=int, default=1)
    parser.add_argument(
        "--limit",
        type=int,
        default=600,
        help="stop the flood this many seconds after the service started",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-tor-flood-"))
    identity = X25519Identity.generate()
    (root / "identity.txt").write_text(f"{identity}\n")
    net = TorNetwork(
        root / "tor",
        BASE_PORT,
        documented_torrc(args.pow_rate, args.pow_burst),
        BASE_PORT + 31,
        flooder=True,
    )
    result: dict[str, object] = {
        "flood_loops": args.flood,
        "pow_rate": args.pow_rate,
        "pow_burst": args.pow_burst,
    }
    server = None
    try:
        net.start()
        server = start_server(
            root / "portal",
            str(identity.recipient),
            root / "identity.txt",
            front=True,
            port=BASE_PORT + 30,
            env={
                "PORTAL_ONION_PORT": str(BASE_PORT + 31),
                "PORTAL_ALLOWED_HOSTS": f"{net.hostname},127.0.0.1",
            },
        )
        result["bootstrap_s"] = round(net.wait_bootstrapped(), 1)
        _, seconds = first_page(net.client("warm-up"), "/ko/")
        result["first_page_s"] = round(result["bootstrap_s"] + seconds, 1)  # type: ignore[operator]
        first_page(SocksClient(f"http://{net.hostname}", net.flooder_socks_port, "warm-up"))
        print(
            f"bootstrapped after {result['bootstrap_s']} s, "
            f"first page after {result['first_page_s']} s"
        )
        quiet = [witness(net) for _ in range(3)]
        result["quiet"] = quiet
        print(f"quiet: {summary(quiet)}")
        service_started = net.started_at  # close enough: the service starts ~30 s later
        during: list[dict[str, object]] = []
        after: list[dict[str, object]] = []
        with Flood(net, args.flood) as flood:
            flood_started = time.monotonic()
            effort = 0.0
            while time.monotonic() - service_started < args.limit - 150:
                during.append(witness(net, timeout=60))
                effort = suggested_effort(net) or 0.0
                print(
                    f"[{time.monotonic() - flood_started:4.0f} s into the flood] "
                    f"witness {during[-1]}, suggested effort {effort}"
                )
                if effort > 0:
                    break
                time.sleep(10)
            result["flood_requests_per_s"] = round(
                flood.sent / (time.monotonic() - flood_started), 1
            )
            result["flood_answered_share"] = round(flood.answered / max(1, flood.sent), 3)
            result["suggested_effort"] = effort
            if effort > 0:
                time.sleep(15)  # the service publishes the descriptor with the new effort
                net.restart_client()
                before = sum(efforts(net).values())
                for _ in range(3):
                    after.append(witness(net, timeout=120))
                    print(
                        f"[{time.monotonic() - flood_started:4.0f} s] "
                        f"witness with the new descriptor: {after[-1]}"
                    )
                result["witness_efforts"] = efforts(net, before)
        result["during"], result["after"] = during, after
        result["efforts"] = efforts(net)
        print(f"during the flood, before proof of work: {summary(during)}")
        if after:
            print(f"during the flood, the witness solving the puzzle: {summary(after)}")
        print(
            f"flood: {result['flood_requests_per_s']} requests/s, "
            f"{result['flood_answered_share']:.0%} answered"
        )
        print(f"efforts of all rendezvous requests queued: {result['efforts']}")
    finally:
        if server is not None:
            server.stop()
        net.stop()
    out = root / "result.json"
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(f"result in {out} (logs in {root})")


if __name__ == "__main__":
    main()
