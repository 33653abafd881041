"""The offline reviewer tool (`testimony-review`): keys, opening, custody, forwarding.

It runs on an air-gapped computer and imports only the age format, the store
layout, the submission manifest (`portal.core.manifest`) and the conversation
names from the rest of the package: never Flask, never the web layer.

- `cli/`: the command line (the only place that prints or picks exit statuses)
- `discovery`: where the submissions under SRC are, and what each one holds
- `opening/`: the parallel decryptor that opens them into DIR (`decrypt`: every file
  checked against the manifest; `folder`: the page and `opened.json`; `opener`: the run)
- `record`: `opened.json` and the sent-reply copies, typed
- `recheck`: an opened submission hashed again against its record
- `outcomes`: what a run did with each submission, and each kind of failure
- `custody`: the hash-chained custody log and its typed entries
- `report`, `inert`, `safenames`: the offline pages, which files they link, safe names
- `sealed`: what forward, table, reply and verify decide on, held to the first
  `open` entry of the custody log
- `forward`, `cleaning`, `consent`, `table`, `reply`: what leaves DIR, and under
  which rules
- `keys`, `shares`: identity files and their paper backups
- `desk/`: the reviewers' desk, a loopback web app over an opened folder (search, case work)
"""
