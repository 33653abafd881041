"""Security headers, cookie settings and host checks for every response."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote, urlsplit

from flask import Flask, Response, current_app, request, send_from_directory
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer
from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.sansio.utils import host_is_trusted

from portal.server.config import Config
from portal.server.web.errors import PortalHTTPError

# Only our own stylesheet and images; no script at all, no frames, forms may
# only post back here. `base-uri 'none'` stops an injected <base> from
# redirecting relative links.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "style-src 'self'",
        "img-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer", "camera", "geolocation", "gyroscope", "magnetometer",
        "microphone", "payment", "usb", "interest-cohort", "browsing-topics",
    )
)  # fmt: skip
STATIC_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Permissions-Policy": PERMISSIONS_POLICY,
}
_STATIC_HEADER_ITEMS = tuple(STATIC_HEADERS.items())
_STATIC_NAMES = frozenset(name.lower() for name in STATIC_HEADERS)
# Every page but a static file is never cached.
_NO_STORE = ("Cache-Control", "no-store")
_PAGE_HEADER_ITEMS = (*_STATIC_HEADER_ITEMS, _NO_STORE)
_PAGE_NAMES = _STATIC_NAMES | {"cache-control"}
HSTS = "max-age=63072000"
# Onion-Location repeats the request's path; a longer one is left out (the
# header then names the onion service's front page). nginx refuses a
# response whose headers do not fit its buffer (a 503 for the witness).
MAX_ONION_LOCATION_PATH = 256
# Uploads of large files over Tor can take hours: a CSRF token that expired
# while the witness was uploading would lose the testimony.
CSRF_TIME_LIMIT = dt.timedelta(hours=12)


class UnknownHost(PortalHTTPError, BadRequest):
    description = "This address is not served here."


_BAD_HOST_KEY = "portal.bad_host"
# Stands in for a Host header Werkzeug cannot use, so that the error page
# (which builds URLs) can still be drawn; `.invalid` never resolves.
_PLACEHOLDER_HOST = "host.invalid"


# The environ keys Werkzeug names a request's host from (`werkzeug.wsgi.get_host`).
_HOST_KEYS = ("HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "wsgi.url_scheme")
_MAX_GOOD_HOSTS = 64


class HostGuard:
    """Replaces a Host header Werkzeug cannot parse before Flask sees it.

    With a Host such as a 64-letter label, Werkzeug fails to build the URL
    adapter, and then the error page fails too: a 500. The guard swaps in a
    placeholder and marks the request, which `_check_host` answers with 400.
    """

    def __init__(self, app: Flask) -> None:
        self.url_map = app.url_map
        self.wsgi_app = app.wsgi_app
        # Host values seen to bind: each is tried once, not on every request
        # (binding builds and throws away a URL adapter). A few names serve
        # a portal; past the cap, new names are simply tried every time.
        self._good: set[tuple[object, ...]] = set()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        # What binding reads of the request to name its host.
        host = tuple(environ.get(k) for k in _HOST_KEYS)
        if host not in self._good:
            try:
                self.url_map.bind_to_environ(environ)
            except (HTTPException, UnicodeError, ValueError):
                environ["HTTP_HOST"] = _PLACEHOLDER_HOST
                environ[_BAD_HOST_KEY] = True
            else:
                if len(self._good) < _MAX_GOOD_HOSTS:
                    self._good.add(host)
        return self.wsgi_app(environ, start_response)


class KeptSerializerSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie session, with its signing serializer made once per key.

    Flask builds a new serializer for every request, and building one
    serialises an empty object to learn its kind: about a tenth of the
    time of a request for a page drawn once. The serializer holds only the keys
    and settings, and is made again if they change.
    """

    _kept: tuple[object, URLSafeTimedSerializer | None] | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        keys = (app.secret_key, tuple(app.config["SECRET_KEY_FALLBACKS"] or ()))
        kept = self._kept
        if kept is None or kept[0] != keys:
            kept = self._kept = (keys, super().get_signing_serializer(app))
        return kept[1]


def flask_settings(config: Config) -> dict[str, Any]:
    return {
        "SECRET_KEY": config.secret_key,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Strict",
        "SESSION_COOKIE_SECURE": config.tls,
        "SESSION_COOKIE_NAME": "session",
        # The session holds only the CSRF token; it must not outlive the browser.
        "SESSION_PERMANENT": False,
        "WTF_CSRF_TIME_LIMIT": int(CSRF_TIME_LIMIT.total_seconds()),
        # The Referer check would fail for every witness: we send no-referrer.
        "WTF_CSRF_SSL_STRICT": False,
        # Host names are checked by `_check_host` below, not by Flask's
        # TRUSTED_HOSTS: Flask rejects an unknown host while building the URL
        # adapter, and the error page, which needs URLs, then fails with a 500.
        "PREFERRED_URL_SCHEME": "https" if config.tls else "http",
    }


def add_security_headers(response: Response) -> Response:
    headers = response.headers
    page = not request.path.startswith("/static/")
    names = [name.lower() for name, _value in headers.items()]
    if (_PAGE_NAMES if page else _STATIC_NAMES).isdisjoint(names):
        # The usual case: none is there yet.
        headers.extend(_PAGE_HEADER_ITEMS if page else _STATIC_HEADER_ITEMS)
        return response
    headers.update(STATIC_HEADERS)  # replaces what a view set
    if page:
        headers.set(*_NO_STORE)
    return response


def static_file(filename: str) -> Response:
    """A static file with no validator that dates the install.

    Flask sends an ETag and Last-Modified taken from the file's modification
    time, and answers If-Modified-Since with 304: either tells a visitor when
    this copy of the portal was installed, which can link an onion service
    to a server seen elsewhere. The file is sent without them, and always
    whole; it may still be cached for its max age.
    """
    folder = current_app.static_folder
    assert folder is not None
    response = send_from_directory(
        folder,
        filename,
        etag=False,
        conditional=False,
        max_age=current_app.get_send_file_max_age(filename),
    )
    del response.headers["Last-Modified"]
    return response


def onion_location(onion: str) -> str:
    """The Onion-Location header for this request: the same path on the onion service.

    The path is percent-encoded: a raw one could carry a line break (header
    injection, and a 500 from Werkzeug) or non-Latin-1 text. A path longer
    than `MAX_ONION_LOCATION_PATH` is not repeated.
    """
    path = quote(request.path)
    if len(path) > MAX_ONION_LOCATION_PATH:
        path = "/"
    return onion.rstrip("/") + path


def relative_location(response: Response) -> None:
    """Make a redirect's Location a path: never an echo of the request's Host header.

    Werkzeug's routing redirects (a missing slash) name the host the
    request gave. With a path only, a redirect cannot send a browser to a
    name an attacker put in the Host header, whatever PORTAL_ALLOWED_HOSTS says.
    """
    # Only a redirect sends a browser on (and looking up a missing header
    # costs Werkzeug an exception).
    if not 300 <= response.status_code < 400:
        return
    location = response.headers.get("Location")
    if not location:
        return
    parts = urlsplit(location)
    if parts.scheme or parts.netloc:
        path = parts.path or "/"
        # "//evil" as a path would be read as a host again.
        path = "/" + path.lstrip("/")
        response.headers["Location"] = path + (f"?{parts.query}" if parts.query else "")


def init_app(app: Flask) -> None:
    config: Config = app.extensions["portal"].config
    app.view_functions["static"] = static_file
    app.session_interface = KeptSerializerSessions()

    # Registered before every other before_request function, so that a
    # request for a foreign host name is refused before it costs anything.
    @app.before_request
    def _check_host() -> None:
        if request.environ.get(_BAD_HOST_KEY):
            raise UnknownHost()
        # Host names are case-insensitive (RFC 9110); the configured ones
        # are stored lower-case, and Werkzeug compares them as given.
        host = request.host.lower()
        if config.allowed_hosts and not host_is_trusted(host, config.allowed_hosts):
            raise UnknownHost()

    # Flask's documented way to add WSGI middleware; mypy sees a method replaced.
    app.wsgi_app = HostGuard(app)  # type: ignore[method-assign]

    @app.after_request
    def _headers(response: Response) -> Response:
        add_security_headers(response)
        if config.tls:
            response.headers["Strict-Transport-Security"] = HSTS
        if config.onion_location:
            response.headers["Onion-Location"] = onion_location(config.onion_location)
        relative_location(response)
        return response
