"""
RFC 2817 TLS upgrade (L{txupgrade.protocols.tls}) over real sockets: Python's C{ssl}
module and L{txupgrade.client} as clients, the certificate from trustme.
"""

from __future__ import annotations

import socket
import ssl as pyssl
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import ssl
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from zope.interface.verify import verifyObject

from tests.support.http import Hello, Response, holdsResponses, parseHead, parseResponses, upgrade
from tests.support.net import TLSPair, connectClient, listen, reactor, wait, withTimeout
from txupgrade import IUpgradeProtocol, UpgradeRequest, UpgradeSite
from txupgrade.client import upgradeToTLS
from txupgrade.negotiation import Accept, Decline, Offer, ProtocolName
from txupgrade.protocols.tls import (
    CertificateError,
    TLSRequiredResource,
    TLSUpgrade,
    certificateOptionsFromPEM,
)
from txupgrade.resource import DirectoryResource


class Secure(Resource):
    """Says whether the request came over TLS, and echoes a POST body."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"secure=%d path=%s" % (request.isSecure(), request.path)

    def render_POST(self, request: Any) -> bytes:
        return b"secure=%d posted=%s" % (request.isSecure(), request.content.read())


def offer(*tokens: str) -> UpgradeRequest:
    protocols = tuple(ProtocolName(*t.split("/", 1)) if "/" in t else ProtocolName(t) for t in tokens)
    return UpgradeRequest(b"GET", b"/", b"HTTP/1.1", (), offer=Offer(protocols))


class NegotiateTests(SynchronousTestCase):
    """L{TLSUpgrade.negotiate}, sans sockets."""

    def test_provides(self) -> None:
        """TLSUpgrade provides IUpgradeProtocol."""
        self.assertTrue(verifyObject(IUpgradeProtocol, TLSUpgrade(None)))

    def test_versions(self) -> None:
        """Each of TLS/1.0 to TLS/1.3 is accepted, answered with HTTP/1.1 above it."""
        for version in ("1.0", "1.1", "1.2", "1.3"):
            decision = TLSUpgrade(None).negotiate(offer(f"TLS/{version}"))
            self.assertEqual(decision, Accept(upgrade=(f"TLS/{version}", "HTTP/1.1")))

    def test_unknownVersion(self) -> None:
        """TLS/2.0 or a bare TLS is declined."""
        for token in ("TLS/2.0", "TLS"):
            self.assertIsInstance(TLSUpgrade(None).negotiate(offer(token)), Decline)

    def test_alreadySecure(self) -> None:
        """A connection that is already TLS is declined."""
        request = UpgradeRequest(b"GET", b"/", b"HTTP/1.1", (), offer=offer("TLS/1.2").offer, secure=True)
        self.assertIsInstance(TLSUpgrade(None).negotiate(request), Decline)


class CertificateTests(SynchronousTestCase):
    """L{certificateOptionsFromPEM}."""

    def setUp(self) -> None:
        import trustme

        self.cert = trustme.CA().issue_cert("127.0.0.1")
        self.dir = Path(tempfile.mkdtemp())

    def write(self, data: bytes) -> Path:
        path = self.dir / "server.pem"
        path.write_bytes(data)
        return path

    def test_keyAndChain(self) -> None:
        """A PEM with key and certificate chain gives CertificateOptions."""
        options = certificateOptionsFromPEM(self.write(self.cert.private_key_and_cert_chain_pem.bytes()))
        self.assertIsInstance(options, ssl.CertificateOptions)
        self.assertIsNotNone(options.getContext())

    def test_noKey(self) -> None:
        """A PEM without a key is a one-line error saying so."""
        path = self.write(b"".join(blob.bytes() for blob in self.cert.cert_chain_pems))
        error = self.assertRaises(CertificateError, certificateOptionsFromPEM, path)
        self.assertIn("no private key", str(error))
        self.assertNotIn("\n", str(error))

    def test_noCertificate(self) -> None:
        """A PEM with only a key is a one-line error saying so."""
        error = self.assertRaises(
            CertificateError, certificateOptionsFromPEM, self.write(self.cert.private_key_pem.bytes())
        )
        self.assertIn("no certificate", str(error))

    def test_missingFile(self) -> None:
        """A missing file is a one-line error naming it."""
        error = self.assertRaises(CertificateError, certificateOptionsFromPEM, self.dir / "nope.pem")
        self.assertIn("nope.pem", str(error))


def pythonTLSUpgrade(port: int, cafile: str, request: bytes, pipelineHello: bool, then: bytes = b"") -> Any:
    """
    Python's ssl module as an RFC 2817 client, on a blocking socket (run in a
    thread): send C{request}, read the plain 101, handshake, read the answer
    to the original request over TLS, then send C{then} and read its answer.

    With C{pipelineHello} the ClientHello goes in the same write as the request.
    Returns C{(head of the 101, answers over TLS, TLS version)}.
    """
    context = pyssl.create_default_context(cafile=cafile)
    incoming, outgoing = pyssl.MemoryBIO(), pyssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        first = request
        if pipelineHello:
            try:
                tls.do_handshake()
            except pyssl.SSLWantReadError:
                pass
            first += outgoing.read()
        sock.sendall(first)
        buffer = b""
        while (parsed := parseHead(buffer)) is None:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"closed before the 101: {buffer!r}")
            buffer += chunk
        rest = parsed[1]
        head = buffer[: len(buffer) - len(rest)]
        incoming.write(rest)
        while True:
            try:
                tls.do_handshake()
                break
            except pyssl.SSLWantReadError:
                pending = outgoing.read()
                if pending:
                    sock.sendall(pending)
                chunk = sock.recv(65536)
                if not chunk:
                    raise AssertionError("closed during the handshake") from None
                incoming.write(chunk)
        pending = outgoing.read()
        if pending:
            sock.sendall(pending)

        answers = _readResponses(tls, sock, incoming, 1)
        if then:
            tls.write(then)
            sock.sendall(outgoing.read())
            answers += _readResponses(tls, sock, incoming, 1)
        return head, answers, tls.version()


def _readResponses(tls: Any, sock: socket.socket, incoming: Any, count: int) -> list[Response]:
    """Read C{count} whole responses over C{tls} (h11 parses them)."""
    data = b""
    while True:
        if holdsResponses(data, count):
            return parseResponses(data)[0]
        try:
            data += tls.read(65536)
            continue
        except pyssl.SSLWantReadError:
            pass
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed after {data!r}")
        incoming.write(chunk)


#: The first bytes of a ClientHello, cut short.
_CUT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


class TLSUpgradeSocketTests(TestCase):
    """The upgrade, over real sockets."""

    timeout = 60

    def logged(self) -> list[str]:
        """The txupgrade.protocols.tls log messages from now until the end of the test."""
        messages: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "txupgrade.tls":
                messages.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return messages

    def setUp(self) -> None:
        self.pair = TLSPair()
        self.cafile = tempfile.mktemp(suffix=".pem")
        self.pair.ca.cert_pem.write_to_path(self.cafile)
        self.upgrade = TLSUpgrade(self.pair.serverOptions(), handshakeTimeout=5)

    def site(self, **kwargs: Any) -> UpgradeSite:
        root = DirectoryResource()
        root.putChild(b"secure", Secure())
        root.putChild(b"hello", Hello())
        root.putChild(b"private", TLSRequiredResource(Secure(), self.upgrade))
        return UpgradeSite(root, [self.upgrade], **kwargs)

    @inlineCallbacks
    def pythonClient(self, pipelineHello: bool) -> Any:
        port = listen(self, self.site())
        request = upgrade(b"TLS/1.2", b"/secure")
        then = b"POST /secure HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n\r\nbody"
        head, answers, version = yield deferToThread(
            pythonTLSUpgrade, port, self.cafile, request, pipelineHello, then
        )
        self.assertEqual(
            head,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: TLS/1.2, HTTP/1.1\r\nConnection: Upgrade\r\n\r\n",
        )
        self.assertEqual(
            [(answer.status, answer.body) for answer in answers],
            [(b"HTTP/1.1 200 OK", b"secure=1 path=/secure"), (b"HTTP/1.1 200 OK", b"secure=1 posted=body")],
        )
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))

    def test_pythonSSL(self) -> Any:
        """Python's ssl: 101, handshake, the original request answered over TLS, then another."""
        return self.pythonClient(pipelineHello=False)

    def test_pythonSSLHelloBehindRequest(self) -> Any:
        """The ClientHello in the same write as the request is not lost."""
        return self.pythonClient(pipelineHello=True)

    @inlineCallbacks
    def test_txupgradeClient(self) -> Any:
        """txupgrade.client: the original POST answered over TLS, then a second request, 426 first."""
        port = listen(self, self.site())
        options = ssl.optionsForClientTLS(
            "127.0.0.1", trustRoot=ssl.Certificate.loadPEM(self.pair.ca.cert_pem.bytes())
        )
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
        http, response = yield withTimeout(
            upgradeToTLS(
                endpoint, options, target=b"/private", method=b"POST", body=b"first", host=b"127.0.0.1"
            )
        )
        self.addCleanup(http.transport.abortConnection)
        self.assertEqual((response.status, response.body), (200, b"secure=1 posted=first"))
        second = yield withTimeout(http.request(b"GET", b"/private/x", host=b"127.0.0.1"))
        self.assertEqual((second.status, second.body), (200, b"secure=1 path=/private/x"))

    @inlineCallbacks
    def test_426(self) -> Any:
        """A TLS-only resource answers a plain request 426 with Upgrade: TLS/1.2, HTTP/1.1."""
        port = listen(self, self.site())
        client = yield connectClient(self, port)
        client.send(b"GET /private HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = yield client.waitFor(lambda d: d.endswith(b"TLS/1.2.\n"))
        self.assertTrue(data.startswith(b"HTTP/1.1 426 Upgrade Required\r\n"))
        self.assertIn(b"\r\nUpgrade: TLS/1.2, HTTP/1.1\r\n", data)
        self.assertIn(b"\r\nConnection: Upgrade\r\n", data)

    @inlineCallbacks
    def test_refusedOverTLS(self) -> Any:
        """Over a connection that is already TLS the offer is declined: a plain answer, no 101."""
        port = listen(self, self.site(), self.pair.serverOptions())
        client = yield connectClient(self, port, endpoint=self.pair.clientEndpoint(port))
        client.send(upgrade(b"TLS/1.2", b"/secure"))
        data = yield client.waitFor(lambda d: d.endswith(b"secure=1 path=/secure"))
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK\r\n"), data[:40])

    @inlineCallbacks
    def switched(self, port: int, after: bytes = b"") -> Any:
        """A client that offered C{TLS/1.2}, sent C{after} and read the plain C{101}."""
        client = yield connectClient(self, port)
        client.send(upgrade(b"TLS/1.2") + after)
        yield client.waitFor(lambda d: d.endswith(b"\r\n\r\n"))
        return client

    @inlineCallbacks
    def assertOthersServed(self, port: int) -> Any:
        """Another client gets its plain answer."""
        good = yield connectClient(self, port)
        good.send(b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = yield good.waitFor(lambda d: d.endswith(b"hello /hello"))
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK"))

    @inlineCallbacks
    def assertHandshakeTimesOut(self, after: bytes) -> Any:
        """After the C{101} and C{after}: still open at 4 s, closed and logged by 6 s (the timeout is 5 s)."""
        messages = self.logged()
        clock = Clock()
        port = listen(self, self.site(reactor=clock))
        client = yield self.switched(port, after)
        clock.advance(4)
        self.assertIsNone(client.lostReason)
        clock.advance(2)
        data = yield client.waitForClose()
        self.assertTrue(data.startswith(b"HTTP/1.1 101 "))
        self.assertTrue(any("no handshake within 5 s" in m for m in messages), messages)

    def test_noClientHello(self) -> Any:
        """A client that never starts the handshake is closed at the timeout, and logged."""
        return self.assertHandshakeTimesOut(b"")

    def test_stalledHandshake(self) -> Any:
        """A ClientHello cut short (the handshake stalls) is closed at the timeout too."""
        return self.assertHandshakeTimesOut(_CUT_HELLO)

    @inlineCallbacks
    def test_badHandshakeLeavesOthersAlone(self) -> Any:
        """Garbage instead of a ClientHello closes that connection; another client is served."""
        messages = self.logged()
        port = listen(self, self.site())
        bad = yield self.switched(port)
        bad.send(b"this is not TLS at all\r\n\r\n" * 10)
        yield bad.waitForClose()
        yield self.assertOthersServed(port)
        self.assertTrue(any("before the handshake completed" in m for m in messages), messages)

    @inlineCallbacks
    def test_resetMidHandshake(self) -> Any:
        """A client that resets mid-handshake: closed and logged, no error, others served."""
        messages = self.logged()
        port = listen(self, self.site())
        bad = yield self.switched(port, _CUT_HELLO)
        bad.transport.abortConnection()
        yield bad.waitForClose()
        yield wait(lambda: any("before the handshake completed" in m for m in messages))
        yield self.assertOthersServed(port)
        self.assertEqual(self.flushLoggedErrors(), [])
