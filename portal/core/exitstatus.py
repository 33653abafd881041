"""The exit statuses of both commands, `testimony-portal` and `testimony-review`.

One enum, so that a script driving either command reads the same number the
same way. The README's "Exit statuses" table lists them.
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    OK = 0
    # A problem the user can fix; the one-line message says what and how.
    ERROR = 1
    # The command line itself is wrong (argparse's convention).
    USAGE = 2
    # Something failed an integrity check: a tampered or damaged submission,
    # or a broken custody log.
    INTEGRITY = 3
    # A bug: an exception nobody anticipated (EX_SOFTWARE from sysexits.h).
    BUG = 70
    # Interrupted with Ctrl-C (128 + SIGINT).
    INTERRUPTED = 130
