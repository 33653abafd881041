"""Upload throughput and server memory against the stock `age -e`, in one run.

Starts the real portal (gunicorn, threaded workers) on loopback, uploads
files of 1 MiB, 100 MiB and 1 GiB streamed from disk by the client, and
samples the resident memory of the whole server process tree while each
upload is received. Beside it, `age -e` encrypts the same file.

    python bench/bench_upload.py [--sizes 1,100,1024]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portal.core.age import X25519Identity  # noqa: E402
from portal.testing.live import LiveServer, start_server  # noqa: E402

MIB = 1024 * 1024


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        stack.extend(int(c) for c in children)
    return total


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def time_age_encrypt(age: str, recipient: str, source: Path, output: str) -> tuple[float, int]:
    """Seconds and peak RSS (bytes) of `age -e` on the file, plus an fsync of its output.

    The portal must fsync before it says "received", so the fair baseline
    writes to the same file system and syncs too; `/dev/null` shows the
    cost of the cryptography alone.
    """
    start = time.perf_counter()
    proc = subprocess.Popen([age, "-e", "-r", recipient, "-o", output, str(source)])
    _pid, status, usage = os.wait4(proc.pid, 0)
    if output != os.devnull:
        fd = os.open(output, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"age -e failed with {proc.returncode}")
    if output != os.devnull:
        os.unlink(output)
    return elapsed, usage.ru_maxrss * 1024


def upload(server: LiveServer, source: Path) -> tuple[float, int, int]:
    """Seconds for the upload, idle and peak RSS of the server tree."""
    idle = tree_rss(server.process.pid)
    sampler = RssSampler(server.process.pid)
    client = server.client()
    token = client.csrf_token()  # fetched before the clock starts: only the upload is timed
    sampler.start()
    start = time.perf_counter()
    response = client.submit(
        "benchmark", files=[(source.name, source, "application/octet-stream")], token=token
    )
    elapsed = time.perf_counter() - start
    peak = sampler.stop()
    if response.status != 200:
        raise SystemExit(f"upload failed: HTTP {response.status}")
    return elapsed, idle, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,100,1024", help="sizes in MiB (default %(default)s)")
    args = parser.parse_args()
    age = shutil.which("age")
    if not age:
        raise SystemExit("the stock age CLI is needed: apt-get install age")
    identity = X25519Identity.generate()
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        root = Path(tmp)
        identity_file = root / "identity.txt"
        identity_file.write_text(f"{identity}\n")
        server = start_server(root / "server", str(identity.recipient), identity_file)
        rows = []
        try:
            for size_mib in (int(s) for s in args.sizes.split(",")):
                source = root / f"upload-{size_mib}MiB.bin"
                with source.open("wb") as f:
                    for _ in range(size_mib):
                        f.write(os.urandom(MIB))
                portal_s, idle, peak = upload(server, source)
                null_s, _ = time_age_encrypt(age, str(identity.recipient), source, os.devnull)
                disk_s, age_rss = time_age_encrypt(
                    age, str(identity.recipient), source, str(server.data_dir / "age-baseline.age")
                )
                rows.append((size_mib, portal_s, idle, peak, null_s, disk_s, age_rss))
                source.unlink()
                shutil.rmtree(server.data_dir / "submissions")
                (server.data_dir / "submissions").mkdir(mode=0o700)
        finally:
            server.stop()

    print()
    print("Upload through the portal (real gunicorn, loopback, client streams from disk)")
    print("vs `age -e` on the same file: to /dev/null, and to the same disk with fsync")
    header = (
        f"{'size':>9} | {'portal MiB/s':>12} | {'age>null':>9} | {'ratio':>5} | "
        f"{'age>disk':>9} | {'ratio':>5} | {'idle RSS':>9} | {'peak RSS':>9} | "
        f"{'peak-idle':>9} | {'age RSS':>8}"
    )
    print(header)
    print("-" * len(header))
    for size_mib, portal_s, idle, peak, null_s, disk_s, age_rss in rows:
        rate, null_rate, disk_rate = size_mib / portal_s, size_mib / null_s, size_mib / disk_s
        print(
            f"{size_mib:>5} MiB | {rate:>12.1f} | {null_rate:>9.1f} | {rate / null_rate:>5.2f} | "
            f"{disk_rate:>9.1f} | {rate / disk_rate:>5.2f} | {idle / MIB:>5.1f} MiB | "
            f"{peak / MIB:>5.1f} MiB | {(peak - idle) / MIB:>5.1f} MiB | {age_rss / MIB:>4.1f} MiB"
        )
    print("MiB/s columns: throughput; ratio = portal / age (goal >= 0.33, aim 0.5).")
    print("RSS: the whole gunicorn tree (master + workers), sampled every 20 ms; goal peak-idle")
    print("< 100 MiB. The portal's time includes fsync of every file and the atomic commit.")


if __name__ == "__main__":
    main()
