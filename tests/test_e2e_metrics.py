"""
C{twistd txupgrade --metrics ENDPOINT}: the Prometheus page on its own
listener counts exactly what the test did (on plain and TLS listeners).
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.support.daemon import LOCAL, startDaemon
from tests.support.http import holdsResponses, parseResponse, request, scrapeMetrics, upgrade
from tests.support.net import RawClient, connectClient, inThread, reactor, withTimeout
from tests.support.tls import certificateFiles
from tests.support.websocket import handshake


@inlineCallbacks
def _rescrape(samples: dict[Any, float], port: int) -> Any:
    """Replace C{samples} with a new scrape of C{port}'s C{/metrics}."""
    fresh = yield inThread(scrapeMetrics, port)
    samples.clear()
    samples.update(fresh)


class MetricsTests(TestCase):
    """C{/metrics} against a real daemon."""

    timeout = 120

    @inlineCallbacks
    def test_countsWhatTheTestDid(self) -> Any:
        """Upgrades by outcome, open connections, bytes, handshakes and limit hits, exactly."""
        args = ["--listen", LOCAL, "--metrics", LOCAL, "--max-connections-per-client", "4"]
        daemon = yield startDaemon(self, args)
        [port] = daemon.ports
        metricsPort = int(re.search(rb"metrics on 127\.0\.0\.1:(\d+)", daemon.output).group(1))  # type: ignore[union-attr]
        self.assertNotEqual(metricsPort, port)
        sent: list[bytes] = []

        def send(client: RawClient, data: bytes) -> None:
            sent.append(data)
            client.send(data)

        # Two echo switches: one echoes 5 bytes and closes, one stays open.
        first = yield connectClient(self, port)
        send(first, upgrade(b"echo"))
        yield first.waitFor(lambda d: d.endswith(b"\r\n\r\n"))
        first.send(b"hello")
        yield first.waitFor(lambda d: d.endswith(b"hello"))
        second = yield connectClient(self, port)
        send(second, upgrade(b"echo"))
        yield second.waitFor(lambda d: d.endswith(b"\r\n\r\n"))
        # A WebSocket handshake from another site's page: refused (403).
        refused = yield connectClient(self, port)
        send(refused, handshake(port, b"/ws", extra=[(b"Origin", b"http://evil.example")]))
        yield refused.waitFor(holdsResponses)
        self.assertEqual(parseResponse(refused.data).code, 403, refused.data)
        # A plain request, answered with the usual advertisement.
        plain = yield connectClient(self, port)
        send(plain, request(target=b"/echo"))
        yield plain.waitFor(holdsResponses)
        self.assertEqual(parseResponse(plain.data).code, 200, plain.data)
        # A fifth connection from this address: over the limit.
        over = yield connectClient(self, port)
        yield over.waitForClose()
        self.assertTrue(over.data.startswith(b"HTTP/1.1 503 "), over.data)
        for client in (first, refused, plain):
            client.transport.loseConnection()  # type: ignore[union-attr]
            yield withTimeout(client.lost)

        samples: dict[Any, float] = {}

        @inlineCallbacks
        def settled() -> Any:
            yield _rescrape(samples, metricsPort)
            return samples.get(("txupgrade_connections_active", frozenset({("protocol", "http")}))) == 0

        yield _poll(settled)

        def value(name: str, **labels: str) -> float | None:
            return samples.get((name, frozenset(labels.items())))

        self.assertEqual(value("txupgrade_upgrades_total", protocol="echo", outcome="accepted"), 2)
        self.assertEqual(value("txupgrade_upgrades_total", protocol="websocket", outcome="refused"), 1)
        self.assertIsNone(value("txupgrade_upgrades_total", protocol="websocket", outcome="accepted"))
        self.assertEqual(value("txupgrade_connections_active", protocol="echo"), 1)
        self.assertEqual(value("txupgrade_received_bytes_total", protocol="echo"), 5)
        self.assertEqual(value("txupgrade_sent_bytes_total", protocol="echo"), 5)
        self.assertEqual(value("txupgrade_received_bytes_total", protocol="http"), sum(map(len, sent)))
        httpSent = len(first.data) - 5 + len(second.data) + len(refused.data) + len(plain.data)
        self.assertEqual(value("txupgrade_sent_bytes_total", protocol="http"), httpSent)
        self.assertEqual(value("txupgrade_handshake_seconds_count", protocol="echo"), 2)
        self.assertEqual(value("txupgrade_limit_hits_total", limit="max-connections-per-client"), 1)


def _overTLS(port: int, ca: Any, data: bytes, echo: bytes = b"") -> bytes:
    """
    One TLS connection to C{127.0.0.1:port} (blocking): C{data}, then, once
    a C{101} head is back, C{echo} and its echo; every plaintext byte read until the close.
    """
    import socket
    import ssl

    context = ssl.create_default_context()
    ca.configure_trust(context)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(data)
            received = b""
            while b"\r\n\r\n" not in received:
                received += tls.recv(65536)
            if echo:
                tls.sendall(echo)
                while not received.endswith(echo):
                    received += tls.recv(65536)
                tls.shutdown(socket.SHUT_WR)
            while chunk := tls.recv(65536):
                received += chunk
            return received


class TLSMetricsTests(TestCase):
    """C{/metrics} of a daemon's C{ssl:} listener: the bytes are the plaintext, each counted once."""

    timeout = 120

    @inlineCallbacks
    def test_plaintextBytes(self) -> Any:
        """
        A GET and an C{echo} switch over TLS: the bytes sent and received,
        by protocol, are exactly the plaintext the client sent and read
        (each write counted once, whether by C{write} or C{writeSequence}).
        """
        ca, pem, _ = certificateFiles()
        args = ["--listen", "ssl:0:interface=127.0.0.1", "--tls-certificate", str(pem), "--metrics", LOCAL]
        daemon = yield startDaemon(self, args)
        [port] = daemon.ports
        metricsPort = int(re.search(rb"metrics on 127\.0\.0\.1:(\d+)", daemon.output).group(1))  # type: ignore[union-attr]
        get = request(target=b"/echo", headers=[(b"Connection", b"close")])
        plain = yield inThread(_overTLS, port, ca, get)
        self.assertEqual(parseResponse(plain).code, 200, plain)
        switch = upgrade(b"echo")
        echoed = yield inThread(_overTLS, port, ca, switch, b"hello")
        self.assertTrue(echoed.startswith(b"HTTP/1.1 101 ") and echoed.endswith(b"\r\n\r\nhello"), echoed)
        samples: dict[Any, float] = {}

        @inlineCallbacks
        def settled() -> Any:
            yield _rescrape(samples, metricsPort)
            return samples.get(("txupgrade_sent_bytes_total", frozenset({("protocol", "echo")}))) is not None

        yield _poll(settled)

        def value(name: str, protocol: str) -> float | None:
            return samples.get((name, frozenset({("protocol", protocol)})))

        self.assertEqual(value("txupgrade_received_bytes_total", "http"), len(get) + len(switch))
        self.assertEqual(value("txupgrade_sent_bytes_total", "http"), len(plain) + len(echoed) - 5)
        self.assertEqual(value("txupgrade_received_bytes_total", "echo"), 5)
        self.assertEqual(value("txupgrade_sent_bytes_total", "echo"), 5)


@inlineCallbacks
def _poll(check: Any, attempts: int = 50) -> Any:
    """Call C{check} (a Deferred-returning predicate) until it holds; bounded."""
    for _ in range(attempts):
        if (yield check()):
            return
        yield deferLater(reactor, 0.1, lambda: None)
    raise AssertionError("the metrics never settled")


#: Echo upgrades made by L{WorkersMetricsTests}.
UPGRADES = 12


class WorkersMetricsTests(TestCase):
    """C{--metrics} with C{--workers 2}: the supervisor's page holds both workers' figures."""

    timeout = 180

    @inlineCallbacks
    def test_workersCounted(self) -> Any:
        """Each echo upgrade is counted by the worker that served it; summed, they are what the test did."""
        daemon = yield startDaemon(
            self, ["--workers", "2", "--listen", LOCAL, "--metrics", "tcp:0:interface=127.0.0.1"]
        )
        metricsPort = int(re.search(rb"metrics on 127\.0\.0\.1:(\d+)", daemon.output).group(1))  # type: ignore[union-attr]
        [port] = [
            int(p)
            for p in re.findall(rb"txupgrade serving on tcp:127\.0\.0\.1:(\d+); 2 worker", daemon.output)
        ]
        samples: dict[Any, float] = {}

        @inlineCallbacks
        def bothWorkers() -> Any:
            yield _rescrape(samples, metricsPort)
            workers = {
                dict(labels).get("worker")
                for (name, labels) in samples
                if name == "txupgrade_connections_active"
            }
            return workers == {"1", "2"}

        yield _poll(bothWorkers, attempts=300)
        for _ in range(UPGRADES):
            client = yield connectClient(self, port)
            client.send(upgrade(b"echo"))
            yield client.waitFor(lambda d: d.endswith(b"\r\n\r\n"))
            client.send(b"ping")
            yield client.waitFor(lambda d: d.endswith(b"ping"))
            client.transport.loseConnection()  # type: ignore[union-attr]
            yield withTimeout(client.lost)

        def total(name: str, **labels: str) -> float:
            wanted = set(labels.items())
            return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))

        @inlineCallbacks
        def counted() -> Any:
            yield _rescrape(samples, metricsPort)
            # Bytes are added up when a connection closes, which may come later.
            return total("txupgrade_received_bytes_total", protocol="echo") == 4 * UPGRADES

        yield _poll(counted)
        self.assertEqual(total("txupgrade_upgrades_total", protocol="echo", outcome="accepted"), UPGRADES)
        self.assertEqual(total("txupgrade_handshake_seconds_count", protocol="echo"), UPGRADES)
        self.assertEqual(samples[("txupgrade_workers_running", frozenset())], 2)
        self.assertEqual(samples[("txupgrade_worker_restarts_total", frozenset())], 0)
