"""The cost of post-quantum recipients: X25519 vs mlkem768x25519, side by side.

For one "submission" (a short testimony plus one attachment, encrypted the
way intake does it: one age file each), measures encrypt and decrypt time
with portal.core.age, the header bytes each recipient adds, and small-submission
throughput through the real server (gunicorn on loopback, started like
bench/load.py does). The stock `age` CLI gives the X25519 baseline on the
same data; Debian's age (1.1.1) has no post-quantum support, which the
output says instead of inventing a column.

    python bench/bench_pq.py [--rounds 200] [--submissions 300] [--clients 8]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portal.core.age import (  # noqa: E402
    MLKEM768X25519Identity,
    PrivateKey,
    X25519Identity,
    decrypt,
    encrypt,
)
from portal.testing.live import Client, start_server  # noqa: E402

TESTIMONY = ("평양 교화소에서 있었던 일을 증언합니다. " * 40).encode()  # ~2 KB, like a manifest
ATTACHMENT = os.urandom(256 * 1024)


def per_call_ms(fn: Callable[[], object], rounds: int) -> float:
    """Median milliseconds of `fn` over `rounds` calls (after one warm-up)."""
    fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def header_bytes_per_recipient(identities: Sequence[PrivateKey]) -> float:
    """Bytes each extra recipient adds to a file's header."""
    one = encrypt(b"", [identities[0].recipient])
    three = encrypt(b"", [i.recipient for i in identities[:3]])
    return (len(three) - len(one)) / 2


def submission_ms(identity: PrivateKey, rounds: int) -> tuple[float, float]:
    """Encrypt and decrypt milliseconds for one submission (testimony + attachment)."""
    recipients = [identity.recipient]
    sealed = [encrypt(TESTIMONY, recipients), encrypt(ATTACHMENT, recipients)]

    def seal() -> None:
        encrypt(TESTIMONY, recipients)
        encrypt(ATTACHMENT, recipients)

    def unseal() -> None:
        for data in sealed:
            decrypt(data, [identity])

    return per_call_ms(seal, rounds), per_call_ms(unseal, rounds)


def stock_age_ms(age: str, identity: X25519Identity, rounds: int, tmp: Path) -> tuple[float, float]:
    """Encrypt and decrypt milliseconds of `age` 1.1.1 (X25519) on the same submission."""
    key = tmp / "age-identity.txt"
    key.write_text(f"{identity}\n")
    plain = [tmp / "testimony.bin", tmp / "attachment.bin"]
    plain[0].write_bytes(TESTIMONY)
    plain[1].write_bytes(ATTACHMENT)
    sealed = [p.with_suffix(".age") for p in plain]
    recipient = str(identity.recipient)

    def seal() -> None:
        for source, target in zip(plain, sealed, strict=True):
            subprocess.run([age, "-e", "-r", recipient, "-o", target, source], check=True)

    def unseal() -> None:
        for source in sealed:
            subprocess.run([age, "-d", "-i", key, "-o", os.devnull, source], check=True)

    return per_call_ms(seal, rounds), per_call_ms(unseal, rounds)


def stock_age_header_bytes(age: str, tmp: Path) -> float:
    recipients = [str(X25519Identity.generate().recipient) for _ in range(3)]

    def size(rs: list[str]) -> int:
        args = [arg for r in rs for arg in ("-r", r)]
        result = subprocess.run([age, "-e", *args], input=b"", capture_output=True, check=True)
        return len(result.stdout)

    return (size(recipients) - size(recipients[:1])) / 2


def server_throughput(identity: PrivateKey, submissions: int, clients: int, tmp: Path) -> float:
    """Small submissions (text only) per second through the real server."""
    tmp.mkdir(parents=True, exist_ok=True)
    identity_file = tmp / "server-identity.txt"
    identity_file.write_text(f"{identity}\n")
    server = start_server(tmp / "server", str(identity.recipient), identity_file)
    jobs = list(range(submissions))
    lock = threading.Lock()
    failures: list[int] = []

    def witness() -> None:
        client = Client(server.url, timeout=300)
        while True:
            with lock:
                if not jobs:
                    return
                jobs.pop()
            response = client.submit("짧은 증언 — a short testimony for the benchmark", [], "ko")
            if response.status != 200:
                with lock:
                    failures.append(response.status)

    threads = [threading.Thread(target=witness) for _ in range(clients)]
    try:
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
    finally:
        server.stop()
        shutil.rmtree(tmp / "server", ignore_errors=True)
    if failures:
        raise SystemExit(f"{len(failures)} submissions failed: HTTP {sorted(set(failures))}")
    return submissions / elapsed


def age_version(age: str) -> str:
    result = subprocess.run([age, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.strip() or "unknown"


def age_has_pq(age: str) -> bool:
    """True if this age CLI knows the hybrid recipient type (age >= 1.3)."""
    identity = MLKEM768X25519Identity.generate()
    result = subprocess.run(
        [age, "-e", "-r", str(identity.recipient)], input=b"", capture_output=True, check=False
    )
    return result.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100, help="timed calls per figure")
    parser.add_argument("--submissions", type=int, default=300, help="per server run")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)

    kinds: dict[str, list[PrivateKey]] = {
        "X25519": [X25519Identity.generate() for _ in range(3)],
        "mlkem768x25519": [MLKEM768X25519Identity.generate() for _ in range(3)],
    }
    rows: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-pq-") as name:
        tmp = Path(name)
        for kind, identities in kinds.items():
            enc, dec = submission_ms(identities[0], args.rounds)
            rate = server_throughput(identities[0], args.submissions, args.clients, tmp / kind)
            rows[kind] = {
                "encrypt ms / submission": f"{enc:.2f}",
                "decrypt ms / submission": f"{dec:.2f}",
                "header bytes / recipient": f"{header_bytes_per_recipient(identities):.0f}",
                "server submissions/s": f"{rate:.1f}",
            }
        age = shutil.which("age")
        age_note = ""
        if age:
            classic = kinds["X25519"][0]
            assert isinstance(classic, X25519Identity)
            # A process per file: fewer rounds keep the run short.
            enc, dec = stock_age_ms(age, classic, max(5, args.rounds // 5), tmp)
            version = age_version(age)
            rows[f"age {version} X25519"] = {
                "encrypt ms / submission": f"{enc:.2f}",
                "decrypt ms / submission": f"{dec:.2f}",
                "header bytes / recipient": f"{stock_age_header_bytes(age, tmp):.0f}",
                "server submissions/s": "n/a",
            }
            if not age_has_pq(age):
                age_note = (
                    f"The stock age CLI here is {version}: it has no post-quantum "
                    "(mlkem768x25519) support, which needs age >= 1.3, so it has no column for it."
                )
        else:
            age_note = "The stock age CLI is not installed (apt-get install age): no baseline."

    metrics = list(next(iter(rows.values())))
    width = max(len(m) for m in metrics)
    columns = list(rows)
    col = max(max(len(c) for c in columns), 10)
    print()
    print(
        "One submission = a ~2 KB testimony + a 256 KiB attachment, one age file each, "
        "one recipient"
    )
    print(f"{'':<{width}} | " + " | ".join(f"{c:>{col}}" for c in columns))
    print("-" * (width + 3 + (col + 3) * len(columns)))
    for metric in metrics:
        print(f"{metric:<{width}} | " + " | ".join(f"{rows[c][metric]:>{col}}" for c in columns))
    print()
    print(
        "encrypt/decrypt: median of in-process calls (stock age: a process per file, so its "
        "figures include process start-up)."
    )
    print(
        f"server: {args.submissions} text-only submissions from {args.clients} clients through "
        "gunicorn on loopback, including fsync and commit; the key exchange is a small part "
        "of a submission's cost, so run-to-run noise can exceed the difference."
    )
    if age_note:
        print(re.sub(r"\s+", " ", age_note))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
