"""
The built-in upgrade protocols, each an L{txupgrade.interfaces.IUpgradeProtocol}
(or, for WebSocket, a path-bound L{txupgrade.interfaces.IUpgradeResource}):
C{echo}, the raw-stream handoff (L{txupgrade.protocols.stream}), WebSocket on
autobahn (L{txupgrade.protocols.websocket}), h2c (L{txupgrade.protocols.h2c})
and the RFC 2817 TLS upgrade (L{txupgrade.protocols.tls}).

Layering (checked in CI): a protocol imports the core (C{txupgrade.*} outside
C{protocols} and C{daemon}) and nothing of the daemon. Importing this package
imports no protocol, so no optional extra is needed until one is used.
"""
