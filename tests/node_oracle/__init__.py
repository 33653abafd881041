"""Drive the npm `age-encryption` package (the age authors' TypeScript age) from tests.

It is an independent implementation of the hybrid post-quantum recipient
type, which neither Debian's age 1.1.1 nor pyrage offers. `make test` installs
it with `npm ci` (see the Makefile); with CI set a missing oracle fails the
tests that need it, elsewhere they skip and say how to install it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import require_tool, unavailable

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "oracle.mjs"
INSTALL_HINT = (
    "run `make test` (it runs `npm ci --prefix tests/node_oracle`; needs Debian's nodejs "
    "and npm: `apt install nodejs npm`)"
)
# Generous, only to stop a hang: a few MB through the oracle takes seconds.
TIMEOUT = 300


def require() -> None:
    """Fail in CI, skip elsewhere, when the oracle is not installed (tests/support.py)."""
    require_tool("node", INSTALL_HINT)
    if not (HERE / "node_modules" / "age-encryption" / "package.json").is_file():
        unavailable(f"the npm package age-encryption is not installed; {INSTALL_HINT}")


class OracleError(Exception):
    """The oracle refused the input; the message is its error line."""


def run(*args: str, data: bytes = b"") -> bytes:
    """Run one oracle command with `data` on stdin; return its stdout."""
    require()
    result = subprocess.run(
        ["node", str(SCRIPT), *args],
        input=data,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise OracleError(result.stderr.decode("utf-8", "replace").strip())
    return result.stdout


def keygen(*, classic: bool = False) -> tuple[str, str]:
    """A fresh (identity, recipient) pair made by the oracle."""
    identity, recipient = run("keygen", *(["--classic"] if classic else [])).decode().split()
    return identity, recipient


def recipient_of(identity: str) -> str:
    return run("recipient", identity).decode().strip()


def encrypt(data: bytes, *recipients: str) -> bytes:
    return run("encrypt", *recipients, data=data)


def decrypt(data: bytes, *identities: str) -> bytes:
    return run("decrypt", *identities, data=data)
