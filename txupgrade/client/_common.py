"""What both clients share: the answers they fire with, the failure they raise, how they connect."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from txupgrade.negotiation import (
    ProtocolName,
)

_log = Logger(namespace="txupgrade.client")

Headers = tuple[tuple[bytes, bytes], ...]

_CLOSED = Failure(ConnectionError("closed"))

T = TypeVar("T")


class UpgradeFailed(Exception):
    """
    The server did not switch: it answered something else, or nothing valid.

    @ivar status: The response's status (C{200}, C{426}, ...; C{101} for an
        invalid switch), or L{None} when no valid response arrived.
    @ivar headers: The response's headers (names lower-cased), or C{()}.
    @ivar body: The response's body, as far as it was read.
    """

    def __init__(self, message: str, status: int | None = None, headers: Headers = (), body: bytes = b""):
        super().__init__(message if status is None else f"{message} (status {status})")
        self.status = status
        self.headers = headers
        self.body = body

    def getHeader(self, name: bytes) -> bytes | None:
        """The first value of header C{name} (any case), or L{None}."""
        return _getHeader(self.headers, name)


def _getHeader(headers: Headers, name: bytes) -> bytes | None:
    name = name.lower()
    for key, value in headers:
        if key == name:
            return value
    return None


@dataclass(frozen=True)
class UpgradeResponse:
    """
    A valid C{101} (or, over HTTP/2, an extended CONNECT's C{2xx}): what the
    client protocol's factory is called with.

    @ivar protocol: The protocol switched to, as the server named it (the
        first, lowest, element of its C{Upgrade} field).
    @ivar upgrade: Every element of the C{101}'s C{Upgrade} field, ascending.
    @ivar headers: The C{101}'s headers, names lower-cased (over HTTP/2:
        the C{200}'s, without pseudo-headers).
    @ivar version: C{b"HTTP/1.1"} for a C{101}, C{b"HTTP/2"} for an extended
        CONNECT's C{200} (L{HTTP2Connection.upgrade}).
    """

    protocol: ProtocolName
    upgrade: tuple[ProtocolName, ...]
    headers: Headers
    version: bytes = b"HTTP/1.1"

    def getHeader(self, name: bytes) -> bytes | None:
        """The first value of header C{name} (any case), or L{None}."""
        return _getHeader(self.headers, name)


@dataclass(frozen=True)
class Response:
    """A complete HTTP response: C{status}, C{headers} (lower-cased names), C{body}."""

    status: int
    headers: Headers
    body: bytes

    def getHeader(self, name: bytes) -> bytes | None:
        """The first value of header C{name} (any case), or L{None}."""
        return _getHeader(self.headers, name)


ProtocolFactory = (
    Callable[[UpgradeResponse], IProtocol] | Mapping[str, Callable[[UpgradeResponse], IProtocol]]
)


def connectWithin(
    endpoint: IStreamClientEndpoint,
    protocol: IProtocol,
    then: Callable[[object], Deferred[T]],
    timeout: float | None,
    reactor: Any,
    waiting: Callable[[], bool],
) -> Deferred[T]:
    """
    Connect C{protocol} to C{endpoint}, then C{then}; once C{timeout}
    seconds have passed (L{None}: never), the result fails and a connection
    that is still C{waiting} is aborted.
    """
    from twisted.internet.endpoints import connectProtocol

    d = connectProtocol(endpoint, protocol).addCallback(then)
    if timeout is not None:
        if reactor is None:
            from twisted.internet import reactor

        def timedOut(reason: Failure) -> Failure:
            transport: Any = protocol.transport  # type: ignore[attr-defined]
            if transport is not None and waiting():
                transport.abortConnection()
            return reason

        d.addTimeout(timeout, reactor)
        d.addErrback(timedOut)
    return d


def buildClientProtocol(factory: ProtocolFactory, response: UpgradeResponse) -> IProtocol:
    """The client protocol C{factory} builds for C{response} (a mapping: by the lower-cased name chosen)."""
    if isinstance(factory, Mapping):
        factory = factory[str(response.protocol).lower()]
    return factory(response)
