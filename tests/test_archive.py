"""The archive seam's settings: PORTAL_STORE and its companions, the hourly seal, the rate share.

What the bucket itself does is proved against a real SeaweedFS in
test_objectstore.py and test_multinode.py.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest

from portal.server.archive import LocalArchive, open_archive
from portal.server.cli import main as portal_cli
from portal.server.config import Config, ConfigError
from portal.server.scheduler import first_due, next_seal
from portal.server.store import FormClaim, SubmissionStore
from portal.server.web.extensions import node_share


def test_the_default_store_is_the_data_directory_and_needs_nothing_more(tmp_path: Path) -> None:
    config = Config.from_env({"PORTAL_DATA_DIR": str(tmp_path)})
    assert config.store == "local"
    archive = open_archive(config)
    assert isinstance(archive, LocalArchive) and archive.root == tmp_path
    assert archive.verify() == []
    # One node: its in-memory ledger decides; the archive claims nothing.
    assert archive.claim_form("any") is FormClaim.CLAIMED


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"PORTAL_STORE": "ftp"}, "PORTAL_STORE='ftp' is not one of local, s3"),
        ({"PORTAL_STORE": "s3"}, "PORTAL_SECRET_KEY"),
        ({"PORTAL_S3_PREFIX": "a/../b"}, "PORTAL_S3_PREFIX"),
        ({"PORTAL_S3_PREFIX": "a b"}, "PORTAL_S3_PREFIX"),
        ({"PORTAL_NODES": "0"}, "PORTAL_NODES"),
        ({"PORTAL_SEAL_TIME": "weekly"}, "hourly"),
    ],
)
def test_bad_store_settings_are_one_line(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        Config.from_env(env)
    err = io.StringIO()
    assert portal_cli(["check"], env=env, stdout=io.StringIO(), stderr=err) != 0
    assert len(err.getvalue().splitlines()) == 1 and "Traceback" not in err.getvalue()


def test_s3_without_a_bucket_is_refused_before_anything_is_reached(tmp_path: Path) -> None:
    config = Config.from_env(
        {"PORTAL_STORE": "s3", "PORTAL_SECRET_KEY": "k" * 32, "PORTAL_DATA_DIR": str(tmp_path)}
    )
    with pytest.raises(ConfigError, match="PORTAL_S3_BUCKET"):
        open_archive(config, SubmissionStore(tmp_path))


def test_the_prefix_loses_its_outer_slashes() -> None:
    assert Config.from_env({"PORTAL_S3_PREFIX": "/org/portal/"}).s3_prefix == "org/portal"


def test_hourly_seals_every_hour_and_soon_after_a_missed_one() -> None:
    config = Config.from_env({"PORTAL_SEAL_TIME": "hourly"})
    assert config.seal_hourly and config.seal_time == (0, 0)
    at = dt.datetime(2026, 11, 28, 13, 20, tzinfo=dt.UTC)
    assert next_seal(at, (0, 0), hourly=True) == dt.datetime(2026, 11, 28, 14, 0, tzinfo=dt.UTC)
    on_the_hour = dt.datetime(2026, 11, 28, 14, 0, tzinfo=dt.UTC)
    assert next_seal(on_the_hour, (0, 0), hourly=True) == on_the_hour + dt.timedelta(hours=1)
    last = at - dt.timedelta(hours=2)
    assert first_due(at, last, (0, 0), hourly=True) == at
    # Daily stays daily.
    assert not Config.from_env({}).seal_hourly
    assert next_seal(at, (4, 0)) == dt.datetime(2026, 11, 29, 4, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("rate", "burst", "nodes", "share"),
    [(60, 30, 1, (60.0, 30)), (60, 30, 3, (20.0, 10)), (60, 2, 4, (15.0, 1))],
)
def test_each_node_takes_its_share_of_the_rate_budget(
    rate: int, burst: int, nodes: int, share: tuple[float, int]
) -> None:
    assert node_share(rate, burst, nodes) == share
    together_rate, together_burst = share[0] * nodes, share[1] * nodes
    assert together_rate == rate and together_burst <= max(burst, nodes)
