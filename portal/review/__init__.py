"""The offline reviewer tool (`testimony-review`): keys, opening, custody, forwarding.

It runs on an air-gapped computer and imports only the age format and the
store layout from the rest of the package: never Flask, never the web layer.
"""
