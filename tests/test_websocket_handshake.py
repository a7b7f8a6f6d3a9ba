"""
Tests for L{txupgrade.protocols.websocket._handshake}, the sans-IO checks of a WebSocket
opening handshake (RFC 6455 §4.2).

Each rule W1-W7 has a table of cases, plus Hypothesis properties over
arbitrary input. No reactor, no I/O, no autobahn.
"""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txupgrade.protocols.websocket._handshake import (
    Handshake,
    HandshakeError,
    acceptKey,
    checkHandshake,
    originAllowed,
    wildcardPatterns,
)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
HOST = b"127.0.0.1:8080"
Lines = list[tuple[bytes, bytes]]


def lines(*, drop: tuple[bytes, ...] = (), extra: Lines | None = None) -> Lines:
    """A valid handshake's header lines, without C{drop}, plus C{extra}."""
    base = [
        (b"host", HOST),
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-key", KEY),
        (b"sec-websocket-version", b"13"),
    ]
    return [line for line in base if line[0] not in drop] + (extra or [])


def check(
    headers: Lines | None = None, method: bytes = b"GET", target: bytes = b"/ws", **kw: Any
) -> Handshake:
    return checkHandshake(method, target, lines() if headers is None else headers, **kw)


class RuleTests(SynchronousTestCase):
    """W1-W7: each refusal, with its status and headers."""

    def assertRefused(self, status: int, headers: Lines | None = None, **kw: Any) -> HandshakeError:
        error = self.assertRaises(HandshakeError, check, headers, **kw)
        self.assertEqual(error.status, status, (headers, kw, error.reason))
        self.assertTrue(error.reason)
        return error

    def test_valid(self) -> None:
        """The RFC's sample handshake is accepted, with the RFC's accept value."""
        handshake = check()
        self.assertEqual(handshake.accept, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        self.assertEqual(handshake.accept, acceptKey(KEY))
        self.assertEqual(handshake.key, KEY)
        self.assertEqual((handshake.host, handshake.hostName), ("127.0.0.1:8080", "127.0.0.1"))
        self.assertEqual((handshake.origin, handshake.protocols, handshake.extensions), ("", (), ()))
        self.assertEqual((handshake.path, handshake.params), ("/ws", {}))

    def test_W1method(self) -> None:
        """W1: any method but GET gets 405 with C{Allow: GET}."""
        for method in (b"POST", b"PUT", b"get", b"HEAD", b"OPTIONS", b""):
            error = self.assertRefused(405, method=method)
            self.assertEqual(error.headers, ((b"Allow", b"GET"),))

    def test_W2host(self) -> None:
        """W2: no C{Host} or two C{Host} lines get 400."""
        self.assertRefused(400, lines(drop=(b"host",)))
        self.assertRefused(400, lines(extra=[(b"host", HOST)]))
        self.assertRefused(400, lines(extra=[(b"Host", b"other")]))

    def test_W3version(self) -> None:
        """W3: a version other than exactly one C{13} gets 426 naming 13."""
        cases = [
            lines(drop=(b"sec-websocket-version",)),
            lines(drop=(b"sec-websocket-version",), extra=[(b"sec-websocket-version", b"8")]),
            lines(drop=(b"sec-websocket-version",), extra=[(b"sec-websocket-version", b"13, 8")]),
            lines(drop=(b"sec-websocket-version",), extra=[(b"sec-websocket-version", b"")]),
            lines(extra=[(b"sec-websocket-version", b"13")]),
        ]
        for headers in cases:
            error = self.assertRefused(426, headers)
            self.assertEqual(
                error.headers,
                (
                    (b"Upgrade", b"websocket"),
                    (b"Connection", b"Upgrade"),
                    (b"Sec-WebSocket-Version", b"13"),
                ),
            )

    def test_W4key(self) -> None:
        """W4: a key that is missing, twice, not base64 or not 16 bytes gets 400."""
        bad = [
            b"",
            b"!!!!!!!!!!!!!!!!!!!!!!==",
            base64.b64encode(b"x" * 15),
            base64.b64encode(b"x" * 17),
            KEY[:-2],
            b"dGhlIHNhbXBsZSBub25jZQ",
            KEY + b"x",
        ]
        self.assertRefused(400, lines(drop=(b"sec-websocket-key",)))
        self.assertRefused(400, lines(extra=[(b"sec-websocket-key", KEY)]))
        for key in bad:
            self.assertRefused(400, lines(drop=(b"sec-websocket-key",), extra=[(b"sec-websocket-key", key)]))

    def test_W4keyWhitespace(self) -> None:
        """W4: surrounding whitespace is not part of the key."""
        handshake = check(
            lines(drop=(b"sec-websocket-key",), extra=[(b"sec-websocket-key", b" " + KEY + b"\t")])
        )
        self.assertEqual(handshake.accept, acceptKey(KEY))

    def test_W5sameOrigin(self) -> None:
        """W5, same-origin policy: only this server's scheme, host and port pass."""
        allowed = [b"http://127.0.0.1:8080", b"HTTP://127.0.0.1:8080", b"http://127.0.0.1:8080/page"]
        refused = [
            b"http://evil.example",
            b"http://127.0.0.1:9999",
            b"http://127.0.0.1",
            b"https://127.0.0.1:8080",
            b"null",
            b"file://",
            b"nonsense",
            b"http://[::1",
            b"http://127.0.0.1:99999",
        ]
        for origin in allowed:
            self.assertEqual(check(lines(extra=[(b"origin", origin)])).origin, origin.decode())
        for origin in refused:
            self.assertRefused(403, lines(extra=[(b"origin", origin)]))

    def test_W5secure(self) -> None:
        """W5: over TLS the origin's scheme is C{https}, and 443 is the default port."""
        headers = [(b"host", b"example.com"), *lines(drop=(b"host",))]
        self.assertEqual(
            check([*headers, (b"origin", b"https://example.com")], secure=True).hostName, "example.com"
        )
        self.assertRefused(403, [*headers, (b"origin", b"http://example.com")], secure=True)

    def test_W5patterns(self) -> None:
        """W5, with patterns: the origin must match one; C{allowNullOrigin} decides on C{null}."""
        patterns = wildcardPatterns(["http://*.example.com:*"])
        check(lines(extra=[(b"origin", b"http://a.example.com")]), originPatterns=patterns)
        self.assertRefused(403, lines(extra=[(b"origin", b"http://127.0.0.1:8080")]), originPatterns=patterns)
        self.assertRefused(
            403, lines(extra=[(b"origin", b"http://example.com.evil.org")]), originPatterns=patterns
        )
        check(lines(extra=[(b"origin", b"null")]), originPatterns=patterns)
        self.assertRefused(
            403, lines(extra=[(b"origin", b"null")]), originPatterns=patterns, allowNullOrigin=False
        )

    def test_W5allowedHosts(self) -> None:
        """
        W5, with the site's allowed hosts: the origin's host must be one of
        them, whatever the request's C{Host} says (DNS rebinding).
        """
        allowed = frozenset({"localhost", "127.0.0.1"})
        rebound = [(b"host", b"attacker.example:8080"), *lines(drop=(b"host",))]
        self.assertRefused(
            403, [*rebound, (b"origin", b"http://attacker.example:8080")], allowedHosts=allowed
        )
        check([*rebound, (b"origin", b"http://localhost:8080")], allowedHosts=allowed)
        check(lines(extra=[(b"origin", b"http://LOCALHOST:8080")]), allowedHosts=allowed)
        self.assertRefused(403, lines(extra=[(b"origin", b"http://localhost:9999")]), allowedHosts=allowed)
        self.assertRefused(403, lines(extra=[(b"origin", b"https://localhost:8080")]), allowedHosts=allowed)
        # Without the allow-list, the Host header decides (and the rebound page passes).
        check([*rebound, (b"origin", b"http://attacker.example:8080")])

    def test_W6protocols(self) -> None:
        """W6: subprotocols are tokens, none twice; lines are joined in order."""
        handshake = check(
            lines(extra=[(b"sec-websocket-protocol", b"chat, v2.chat"), (b"sec-websocket-protocol", b"x")])
        )
        self.assertEqual(handshake.protocols, ("chat", "v2.chat", "x"))
        self.assertEqual(handshake.headers["sec-websocket-protocol"], "chat, v2.chat, x")
        for value in (b"a, a", b"a b", b"a;b", b'"a"', b"a/b"):
            self.assertRefused(400, lines(extra=[(b"sec-websocket-protocol", value)]))

    def test_W7extensions(self) -> None:
        """W7: extension offers are parsed as autobahn presents them."""
        value = b'permessage-deflate; client_max_window_bits, x-ext; Level="3"; a=1; a=2'
        handshake = check(lines(extra=[(b"sec-websocket-extensions", value)]))
        self.assertEqual(
            handshake.extensions,
            (
                ("permessage-deflate", {"client_max_window_bits": [True]}),
                ("x-ext", {"level": ["3"], "a": ["1", "2"]}),
            ),
        )

    def test_W7malformedExtensions(self) -> None:
        """W7: an extension or parameter that is not a token gets 400."""
        for value in (b"x y", b"x; a=b c", b"x; =1", b"x; a=", b'x; a="b c"', b"@; a", b"x; a b=1"):
            self.assertRefused(400, lines(extra=[(b"sec-websocket-extensions", value)]))

    def test_target(self) -> None:
        """The path and query are split and parsed; an absolute target works too."""
        handshake = check(target=b"/ws?room=5&x=1&x=2")
        self.assertEqual((handshake.path, handshake.params), ("/ws", {"room": ["5"], "x": ["1", "2"]}))
        handshake = check(target=b"http://127.0.0.1:8080/chat?a=b")
        self.assertEqual((handshake.path, handshake.params), ("/chat", {"a": ["b"]}))

    def test_order(self) -> None:
        """The first broken rule decides: a POST without key is a 405, a bad version before a bad key."""
        self.assertRefused(405, lines(drop=(b"sec-websocket-key",)), method=b"POST")
        self.assertRefused(426, lines(drop=(b"sec-websocket-key", b"sec-websocket-version")))

    def test_originAllowedBadHost(self) -> None:
        """A C{Host} that is no valid authority matches no origin."""
        self.assertFalse(originAllowed("http://a", "[bad", False))
        self.assertFalse(originAllowed("http://a", "a:notaport", False))


# Hypothesis strategies.

_names = st.sampled_from(
    [
        b"host",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"origin",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
        b"x-other",
    ]
)
_values = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([KEY, b"13", HOST, b"http://127.0.0.1:8080", b"null", b"a, b", b"x; y=1", b"[::1]:80"]),
)
_lines = st.lists(st.tuples(_names, _values), max_size=10)
_methods = st.sampled_from([b"GET", b"POST", b"get", b""])
_targets = st.one_of(st.binary(max_size=30), st.sampled_from([b"/ws", b"/?a=1", b"http://[x/", b"//a"]))


class PropertyTests(SynchronousTestCase):
    """Properties over arbitrary requests."""

    @settings(max_examples=400, deadline=None)
    @given(_methods, _targets, _lines, st.booleans(), st.booleans())
    def test_onlyHandshakeError(
        self, method: bytes, target: bytes, headers: Lines, secure: bool, hosts: bool
    ) -> None:
        """Any input gives a L{Handshake} or raises L{HandshakeError}, with a known status."""
        try:
            result = checkHandshake(
                method,
                target,
                headers,
                secure=secure,
                allowedHosts=frozenset({"127.0.0.1"}) if hosts else None,
            )
        except HandshakeError as error:
            self.assertIn(error.status, (400, 403, 405, 426))
            self.assertTrue(error.reason)
        else:
            self.assertIsInstance(result, Handshake)
            self.assertEqual(method, b"GET")
            self.assertEqual(len(base64.b64decode(result.key)), 16)
            self.assertEqual(result.accept, acceptKey(result.key))

    @settings(max_examples=200, deadline=None)
    @given(st.binary(min_size=16, max_size=16), _lines)
    def test_anyValidKeyAccepted(self, raw: bytes, other: Lines) -> None:
        """Any 16-byte key, with harmless other headers, is accepted, and its accept value matches."""
        key = base64.b64encode(raw)
        harmless = [(n, v) for n, v in other if n == b"x-other"]
        result = check(lines(drop=(b"sec-websocket-key",), extra=[(b"sec-websocket-key", key), *harmless]))
        self.assertEqual(result.key, key)
        self.assertEqual(result.accept, acceptKey(key))

    @given(st.lists(st.from_regex(r"[a-z][a-z0-9.\-]{0,8}", fullmatch=True), unique=True, max_size=5))
    def test_protocolsRoundTrip(self, protocols: list[str]) -> None:
        """Distinct token subprotocols come back in the order offered."""
        value = ", ".join(protocols).encode()
        self.assertEqual(check(lines(extra=[(b"sec-websocket-protocol", value)])).protocols, tuple(protocols))
