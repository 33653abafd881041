"""What both machines share: the formats and the helpers under them.

The online server (`portal.server`) and the air-gapped reviewer
(`portal.review`) both import from here; nothing here imports either of
them, or any web framework (tests/test_layering.py).

- `age/`: the age v1 format (one public surface in `portal.core.age`)
- `layout`: the store's folders, ids, attachment paths and day rounding
- `manifest`: the sealed submission manifest, written and parsed
- `questionnaire`: the TOML questionnaire and its sealed form
- `receipt`, `replykey`, `conversation`: the witness's receipt, the key derived
  from it, mailbox and thread names
- `replysig`, `xeddsa`: the organisation's signature on a reply; a witness's
  proof that a follow-up belongs to their conversation
- `fsio`: create, write, fsync and replace files, one policy for every disk
- `exitstatus`, `cliutil`: what both command lines share
"""
