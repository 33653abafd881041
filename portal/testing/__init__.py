"""Helpers that tests and benchmarks share, like `flask.testing` (nothing here runs in production).

- `portal.testing.live`: start a real portal on loopback (`start_server`), a
  small HTTP client for it (`Client`, `MultipartBody`), form helpers
  (`hidden_fields`, `form_fields`, `post_form`, for this client and for
  Flask's test client) and `open_submission`, which decrypts and checks what
  the portal stored.
- `portal.testing.hostile`: a swarm of silent and dribbling connections.
- `portal.testing.pages`: what each witness page weighs, in every language.
"""
