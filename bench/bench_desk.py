"""The reviewer's desk at scale: index build time and search latency over generated Korean text.

    python bench/bench_desk.py [--count 10000] [--chars 3000] [--queries 200] [--dir DIR]

Writes `--count` opened submissions into a folder the way `testimony-review
open` leaves them (a `testimony.json` manifest and an `opened.json` record
holding its SHA-256), each with a testimony of about `--chars` Korean
characters drawn from a fixed vocabulary of syllables and words, then times

  * building the desk's search index from that folder from nothing
    (`SearchIndex.refresh()`: every record read, every manifest hashed
    against its record and parsed, every text indexed);
  * `--queries` searches and filtered lists, as the desk runs them for a
    page: one- and two-syllable Korean words, three-syllable words, a
    substring inside a longer word, a Latin word, each alone and with
    filters (status, language, consent, day, attachments), and filtered
    lists without a search. It prints the median, 95th percentile and
    worst time.

The aims of issue 23: build under 60 s, p95 under 200 ms, for 10,000
testimonies of about 3,000 characters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portal.core.layout import new_id  # noqa: E402
from portal.core.manifest import build_manifest  # noqa: E402
from portal.review.desk.search import Filters, SearchIndex  # noqa: E402
from portal.review.record import OpenedRecord, RecordedManifest  # noqa: E402

WORDS = [
    "회령",
    "고문",
    "보위부",
    "수용소",
    "국경",
    "탈북",
    "재판",
    "구류장",
    "교화소",
    "노동단련대",
    "보안서",
    "집결소",
    "강제송환",
    "처형",
    "공개처형",
    "감시",
    "조사",
    "심문",
    "구타",
    "굶주림",
    "어머니",
    "아버지",
    "동생",
    "마을",
    "함경북도",
    "양강도",
    "혜산",
    "무산",
    "온성",
    "청진",
    "평양",
    "군대",
    "장교",
    "병사",
    "명령",
    "상부",
    "보고",
    "기록",
    "문서",
    "증언",
    "증거",
    "피해자",
    "가해자",
    "사람들",
    "우리는",
    "그들은",
    "했습니다",
    "보았습니다",
    "들었습니다",
    "있었습니다",
    "없었습니다",
    "그리고",
    "그러나",
    "그때",
    "이후",
    "전에",
    "매일",
    "밤",
    "아침",
    "겨울",
    "여름",
    "1997년",
    "2003년",
    "2011년",
    "KPA",
    "6.25",
    "TV",
]


def korean_text(rng: random.Random, chars: int) -> str:
    syllables = [chr(0xAC00 + rng.randrange(11172)) for _ in range(400)]
    out: list[str] = []
    length = 0
    while length < chars:
        if rng.random() < 0.3:
            word = rng.choice(WORDS)
        else:
            word = "".join(rng.choice(syllables) for _ in range(rng.randint(1, 4)))
        out.append(word)
        length += len(word) + 1
        if rng.random() < 0.08:
            out[-1] += "."
    return " ".join(out)


def write_opened(root: Path, count: int, chars: int, seed: int) -> None:
    rng = random.Random(seed)
    for n in range(count):
        sid = new_id()
        folder = root / sid
        folder.mkdir()
        fields = {"testimony": korean_text(rng, chars)}
        if n % 3 == 0:
            fields["consent"] = rng.choice(["yes", "anonymous", "ask", "no"])
        manifest = build_manifest(sid, fields, rng.choice(["ko", "ko", "ko", "en", "zh"]), [])
        document = json.loads(manifest)
        document["received"] = f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}"
        data = json.dumps(document, ensure_ascii=False, indent=1).encode()
        (folder / "testimony.json").write_bytes(data)
        record = OpenedRecord(
            id=sid,
            opened="2026-12-01",
            received=document["received"],
            preview=fields["testimony"][:280],
            language=document["language"],
            thread=document.get("thread", ""),
            manifest=RecordedManifest("testimony.json", hashlib.sha256(data).hexdigest(), "0" * 64),
            attachments=(),
        )
        (folder / "opened.json").write_bytes(record.to_bytes())


def queries(rng: random.Random, count: int) -> list[Filters]:
    words = ["회령", "고문", "보위부", "수용소", "송환", "단련", "혜산", "령", "KPA", "kpa", "처형"]
    made = []
    for n in range(count):
        text = rng.choice(words)
        kind = n % 4
        if kind == 0:
            made.append(Filters(text=text))
        elif kind == 1:
            made.append(Filters(text=text, language="ko", consent=rng.choice(["yes", "no"])))
        elif kind == 2:
            made.append(Filters(status=rng.choice(["new", "verified"]), attachments="no"))
        else:
            made.append(
                Filters(text=f"{text} {rng.choice(words)}", day="2026-05-14", newest_first=False)
            )
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--chars", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-desk-", dir=args.dir))
    try:
        opened = work / "opened"
        opened.mkdir()
        started = time.monotonic()
        write_opened(opened, args.count, args.chars, seed=23)
        print(f"wrote {args.count} opened submissions in {time.monotonic() - started:.1f} s")
        started, cpu = time.monotonic(), time.process_time()
        index = SearchIndex(opened)
        result = index.refresh()
        build, cpu = time.monotonic() - started, time.process_time() - cpu
        size = index.path.stat().st_size
        print(
            f"index build: {build:.1f} s ({cpu:.1f} s of CPU) for {result.added} submissions "
            f"({size / 2**20:.0f} MiB); aim < 60 s; load average now {os.getloadavg()[0]:.1f}"
        )
        index.set_cases(
            {
                s: "verified"
                for s, _ in index._db.execute("SELECT submission, 1 FROM docs LIMIT 500")
            },
            {},
        )
        times, cpu_times = [], []
        for filters in queries(random.Random(5), args.queries):
            started, cpu = time.perf_counter(), time.process_time()
            found = index.search(filters)
            times.append((time.perf_counter() - started) * 1000)
            cpu_times.append((time.process_time() - cpu) * 1000)
            assert found.total >= 0
        cpu_times.sort()
        times.sort()
        p95 = times[int(len(times) * 0.95) - 1]
        print(
            f"search and filtered lists ({len(times)}): median {statistics.median(times):.1f} ms, "
            f"p95 {p95:.1f} ms, worst {times[-1]:.1f} ms; aim p95 < 200 ms "
            f"(CPU p95 {cpu_times[int(len(cpu_times) * 0.95) - 1]:.1f} ms)"
        )
        index.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
