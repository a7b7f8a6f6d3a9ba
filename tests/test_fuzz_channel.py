"""
Hypothesis properties over the real channel, in memory.

Streams of requests (well-formed, then mutated, then random bytes) go
through L{txupgrade.channel.UpgradeSite} with random segmentations; the
invariants of L{tests.channel_oracle} are checked on what comes back: no
exception escapes and nothing is logged as an error, no C{101} for an
invalid request (RFC 9112), every connection answered or closed, and no
byte lost or duplicated after a switch. Example counts are bounded so the
suite stays fast; C{fuzz/fuzz_channel.py} is the long, coverage-guided mode.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.channel_oracle import (
    CRLF,
    TCHARS,
    checkStream,
    cut,
    parseRequests,
    parseResponses,
    runStream,
)

#: Examples per property; C{TXUPGRADE_FUZZ_EXAMPLES} raises it for a longer run.
EXAMPLES = int(os.environ.get("TXUPGRADE_FUZZ_EXAMPLES", "200"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

tokens = st.text(alphabet=TCHARS.decode("ascii"), min_size=1, max_size=8).map(str.encode)
fieldValues = st.binary(max_size=12).map(
    lambda b: bytes(c for c in b if c == 9 or 0x20 <= c != 0x7F).strip(b" \t")
)
protocolNames = st.sampled_from(
    [b"echo", b"ECHO", b"Echo", b"echo/1", b"ws", b"WS", b"websocket", b"h2c", b"nope", b"TLS/1.2", b"n@pe"]
)
connectionOptions = st.sampled_from([b"upgrade", b"Upgrade", b"UPGRADE", b"keep-alive", b"close", b"te"])
separators = st.sampled_from([b",", b", ", b" ,", b" , ", b",,"])
targets = st.sampled_from(
    [b"/", b"/show", b"/show?q=1", b"/echo", b"/ws", b"/ws/", b"/%77s", b"/nope", b"/show/deep", b"//", b"*"]
)
methods = st.sampled_from([b"GET", b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS", b"DELETE", b"PATCH"])
hosts = st.sampled_from([b"127.0.0.1", b"localhost", b"127.0.0.1:8080", b"localhost:8080"])


@st.composite
def chunkedBodies(draw: Any, body: bytes) -> bytes:
    """C{body} in the chunked coding: random chunk sizes, extensions, trailers."""
    out = []
    rest = body
    while rest:
        size = draw(st.integers(1, max(1, len(rest))))
        ext = draw(st.sampled_from([b"", b";a", b";a=b", b';n="q v"', b";x;y=1"]))
        spelled = draw(st.sampled_from([b"%x", b"%X", b"0%x"])) % size
        out.append(spelled + ext + CRLF + rest[:size] + CRLF)
        rest = rest[size:]
    trailers = draw(st.lists(st.tuples(tokens, fieldValues), max_size=2))
    out.append(draw(st.sampled_from([b"0", b"000", b"0;end"])) + CRLF)
    out.extend(name + b": " + value + CRLF for name, value in trailers)
    out.append(CRLF)
    return b"".join(out)


@st.composite
def requests(draw: Any, upgrade: bool | None = None) -> bytes:
    """
    One well-formed HTTP/1.x request: random method, target, fields, an
    offer or not, no body, a C{Content-Length} body or a chunked one.
    """
    method = draw(methods)
    version = b"HTTP/1.1" if upgrade else draw(st.sampled_from([b"HTTP/1.1"] * 9 + [b"HTTP/1.0"]))
    fields: list[tuple[bytes, bytes]] = []
    if version == b"HTTP/1.1" or draw(st.booleans()):
        fields.append((draw(st.sampled_from([b"Host", b"host", b"HOST"])), draw(hosts)))
    offer = draw(st.booleans()) if upgrade is None else upgrade
    if offer:
        options = draw(st.lists(connectionOptions, min_size=1, max_size=3))
        if upgrade and not any(o.lower() == b"upgrade" for o in options):
            options.append(b"upgrade")
        if upgrade:
            options = [o for o in options if o != b"close"]
        protocols = draw(st.lists(protocolNames, min_size=1, max_size=4))
        if upgrade:
            protocols = [p for p in protocols if p != b"n@pe"] + [b"echo"]
        fields.append((b"Connection", draw(separators).join(options)))
        fields.append((b"Upgrade", draw(separators).join(protocols)))
    elif draw(st.booleans()):
        fields.append((b"Connection", draw(connectionOptions)))
    fields.extend(draw(st.lists(st.tuples(tokens, fieldValues), max_size=3)))
    if version == b"HTTP/1.1" and draw(st.integers(0, 9)) == 0:
        fields.append((b"Expect", b"100-continue"))
    kind = draw(st.sampled_from(["none", "none", "length", "chunked"]))
    body = draw(st.binary(max_size=40)) if kind != "none" else b""
    if kind == "length":
        fields.append((draw(st.sampled_from([b"Content-Length", b"content-length"])), b"%d" % len(body)))
        encoded = body
    elif kind == "chunked":
        fields.append((b"Transfer-Encoding", draw(st.sampled_from([b"chunked", b"Chunked"]))))
        encoded = draw(chunkedBodies(body))
    else:
        encoded = b""
    # Framing fields must not be repeated by the random extras.
    framing = {b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"expect"}
    fields = [f for i, f in enumerate(fields) if f[0].lower() not in framing or i == _first(fields, f[0])]
    order = draw(st.permutations(range(len(fields))))
    # twisted.web answers C{*} itself, before any resource: no switch there.
    target = draw(targets.filter(lambda t: t != b"*") if upgrade else targets)
    head = [method + b" " + target + b" " + version]
    head.extend(
        fields[i][0] + b":" + draw(st.sampled_from([b" ", b"", b"\t", b"  "])) + fields[i][1] for i in order
    )
    return CRLF.join(head) + CRLF + CRLF + encoded


def _first(fields: list[tuple[bytes, bytes]], name: bytes) -> int:
    return next(i for i, f in enumerate(fields) if f[0].lower() == name.lower())


@st.composite
def streams(draw: Any) -> bytes:
    """One to four pipelined requests, maybe followed by random bytes."""
    data = b"".join(draw(st.lists(requests(), min_size=1, max_size=4)))
    return data + draw(st.sampled_from([b"", b"", b"GET /show HTTP/1.1\r\n"])) + draw(st.binary(max_size=8))


@st.composite
def segmented(draw: Any, data: bytes) -> list[bytes]:
    """C{data} cut at random points into writes."""
    return cut(data, draw(st.lists(st.integers(0, len(data)), max_size=6)))


runOptions = st.fixed_dictionaries(
    {
        "dynamic": st.booleans(),
        "chunkSize": st.sampled_from([None, None, None, 1, 3]),
        "maxUpgradeBodySize": st.sampled_from([None, None, 16]),
    }
)

#: Byte strings a mutation inserts: framing fields, line ends, folds.
FRAGMENTS = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n ",
    b"\r\n\t",
    b"\r\n\r\n",
    b" ",
    b":",
    b",",
    b";",
    b"\x00",
    b"\x7f",
    b"\xff",
    b"0",
    b"f",
    b"Host: 127.0.0.1\r\n",
    b"Host: a\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: +3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: identity\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Connection: upgrade\r\n",
    b"Connection: close\r\n",
    b"Upgrade: echo\r\n",
    b"Upgrade: echo, ws\r\n",
    b"Expect: 100-continue\r\n",
    b"0\r\n\r\n",
    b"GET / HTTP/1.1\r\n",
    b"HTTP/1.0",
]


@st.composite
def mutated(draw: Any, data: bytes) -> bytes:
    """C{data} with one to four random edits: flips, inserts, deletions, copies."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(out)))
        action = draw(st.sampled_from(["insert", "insert", "delete", "replace", "copy"]))
        if action == "insert":
            piece = draw(st.one_of(st.sampled_from(FRAGMENTS), st.binary(min_size=1, max_size=3)))
            out[where:where] = piece
        elif action == "delete" and out:
            out[where : where + draw(st.integers(1, 4))] = b""
        elif action == "replace" and where < len(out):
            out[where] = draw(st.integers(0, 255))
        elif action == "copy" and out:
            start = draw(st.integers(0, len(out) - 1))
            out[where:where] = out[start : start + draw(st.integers(1, 24))]
    return bytes(out)


class FuzzPropertyTests(SynchronousTestCase):
    """
    The channel's invariants hold for generated, mutated and random streams.
    """

    def check(self, data: bytes, pieces: list[bytes], options: dict[str, Any]) -> None:
        """Run C{pieces} of C{data} and assert the invariants."""
        self.assertEqual(b"".join(pieces), data)
        checkStream(data, runStream(pieces, **options))

    @FUZZ_SETTINGS
    @given(st.data(), runOptions)
    def test_wellFormedStreams(self, data: Any, options: dict[str, Any]) -> None:
        """Pipelined well-formed requests in any segmentation: every invariant holds."""
        stream = data.draw(streams())
        self.check(stream, data.draw(segmented(stream)), options)

    @FUZZ_SETTINGS
    @given(st.data(), runOptions)
    def test_mutatedStreams(self, data: Any, options: dict[str, Any]) -> None:
        """Well-formed streams with random edits: every invariant holds."""
        stream = data.draw(mutated(data.draw(streams())))
        self.check(stream, data.draw(segmented(stream)), options)

    @FUZZ_SETTINGS
    @given(st.data(), runOptions)
    def test_randomBytes(self, data: Any, options: dict[str, Any]) -> None:
        """Random bytes and random sequences of HTTP fragments: every invariant holds."""
        stream = data.draw(
            st.one_of(
                st.binary(max_size=200),
                st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=4)), max_size=30).map(
                    b"".join
                ),
            )
        )
        self.check(stream, data.draw(segmented(stream)), options)


class SwitchPropertyTests(SynchronousTestCase):
    """
    After a switch, the new protocol gets every later byte exactly once (R12).
    """

    @FUZZ_SETTINGS
    @given(
        st.lists(requests(upgrade=False), max_size=3),
        requests(upgrade=True),
        st.one_of(st.binary(max_size=64), streams()),
        st.data(),
        runOptions.filter(lambda o: o["maxUpgradeBodySize"] is None),
    )
    def test_echoedExactly(
        self, before: list[bytes], upgrade: bytes, trailing: bytes, data: Any, options: dict[str, Any]
    ) -> None:
        """Requests, an C{echo} upgrade, random bytes, cut anywhere: the bytes come back once."""
        plain = b"".join(before)
        stream = plain + upgrade + trailing
        # Every request before the upgrade is answered only if none closes the connection.
        persistent = all(r.persistent for r in parseRequests(plain))
        pieces = data.draw(segmented(stream))
        seen = runStream(pieces, **options)
        checkStream(stream, seen)
        responses, after = parseResponses(seen.received, [r.method for r in parseRequests(stream)])
        if persistent:
            self.assertEqual(len(responses), len(before) + 1)
            self.assertEqual(responses[-1].code, 101)
            self.assertEqual(after, trailing)


class InvalidFramingTests(SynchronousTestCase):
    """
    RFC 9112: a request whose framing is ambiguous is answered 400 and the
    connection closed, never switched, whatever else it carries.
    """

    @FUZZ_SETTINGS
    @given(
        st.sampled_from(
            [
                "no Host",
                "two Host",
                "two Host HTTP/1.0",
                "foreign Host",
                "obs-fold Connection",
                "obs-fold Upgrade",
                "obs-fold other",
                "TE identity",
                "TE gzip",
                "TE chunked twice",
                "TE list",
                "TE and CL",
                "two CL",
                "CL list",
                "CL sign",
            ]
        ),
        requests(upgrade=True),
        st.binary(max_size=16),
        st.data(),
        runOptions,
    )
    def test_neverSwitched(
        self, flaw: str, upgrade: bytes, trailing: bytes, data: Any, options: dict[str, Any]
    ) -> None:
        """A framing flaw or a foreign host: a 4xx (or nothing), closed, never switched."""
        stream = _withFlaw(upgrade, flaw, data) + b"hello" + trailing
        (req, *_rest) = parseRequests(stream)
        self.assertTrue(req.problems, flaw)
        seen = runStream(data.draw(segmented(stream)), **options)
        checkStream(stream, seen)
        responses, after = parseResponses(seen.received, [req.method])
        self.assertIsNone(after)
        self.assertLessEqual(len(responses), 1)
        self.assertTrue(all(400 <= r.code < 500 for r in responses), [r.code for r in responses])
        self.assertTrue(seen.closedBeforeTimeout)


def _withFlaw(request: bytes, flaw: str, data: Any) -> bytes:
    """C{request} (with no body) made ambiguous in the way C{flaw} names."""
    head, _sep, _body = request.partition(CRLF + CRLF)
    lines = [
        line
        for line in head.split(CRLF)
        if not line.lower().startswith((b"content-length:", b"transfer-encoding:"))
    ]
    requestLine, fields = lines[0], lines[1:]
    fields = [f for f in fields if not f.lower().startswith(b"host:")]
    fold = data.draw(st.sampled_from([b"\r\n ", b"\r\n\t", b"\r\n  "]))
    host = [b"Host: 127.0.0.1"]
    body = b""
    if flaw == "no Host":
        host = []
    elif flaw.startswith("two Host"):
        host = [b"Host: 127.0.0.1", data.draw(st.sampled_from([b"Host: 127.0.0.1", b"host: evil.example"]))]
        if flaw.endswith("HTTP/1.0"):
            requestLine = requestLine.replace(b"HTTP/1.1", b"HTTP/1.0")
    elif flaw == "foreign Host":
        host = [
            b"Host: "
            + data.draw(st.sampled_from([b"evil.example", b"127.0.0.2", b"localhost.", b"a b", b""]))
        ]
    elif flaw.startswith("obs-fold"):
        name = {"obs-fold Connection": b"connection:", "obs-fold Upgrade": b"upgrade:"}.get(flaw)
        if name is None:
            fields.append(b"X-Folded: a" + fold + b"b")
        else:
            fields = [
                f.split(b":", 1)[0] + b":" + fold + f.split(b":", 1)[1].lstrip()
                if f.lower().startswith(name)
                else f
                for f in fields
            ]
    elif flaw.startswith("TE"):
        value = {
            "TE identity": [b"identity"],
            "TE gzip": [b"gzip"],
            "TE chunked twice": [b"chunked", b"chunked"],
            "TE list": [
                data.draw(st.sampled_from([b"gzip, chunked", b"chunked, chunked", b"identity, chunked"]))
            ],
            "TE and CL": [b"chunked"],
        }[flaw]
        fields.extend(b"Transfer-Encoding: " + v for v in value)
        if flaw == "TE and CL":
            fields.append(b"Content-Length: 5")
        body = b"0\r\n\r\n" if b"chunked" in value[-1] else b""
    else:
        value = {"two CL": [b"0", b"0"], "CL list": [b"0, 0"], "CL sign": [b"+0"]}[flaw]
        fields.extend(b"Content-Length: " + v for v in value)
    fields = host + fields
    order = data.draw(st.permutations(range(len(fields))))
    return CRLF.join([requestLine, *(fields[i] for i in order)]) + CRLF + CRLF + body
