"""The online server: everything that runs on the machine witnesses reach.

It holds public keys only and stores ciphertext only. It imports the shared
core (`portal.core`) and never the reviewer (tests/test_layering.py).

- `cli/`: the `testimony-portal` command (serve, check, export, import-replies, seal)
- `config`: the `PORTAL_*` settings, read once into a frozen object
- `web/`: the Flask app: witness pages, forms, security headers, languages
- `intake`: one request's parts turned into an encrypted, committed submission
- `sealer`: the process per worker that hashes, encrypts and writes a large
  upload, outside the worker's interpreter lock
- `store`: staging, commit, list and purge on the data directory, and the
  `Archive` seam where submissions rest until export
- `archive`, `objectstore`: the two archives (the data directory; an
  S3-compatible bucket that several nodes share)
- `seal`: the daily rewrite that leaves no file time telling an order
- `export`: the verified copy to transfer media
- `mailbox`: replies for witnesses, stored by mailbox name
- `scheduler`: the seal and the housekeeping inside the running server
- `front`, `appserver`: nginx in front of gunicorn, as `serve` runs them
- `freespace`, `locks`: the free-disk floor and the locks all workers share
- `scratch`: the `/tmp` and `/dev/shm` mounts the server needs
"""
