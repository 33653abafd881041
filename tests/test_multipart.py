"""The portal's multipart decoder decodes exactly as Werkzeug's (portal/server/web/multipart.py).

Only how the boundary is found differs (a literal search in place of two
expressions compiled per request), so the two decoders are run side by
side on generated bodies, honest and malformed, cut into random pieces,
and must give the same events, the same errors, at the same moments.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug import formparser
from werkzeug.http import parse_options_header
from werkzeug.sansio import multipart as werkzeug_multipart
from werkzeug.sansio.multipart import Epilogue, MultipartDecoder, NeedData

from portal.server.web.multipart import (
    MAX_KEPT_OPTIONS_CHARS,
    BoundaryFinder,
    PortalMultipartDecoder,
    part_options,
)

# RFC 2046's boundary characters; dashes and spaces make the hard cases.
BOUNDARY = st.text("-abAB09'()+_,./:=? ", min_size=1, max_size=12).filter(
    lambda b: not b.endswith(" ")
)
LINE_BREAK = st.sampled_from(["\r\n", "\n", "\r"])
WHITE = st.sampled_from(["", " ", "\t", "  "])
# Part contents that come close to a boundary: dashes, line breaks, spaces.
NOISE = st.text("-\r\n \tab", max_size=12)


@st.composite
def bodies(draw: Any) -> tuple[bytes, bytes]:
    boundary = draw(BOUNDARY)
    pieces = [draw(st.sampled_from(["", "preamble", "x\r\n", "-" * 3]))]
    for _ in range(draw(st.integers(0, 4))):
        lead = draw(st.sampled_from(["", draw(LINE_BREAK)]))
        name = draw(st.sampled_from(["a", "testimony", "attachments"]))
        filename = draw(st.sampled_from(["", '; filename="f.bin"', '; filename=""']))
        content = draw(st.one_of(NOISE, st.just(f"--{boundary}"), st.just(f"\r\n--{boundary}x")))
        pieces.append(
            f"{lead}--{boundary}{draw(WHITE)}{draw(LINE_BREAK)}"
            f'Content-Disposition: form-data; name="{name}"{filename}{draw(LINE_BREAK)}'
            f"{draw(LINE_BREAK)}{content}"
        )
    end = draw(st.sampled_from(["--", "", "-"]))
    pieces.append(f"{draw(LINE_BREAK)}--{boundary}{end}{draw(WHITE)}{draw(LINE_BREAK)}")
    pieces.append(draw(st.sampled_from(["", "epilogue", draw(NOISE)])))
    return boundary.encode(), "".join(pieces).encode()


def events(decoder_class: type[MultipartDecoder], boundary: bytes, body: bytes,
           cuts: list[int]) -> list[Any]:  # fmt: skip
    """Every event and error the decoder gives when `body` arrives cut at `cuts`."""
    decoder = decoder_class(boundary, max_form_memory_size=1 << 20, max_parts=50)
    seen: list[Any] = []
    edges = [0, *sorted({c % (len(body) + 1) for c in cuts}), len(body)]
    try:
        for start, end in [*zip(edges, edges[1:], strict=False), (None, None)]:
            decoder.receive_data(None if start is None else body[start:end])
            event = decoder.next_event()
            while not isinstance(event, NeedData | Epilogue):
                seen.append(event)
                event = decoder.next_event()
            seen.append(event)
            if isinstance(event, Epilogue):
                break
    except Exception as exc:  # noqa: BLE001 (the errors themselves are compared)
        seen.append((type(exc), str(exc)))
    return seen


@given(body=bodies(), cuts=st.lists(st.integers(0, 400), max_size=6))
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_portals_decoder_gives_werkzeugs_events(
    body: tuple[bytes, bytes], cuts: list[int]
) -> None:
    boundary, data = body
    assert events(PortalMultipartDecoder, boundary, data, cuts) == events(
        MultipartDecoder, boundary, data, cuts
    )


@given(
    boundary=BOUNDARY.map(str.encode),
    data=st.binary(max_size=60) | st.text("-\r\n \tab=", max_size=60).map(str.encode),
    pos=st.integers(0, 60),
)
@settings(max_examples=1500, deadline=None)
def test_a_finder_finds_what_werkzeugs_expressions_find(boundary: bytes, data: bytes,
                                                        pos: int) -> None:  # fmt: skip
    werkzeug = MultipartDecoder(boundary)
    for finder, expression in (
        (BoundaryFinder(boundary, line_break="optional"), werkzeug.preamble_re),
        (BoundaryFinder(boundary, line_break="required"), werkzeug.boundary_re),
    ):
        ending = data + b"\r\n--" + boundary + b"--\r\n"
        for text in (data, ending, b"--" + boundary + b"\n" + data):
            want = expression.search(text, pos)
            got = finder.search(bytearray(text), pos)
            if want is None:
                assert got is None
            else:
                assert got is not None
                assert (got.start(), got.end(), got.group(1)) == (
                    want.start(),
                    want.end(),
                    want.group(1),
                )


def test_the_decoder_is_werkzeugs_but_for_the_boundarys_expressions() -> None:
    # If a later Werkzeug kept something else that depends on the boundary,
    # the stand-in boundary would show here.
    ours = vars(PortalMultipartDecoder(b"xyz", 100, max_parts=3))
    theirs = vars(MultipartDecoder(b"xyz", 100, max_parts=3))
    assert ours.keys() == theirs.keys()
    replaced = {"preamble_re", "boundary_re"}
    assert {k: v for k, v in ours.items() if k not in replaced} == {
        k: v for k, v in theirs.items() if k not in replaced
    }
    assert all(isinstance(theirs[k], re.Pattern) for k in replaced)


def test_the_app_parses_forms_with_the_portals_decoder(app) -> None:
    assert formparser.MultipartDecoder is PortalMultipartDecoder  # type: ignore[attr-defined]
    assert werkzeug_multipart.parse_options_header is part_options  # type: ignore[attr-defined]


@given(
    value=st.one_of(
        st.text(max_size=60),
        st.builds(
            "form-data; name={}{}".format,
            st.text(max_size=20),
            st.sampled_from(["", '; filename="a b.pdf"', "; filename*=UTF-8''%EC%A6%9D"]),
        ),
        st.text(min_size=MAX_KEPT_OPTIONS_CHARS - 2, max_size=MAX_KEPT_OPTIONS_CHARS + 2),
    )
)
@settings(max_examples=400, deadline=None)
def test_kept_part_options_are_werkzeugs_and_each_callers_own(value: str) -> None:
    first = part_options(value)
    assert first == parse_options_header(value)
    first[1]["name"] = "changed by a caller"
    assert part_options(value) == parse_options_header(value)


def test_a_finder_is_either_kind_only() -> None:
    with pytest.raises(ValueError, match="required"):
        BoundaryFinder(b"x", line_break="maybe")
