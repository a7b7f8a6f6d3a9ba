"""
The Twisted glue: an HTTP/1.1 channel and site that switch protocols in place.

Theory of operation
-------------------
L{UpgradeChannel} notes the client's offer once the headers are in
(L{negotiation.offerFromHeaders}), bounds the body of an upgrade request, and
otherwise lets L{HTTPChannel} do what it does: answer earlier pipelined
requests first (R13), send C{100 Continue} (R10), read the whole body (R11).
L{UpgradeAwareRequest.render} then runs when the resource for the path is
known, so path-bound protocols (L{IUpgradeResource}) and the site's
connection-wide ones are negotiated together in the client's order (R6). On
an C{Accept}, L{UpgradeChannel.switchProtocol} writes the C{101}, detaches the
HTTP machinery and hands the transport and every trailing byte to the new
protocol (R8, R12).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, cast

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource

from txupgrade import _twistedcompat as _compat
from txupgrade import negotiation
from txupgrade.interfaces import IUpgradeProtocol, IUpgradeResource
from txupgrade.negotiation import Accept, Decline, Offer, Refuse, UpgradeError
from txupgrade.registry import ProtocolRegistry, protocolName

__all__ = ["UpgradeAwareRequest", "UpgradeChannel", "UpgradeSite"]

_log = Logger(namespace="txupgrade.channel")


def _nameOf(protocol: IUpgradeProtocol) -> tuple[str, str | None]:
    return protocol.name, protocol.version


class UpgradeAwareRequest(server.Request):
    """
    A request that negotiates an upgrade once its resource is known.

    A site's custom request factory must subclass this one.
    """

    _upgradeOffer: Offer | None = None
    _upgradeError: UpgradeError | None = None

    def render(self, resrc: IResource) -> None:
        """Switch, refuse, or render C{resrc} as usual (advertising, R5)."""
        if self._upgradeError is not None:
            error, self._upgradeError = self._upgradeError, None
            _log.info(
                "Refused malformed upgrade from {peer}: {error}",
                peer=self.getClientAddress(),
                error=str(error),
            )
            self._answer(error.statusHint, (), str(error).encode("utf-8", "replace"))
            return
        offer = self._upgradeOffer
        if offer is None:
            return super().render(resrc)
        self._upgradeOffer = None
        site = cast(UpgradeSite, self.site)
        candidates = _candidates(resrc, site.protocols)
        order = negotiation.selectionOrder(offer, candidates, _nameOf, site.policy)
        if not order:
            return self._renderPlain(resrc, candidates)
        channel = cast(UpgradeChannel, self.channel)
        upgradeRequest = channel._upgradeRequest(self, offer)
        self._tryNext(iter(order), upgradeRequest, resrc, candidates)

    def _renderPlain(self, resrc: IResource, candidates: Sequence[IUpgradeProtocol]) -> None:
        """Render C{resrc} without switching, listing what we could switch to."""
        site = cast(UpgradeSite, self.site)
        if site.advertise and candidates:
            self.responseHeaders.setRawHeaders(
                b"Upgrade", [negotiation.formatProtocols(protocolName(p) for p in candidates)]
            )
            self.responseHeaders.addRawHeader(b"Connection", b"Upgrade")
        server.Request.render(self, resrc)

    def _tryNext(
        self,
        order: Iterator[tuple[Any, IUpgradeProtocol]],
        upgradeRequest: negotiation.UpgradeRequest,
        resrc: IResource,
        candidates: Sequence[IUpgradeProtocol],
    ) -> None:
        """
        Ask each candidate in turn until one answers; render plainly if none does.

        A candidate's C{negotiate} may return a L{Deferred}: the channel keeps
        buffering meanwhile, and the remaining candidates wait for it.
        """
        for _offered, protocol in order:
            try:
                decision = protocol.negotiate(upgradeRequest)
            except Exception:  # noqa: BLE001 - a plugin may raise anything; answer 500
                self._failed(Failure(), protocol)
                return
            if isinstance(decision, Deferred):

                def decided(result: object, protocol: IUpgradeProtocol = protocol) -> None:
                    if self._disconnected:
                        return
                    if not self._decide(result, protocol, upgradeRequest):
                        self._tryNext(order, upgradeRequest, resrc, candidates)

                def failed(reason: Failure, protocol: IUpgradeProtocol = protocol) -> None:
                    if not self._disconnected:
                        self._failed(reason, protocol)

                decision.addCallbacks(decided, failed)
                return
            if self._decide(decision, protocol, upgradeRequest):
                return
        self._renderPlain(resrc, candidates)

    def _decide(
        self, decision: object, protocol: IUpgradeProtocol, upgradeRequest: negotiation.UpgradeRequest
    ) -> bool:
        """Act on one candidate's decision; C{True} once the request is answered."""
        name = protocolName(protocol)
        try:
            if isinstance(decision, Decline):
                _log.debug("{protocol} declined: {reason}", protocol=name, reason=decision.reason)
                return False
            if isinstance(decision, Refuse):
                _log.info(
                    "{protocol} refused {target} from {peer} with {status}: {reason}",
                    protocol=name,
                    target=self.uri,
                    peer=self.getClientAddress(),
                    status=decision.status,
                    reason=decision.reason,
                )
                if not 400 <= decision.status <= 599:
                    raise UpgradeError(f"refusal status {decision.status} is not an error", 500)
                self._answer(decision.status, negotiation.validateHeaders(decision.headers), decision.body)
                return True
            if not isinstance(decision, Accept):
                raise UpgradeError(f"negotiate returned {decision!r}", 500)
            head = negotiation.switchingResponse(decision.upgrade or (name,), decision.headers)
            newProtocol = decision.protocol
            if newProtocol is None:
                newProtocol = protocol.buildProtocol(upgradeRequest, self.site)
            if newProtocol is None:
                raise UpgradeError("buildProtocol returned None", 500)
        except Exception:  # noqa: BLE001 - a plugin may raise anything; answer 500
            self._failed(Failure(), protocol)
            return True
        cast(UpgradeChannel, self.channel).switchProtocol(self, newProtocol, head)
        return True

    def _failed(self, reason: Failure, protocol: IUpgradeProtocol) -> None:
        """Log a plugin's failure and answer C{500}; HTTP/1.1 goes on."""
        _log.failure(
            "Upgrade protocol {protocol} failed on {target}",
            reason,
            protocol=protocolName(protocol),
            target=self.uri,
        )
        self._answer(500, (), b"The upgrade failed on the server.\n")

    def _answer(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes) -> None:
        """Finish this request with a small error response, keeping HTTP/1.1 intact."""
        self.setResponseCode(status)
        for name, value in headers:
            self.responseHeaders.addRawHeader(name, value)
        if body and not self.responseHeaders.hasHeader(b"Content-Type"):
            self.responseHeaders.setRawHeaders(b"Content-Type", [b"text/plain; charset=utf-8"])
        self.responseHeaders.setRawHeaders(b"Content-Length", [b"%d" % len(body)])
        self.write(body)
        self.finish()


def _candidates(resrc: IResource, siteWide: Iterable[IUpgradeProtocol]) -> list[IUpgradeProtocol]:
    """The resource's own protocols, then the site's, without repeats."""
    bound = IUpgradeResource(resrc, None)
    ordered = list(bound.upgradeProtocols) if bound is not None else []
    seen = {id(p) for p in ordered}
    ordered.extend(p for p in siteWide if id(p) not in seen)
    return ordered


class UpgradeChannel(HTTPChannel):
    """
    An L{HTTPChannel} that can hand its connection to another protocol.

    @ivar maxUpgradeBodySize: Largest body an upgrade request may carry;
        a larger one is answered C{413} and the connection closed (R11).
    """

    maxUpgradeBodySize = 1 << 20
    _log = Logger(namespace="txupgrade.channel")
    _pendingRequest: UpgradeAwareRequest | None = None
    _refused = False

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        """
        As L{HTTPChannel.checkPersistence}, reading C{Connection} as the token
        list it is (C{close, Upgrade}, several lines), which Twisted does not.
        """
        options = negotiation.parseConnectionOptions(request.requestHeaders.getRawHeaders(b"connection", ()))
        if version == b"HTTP/1.1" and b"close" in options:
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            return False
        return bool(super().checkPersistence(request, version))

    def dataReceived(self, data: bytes) -> None:
        """Parse C{data}, unless a 413 was sent and the connection is closing."""
        if not self._refused:
            super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        """Note an upgrade offer (R1-R4), bounding its body, then carry on."""
        req = self.requests[-1]
        headers = req.requestHeaders
        self._pendingRequest = None
        try:
            offer = negotiation.offerFromHeaders(
                _compat.requestVersion(self),
                headers.getRawHeaders(b"upgrade", ()),
                headers.getRawHeaders(b"connection", ()),
            )
        except UpgradeError as error:
            req._upgradeError = error
            offer = None
        if offer is not None:
            if self.length is not None and self.length > self.maxUpgradeBodySize:
                self._refuseBody()
                return
            req._upgradeOffer = offer
            self._pendingRequest = req
        super().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        """Read the body, refusing an upgrade request's body past the limit."""
        pending = self._pendingRequest
        super().rawDataReceived(data)
        if pending is not None and self._pendingRequest is pending and self._bodyTooLarge(pending):
            self._refuseBody()

    def allContentReceived(self) -> None:
        """Dispatch the request (the pending offer is settled in render), within the limit."""
        pending, self._pendingRequest = self._pendingRequest, None
        if pending is not None and self._bodyTooLarge(pending):
            # The end of the body came in the same read as its excess.
            self._refuseBody()
            return
        super().allContentReceived()

    def _bodyTooLarge(self, req: UpgradeAwareRequest) -> bool:
        """Whether the body read so far for C{req} is over L{maxUpgradeBodySize}."""
        content = req.content
        return content is not None and not content.closed and content.tell() > self.maxUpgradeBodySize

    def _transport(self) -> Any:
        """The connected transport (the channel is only used while connected)."""
        assert self.transport is not None
        return self.transport

    def _refuseBody(self) -> None:
        """Answer C{413} to an upgrade request whose body is too large, and close."""
        self._pendingRequest = None
        self._log.info(
            "Refused upgrade request body over {limit} bytes from {peer}",
            limit=self.maxUpgradeBodySize,
            peer=self._transport().getPeer(),
        )
        body = b"The upgrade request's body is too large.\n"
        self._transport().write(negotiation.simpleResponse(413, (), body, close=True))
        self.length = None
        self._refused = True
        self.loseConnection()

    def _upgradeRequest(self, req: UpgradeAwareRequest, offer: Offer) -> negotiation.UpgradeRequest:
        """The sans-IO view of C{req}, as protocols receive it."""
        content = req.content
        body = b""
        if content is not None:
            content.seek(0)
            body = content.read()
            content.seek(0)
        transport = self._transport()
        return negotiation.UpgradeRequest(
            method=req.method,
            target=req.uri,
            version=req.clientproto,
            headers=tuple(
                (name.lower(), value)
                for name, values in req.requestHeaders.getAllRawHeaders()
                for value in values
            ),
            body=body,
            offer=offer,
            peer=transport.getPeer(),
            host=transport.getHost(),
            secure=self.isSecure(),
        )

    def switchProtocol(self, req: UpgradeAwareRequest, protocol: Any, head: bytes) -> None:
        """
        Write the C{101} C{head}, and give the connection to C{protocol}.

        Every byte after the request goes to C{protocol}, in order, exactly
        once (R12); the HTTP channel and C{req} are released.
        """
        trailing = _compat.takeTrailingData(self)
        _compat.releaseChannel(self)
        transport = _compat.swapProtocol(self, protocol)
        transport.write(head)
        req.code = 101
        req.code_message = b"Switching Protocols"
        req.sentLength = 0
        # Logged once, like any request: the access log shows the 101.
        self.factory.log(req)
        try:
            protocol.makeConnection(transport)
            if trailing and not transport.disconnecting:
                protocol.dataReceived(trailing)
        except Exception:  # noqa: BLE001 - the new protocol's bug must not reach the HTTP loop
            self._log.failure("Upgraded protocol {protocol!r} failed to start; closing", protocol=protocol)
            transport.abortConnection()


class UpgradeSite(server.Site):
    """
    A L{server.Site} whose connections can switch protocols via ``Upgrade``.

    @ivar protocols: The connection-wide protocols, served on every path.
    @ivar policy: C{"client"} (the client's preference decides, the default)
        or C{"server"} (the order of L{protocols} decides).
    @ivar advertise: Whether a response to a request whose offer was not
        taken lists, in C{Upgrade}, what the site could switch to (R5).
    """

    requestFactory = UpgradeAwareRequest

    def __init__(
        self,
        resource: IResource,
        protocols: ProtocolRegistry | Iterable[IUpgradeProtocol] = (),
        *,
        policy: Literal["client", "server"] = "client",
        advertise: bool = True,
        maxUpgradeBodySize: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, **kwargs)
        if not isinstance(protocols, ProtocolRegistry):
            protocols = ProtocolRegistry(protocols)
        self.protocols = protocols
        self.policy = policy
        self.advertise = advertise
        self.maxUpgradeBodySize = (
            UpgradeChannel.maxUpgradeBodySize if maxUpgradeBodySize is None else maxUpgradeBodySize
        )

    def protocol(self) -> Any:  # type: ignore[override]
        """Build the wrapped channel, as L{Site} does."""
        channel = UpgradeChannel()
        channel.maxUpgradeBodySize = self.maxUpgradeBodySize
        return _compat.wrapChannel(channel)
