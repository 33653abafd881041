"""`testimony-review open` against the stock `age -d` on the same ciphertext.

    python bench/bench_open.py [--gib 1] [--files 16] [--repeat 2] [--dir DIR]
    python bench/bench_open.py --small 1000,10000 [--dir DIR]

Stores `--gib` GiB of random attachments as real submissions (encrypted
through portal.server.intake, as the server would), then times

  * `testimony-review open DATA --out OUT` in a subprocess: decrypts every
    file, writes it out, hashes ciphertext and plaintext, checks each
    SHA-256 against the manifest, writes index.html and the custody log;
  * `age -d -i KEY -o OUT FILE` once per ciphertext file, in sequence: only
    decryption and writing, no checks; and the same followed by `sync`,
    because `open` fsyncs what it writes and plain `age -d` does not.

Both read the same files from the same file system (warm page cache after
the first pass) and write to it. The best of `--repeat` runs is reported,
with the ratio open / age (aim: 1.0 or below). `--dir /dev/shm` keeps it
all in memory, which compares the CPU work alone (fsync costs nothing there).

`--small N,M,...` measures the other end instead: N tiny submissions (a
short testimony and one 1 KiB attachment each, written with the project's
own age writer and manifest builder, straight into a submissions/ folder)
opened by one `testimony-review open` run, and prints the time per
submission for each N. With the custody log verified once per run and
appended in constant time, the time per submission should stay flat from
1,000 to 10,000 (it grew with the log before: 2,000 took 3.1 times as long
as 1,000). It runs in --dir, by default /dev/shm where there is one, so
that the disk's fsync latency does not drown what is measured.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portal.core.age import X25519Identity, encrypt  # noqa: E402
from portal.core.layout import new_id
from portal.core.manifest import Attachment, build_manifest  # noqa: E402
from portal.server.intake import store_submission  # noqa: E402
from portal.server.store import SubmissionStore, submission_files  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30


class RandomStream:
    """`size` bytes of random data, read in chunks (never all in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int) -> bytes:
        n = min(n, self.left)
        self.left -= n
        return os.urandom(n)


def make_data(root: Path, identity: X25519Identity, total: int, files: int) -> SubmissionStore:
    store = SubmissionStore(root)
    store.initialise()
    per_file = total // files
    per_submission = 4
    for first in range(0, files, per_submission):
        count = min(per_submission, files - first)
        attachments = [
            (f"video-{first + i}.mp4", "video/mp4", RandomStream(per_file)) for i in range(count)
        ]
        store_submission(
            store, [identity.recipient], {"testimony": "benchmark"}, attachments, "en",
            chunk_size=MIB,
        )  # fmt: skip
    return store


def make_small(root: Path, identity: X25519Identity, count: int) -> None:
    """`count` tiny submissions, encrypted with our writer, without the store's fsyncs."""
    submissions = root / "submissions"
    submissions.mkdir(parents=True)
    recipients = [identity.recipient]
    content = os.urandom(1024)
    digest = hashlib.sha256(content).hexdigest()
    for number in range(count):
        sid = new_id()
        folder = submissions / sid
        (folder / "files").mkdir(parents=True)
        (folder / "files" / "1.age").write_bytes(encrypt(content, recipients))
        attachment = Attachment("files/1.age", "photo.jpg", "image/jpeg", len(content), digest)
        manifest = build_manifest(sid, {"testimony": f"testimony {number}"}, "en", [attachment])
        (folder / "testimony.age").write_bytes(encrypt(manifest, recipients))


def bench_small(counts: list[int], where: Path | None) -> None:
    if where is None and Path("/dev/shm").is_dir():
        where = Path("/dev/shm")
    print(f"  {'submissions':>11} {'seconds':>8} {'ms per submission':>18}")
    for count in counts:
        with tempfile.TemporaryDirectory(dir=where, prefix="bench-open-small-") as tmp:
            work = Path(tmp)
            identity = X25519Identity.generate()
            key = work / "identity.txt"
            key.write_text(f"{identity}\n")
            make_small(work / "data", identity, count)
            wall, _cpu = time_open(work / "data", key, work)
            print(f"  {count:>11} {wall:>8.2f} {wall / count * 1000:>18.2f}", flush=True)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_open(data: Path, key: Path, work: Path) -> tuple[float, float]:
    out = work / "opened"
    shutil.rmtree(out, ignore_errors=True)
    custody = work / "custody.jsonl"
    custody.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "portal.review.cli", "open", str(data), "--identity", str(key),
        "--out", str(out), "--custody", str(custody), "--reviewer", "bench", "--quiet",
    ]  # fmt: skip
    cpu, start = children_cpu(), time.perf_counter()
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, children_cpu() - cpu


def time_age(store: SubmissionStore, key: Path, work: Path, *, sync: bool) -> tuple[float, float]:
    out = work / "age-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    files = [f for sid in store.ids() for f in submission_files(store.path(sid))]
    cpu, start = children_cpu(), time.perf_counter()
    for number, path in enumerate(files):
        target = out / f"{number}.out"
        subprocess.run(["age", "-d", "-i", str(key), "-o", str(target), str(path)], check=True)
    if sync:
        # `open` fsyncs every file it writes; this makes age's output as durable.
        os.sync()
    return time.perf_counter() - start, children_cpu() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="GiB of attachments (default 1)")
    parser.add_argument("--files", type=int, default=16, help="number of attachments")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the data")
    parser.add_argument(
        "--small",
        metavar="N,M",
        help="instead: time per submission opening N (then M, ...) tiny submissions",
    )
    args = parser.parse_args()
    if args.small:
        bench_small([int(n) for n in args.small.split(",")], args.dir)
        return 0
    if shutil.which("age") is None:
        print("the age CLI is not installed (apt-get install age)", file=sys.stderr)
        return 1
    total = int(args.gib * GIB)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-open-") as tmp:
        work = Path(tmp)
        identity = X25519Identity.generate()
        key = work / "identity.txt"
        key.write_text(f"{identity}\n")
        started = time.perf_counter()
        store = make_data(work / "data", identity, total, args.files)
        print(
            f"stored {total / MIB:.0f} MiB in {args.files} attachments "
            f"({time.perf_counter() - started:.1f} s to encrypt)"
        )
        runs = {
            "age -d (stock CLI, one run per file)": lambda: time_age(store, key, work, sync=False),
            "age -d, then sync (durable output)": lambda: time_age(store, key, work, sync=True),
            "testimony-review open (verified, fsynced)": lambda: time_open(
                work / "data", key, work
            ),
        }
        best = dict.fromkeys(runs, (float("inf"), float("inf")))
        for _ in range(args.repeat):
            for name, run in runs.items():
                os.sync()
                wall, cpu = run()
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
        open_wall, open_cpu = best["testimony-review open (verified, fsynced)"]
        print(f"\n  {'contender':<42} {'seconds':>8} {'MiB/s':>6} {'CPU s':>6} {'open/this':>10}")
        for name, (wall, cpu) in best.items():
            mib_s = total / MIB / wall
            print(f"  {name:<42} {wall:>8.2f} {mib_s:>6.0f} {cpu:>6.2f} {open_wall / wall:>10.2f}")
        age_wall, age_cpu = best["age -d (stock CLI, one run per file)"]
        print(
            f"\n  ratio open / age -d: {open_wall / age_wall:.2f} wall clock, "
            f"{open_cpu / age_cpu:.2f} CPU time (aim: <= 1.00 wall clock)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
