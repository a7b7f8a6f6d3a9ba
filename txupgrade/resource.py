"""
Resources that bind protocols to a path, answering C{426} without an upgrade.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from twisted.web import pages
from twisted.web.error import UnsupportedMethod
from twisted.web.http import NOT_ALLOWED, NOT_IMPLEMENTED
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, supportedMethods
from zope.interface import implementer

from txupgrade import negotiation
from txupgrade.interfaces import IUpgradeProtocol, IUpgradeResource
from txupgrade.registry import protocolName

__all__ = ["BytesResource", "DirectoryResource", "PlainResource", "UpgradeRequiredResource"]


class PlainResource(Resource):
    """
    A twisted.web C{Resource} whose answer to a method it has no C{render_}
    for is twisted.web's (C{405} with C{Allow}, or C{501}), built with
    C{twisted.web.pages}: twisted.web's own builds its deprecated error page,
    with a warning on every such request. C{HEAD} where C{GET} is allowed
    is left to twisted.web, which answers it from C{render_GET}.
    """

    def render(self, request: Request) -> bytes:
        try:
            return cast(bytes, super().render(request))
        except UnsupportedMethod as error:
            allowed: list[bytes] = list(error.allowedMethods)
            if request.method == b"HEAD" and b"GET" in allowed:
                raise
            if request.method in supportedMethods:
                request.setHeader(b"Allow", b", ".join(allowed))
                text = f"The method {request.method.decode('latin-1')} is not allowed here."
                page = pages.errorPage(NOT_ALLOWED, "Method Not Allowed", text)
            else:
                text = f"I don't know how to treat a {request.method.decode('latin-1')} request."
                page = pages.errorPage(NOT_IMPLEMENTED, "Not Implemented", text)
            return cast(bytes, page.render(request))


class BytesResource(PlainResource):
    """
    Fixed bytes of one media type for C{GET} and C{HEAD}: what
    C{twisted.web.static.Data} serves, without importing C{twisted.web.static}
    (which builds twisted.web's deprecated error pages, with their warnings,
    as it is imported).
    """

    isLeaf = True

    def __init__(self, body: bytes, mediaType: str) -> None:
        super().__init__()
        self.body = body
        self.mediaType = mediaType.encode("ascii")

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", self.mediaType)
        request.setHeader(b"content-length", b"%d" % len(self.body))
        return b"" if request.method == b"HEAD" else self.body

    render_HEAD = render_GET


class DirectoryResource(PlainResource):
    """
    A plain parent of the resources put in it; any other child is
    C{pages.notFound()} (escaped HTML), not twisted.web's deprecated
    C{NoResource}. Its children are found without code (L{txupgrade.offer.staticResource}).
    """

    def getChild(self, path: bytes, request: Request) -> IResource:
        return pages.notFound()


@implementer(IUpgradeResource)
class UpgradeRequiredResource(PlainResource):
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
