"""Opening submissions: decrypt, check every hash, and write them out safely.

For each `submissions/<id>/` under the source, the submission is decrypted
and every file checked against its encrypted manifest (`decrypt`), then its
folder is completed with the page and the `opened.json` record (`folder`),
all in a private work folder that the run (`opener`) moves into place only
when the whole submission checked out. What the run did with each
submission is an `Outcome` (portal.review.outcomes).
"""

from portal.review.opening.folder import load_opened
from portal.review.opening.opener import Opener
from portal.review.outcomes import OpenReport, Outcome

__all__ = [
    "OpenReport",
    "Opener",
    "Outcome",
    "load_opened",
]
