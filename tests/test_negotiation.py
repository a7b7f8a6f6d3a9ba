"""
Tests for L{txupgrade.negotiation}, the sans-IO rules of ``Upgrade``.

Each rule of docs/rules.md that this module decides has a table of cases
here, plus Hypothesis properties over arbitrary input. No reactor, no I/O.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txupgrade.negotiation import (
    LOOPBACK_HOSTS,
    MAX_OFFERED,
    MAX_UPGRADE_FIELD,
    Offer,
    ProtocolName,
    UpgradeError,
    UpgradeRequest,
    checkFraming,
    formatProtocols,
    hostAllowed,
    hostName,
    matches,
    offerFromHeaders,
    parseConnectionOptions,
    parseProtocolList,
    reasonPhrase,
    selectionOrder,
    simpleResponse,
    switchingResponse,
    upgradeRequiredHeaders,
    upgradeRequiredResponse,
    validateHeaders,
)

# RFC 9110 section 5.6.2.
TCHARS = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters


def names(protocols: tuple[ProtocolName, ...]) -> list[tuple[str, str | None]]:
    """The (name, version) pairs of C{protocols}, for readable comparisons."""
    return [(p.name, p.version) for p in protocols]


def identity(candidate: tuple[str, str | None]) -> tuple[str, str | None]:
    """The C{nameOf} for candidates that are already (name, version) pairs."""
    return candidate


def offerOf(*protocols: str) -> Offer:
    """An L{Offer} of C{protocols}, each C{"name"} or C{"name/version"}."""
    return Offer(parseProtocolList([", ".join(protocols).encode("ascii")]))


class ProtocolListGrammarTests(SynchronousTestCase):
    """
    R1: C{Upgrade = #protocol}, C{protocol = name ["/" version]}, both tokens.
    """

    valid = [
        ([b"websocket"], [("websocket", None)]),
        ([b"h2c"], [("h2c", None)]),
        ([b"TLS/1.2"], [("TLS", "1.2")]),
        (
            [b"HTTP/2.0, SHTTP/1.3, IRC/6.9, RTA/x11"],
            [("HTTP", "2.0"), ("SHTTP", "1.3"), ("IRC", "6.9"), ("RTA", "x11")],
        ),
        ([b"a,b"], [("a", None), ("b", None)]),
        ([b"a , b"], [("a", None), ("b", None)]),
        ([b"a\t,\tb"], [("a", None), ("b", None)]),
        ([b"  a  ,  \t b\t "], [("a", None), ("b", None)]),
        ([b",a"], [("a", None)]),
        ([b"a,"], [("a", None)]),
        ([b",,a,, ,\t,b,,"], [("a", None), ("b", None)]),
        ([b"a", b"b, c"], [("a", None), ("b", None), ("c", None)]),
        ([b"", b"a", b" , "], [("a", None)]),
        ([b"c", b"a"], [("c", None), ("a", None)]),
        ([b"x!#$%&'*+-.^_`|~9/Z9!"], [("x!#$%&'*+-.^_`|~9", "Z9!")]),
        ([b"WebSocket"], [("WebSocket", None)]),
        ([b"a/1, a/2, a"], [("a", "1"), ("a", "2"), ("a", None)]),
    ]

    malformed = [
        b"n@pe",
        b"a/",
        b"/1",
        b"a/b/c",
        b"a b",
        b"a /1",
        b"a/ 1",
        b"a;q=1",
        b'"quoted"',
        b"(comment)",
        b"a\r\nb",
        b"a\rb",
        b"a\nb",
        b"a\x00",
        b"a\x7f",
        b"caf\xc3\xa9",
        b"good, b@d",
        b"a/1.0/",
        b"[x]",
        b"a=b",
    ]

    def test_validLists(self) -> None:
        """Each valid field is parsed to its protocols, in the order sent."""
        for values, expected in self.valid:
            self.assertEqual(names(parseProtocolList(values)), expected, values)

    def test_malformedElements(self) -> None:
        """A non-token name or version raises L{UpgradeError} with status 400."""
        for value in self.malformed:
            error = self.assertRaises(UpgradeError, parseProtocolList, [value])
            self.assertEqual(error.statusHint, 400, value)

    def test_malformedOnLaterLine(self) -> None:
        """A malformed element on any of several field lines is caught."""
        error = self.assertRaises(UpgradeError, parseProtocolList, [b"a", b"b", b"c@d"])
        self.assertEqual(error.statusHint, 400)

    def test_emptyLists(self) -> None:
        """No field line, empty lines, or only separators give no protocol."""
        for values in ([], [b""], [b","], [b" , \t,"], [b"", b", "]):
            self.assertEqual(parseProtocolList(values), (), values)

    def test_nameKeepsCase(self) -> None:
        """The parsed name is kept as sent; its key is case-folded."""
        (protocol,) = parseProtocolList([b"WebSocket/13"])
        self.assertEqual(protocol.name, "WebSocket")
        self.assertEqual(protocol.version, "13")
        self.assertEqual(protocol.key, "websocket")

    def test_protocolNameStr(self) -> None:
        """C{str} gives C{name} or C{name/version}."""
        self.assertEqual(str(ProtocolName("h2c")), "h2c")
        self.assertEqual(str(ProtocolName("TLS", "1.2")), "TLS/1.2")


class MatchTests(SynchronousTestCase):
    """
    R2: names compare case-insensitively; a stated version must match.
    """

    cases = [
        # offered, plugin name, plugin version, matches
        (ProtocolName("websocket"), "websocket", None, True),
        (ProtocolName("WebSocket"), "websocket", None, True),
        (ProtocolName("websocket"), "WEBSOCKET", None, True),
        (ProtocolName("wEbSoCkEt"), "WebSocket", None, True),
        (ProtocolName("websocket", "13"), "websocket", None, True),
        (ProtocolName("websocket", "13"), "websocket", "13", True),
        (ProtocolName("websocket", "8"), "websocket", "13", False),
        (ProtocolName("websocket"), "websocket", "13", False),
        (ProtocolName("TLS", "1.2"), "tls", "1.2", True),
        (ProtocolName("TLS", "1.2"), "TLS", "1.3", False),
        # Versions are tokens compared exactly.
        (ProtocolName("x", "A"), "x", "a", False),
        (ProtocolName("h2c"), "h2", None, False),
        (ProtocolName("h2"), "h2c", None, False),
        (ProtocolName("websocket"), "web", None, False),
    ]

    def test_matches(self) -> None:
        """Each table case matches exactly when it should."""
        for offered, name, version, expected in self.cases:
            self.assertEqual(matches(offered, name, version), expected, (offered, name, version))

    def test_versionNoneAcceptsAny(self) -> None:
        """A plugin with version L{None} answers the name with any version."""
        for offered in parseProtocolList([b"echo, echo/1, ECHO/2.0, Echo/x"]):
            self.assertTrue(matches(offered, "echo", None), offered)


class ConnectionOptionsTests(SynchronousTestCase):
    """
    R3: C{Connection} is a token list, in any case, on any number of lines.
    """

    def test_options(self) -> None:
        """Options are lower-cased tokens from every line; others are skipped."""
        cases = [
            ([], frozenset()),
            ([b"Upgrade"], {b"upgrade"}),
            ([b"keep-alive, Upgrade"], {b"keep-alive", b"upgrade"}),
            ([b"keep-alive", b"UPGRADE"], {b"keep-alive", b"upgrade"}),
            ([b" , close ,, HTTP2-Settings "], {b"close", b"http2-settings"}),
            ([b"keep-alive Upgrade"], frozenset()),
            ([b"a@b, upgrade"], {b"upgrade"}),
        ]
        for values, expected in cases:
            self.assertEqual(parseConnectionOptions(values), frozenset(expected), values)


class OfferTests(SynchronousTestCase):
    """
    R3, R4: an offer needs HTTP/1.1 and the C{upgrade} connection option.
    """

    upgradeConnections = [
        [b"Upgrade"],
        [b"upgrade"],
        [b"UPGRADE"],
        [b"uPgRaDe"],
        [b"keep-alive, Upgrade"],
        [b"keep-alive,Upgrade"],
        [b"Upgrade, keep-alive"],
        [b"keep-alive", b"Upgrade"],
        [b"Upgrade", b"keep-alive"],
        [b" \tUpgrade\t "],
        [b",,Upgrade,,"],
        [b"HTTP2-Settings, Upgrade"],
        [b"close", b"te", b"upgrade"],
    ]

    otherConnections = [
        [],
        [b""],
        [b"keep-alive"],
        [b"close"],
        [b"upgraded"],
        [b"x-upgrade"],
        [b"upgrade-insecure-requests"],
        [b"keep-alive Upgrade"],
        [b"Upgrade;q=1"],
        [b'"Upgrade"'],
    ]

    def test_connectionListsUpgrade(self) -> None:
        """Every way of listing C{upgrade} in C{Connection} gives an offer."""
        for connection in self.upgradeConnections:
            offer = offerFromHeaders(b"HTTP/1.1", [b"websocket"], connection)
            self.assertEqual(offer, Offer((ProtocolName("websocket"),)), connection)

    def test_connectionWithoutUpgrade(self) -> None:
        """Without the C{upgrade} option, C{Upgrade} is ignored."""
        for connection in self.otherConnections:
            self.assertIsNone(offerFromHeaders(b"HTTP/1.1", [b"websocket"], connection), connection)

    def test_malformedUpgradeIgnoredWithoutOption(self) -> None:
        """A malformed C{Upgrade} is not even validated when it is ignored."""
        for upgrade in ([b"n@pe"], [b"a\x00b"], [b"x" * (MAX_UPGRADE_FIELD + 1)]):
            for connection in self.otherConnections:
                self.assertIsNone(offerFromHeaders(b"HTTP/1.1", upgrade, connection))

    def test_malformedUpgradeHonoured(self) -> None:
        """With the C{upgrade} option, a malformed C{Upgrade} raises 400."""
        error = self.assertRaises(UpgradeError, offerFromHeaders, b"HTTP/1.1", [b"n@pe"], [b"Upgrade"])
        self.assertEqual(error.statusHint, 400)

    def test_http10Ignored(self) -> None:
        """R4: C{Upgrade} on an HTTP/1.0 (or older) request is ignored."""
        for version in (b"HTTP/1.0", b"HTTP/0.9"):
            self.assertIsNone(offerFromHeaders(version, [b"websocket"], [b"Upgrade"]))
            self.assertIsNone(offerFromHeaders(version, [b"n@pe"], [b"Upgrade"]))

    def test_noUpgradeField(self) -> None:
        """A C{Connection: Upgrade} without C{Upgrade} is no offer."""
        self.assertIsNone(offerFromHeaders(b"HTTP/1.1", [], [b"Upgrade"]))

    def test_emptyUpgradeList(self) -> None:
        """An C{Upgrade} listing no protocol (only separators) is no offer."""
        for upgrade in ([b""], [b", ,"], [b"", b","]):
            self.assertIsNone(offerFromHeaders(b"HTTP/1.1", upgrade, [b"Upgrade"]), upgrade)

    def test_offerKeepsOrder(self) -> None:
        """The offer lists every line's protocols in descending preference."""
        offer = offerFromHeaders(b"HTTP/1.1", [b"h2c, websocket/13", b"echo"], [b"Upgrade"])
        assert offer is not None
        self.assertEqual(names(offer.protocols), [("h2c", None), ("websocket", "13"), ("echo", None)])


class SelectionOrderTests(SynchronousTestCase):
    """
    R6: only listed protocols; the client's order unless policy says otherwise.
    """

    def test_clientPolicy(self) -> None:
        """By default the client's preference decides."""
        order = selectionOrder(offerOf("b", "a"), [("a", None), ("b", None)], identity)
        self.assertEqual([c for _, c in order], [("b", None), ("a", None)])

    def test_serverPolicy(self) -> None:
        """With the C{"server"} policy the candidates' order decides."""
        order = selectionOrder(offerOf("b", "a"), [("a", None), ("b", None)], identity, "server")
        self.assertEqual([c for _, c in order], [("a", None), ("b", None)])

    def test_tiesByCandidateOrder(self) -> None:
        """Candidates answering the same offered name keep their order."""
        candidates = [("ws", "13"), ("WS", None), ("other", None)]
        order = selectionOrder(offerOf("ws/13"), candidates, identity)
        self.assertEqual([c for _, c in order], [("ws", "13"), ("WS", None)])

    def test_unlistedNeverSelected(self) -> None:
        """A candidate the client did not list is never returned."""
        candidates = [("h2c", None), ("websocket", "13"), ("echo", None)]
        cases: list[tuple[Offer, list[tuple[str, str | None]]]] = [
            (offerOf("tcp"), []),
            (offerOf("websocket/8"), []),
            (offerOf("h2"), []),
            (offerOf("websocket/13", "tcp"), [("websocket", "13")]),
            (offerOf("ECHO", "H2C"), [("echo", None), ("h2c", None)]),
        ]
        for offer, expected in cases:
            for policy in ("client", "server"):
                order = selectionOrder(offer, candidates, identity, policy)
                self.assertEqual(sorted(c for _, c in order), sorted(expected), (offer, policy))

    def test_pairsNameOffered(self) -> None:
        """Each pair names the offered protocol the candidate answers."""
        order = selectionOrder(offerOf("Echo/2"), [("echo", None)], identity)
        self.assertEqual(order, [(ProtocolName("Echo", "2"), ("echo", None))])

    def test_noCandidates(self) -> None:
        """Nothing to pick from gives an empty order."""
        self.assertEqual(selectionOrder(offerOf("a"), [], identity), [])


class SwitchingResponseTests(SynchronousTestCase):
    """
    R7: the exact bytes of C{101 Switching Protocols}.
    """

    def assertSwitching(
        self, protocols: Sequence[str], extra: Sequence[tuple[Any, Any]], upgrade: bytes, rest: bytes = b""
    ) -> None:
        """C{switchingResponse} is exactly: status line, C{Upgrade: upgrade}, C{Connection}, C{rest}, CRLF."""
        self.assertEqual(
            switchingResponse(protocols, extra),
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n%s\r\n"
            % (upgrade, rest),
        )

    def test_oneProtocol(self) -> None:
        """One protocol: the status line, C{Upgrade}, C{Connection}, blank line."""
        self.assertSwitching(["websocket"], (), b"websocket")

    def test_layerAscending(self) -> None:
        """Several layers are listed in the order given (RFC 2817)."""
        self.assertSwitching(("TLS/1.2", "HTTP/1.1"), (), b"TLS/1.2, HTTP/1.1")

    def test_extraHeaders(self) -> None:
        """The plugin's headers follow C{Connection}, in their order."""
        accept = (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        self.assertSwitching(
            ["websocket"],
            (accept, (b"X-Empty", b""), (b"X-Tab", b"a\tb")),
            b"websocket",
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nX-Empty: \r\nX-Tab: a\tb\r\n",
        )

    def test_reservedHeadersDropped(self) -> None:
        """A plugin's own C{Upgrade} or C{Connection} (any case) is dropped."""
        extra = ((b"Upgrade", b"evil"), (b"connection", b"close"), (b"UPGRADE", b"x"), (b"X-Kept", b"1"))
        self.assertSwitching(["echo"], extra, b"echo", b"X-Kept: 1\r\n")

    def test_badPluginHeaders(self) -> None:
        """Header injection or a non-token name raises with status 500."""
        badValues = [(b"X-A", value) for value in (b"1\r\nSet-Cookie: x", b"1\r", b"1\n", b"\x00", "1")]
        badNames = [
            (name, b"1") for name in (b"X-A\r\nB", b"Bad Name", b"Bad:Name", b"", b"caf\xc3\xa9", "X-Str")
        ]
        bad: list[tuple[Any, Any]] = [*badValues, *badNames]
        for header in bad:
            error = self.assertRaises(UpgradeError, switchingResponse, ["echo"], (header,))
            self.assertEqual(error.statusHint, 500, header)

    def test_badProtocolNames(self) -> None:
        """An empty list or a non-token protocol name raises with status 500."""
        for upgrade in ([], ["bad name"], ["a/"], ["a/b/c"], ["caf\u00e9"], ["a\r\n"], ["ok", "n@pe"]):
            error = self.assertRaises(UpgradeError, switchingResponse, upgrade)
            self.assertEqual(error.statusHint, 500, upgrade)


class UpgradeRequiredTests(SynchronousTestCase):
    """
    R9: C{426 Upgrade Required} lists what is acceptable.
    """

    def test_exactBytes(self) -> None:
        """The status line, C{Upgrade}, C{Connection}, and a zero length."""
        self.assertEqual(
            upgradeRequiredResponse(["websocket"]),
            b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Content-Length: 0\r\n\r\n",
        )

    def test_preferenceAndBody(self) -> None:
        """Several protocols keep their order; a body gets a type and length."""
        self.assertEqual(
            upgradeRequiredResponse(["h2c", "websocket/13"], b"upgrade!\n"),
            b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: h2c, websocket/13\r\n"
            b"Connection: Upgrade\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: 9\r\n\r\nupgrade!\n",
        )

    def test_headers(self) -> None:
        """The headers alone, for resources that render their own 426."""
        self.assertEqual(
            upgradeRequiredHeaders(["TLS/1.2", "echo"]),
            ((b"Upgrade", b"TLS/1.2, echo"), (b"Connection", b"Upgrade")),
        )

    def test_badNames(self) -> None:
        """A 426 cannot name no protocol or an invalid one."""
        for protocols in ([], ["a b"]):
            error = self.assertRaises(UpgradeError, upgradeRequiredResponse, protocols)
            self.assertEqual(error.statusHint, 500)


class SimpleResponseTests(SynchronousTestCase):
    """
    The small answers the channel writes itself (400, 413, refusals).
    """

    def test_close(self) -> None:
        """C{close=True} adds C{Connection: close}; the reason is the RFC's."""
        self.assertEqual(
            simpleResponse(413, (), b"big\n", close=True),
            b"HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: 4\r\nConnection: close\r\n\r\nbig\n",
        )

    def test_lengthIsComputed(self) -> None:
        """A given C{Content-Length} is replaced; a given type is kept."""
        headers = ((b"content-length", b"99"), (b"Content-Type", b"text/html"))
        self.assertEqual(
            simpleResponse(403, headers, b"<p>no</p>"),
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nContent-Length: 9\r\n\r\n<p>no</p>",
        )

    def test_badHeaders(self) -> None:
        """Headers are validated like a plugin's."""
        error = self.assertRaises(UpgradeError, simpleResponse, 400, ((b"X", b"a\r\nb"),))
        self.assertEqual(error.statusHint, 500)

    def test_validateHeadersKeepsOrder(self) -> None:
        """Valid headers come back unchanged, as a tuple."""
        headers = [(b"B", b"2"), (b"A", b"1"), (b"B", b"3")]
        self.assertEqual(validateHeaders(headers), tuple(headers))


class MalformedOfferTests(SynchronousTestCase):
    """
    R15: a malformed honoured C{Upgrade} is a 400, never another exception.
    """

    def assertBadRequest(self, upgrade: list[bytes]) -> None:
        """C{upgrade}, honoured, raises L{UpgradeError} with status 400."""
        error = self.assertRaises(UpgradeError, offerFromHeaders, b"HTTP/1.1", upgrade, [b"Upgrade"])
        self.assertEqual(error.statusHint, 400)
        error = self.assertRaises(UpgradeError, parseProtocolList, upgrade)
        self.assertEqual(error.statusHint, 400)

    def test_nonTokenCharacters(self) -> None:
        """Each character outside C{tchar} in a name is refused."""
        for byte in range(256):
            char = bytes([byte])
            if char.decode("latin-1") in TCHARS or char in b", \t/":
                continue
            self.assertBadRequest([b"a" + char + b"b"])

    def test_oversizeField(self) -> None:
        """A field over L{MAX_UPGRADE_FIELD} bytes is refused, even on two lines."""
        self.assertBadRequest([b"a" * (MAX_UPGRADE_FIELD + 1)])
        half = MAX_UPGRADE_FIELD // 2
        self.assertBadRequest([b"a" * half, b"b" * (MAX_UPGRADE_FIELD - half + 1)])
        self.assertBadRequest([b"a," + b" " * MAX_UPGRADE_FIELD])

    def test_fieldAtLimit(self) -> None:
        """A field of exactly L{MAX_UPGRADE_FIELD} bytes is parsed."""
        (protocol,) = parseProtocolList([b"a" * MAX_UPGRADE_FIELD])
        self.assertEqual(protocol.name, "a" * MAX_UPGRADE_FIELD)

    def test_tooManyElements(self) -> None:
        """More than L{MAX_OFFERED} protocols are refused, even over lines."""
        many = [b"p%d" % i for i in range(MAX_OFFERED + 1)]
        self.assertBadRequest([b", ".join(many)])
        self.assertBadRequest(many)

    def test_configuredLimit(self) -> None:
        """C{maxOffered} bounds the list and (64 bytes per protocol) the field; the error names the limit."""
        self.assertEqual(len(parseProtocolList([b"a, b"], maxOffered=2)), 2)
        with self.assertRaises(UpgradeError) as caught:
            parseProtocolList([b"a, b, c"], maxOffered=2)
        self.assertEqual((caught.exception.statusHint, caught.exception.limit), (400, "max-upgrade-offers"))
        self.assertEqual(len(parseProtocolList([b"a" * 128], maxOffered=2)), 1)
        with self.assertRaises(UpgradeError):
            parseProtocolList([b"a" * 129], maxOffered=2)
        with self.assertRaises(UpgradeError) as malformed:
            parseProtocolList([b"n@pe"], maxOffered=2)
        self.assertIsNone(malformed.exception.limit)

    def test_elementsAtLimit(self) -> None:
        """Exactly L{MAX_OFFERED} protocols, with empty elements, are parsed."""
        many = b", ,".join(b"p%d" % i for i in range(MAX_OFFERED))
        self.assertEqual(len(parseProtocolList([many])), MAX_OFFERED)


class UpgradeRequestTests(SynchronousTestCase):
    """
    The sans-IO view of the original request that protocols receive.
    """

    def test_headersAndPath(self) -> None:
        """Headers are looked up in any case; the path drops the query."""
        request = UpgradeRequest(
            b"GET", b"/chat?room=1", b"HTTP/1.1", ((b"x-a", b"1"), (b"host", b"h"), (b"x-a", b"2"))
        )
        self.assertEqual(request.getHeader(b"X-A"), b"1")
        self.assertEqual(request.getHeaders(b"x-A"), [b"1", b"2"])
        self.assertIsNone(request.getHeader(b"missing"))
        self.assertEqual(request.getHeaders(b"missing"), [])
        self.assertEqual(request.path, b"/chat")
        self.assertEqual(request.body, b"")
        self.assertEqual(request.offer, Offer(()))


# Hypothesis strategies.
tokens = st.text(alphabet=TCHARS, min_size=1, max_size=8)
protocolNames = st.builds(ProtocolName, tokens, st.one_of(st.none(), tokens))
# A small vocabulary so that offers and candidates often collide.
smallNames = st.sampled_from(["a", "A", "b", "ws", "WS", "WebSocket", "websocket", "h2c"])
smallVersions = st.sampled_from([None, "1", "13"])
smallProtocols = st.builds(ProtocolName, smallNames, smallVersions)
candidateLists = st.lists(st.tuples(smallNames, smallVersions), max_size=6)
policies = st.sampled_from(["client", "server"])
ows = st.text(alphabet=" \t", max_size=3)


def caseVariant(data: st.DataObject, text: str) -> str:
    """C{text} with the case of each letter drawn at random."""
    flips = data.draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.swapcase() if flip else c for c, flip in zip(text, flips, strict=True))


def renderVariant(data: st.DataObject, protocols: list[ProtocolName]) -> list[bytes]:
    """
    The field lines of C{protocols} with random OWS, empty elements, line
    splits and name case: the same list to a conforming parser.
    """
    elements = []
    for protocol in protocols:
        for _ in range(data.draw(st.integers(0, 2))):
            elements.append(data.draw(ows))
        name = caseVariant(data, protocol.name)
        text = name if protocol.version is None else f"{name}/{protocol.version}"
        elements.append(data.draw(ows) + text + data.draw(ows))
    lines: list[list[str]] = [[]]
    for element in elements:
        newLine: bool = data.draw(st.booleans())
        if lines[-1] and newLine:
            lines.append([])
        lines[-1].append(element)
    return [",".join(line).encode("ascii") for line in lines]


class SelectionPropertyTests(SynchronousTestCase):
    """
    Properties of selection over generated offers and candidates.
    """

    @given(st.lists(smallProtocols, max_size=6), candidateLists, policies)
    def test_onlyListedProtocols(
        self,
        offered: list[ProtocolName],
        candidates: list[tuple[str, str | None]],
        policy: str,
    ) -> None:
        """(a) Every selected pair is a listed protocol its candidate answers."""
        offer = Offer(tuple(offered))
        order = selectionOrder(offer, candidates, identity, policy)  # type: ignore[arg-type]
        for protocol, candidate in order:
            self.assertIn(protocol, offer.protocols)
            self.assertIn(candidate, candidates)
            self.assertTrue(matches(protocol, *candidate))
        expected = sum(1 for p in offered for c in candidates if matches(p, *c))
        self.assertEqual(len(order), expected)
        if policy == "client" and order:
            self.assertTrue(matches(order[0][0], *order[0][1]))
            first = next(p for p in offered if any(matches(p, *c) for c in candidates))
            self.assertEqual(order[0][0], first)

    @given(st.lists(smallProtocols, min_size=1, max_size=6), candidateLists, policies, st.data())
    def test_variantsChooseAlike(
        self,
        offered: list[ProtocolName],
        candidates: list[tuple[str, str | None]],
        policy: str,
        data: st.DataObject,
    ) -> None:
        """(c) OWS, empty-element and case variants of a list choose alike."""
        canonical = [", ".join(str(p) for p in offered).encode("ascii")]
        variant = renderVariant(data, offered)
        expected = offerFromHeaders(b"HTTP/1.1", canonical, [b"Upgrade"])
        got = offerFromHeaders(b"HTTP/1.1", variant, [b"Upgrade"])
        assert expected is not None and got is not None
        self.assertEqual([p.key for p in got.protocols], [p.key for p in expected.protocols])
        self.assertEqual(
            [c for _, c in selectionOrder(got, candidates, identity, policy)],  # type: ignore[arg-type]
            [c for _, c in selectionOrder(expected, candidates, identity, policy)],  # type: ignore[arg-type]
        )


class ParsingPropertyTests(SynchronousTestCase):
    """
    Properties of parsing over arbitrary and generated input.
    """

    @settings(max_examples=300)
    @given(
        st.one_of(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]), st.binary(max_size=10)),
        st.lists(st.binary(max_size=80), max_size=4),
        st.lists(
            st.one_of(st.binary(max_size=30), st.sampled_from([b"Upgrade", b"keep-alive, upgrade"])),
            max_size=3,
        ),
    )
    def test_arbitraryBytes(self, version: bytes, upgrade: list[bytes], connection: list[bytes]) -> None:
        """(b) Arbitrary bytes give an offer, L{None} or a 400 L{UpgradeError}."""
        for call in (
            lambda: offerFromHeaders(version, upgrade, connection),
            lambda: parseProtocolList(upgrade),
        ):
            try:
                result = call()
            except UpgradeError as error:
                self.assertIsInstance(error.statusHint, int)
                self.assertEqual(error.statusHint, 400)
            else:
                self.assertIsInstance(result, (Offer, tuple, type(None)))
        self.assertIsInstance(parseConnectionOptions(connection), frozenset)

    @given(st.lists(st.text(alphabet=TCHARS + ', \t/@;"\r\n\x00\x80', max_size=40), max_size=4))
    def test_nearlyValidText(self, lines: list[str]) -> None:
        """(b) Text close to the grammar never raises anything else either."""
        upgrade = [line.encode("latin-1") for line in lines]
        try:
            result = offerFromHeaders(b"HTTP/1.1", upgrade, [b"Upgrade"])
        except UpgradeError as error:
            self.assertEqual(error.statusHint, 400)
        else:
            if result is not None:
                self.assertTrue(1 <= len(result.protocols) <= MAX_OFFERED)

    @given(st.lists(protocolNames, min_size=1, max_size=MAX_OFFERED))
    def test_roundTrip(self, protocols: list[ProtocolName]) -> None:
        """(d) Formatting valid protocols then parsing gives them back."""
        formatted = formatProtocols(str(p) for p in protocols)
        assume(len(formatted) <= MAX_UPGRADE_FIELD)
        self.assertEqual(parseProtocolList([formatted]), tuple(protocols))
        offer = offerFromHeaders(b"HTTP/1.1", [formatted], [b"Upgrade"])
        self.assertEqual(offer, Offer(tuple(protocols)))


class FramingTests(SynchronousTestCase):
    """
    R16: L{checkFraming} refuses what an intermediary could frame differently.
    """

    def test_table(self) -> None:
        """Host count (one; none only before HTTP/1.1) and Transfer-Encoding, case by case."""
        cases = [
            (b"HTTP/1.1", [b"h"], [], True),
            (b"HTTP/1.1", [], [], False),
            (b"HTTP/1.1", [b"h", b"h"], [], False),
            (b"HTTP/1.0", [], [], True),
            (b"HTTP/1.0", [b"h", b"i"], [], False),
            (b"HTTP/1.1", [b"h"], [b"chunked"], True),
            (b"HTTP/1.1", [b"h"], [b"CHUNKED "], True),
            (b"HTTP/1.1", [b"h"], [b"identity"], False),
            (b"HTTP/1.1", [b"h"], [b"gzip, chunked"], False),
            (b"HTTP/1.1", [b"h"], [b"chunked", b"chunked"], False),
            (b"HTTP/1.1", [b"h"], [b""], False),
            (b"HTTP/1.0", [b"h"], [b"identity"], False),
            (b"HTTP/1.1", [b""], [], True),
            (b"HTTP/1.1", [b"[::1]:8080"], [], True),
            (b"HTTP/1.1", [b"a b"], [], False),
            (b"HTTP/1.1", [b"[::1"], [], False),
            (b"HTTP/1.1", [b"h\x01"], [], False),
            (b"HTTP/1.0", [b"user@h"], [], False),
        ]
        for version, hosts, codings, ok in cases:
            if ok:
                self.assertIsNone(checkFraming(version, hosts, codings))
            else:
                error = self.assertRaises(UpgradeError, checkFraming, version, hosts, codings)
                self.assertEqual(error.statusHint, 400)

    @given(
        st.sampled_from([b"HTTP/1.0", b"HTTP/1.1"]),
        st.lists(st.binary(max_size=8), max_size=3),
        st.lists(st.binary(max_size=12), max_size=3),
    )
    def test_onlyUpgradeError(self, version: bytes, hosts: list[bytes], codings: list[bytes]) -> None:
        """Any input either passes or raises a 400 L{UpgradeError}; passing means unambiguous."""
        try:
            checkFraming(version, hosts, codings)
        except UpgradeError as error:
            self.assertEqual(error.statusHint, 400)
        else:
            self.assertTrue(len(hosts) == 1 or (version == b"HTTP/1.0" and not hosts))
            self.assertTrue(not hosts or hosts[0] == b"" or hostName(hosts[0]) is not None)
            self.assertTrue(not codings or codings[0].strip(b" \t").lower() == b"chunked")


class HostTests(SynchronousTestCase):
    """
    L{hostName} and L{hostAllowed}: the Host allow-list against DNS rebinding.
    """

    def test_hostName(self) -> None:
        """The name without port, lower-cased, IPv6 without brackets; L{None} when malformed."""
        for value, name in (
            (b"Example.COM", "example.com"),
            (b"example.com:8080", "example.com"),
            (b"127.0.0.1:80", "127.0.0.1"),
            (b"[::1]:8080", "::1"),
            (b"[::1]", "::1"),
            (b"a b", None),
            (b"", None),
            (b"host:port", None),
            (b"[::1", None),
            (b"user@host", None),
        ):
            self.assertEqual(hostName(value), name, value)

    def test_allowed(self) -> None:
        """Exact names, subdomain wildcards, C{*} and L{None} (any)."""
        allowed = frozenset({"example.com", "*.example.net"})
        for value, ok in (
            (b"example.com", True),
            (b"EXAMPLE.com:1", True),
            (b"www.example.com", False),
            (b"example.net", False),
            (b"a.example.net", True),
            (b"a.b.example.net:9", True),
            (b"evil-example.net", False),
            (b"a b", False),
        ):
            self.assertEqual(hostAllowed(value, allowed), ok, value)
        self.assertTrue(hostAllowed(b"anything", None))
        self.assertTrue(hostAllowed(b"anything", frozenset({"*"})))

    def test_loopback(self) -> None:
        """The loopback default admits this machine's names only."""
        for value, ok in (
            (b"localhost:8080", True),
            (b"127.0.0.1", True),
            (b"[::1]:1", True),
            (b"rebind.evil", False),
        ):
            self.assertEqual(hostAllowed(value, LOOPBACK_HOSTS), ok, value)


class ReasonPhraseTests(SynchronousTestCase):
    """
    Every status txupgrade sends has its RFC 9110 reason phrase.
    """

    def test_phrases(self) -> None:
        """Including those Twisted lacks or words differently."""
        for status, phrase in (
            (101, b"Switching Protocols"),
            (400, b"Bad Request"),
            (408, b"Request Timeout"),
            (413, b"Content Too Large"),
            (414, b"URI Too Long"),
            (426, b"Upgrade Required"),
            (431, b"Request Header Fields Too Large"),
            (503, b"Service Unavailable"),
            (599, b"Unknown"),
        ):
            self.assertEqual(reasonPhrase(status), phrase)
