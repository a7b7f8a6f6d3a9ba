"""
Resources that bind protocols to a path, answering C{426} without an upgrade.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.web import pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request
from zope.interface import implementer

from txupgrade import negotiation
from txupgrade.interfaces import IUpgradeProtocol, IUpgradeResource
from txupgrade.registry import protocolName

__all__ = ["DirectoryResource", "UpgradeRequiredResource"]


class DirectoryResource(Resource):
    """
    A plain parent of the resources put in it; any other child is
    C{pages.notFound()} (escaped HTML), not twisted.web's deprecated
    C{NoResource}. Its children are found without code (L{txupgrade.offer.staticResource}).
    """

    def getChild(self, path: bytes, request: Request) -> IResource:
        return pages.notFound()


@implementer(IUpgradeResource)
class UpgradeRequiredResource(Resource):
    """
    A path that is served only through one of C{protocols} (R9).

    A request that offers one of them switches (see L{UpgradeAwareRequest});
    any other gets C{426 Upgrade Required} listing them in preference order,
    with C{Connection: Upgrade}, plus L{extraHeaders}.

    @ivar extraHeaders: More headers for the C{426} (e.g.
        C{Sec-WebSocket-Version: 13} for WebSocket).
    """

    isLeaf = True

    def __init__(
        self,
        protocols: Iterable[IUpgradeProtocol],
        extraHeaders: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__()
        self.upgradeProtocols = tuple(protocols)
        self.extraHeaders = negotiation.validateHeaders(extraHeaders)
        names = [protocolName(p) for p in self.upgradeProtocols]
        self._headers = negotiation.upgradeRequiredHeaders(names) + self.extraHeaders
        self._body = b"This resource requires a protocol upgrade to: %s\n" % ", ".join(names).encode("ascii")

    def render(self, request: Request) -> bytes:
        """Answer C{426} naming the protocols this path needs."""
        request.setResponseCode(426, b"Upgrade Required")
        headers = request.responseHeaders
        # This path's list replaces what the site may have advertised (R5).
        headers.removeHeader(b"Upgrade")
        for name, value in self._headers:
            if name == b"Connection" and value in headers.getRawHeaders(b"Connection", []):
                continue
            headers.addRawHeader(name, value)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return self._body
