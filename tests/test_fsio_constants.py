"""One source for each constant: the documents quote the numbers the code uses."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path

import pytest

from portal.core import fsio, layout
from portal.server import export, mailbox, seal, store
from portal.server.config import Config

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
MIB = 1024 * 1024


def _text(path: Path) -> str:
    # Markdown wraps sentences anywhere: compare with all whitespace as one space.
    return re.sub(r"\s+", " ", path.read_text("utf-8"))


@pytest.mark.production_kdf  # tests/conftest.py lowers the cost for every other test
def test_receipt_kdf_cost_quoted_in_the_docs_is_the_code_default() -> None:
    cost = mailbox.DEFAULT_COST
    readme = _text(ROOT / "README.md")
    ops = re.search(r"\| `PORTAL_RECEIPT_KDF_OPS` \| `(\d+)` \|", readme)
    kib = re.search(r"\| `PORTAL_RECEIPT_KDF_MEMORY_KIB` \| `(\d+)` \| [^|]*\((\d+) MiB\)", readme)
    assert ops is not None and kib is not None
    assert int(ops.group(1)) == cost.opslimit
    assert int(kib.group(1)) * 1024 == cost.memlimit
    assert int(kib.group(2)) * MIB == cost.memlimit
    pairs = 0
    for path in DOCS:
        text = _text(path)
        for match in re.finditer(r"(\d+) MiB, (\d+) passes", text):
            if "first choice of cost" in text[max(0, match.start() - 40) : match.start()]:
                continue  # the history of the benchmark: the cost it once had
            pairs += 1
            where = f"{path.name}: {match.group(0)!r}"
            assert int(match.group(1)) * MIB == cost.memlimit, where
            assert int(match.group(2)) == cost.opslimit, where
    assert pairs >= 4  # README (3) and THREAT_MODEL.md quote it


@pytest.mark.production_kdf
def test_receipt_kdf_memory_bound_quoted_in_the_docs_adds_up() -> None:
    cost_mib = mailbox.DEFAULT_COST.memlimit // MIB
    concurrency = next(
        f.default for f in dataclasses.fields(Config) if f.name == "receipt_kdf_concurrency"
    )
    found = 0
    for path in DOCS:
        text = _text(path)
        for match in re.finditer(r"(\d+) workers x (\d+) x (\d+) MiB = (\d+) MiB", text):
            workers, per_worker, each, total = map(int, match.groups())
            assert each == cost_mib and per_worker == concurrency, path.name
            assert workers * per_worker * each == total, path.name
            found += 1
        for match in re.finditer(r"CONCURRENCY` x (\d+) MiB|workers x this x (\d+) MiB", text):
            assert int(match.group(1) or match.group(2)) == cost_mib, path.name
            found += 1
    assert found >= 3


def test_modes_and_folder_names_have_one_source() -> None:
    assert (fsio.FILE_MODE, fsio.DIR_MODE) == (0o600, 0o700)
    for module in (store, export, seal, mailbox):
        for name in ("FILE_MODE", "DIR_MODE"):
            value = getattr(module, name, None)
            assert value is None or value is getattr(fsio, name), (module.__name__, name)
    assert vars(export)["SUBMISSIONS_DIR"] is layout.SUBMISSIONS_DIR
    documented = _text(ROOT / "docs" / "FORMAT.md")
    names = (layout.STAGING_DIR, layout.SUBMISSIONS_DIR, layout.FILES_DIR, layout.MANIFEST_NAME)
    for name in names:
        assert name in documented, name


@pytest.mark.parametrize(
    "moment",
    [
        dt.datetime(2026, 11, 29, 0, 0, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 29, 23, 59, 59, 999999, tzinfo=dt.UTC),
        dt.datetime(2024, 2, 29, 12, 0, tzinfo=dt.UTC),
        dt.datetime(1999, 12, 31, 23, 0, tzinfo=dt.UTC),
    ],
)
def test_one_day_rounding(moment: dt.datetime) -> None:
    midnight = dt.datetime(moment.year, moment.month, moment.day, tzinfo=dt.UTC).timestamp()
    stamp = moment.timestamp()
    assert layout.day_timestamp(moment) == midnight
    assert layout.day_floor(stamp) == midnight
    assert layout.day_floor(stamp) == stamp - stamp % layout.SECONDS_PER_DAY
    assert layout.day_date(stamp) == moment.date().isoformat() == layout.received_date(moment)
    # A naive time is read as UTC, whatever the machine's time zone.
    assert layout.day_timestamp(moment.replace(tzinfo=None)) == midnight
