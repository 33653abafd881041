"""Each default has one source, the code; README.md's tables say the same values.

The configuration table is checked by value, not wording: setting a variable
to its documented default must give exactly the configuration that leaving
it unset gives. Every PORTAL_* variable the code reads is in the table, and
every variable in the table is one the code reads.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from portal.core import questionnaire
from portal.server import cli
from portal.server.cli import parser as cli_parser
from portal.server.config import Config
from portal.server.mailbox import configured_cost

README = Path(__file__).resolve().parent.parent / "README.md"
ROW = re.compile(r"^\| `(PORTAL_[A-Z0-9_]+)` \| ([^|]+?) \|")
# Defaults the table words instead of giving a value to set.
WORDED = {
    "(any)": ("allowed_hosts", ()),
    "(none)": ("onion_location", None),
    "off": ("tls", False),
    "(AWS S3)": ("s3_endpoint", None),
    "(none; needed with `s3`)": ("s3_bucket", None),
    "(sized from the receipt cost)": ("login_per_minute", None),
    "(twice the logins per second, at least 5)": ("login_burst", None),
    "(no onion port)": ("onion_port", None),
    "the shipped `portal/core/questionnaires/default.toml`": ("questionnaire_file", None),
}


def _section(title: str) -> str:
    text = README.read_text("utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def documented_defaults() -> dict[str, str]:
    rows = (ROW.match(line) for line in _section("Configuration").splitlines())
    return {row[1]: row[2].strip() for row in rows if row}


def effective(config: Config) -> dict[str, Any]:
    """The settings as the portal uses them (the receipt cost resolved), without the secret."""
    values = dataclasses.asdict(config)
    del values["secret_key"]
    cost = configured_cost(values.pop("receipt_kdf_ops"), values.pop("receipt_kdf_memory_kib"))
    values["receipt_kdf_cost"] = cost
    return values


class RecordingEnv(Mapping[str, str]):
    """An environment that notes every name the code looks up."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        self.asked.add(str(name))
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_the_readme_documents_every_variable_the_code_reads_and_no_other(tmp_path: Path) -> None:
    env = RecordingEnv()
    Config.from_env(env)
    # `check` reads the environment besides the configuration (PORTAL_SECRET_KEY).
    cli.main(["check"], env=env, stdout=io.StringIO(), stderr=io.StringIO())
    read = {name for name in env.asked if name.startswith("PORTAL_")}
    assert read == set(documented_defaults())


# The real receipt cost: the autouse fixture would lower the code's default.
@pytest.mark.production_kdf
@pytest.mark.parametrize("name", sorted(documented_defaults()))
def test_each_documented_default_is_the_codes_default(name: str) -> None:
    documented = documented_defaults()[name]
    default = effective(Config.from_env({}))
    if documented in WORDED:
        field, value = WORDED[documented]
        assert default[field] == value
        if field == "questionnaire_file":
            assert questionnaire.DEFAULT_QUESTIONNAIRE.as_posix().endswith(documented.split("`")[1])
        return
    if documented == "random at each start":
        assert name == "PORTAL_SECRET_KEY"
        first, second = Config.from_env({}).secret_key, Config.from_env({}).secret_key
        assert len(first) == 32 and first != second
        return
    assert re.fullmatch(r"`[^`]+`", documented), f"{name}: give the default as a `value`"
    setting = documented.strip("`")
    assert effective(Config.from_env({name: setting})) == default, (
        f"README.md gives {name} the default {documented}, but the code's default differs"
    )


def test_the_documented_serve_flags_are_the_commands_defaults() -> None:
    block = _section("Commands")
    serve = block[block.index("testimony-portal serve") :]
    serve = serve[: serve.index("\ntestimony-portal check")]
    documented = dict(re.findall(r"\[--([a-z-]+) ([^\]\s]+)\]", serve))
    assert set(documented) == {
        "host",
        "port",
        "header-timeout",
        "body-timeout",
        "workers",
        "threads",
    }
    defaults = vars(cli_parser.build_parser().parse_args(["serve"]))
    for flag, text in documented.items():
        default = defaults[flag.replace("-", "_")]
        assert default == type(default)(text), flag
