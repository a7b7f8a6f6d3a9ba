"""
C{twistd txupgrade --tls-certificate PEM}: the TLS upgrade on plain
listeners, and the same certificate on C{ssl:} listeners.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import ssl
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support.net import reactor, stopAtCleanup, trackConnections, withTimeout
from tests.support.tls import certificateFiles
from txupgrade.client import HTTPClientProtocol, upgradeToTLS
from txupgrade.daemon.service import prepareEndpoint
from txupgrade.protocols.tls import sslListenDescription
from txupgrade.registry import ProtocolRegistry
from txupgrade.tap import Options, makeSite


class OptionsTests(SynchronousTestCase):
    """The option, parsed."""

    def setUp(self) -> None:
        self.ca, self.good, self.keyless = certificateFiles()

    def test_enablesTLSUpgrade(self) -> None:
        """With a good PEM the site offers the TLS upgrade."""
        options = Options()
        options.parseOptions(["--tls-certificate", str(self.good)])
        self.assertIsNotNone(options["tls-options"])
        site = makeSite(options, ProtocolRegistry())
        self.assertIn("TLS", site.protocols.names())

    def test_withoutOption(self) -> None:
        """Without it, no TLS upgrade."""
        options = Options()
        options.parseOptions([])
        self.assertNotIn("TLS", makeSite(options, ProtocolRegistry()).protocols.names())

    def test_keylessPEM(self) -> None:
        """A PEM without the key is a one-line error saying so (exit status 1)."""
        error = self.assertRaises(
            SystemExit, Options().parseOptions, ["--tls-certificate", str(self.keyless)]
        )
        self.assertIn("no private key", str(error.code))
        self.assertNotIn("\n", str(error.code))

    def test_sslListeners(self) -> None:
        """ssl: listeners without a key get the PEM; others are unchanged."""
        self.assertEqual(sslListenDescription("ssl:8443", "/a:b=c.pem"), "ssl:8443:privateKey=/a\\:b\\=c.pem")
        for kept in ("tcp:8080", "ssl:8443:privateKey=k.pem", "ssl:8443:interface=::1:privateKey=k.pem"):
            self.assertEqual(sslListenDescription(kept, "/x.pem"), kept)


class ServeTests(TestCase):
    """Both listeners, served from the options, over real sockets."""

    timeout = 60

    @inlineCallbacks
    def test_plainAndSSLListeners(self) -> Any:
        """The TLS upgrade on tcp:, a direct TLS connection on ssl:, one certificate."""
        ca, good, _ = certificateFiles()
        options = Options()
        options.parseOptions(
            [
                "--tls-certificate",
                str(good),
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--listen",
                "ssl:0:interface=127.0.0.1",
            ]
        )
        site = makeSite(options, ProtocolRegistry())
        connections = trackConnections(site)
        ports = []
        for description in options["listen"]:
            endpoint = serverFromString(reactor, description)
            prepareEndpoint(endpoint, site)  # as the daemon readies each listener
            port = yield endpoint.listen(site)
            stopAtCleanup(self, port, connections)
            ports.append(port.getHost().port)
        root = ssl.Certificate.loadPEM(ca.cert_pem.bytes())
        clientOptions = ssl.optionsForClientTLS("127.0.0.1", trustRoot=root)
        plain = TCP4ClientEndpoint(reactor, "127.0.0.1", ports[0], timeout=5)
        http, response = yield withTimeout(upgradeToTLS(plain, clientOptions, target=b"/echo"))
        self.addCleanup(http.transport.abortConnection)
        self.assertEqual(response.status, 200)
        self.assertIn(b"echo", response.body)
        from twisted.internet.endpoints import connectProtocol, wrapClientTLS

        direct = wrapClientTLS(clientOptions, TCP4ClientEndpoint(reactor, "127.0.0.1", ports[1], timeout=5))
        client = yield withTimeout(connectProtocol(direct, HTTPClientProtocol()))
        self.addCleanup(client.transport.abortConnection)
        answer = yield withTimeout(client.request(b"GET", b"/echo", host=b"127.0.0.1"))
        self.assertEqual(answer.body, response.body)
