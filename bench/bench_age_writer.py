"""Throughput of portal.core.age's Writer and Reader, next to raw ChaCha20-Poly1305 and the age CLI.

    python bench/bench_age_writer.py [--mib N] [--repeat R]

Prints MiB/s for each contender on the same random data, and its ratio to
raw ChaCha20-Poly1305 over 64 KiB chunks, which is the ceiling for any age
implementation built on `cryptography`. The age CLI reads and writes real
files in /tmp (output to /dev/null), so its figures include that I/O.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portal.core.age import Reader, Writer, X25519Identity  # noqa: E402

CHUNK = 64 * 1024
MIB = 1024 * 1024
RAW = "raw ChaCha20Poly1305, 64 KiB chunks"


def best_times(repeat: int, contenders: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best wall-clock time per contender, running them in turn `repeat` times.

    Interleaving the runs spreads any background load over all contenders,
    and the best run is the one least disturbed by it.
    """
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(repeat):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def print_table(title: str, size: int, times: dict[str, float]) -> None:
    raw = times[RAW]
    print(f"\n{title}")
    print(f"  {'contender':<40} {'MiB/s':>8} {'vs raw':>8}")
    for name, seconds in times.items():
        print(f"  {name:<40} {size / MIB / seconds:>8.0f} {raw / seconds:>8.2f}")


def raw_encrypt(data: memoryview) -> None:
    aead = ChaCha20Poly1305(os.urandom(32))
    for counter, pos in enumerate(range(0, len(data), CHUNK)):
        aead.encrypt(counter.to_bytes(11, "big") + b"\x00", data[pos : pos + CHUNK], None)


def raw_decrypt(sealed: list[bytes], key: bytes) -> None:
    aead = ChaCha20Poly1305(key)
    for counter, chunk in enumerate(sealed):
        aead.decrypt(counter.to_bytes(11, "big") + b"\x00", chunk, None)


def raw_decrypt_file(path: Path, key: bytes) -> None:
    # The I/O-inclusive ceiling: read the file in 1 MiB blocks, decrypt in place.
    aead = ChaCha20Poly1305(key)
    enc_chunk = CHUNK + 16
    block = memoryview(bytearray(16 * enc_chunk))
    counter = 0
    with path.open("rb") as source:
        while size := source.readinto(block):
            for pos in range(0, size, enc_chunk):
                nonce = counter.to_bytes(11, "big") + b"\x00"
                aead.decrypt(nonce, block[pos : min(pos + enc_chunk, size)], None)
                counter += 1


def writer_encrypt(data: memoryview, identity: X25519Identity, piece: int) -> None:
    with open(os.devnull, "wb") as sink, Writer(sink, [identity.recipient]) as writer:
        for pos in range(0, len(data), piece):
            writer.write(data[pos : pos + piece])


def reader_decrypt(path: Path, identity: X25519Identity) -> None:
    with path.open("rb") as source:
        for _ in Reader(source, [identity]).chunks():
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="data size in MiB (default 256)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per contender; best is kept")
    args = parser.parse_args(argv)

    size = args.mib * MIB
    data = memoryview(os.urandom(size))
    identity = X25519Identity.generate()
    age = shutil.which("age")

    with tempfile.TemporaryDirectory(prefix="bench-age-", dir="/tmp") as tmp:
        tmpdir = Path(tmp)
        plain = tmpdir / "data.bin"
        plain.write_bytes(data)
        sealed_path = tmpdir / "data.age"
        with sealed_path.open("wb") as out, Writer(out, [identity.recipient]) as writer:
            writer.write(data)
        keys = tmpdir / "identity.txt"
        keys.write_text(f"{identity}\n")
        key = os.urandom(32)
        aead = ChaCha20Poly1305(key)
        sealed = [
            aead.encrypt(n.to_bytes(11, "big") + b"\x00", data[pos : pos + CHUNK], None)
            for n, pos in enumerate(range(0, size, CHUNK))
        ]

        encrypt: dict[str, Callable[[], object]] = {
            RAW: lambda: raw_encrypt(data),
            "portal.core.age Writer, 64 KiB writes": lambda: writer_encrypt(data, identity, CHUNK),
            "portal.core.age Writer, 8 KiB writes": lambda: writer_encrypt(data, identity, 8192),
        }
        raw_path = tmpdir / "raw.bin"
        raw_path.write_bytes(b"".join(sealed))
        decrypt: dict[str, Callable[[], object]] = {
            RAW: lambda: raw_decrypt(sealed, key),
            "raw ChaCha20Poly1305, file in /tmp": lambda: raw_decrypt_file(raw_path, key),
            "portal.core.age Reader (file in /tmp)": lambda: reader_decrypt(sealed_path, identity),
        }
        if age:
            encrypt["age -e (CLI, file in /tmp)"] = functools.partial(
                subprocess.run,
                [age, "-e", "-r", str(identity.recipient), "-o", os.devnull, str(plain)],
                check=True,
            )
            decrypt["age -d (CLI, file in /tmp)"] = functools.partial(
                subprocess.run,
                [age, "-d", "-i", str(keys), "-o", os.devnull, str(sealed_path)],
                check=True,
            )

        print(f"age throughput on {args.mib} MiB of random data, best of {args.repeat} runs")
        if not age:
            print("(the age CLI is not installed: apt install age)")
        print_table("encrypt", size, best_times(args.repeat, encrypt))
        print_table("decrypt", size, best_times(args.repeat, decrypt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
