"""
The call order of L{IUpgradeProtocol}, as its docstring and the docs state it:
negotiate, buildProtocol (the 101 not yet written), the 101, makeConnection,
dataReceived with the trailing bytes, then the rest of the connection.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from txupgrade import Accept, IUpgradeProtocol, UpgradeRequest, UpgradeSite
from txupgrade.resource import DirectoryResource
from txupgrade.testing import MemoryConnection, upgradeRequest

_SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\n"


class _RecordingProtocol(Protocol):
    """Notes every call it gets, and what the server had written by then."""

    def __init__(self, plugin: _RecordingUpgrade) -> None:
        self.plugin = plugin

    def makeConnection(self, transport: object) -> None:
        self.plugin.record("makeConnection")
        super().makeConnection(transport)  # type: ignore[arg-type]

    def dataReceived(self, data: bytes) -> None:
        self.plugin.record("dataReceived", data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.plugin.record("connectionLost")


@implementer(IUpgradeProtocol)
class _RecordingUpgrade:
    """A plugin that records each call and whether the 101 was written yet."""

    name = "order"
    version = None

    def __init__(self, failBuild: bool = False) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.conn: MemoryConnection | None = None
        self.failBuild = failBuild

    def written(self) -> bytes:
        """Everything the server wrote so far, delivered or not."""
        assert self.conn is not None
        return self.conn.received + b"".join(self.conn.serverTransport.stream)

    def record(self, name: str, *args: object) -> None:
        self.calls.append((name, self.written().startswith(_SWITCHED), *args))

    def negotiate(self, request: UpgradeRequest) -> Accept:
        self.record("negotiate", request.body)
        return Accept()

    def buildProtocol(self, request: UpgradeRequest, site: object) -> Protocol:
        self.record("buildProtocol")
        if self.failBuild:
            raise RuntimeError("buildProtocol failed on purpose")
        return _RecordingProtocol(self)


class CallOrderTests(SynchronousTestCase):
    """The channel calls an upgrade protocol in the documented order."""

    def connect(self, plugin: _RecordingUpgrade, chunkSize: int | None) -> MemoryConnection:
        site = UpgradeSite(DirectoryResource(), [plugin], reactor=Clock())
        conn = MemoryConnection(site, chunkSize=chunkSize)
        plugin.conn = conn
        return conn

    def checkOrder(self, chunkSize: int | None) -> None:
        plugin = _RecordingUpgrade()
        conn = self.connect(plugin, chunkSize)
        conn.send(upgradeRequest(["order"], method=b"POST", body=b"body") + b"trailing")
        conn.send(b"later")
        conn.close()
        # Each entry: the call, whether the 101 had been written when it ran, its data.
        self.assertEqual(
            plugin.calls[:3],
            [("negotiate", False, b"body"), ("buildProtocol", False), ("makeConnection", True)],
        )
        data, last = plugin.calls[3:-1], plugin.calls[-1]
        self.assertEqual(last, ("connectionLost", True))
        self.assertEqual({call[:2] for call in data}, {("dataReceived", True)})
        self.assertEqual(b"".join(call[2] for call in data), b"trailinglater")  # type: ignore[misc]
        if chunkSize is None:
            # What came in the request's segment arrives in one call.
            self.assertEqual(data[0][2], b"trailing")

    def test_order(self) -> None:
        """negotiate, buildProtocol before the 101, makeConnection after it, then the data."""
        self.checkOrder(None)

    def test_orderOneByteAtATime(self) -> None:
        """The same order when every byte arrives alone."""
        self.checkOrder(1)

    def test_trailingBytesInOneCall(self) -> None:
        """Bytes that came with the request arrive in one C{dataReceived}, after makeConnection."""
        plugin = _RecordingUpgrade()
        conn = self.connect(plugin, None)
        conn.send(upgradeRequest(["order"]) + b"frame1frame2")
        self.assertEqual(
            [call[0] for call in plugin.calls],
            ["negotiate", "buildProtocol", "makeConnection", "dataReceived"],
        )
        self.assertEqual(plugin.calls[-1], ("dataReceived", True, b"frame1frame2"))
        conn.close()

    def test_buildProtocolFailureIs500(self) -> None:
        """buildProtocol runs before the 101, so its failure is still a 500 and HTTP/1.1 goes on."""
        plugin = _RecordingUpgrade(failBuild=True)
        conn = self.connect(plugin, 1)
        conn.send(upgradeRequest(["order"]))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 500 "), conn.received[:40])
        self.assertNotIn(b" 101 ", conn.received)
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(conn.received.count(b"HTTP/1.1 "), 2)
        conn.close()
