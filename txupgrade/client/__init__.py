"""
The client side of C{Upgrade}: ask a server to switch, then speak the new protocol.

Example::

    d = upgrade(endpoint, ["amp"], lambda response: amp.AMP())
    d.addCallback(lambda proto: proto.callRemote(Sum, a=1, b=2))

L{upgrade} connects to an endpoint, sends one HTTP/1.1 request offering the
protocols in preference order (h11 writes it and parses the answer), checks
the C{101} (it names one of the offered protocols first, and C{Connection}
lists C{upgrade}), then connects the protocol your factory builds for the
answer and hands it every byte that came behind the C{101}. Any other answer
fails the C{Deferred} with L{UpgradeFailed}, carrying the status, headers
and body, and the connection is closed.

L{upgradeToTLS} does the same for RFC 2817 (C{Upgrade: TLS/1.2}): after the
C{101} it starts TLS on the connection and reads the original request's
answer over TLS; the connection then serves more requests.

Over HTTP/2 a protocol lives on a stream (RFC 8441 extended CONNECT), and one
connection carries many::

    connection = yield connectHTTP2(endpoint)
    echo = yield connection.upgrade(["echo"], lambda response: MyProtocol())
    chat = yield connection.upgrade(["chat", "echo"], factories, target=b"/room/1")
    ...
    yield connection.close()

L{connectHTTP2} speaks HTTP/2 by prior knowledge on a plain endpoint; on a
TLS endpoint its options must offer ALPN C{h2}
(C{optionsForClientTLS(host, acceptableProtocols=[b"h2"])}). It fires once
the server's SETTINGS allow extended CONNECT, and fails with
L{ExtendedConnectUnavailable} when they do not or TLS did not choose C{h2}.
L{HTTP2Connection.upgrade} sends one C{CONNECT} with C{:protocol} per
stream: after a C{501} (that protocol is not offered there) it tries the
next protocol on a new stream; any other answer but C{2xx} (a plugin's
C{403}, a C{400}) is final and fails with L{UpgradeFailed}, as an HTTP/1.1
refusal does. The protocol's transport is the stream: writes are DATA sent as
flow control allows (a registered producer is paused while bytes wait for
window), C{loseConnection} is END_STREAM (C{connectionLost} once the server
ends too), C{abortConnection} a C{CANCEL} reset, C{pauseProducing} withholds
the window the server needs to send more; the server's END_STREAM is
C{readConnectionLost} for an C{IHalfCloseableProtocol}, else the end. A
server C{GOAWAY} fails the pending upgrades and ends every stream.
L{upgradeHTTP2} is L{upgrade} over HTTP/2: a connection for one stream,
closed when that stream ends.

Needs the C{client} extra (h11); HTTP/2 needs the C{h2c} extra (h2), imported
only when an HTTP/2 connection is built.
"""

from txupgrade.client._common import Response, UpgradeFailed, UpgradeResponse
from txupgrade.client._http2 import ExtendedConnectUnavailable, HTTP2Connection, connectHTTP2, upgradeHTTP2
from txupgrade.client._http11 import HTTPClientProtocol, upgrade, upgradeToTLS

__all__ = [
    "ExtendedConnectUnavailable",
    "HTTP2Connection",
    "HTTPClientProtocol",
    "Response",
    "UpgradeFailed",
    "UpgradeResponse",
    "connectHTTP2",
    "upgrade",
    "upgradeHTTP2",
    "upgradeToTLS",
]
