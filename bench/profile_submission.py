"""CPU of one witness's GET of the form and POST of it, in process, and where it goes.

    python bench/profile_submission.py              # CPU per GET + POST, per part
    python bench/profile_submission.py --profile    # and cProfile's top functions

The app is the portal's own (`create_app`, the default settings, a fresh
data directory and key), called as a WSGI application with the request
bytes the browsers row of bench_speed.py sends, so no server, socket or
load client shares the CPU. The parts are timed by wrapping the functions
named in PARTS (CPU seconds of this process, `time.process_time`); under
load the figures move, so compare runs made one after the other. This is
how docs/BENCHMARKS.md's profile of the submission path (issue 25) is made.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import importlib
import io
import os
import pstats
import re
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_speed import form_post  # noqa: E402

from portal.core.age import X25519Identity  # noqa: E402
from portal.testing.live import hidden_fields  # noqa: E402

# (module, function): the parts of a submission that are timed.
PARTS = [
    ("portal.server.web.request", "IntakeRequest._load_form_data"),
    ("portal.server.web.forms", "SubmissionForm.__init__"),
    ("portal.server.web.storing", "_claim"),
    ("portal.server.web.onetime", "SharedFormLedger.complete"),
    ("portal.server.intake", "Submission.commit"),
    ("portal.server.store", "SubmissionStore.begin"),
    ("portal.server.store", "SubmissionStore.commit"),
    ("portal.core.age.age", "Writer.__init__"),
    ("portal.core.manifest", "encode_manifest"),
    ("portal.server.web.submit", "_new_receipt_page"),
]


def environ(method: str, path: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": True,
        "wsgi.run_once": False, "wsgi.version": (1, 0), "REMOTE_ADDR": "127.0.0.1",
    }  # fmt: skip
    if body:
        env["CONTENT_LENGTH"] = str(len(body))
    env.update(headers)
    return env


class Witness:
    """One browser with its session cookie, GETting the form and POSTing it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.cookie = ""

    def call(self, method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
        status: list[str] = []
        cookie = {"HTTP_COOKIE": self.cookie} if self.cookie else {}
        answer = self.app(
            environ(method, path, body, {**cookie, **headers}),
            lambda s, h, e=None: status.append(s) or self._keep_cookie(h),
        )
        page = b"".join(answer)
        if not status[0].startswith("200"):
            raise SystemExit(f"{method} {path}: {status[0]}")
        return page

    def _keep_cookie(self, headers: list[tuple[str, str]]) -> None:
        for name, value in headers:
            if name.lower() == "set-cookie":
                self.cookie = value.split(";")[0]

    def submit(self) -> None:
        fields = hidden_fields(self.call("GET", "/submit").decode())
        request = form_post((fields["csrf_token"], fields["form_id"]), self.cookie,
                            f"bench testimony 증언 {secrets.token_hex(4)}")  # fmt: skip
        head, body = request.split(b"\r\n\r\n", 1)
        match = re.search(rb"Content-Type: ([^\r]+)", head)
        assert match is not None
        self.call("POST", "/submit", body, CONTENT_TYPE=match.group(1).decode())


def timed(parts: list[tuple[str, str]]) -> Counter[str]:
    spent: Counter[str] = Counter()
    for module_name, qualified in parts:
        owner: Any = importlib.import_module(module_name)
        *path, name = qualified.split(".")
        for attribute in path:
            owner = getattr(owner, attribute, None)
        original: Callable[..., Any] | None = getattr(owner, name, None)
        if original is None:  # not in this version of the portal
            continue

        def wrapper(*args: Any, _f: Any = original, _q: str = qualified, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return _f(*args, **kwargs)
            finally:
                spent[_q] += time.process_time() - start

        setattr(owner, name, functools.wraps(original)(wrapper))
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="also print cProfile's top 30")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="profile-submission-"))
    for folder in ("keys", "data", "tmp"):
        (root / folder).mkdir()
    (root / "keys/recipients.txt").write_text(f"{X25519Identity.generate().recipient}\n")
    os.environ.update({
        "PORTAL_DATA_DIR": str(root / "data"),
        "PORTAL_RECIPIENTS": str(root / "keys/recipients.txt"),
        "PORTAL_SECRET_KEY": secrets.token_hex(16), "PORTAL_MIN_FREE_MB": "0",
        "PORTAL_RATE_PER_MINUTE": "100000", "PORTAL_RATE_BURST": "100000",
        "TMPDIR": str(root / "tmp"),
    })  # fmt: skip
    from portal.server.web import create_app

    witness = Witness(create_app())
    for _ in range(50):
        witness.submit()
    spent = timed(PARTS)
    start, times = time.process_time(), os.times()
    for _ in range(args.submissions):
        witness.submit()
    cpu, after = time.process_time() - start, os.times()
    n = args.submissions
    print(f"GET + POST: {cpu / n * 1000:.2f} ms CPU each "
          f"(user {(after.user - times.user) / n * 1000:.2f}, "
          f"system {(after.system - times.system) / n * 1000:.2f}), {n} submissions")  # fmt: skip
    for _module, qualified in PARTS:
        print(f"  {spent[qualified] / n * 1000:6.3f} ms  {qualified}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(min(n, 300)):
            witness.submit()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
