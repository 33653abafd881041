"""Process hardening shared by the server's workers and its sealer processes."""

from __future__ import annotations

import ctypes
import resource

_PR_SET_DUMPABLE = 4


def forbid_core_dumps() -> None:
    """No core dumps: one of a worker would hold plaintext testimony from memory.

    RLIMIT_CORE stops ordinary dumps; clearing the "dumpable" flag also stops
    dumps piped to a crash collector and reading our memory by other
    processes of the same user. Workers inherit both across fork; a process
    started with exec (the sealer, `portal.server.sealer`) keeps the rlimit
    but gets the flag back, so it calls this itself.
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the rlimit is what there is
        pass
