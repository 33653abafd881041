"""`testimony-portal health`: does the portal on this machine serve its front page? (HEALTHCHECK)

It asks `GET /` on the local port under the first name of
PORTAL_ALLOWED_HOSTS (the onion address), so it passes with the host
check on, as a witness's request would; under any other name the portal
answers 400 by design. It loads neither Flask nor the app: a check every
30 seconds must stay cheap.
"""

from __future__ import annotations

import argparse
import http.client

from portal.core.exitstatus import ExitStatus
from portal.server.cli.context import PROG, Context

TIMEOUT_SECONDS = 10.0


def run(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    """Exit 0 when `GET /` answers 200; otherwise one line saying what was seen, and 1."""
    hosts = ctx.config.allowed_hosts
    name = hosts[0].lstrip(".") if hosts else f"{args.host}:{args.port}"
    connection = http.client.HTTPConnection(args.host, args.port, timeout=TIMEOUT_SECONDS)
    try:
        connection.request("GET", "/", headers={"Host": name, "Connection": "close"})
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        print(f"{PROG}: health: no answer on {args.host}:{args.port} ({reason})", file=ctx.stderr)
        return ExitStatus.ERROR
    finally:
        connection.close()
    if status != 200:
        print(f"{PROG}: health: GET / as {name} answered {status}, not 200", file=ctx.stderr)
        return ExitStatus.ERROR
    return ExitStatus.OK
