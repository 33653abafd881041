"""What every `testimony-portal` command shares: the invocation it runs in.

`Context` holds the configuration (read once from the environment), the
environment itself and the two streams; a command prints only through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

from portal.server.config import Config

PROG = "testimony-portal"


@dataclass(frozen=True)
class Context:
    """One invocation: configuration, environment and streams."""

    config: Config
    env: Mapping[str, str]
    stdout: TextIO
    stderr: TextIO

    def out(self, message: str) -> None:
        """A line of the command's result, on standard output."""
        print(message, file=self.stdout, flush=True)

    def err(self, message: str) -> None:
        """Progress, warnings and errors, on standard error."""
        print(message, file=self.stderr, flush=True)
