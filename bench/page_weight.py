"""Print what each witness page weighs: its HTML plus its CSS, in every language.

Witnesses are often on a phone over a slow Tor link, so every page with its
stylesheet must stay under 30 KB (issue 5). Run from the repository root:

    .venv/bin/python bench/page_weight.py

It builds the app on a throwaway data directory and key, renders each page
through Flask's test client (`portal.testing.pages`), and exits 1 if any page
is over the budget.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from flask import Flask

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portal.testing.pages import BUDGET_BYTES, format_table, page_weights  # noqa: E402


def _demo_app(root: Path) -> Flask:
    from portal.core.age import X25519Identity
    from portal.server.config import Config
    from portal.server.web import create_app

    keys = root / "keys"
    keys.mkdir()
    (keys / "recipients.txt").write_text(f"{X25519Identity.generate().recipient}\n")
    config = Config(
        data_dir=root / "data",
        recipients_file=keys / "recipients.txt",
        secret_key=b"page weight measurement only",
        min_free_mb=0,
    )
    return create_app(config)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        rows = page_weights(_demo_app(Path(tmp)))
    print(format_table(rows))
    return 0 if all(row.total <= BUDGET_BYTES for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
