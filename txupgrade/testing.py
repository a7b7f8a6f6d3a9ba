"""
In-memory testing for protocol authors: a real upgrade through the real
channel, with no sockets and no reactor.

Example::

    from txupgrade.channel import UpgradeSite
    from txupgrade.testing import MemoryConnection, upgradeRequest

    site = UpgradeSite(Resource(), [MyUpgrade()], reactor=Clock())
    conn = MemoryConnection(site)
    conn.send(upgradeRequest(["my-protocol"]) + b"first bytes")
    assert conn.received.startswith(b"HTTP/1.1 101 ")
    conn.send(b"more")           # reaches the protocol MyUpgrade built
    conn.close()                 # the client hangs up

Every C{send} can be delivered in chunks (C{chunkSize=1} gives one byte at a
time), as C{IProtocol.dataReceived} asks protocols to be tested.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport
from twisted.web.server import Site

_PEER = IPv4Address("TCP", "127.0.0.1", 40000)
_HOST = IPv4Address("TCP", "127.0.0.1", 8080)

__all__ = ["MemoryConnection", "RecordingProtocol", "upgradeRequest"]


def upgradeRequest(
    protocols: Sequence[str],
    target: bytes = b"/",
    *,
    method: bytes = b"GET",
    headers: Iterable[tuple[bytes, bytes]] = (),
    body: bytes | None = None,
    host: bytes = b"127.0.0.1",
) -> bytes:
    """The bytes of an HTTP/1.1 request offering C{protocols}, in that order."""
    lines = [
        method + b" " + target + b" HTTP/1.1",
        b"Host: " + host,
        b"Connection: Upgrade",
        b"Upgrade: " + ", ".join(protocols).encode("ascii"),
    ]
    lines.extend(name + b": " + value for name, value in headers)
    if body is not None:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


class RecordingProtocol(Protocol):
    """A client that keeps every byte it receives and how the connection ended."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lostReason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lostReason = reason


class MemoryConnection:
    """
    A client protocol and a site's server protocol, connected in memory.

    To test timeouts, give the site a clock: C{UpgradeSite(..., reactor=Clock())}.

    @ivar client: The client protocol (a L{RecordingProtocol} by default).
    @ivar server: The protocol the site built (its wrapper, after a switch
        forwarding to the new protocol).
    """

    def __init__(
        self,
        site: Site,
        client: Protocol | None = None,
        *,
        chunkSize: int | None = None,
        peer: IPv4Address = _PEER,
        host: IPv4Address = _HOST,
    ) -> None:
        self.client = client if client is not None else RecordingProtocol()
        self.chunkSize = chunkSize
        self.server = site.buildProtocol(peer)
        self.serverTransport = FakeTransport(self.server, True, host, peer)
        self.clientTransport = FakeTransport(self.client, False, peer, host)
        self.server.makeConnection(self.serverTransport)
        self.client.makeConnection(self.clientTransport)
        self.flush()

    @property
    def received(self) -> bytes:
        """Everything the server has sent a L{RecordingProtocol} client."""
        return bytes(self.client.data)  # type: ignore[attr-defined]

    def send(self, data: bytes) -> None:
        """Write C{data} from the client, then deliver everything pending."""
        self.clientTransport.write(data)
        self.flush()

    def _deliver(self, transport: FakeTransport, data: bytes) -> None:
        step = self.chunkSize or len(data) or 1
        for i in range(0, len(data), step):
            # A real transport stops reading once its protocol closes it.
            if transport.disconnected or transport.disconnecting:
                return
            transport.bufferReceived(data[i : i + step])

    def flush(self) -> None:
        """Move bytes both ways, and report closes, until nothing moves."""
        for _ in range(10000):
            toServer = self.clientTransport.getOutBuffer()
            toClient = self.serverTransport.getOutBuffer()
            if toServer:
                self._deliver(self.serverTransport, toServer)
            if toClient:
                self._deliver(self.clientTransport, toClient)
            if toServer or toClient:
                continue
            if self._closeOne(self.serverTransport, self.clientTransport):
                continue
            if self._closeOne(self.clientTransport, self.serverTransport):
                continue
            return
        raise RuntimeError("MemoryConnection.flush: the peers never went quiet")

    @staticmethod
    def _closeOne(closing: FakeTransport, other: FakeTransport) -> bool:
        if closing.disconnecting and not closing.disconnected:
            closing.disconnected = True
            other.disconnecting = True
            other.reportDisconnect()
            return True
        return False

    def close(self) -> None:
        """The client hangs up; both sides see C{connectionLost}."""
        self.clientTransport.loseConnection()
        self.flush()
