"""Answers that depend on nothing but their address: made once, then replayed.

The landing page is the same for every visitor. Its body is drawn once per
language (`pages.render_once`); its headers are fixed at start-up but for
the path (Onion-Location). Still, every request for it went through all of
Flask: a request context, the session, the CSRF and host hooks, a response
object and its headers. Under load that was half of the server's CPU for
a GET /: 0.41-0.52 ms a request, against 0.19-0.27 ms with the answer kept
(the two alternated; docs/BENCHMARKS.md, "Round 5").

`KeptResponses`, the outermost WSGI middleware, keeps the first such answer
(status, headers, body) under everything of the request it can depend on
(`_KEY_FIELDS`: the path, the script root and the fields Werkzeug names
the host from), and answers the same request with the same bytes without
calling the app. Only a view that says so (`keep_response`) is kept, only
a 200 that sets no cookie and varies on nothing, and only for a plain GET:
no query string, no cookie, no body. Anything else, and every request for
another key, goes through the app as before, host check first: a host the
app refused never made an answer, so it finds none to replay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, request

from portal.server.web.body_guard import has_body

# Set in the environ by a view whose answer may be kept (`keep_response`).
KEEP_KEY = "portal.keep_response"
# Everything of a plain GET that a kept answer may depend on. The request
# reaches the app only through these (the rest of a plain GET is headers the
# portal never reads for such a page: Accept-Language included, since the
# language is in the path).
_KEY_FIELDS = ("PATH_INFO", "SCRIPT_NAME", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT",
               "wsgi.url_scheme")  # fmt: skip
# A few pages in a few languages under one or two host names; past the cap
# (a flood of made-up Host headers where any host is allowed), new keys are
# answered by the app every time.
MAX_KEPT = 16

Kept = tuple[str, tuple[tuple[str, str], ...], bytes]


def keep_response() -> None:
    """Declare this request's answer the same for every plain GET with the same key.

    Only for a view whose answer depends on nothing else than `_KEY_FIELDS`
    and settings fixed at start-up.
    """
    request.environ[KEEP_KEY] = True


def is_plain_get(environ: dict[str, Any]) -> bool:
    """A GET with no query string, no cookie and no body."""
    return (
        environ.get("REQUEST_METHOD") == "GET"
        and not environ.get("QUERY_STRING")
        and "HTTP_COOKIE" not in environ
        and not has_body(environ)
    )


def _keepable(status: str, headers: list[tuple[str, str]]) -> bool:
    if not status.startswith("200 "):
        return False
    # Set-Cookie would hand one visitor's cookie to the next; Vary (Flask
    # adds "Vary: Cookie" when a view reads the session) says the answer
    # depends on more than the key.
    return not any(name.lower() in ("set-cookie", "vary") for name, _value in headers)


class KeptResponses:
    """WSGI middleware that replays kept answers (see the module's documentation)."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.wsgi_app = wsgi_app
        self._kept: dict[tuple[object, ...], Kept] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if not is_plain_get(environ):
            return self.wsgi_app(environ, start_response)
        # Taken before the app runs: the host guard may replace the Host.
        key = tuple(environ.get(name) for name in _KEY_FIELDS)
        kept = self._kept.get(key)
        if kept is not None:
            status, headers, body = kept
            start_response(status, list(headers))
            return [body]
        started: list[Any] = []

        def remember(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started[:] = [status, headers]
            return start_response(status, headers, exc_info)

        result = self.wsgi_app(environ, remember)
        if (
            not environ.get(KEEP_KEY)
            or not started
            or not _keepable(*started)
            or len(self._kept) >= MAX_KEPT
        ):
            return result
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        self._kept[key] = (started[0], tuple(started[1]), body)
        return [body]


def init_app(app: Flask) -> None:
    """Wrap the whole app; call last, after every other middleware."""
    # Flask's documented way to add WSGI middleware; mypy sees a method replaced.
    app.wsgi_app = KeptResponses(app.wsgi_app)  # type: ignore[method-assign]
