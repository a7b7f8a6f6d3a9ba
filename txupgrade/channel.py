"""
The Twisted glue: an HTTP/1.1 channel and site that switch protocols in place.

Theory of operation
-------------------
L{UpgradeChannel} notes the client's offer once the headers are in
(L{negotiation.offerFromHeaders}), bounds the body of an upgrade request, and
otherwise lets L{HTTPChannel} do what it does: answer earlier pipelined
requests first (R13), send C{100 Continue} (R10), read the whole body (R11).

The offer is then negotiated once the resource for the path is known, so
that path-bound protocols (L{IUpgradeResource}) and the site's
connection-wide ones are tried together in the client's order (R6): at once
in L{UpgradeAwareRequest.requestReceived} when the path crosses only static
C{putChild} children (no twisted.web processing, so a switch costs less than
an answer), else in L{UpgradeAwareRequest.render} after twisted.web's own
traversal. On an C{Accept}, L{UpgradeChannel.switchProtocol} writes the
C{101}, detaches the HTTP machinery and hands the transport and every
trailing byte to the new protocol (R8, R12); every other outcome is answered
through the usual twisted.web processing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal, cast

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import HTTPChannel, unquote
from twisted.web.resource import IResource, Resource

from txupgrade import _twistedcompat as _compat
from txupgrade import negotiation
from txupgrade.interfaces import IUpgradeProtocol, IUpgradeResource
from txupgrade.negotiation import Accept, Decline, Offer, Refuse, UpgradeError
from txupgrade.registry import ProtocolRegistry, protocolName

__all__ = ["UpgradeAwareRequest", "UpgradeChannel", "UpgradeSite"]

_log = Logger(namespace="txupgrade.channel")


def _nameOf(protocol: IUpgradeProtocol) -> tuple[str, str | None]:
    return protocol.name, protocol.version


def _staticResource(root: IResource, target: bytes) -> IResource | None:
    """
    The resource for C{target} when reaching it needs no code: every node on
    the way is a plain L{Resource} whose child is in its C{children} (as
    C{putChild} leaves it), or a leaf. Otherwise L{None}: only twisted.web's
    own traversal, with a full request, can tell.
    """
    path = target.split(b"?", 1)[0]
    if not path.startswith(b"/"):
        return None
    node = root
    for segment in path[1:].split(b"/"):
        if node.isLeaf:
            return node
        if type(node).getChildWithDefault is not Resource.getChildWithDefault:
            return None
        child = node.children.get(unquote(segment))  # type: ignore[attr-defined]
        if child is None:
            return None
        node = child
    return node


def _candidates(resrc: IResource, siteWide: Iterable[IUpgradeProtocol]) -> list[IUpgradeProtocol]:
    """The resource's own protocols, then the site's, without repeats."""
    if not IUpgradeResource.providedBy(resrc):
        return list(siteWide)
    ordered = list(resrc.upgradeProtocols)
    seen = {id(p) for p in ordered}
    ordered.extend(p for p in siteWide if id(p) not in seen)
    return ordered


class _Negotiation:
    """
    One request's trip through its candidate protocols, best first (R6).

    L{run} asks them in turn until one answers; its outcome is C{None} (all
    declined), or a tuple: C{("switch", newProtocol, head)}, C{("refuse",
    decision, protocol)}, C{("fail", failure, protocol)} or C{("wait",
    deferred, protocol)} when a C{negotiate} returned a L{Deferred}.
    """

    def __init__(
        self,
        request: UpgradeAwareRequest,
        upgradeRequest: negotiation.UpgradeRequest,
        candidates: list[IUpgradeProtocol],
        order: list[tuple[Any, IUpgradeProtocol]],
    ) -> None:
        self.request = request
        self.upgradeRequest = upgradeRequest
        self.candidates = candidates
        self.remaining = iter(order)
        self.outcome: tuple[Any, ...] | None = None

    def run(self) -> tuple[Any, ...] | None:
        """Ask the remaining candidates until one answers."""
        for _offered, protocol in self.remaining:
            try:
                decision = protocol.negotiate(self.upgradeRequest)
            except Exception:  # noqa: BLE001 - a plugin may raise anything; answer 500
                return ("fail", Failure(), protocol)
            if isinstance(decision, Deferred):
                return ("wait", decision, protocol)
            outcome = self.judge(decision, protocol)
            if outcome is not None:
                return outcome
        return None

    def judge(self, decision: object, protocol: IUpgradeProtocol) -> tuple[Any, ...] | None:
        """What one candidate's decision means; L{None} for a C{Decline}."""
        if isinstance(decision, Decline):
            _log.debug(
                "{protocol} declined: {reason}", protocol=protocolName(protocol), reason=decision.reason
            )
            return None
        try:
            if isinstance(decision, Refuse):
                if not 400 <= decision.status <= 599:
                    raise UpgradeError(f"refusal status {decision.status} is not an error", 500)
                negotiation.validateHeaders(decision.headers)
                return ("refuse", decision, protocol)
            if not isinstance(decision, Accept):
                raise UpgradeError(f"negotiate returned {decision!r}", 500)
            head = negotiation.switchingResponse(
                decision.upgrade or (protocolName(protocol),), decision.headers
            )
            newProtocol = decision.protocol
            if newProtocol is None:
                site = self.request.channel.site  # type: ignore[attr-defined]
                newProtocol = protocol.buildProtocol(self.upgradeRequest, site)
            if newProtocol is None:
                raise UpgradeError("buildProtocol returned None", 500)
        except Exception:  # noqa: BLE001 - a plugin may raise anything; answer 500
            return ("fail", Failure(), protocol)
        return ("switch", newProtocol, head)


class UpgradeAwareRequest(server.Request):
    """
    A request that negotiates an upgrade offer before it is rendered.

    When the path's resource is static (see L{_staticResource}), the decision
    is made as soon as the request is read, before twisted.web processes it:
    a switch then costs less than answering the request would. Otherwise it
    is made in L{render}, once twisted.web's traversal found the resource.
    Only a switch happens outside twisted.web: a refusal, an error, a wait
    or a plain answer go through the usual processing.

    A site's custom request factory must subclass this one.
    """

    _upgradeOffer: Offer | None = None
    _upgradeError: UpgradeError | None = None
    _upgradeNegotiation: _Negotiation | None = None

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """Decide an offer for a static path at once; else process as usual."""
        offer = self._upgradeOffer
        if offer is not None:
            site = cast(UpgradeSite, self.channel.site)  # type: ignore[attr-defined]
            resrc = _staticResource(site.resource, path)
            if resrc is not None:
                self._upgradeOffer = None
                state = self._negotiation(offer, resrc, site, command, path, version)
                state.outcome = state.run()
                if state.outcome is not None and state.outcome[0] == "switch":
                    self.method, self.uri, self.clientproto = command, path, version
                    self.site = site
                    self._switch(state.outcome)
                    return
                self._upgradeNegotiation = state
        super().requestReceived(command, path, version)

    def render(self, resrc: IResource) -> None:
        """Act on the negotiation (switch, refuse, wait) or render C{resrc} (R5)."""
        if self._upgradeError is not None:
            error, self._upgradeError = self._upgradeError, None
            _log.info(
                "Refused malformed upgrade from {peer}: {error}",
                peer=self.getClientAddress(),
                error=str(error),
            )
            self._answer(error.statusHint, (), str(error).encode("utf-8", "replace"))
            return
        state, self._upgradeNegotiation = self._upgradeNegotiation, None
        if state is None:
            offer, self._upgradeOffer = self._upgradeOffer, None
            if offer is None:
                return super().render(resrc)
            site = cast(UpgradeSite, self.site)
            state = self._negotiation(offer, resrc, site, self.method, self.uri, self.clientproto)
            state.outcome = state.run()
        self._act(state, resrc)

    def _negotiation(
        self, offer: Offer, resrc: IResource, site: UpgradeSite, method: bytes, target: bytes, version: bytes
    ) -> _Negotiation:
        """Start negotiating C{offer} for C{resrc}."""
        candidates = _candidates(resrc, site.protocols)
        order = negotiation.selectionOrder(offer, candidates, _nameOf, site.policy)
        upgradeRequest = None
        if order:
            channel = cast(UpgradeChannel, self.channel)
            upgradeRequest = channel._upgradeRequest(self, offer, method, target, version)
        return _Negotiation(self, upgradeRequest, candidates, order)  # type: ignore[arg-type]

    def _act(self, state: _Negotiation, resrc: IResource) -> None:
        """Carry out C{state.outcome} as the answer to this (processed) request."""
        outcome = state.outcome
        if outcome is None:
            self._renderPlain(resrc, state.candidates)
            return
        kind, value, protocol = outcome
        if kind == "switch":
            self._switch(outcome)
        elif kind == "refuse":
            _log.info(
                "{protocol} refused {target} from {peer} with {status}: {reason}",
                protocol=protocolName(protocol),
                target=self.uri,
                peer=self.getClientAddress(),
                status=value.status,
                reason=value.reason,
            )
            self._answer(value.status, value.headers, value.body)
        elif kind == "fail":
            self._failed(value, protocol)
        else:

            def decided(decision: object) -> None:
                if not self._disconnected:
                    state.outcome = state.judge(decision, protocol) or state.run()
                    self._act(state, resrc)

            def failed(reason: Failure) -> None:
                if not self._disconnected:
                    self._failed(reason, protocol)

            value.addCallbacks(decided, failed)

    def _handleStar(self) -> None:
        """
        Negotiate an offer made on C{*} (C{OPTIONS *} with C{Upgrade: h2c}, as
        C{nghttp -u} sends) with the site's protocols, which twisted.web would
        otherwise answer before any negotiation.
        """
        if self._upgradeOffer is None and self._upgradeNegotiation is None and self._upgradeError is None:
            _compat.answerStar(self)
            return
        self.render(_STAR)

    def _switch(self, outcome: tuple[Any, ...]) -> None:
        _kind, newProtocol, head = outcome
        cast(UpgradeChannel, self.channel).switchProtocol(self, newProtocol, head)

    def _renderPlain(self, resrc: IResource, candidates: Sequence[IUpgradeProtocol]) -> None:
        """Render C{resrc} without switching, listing what we could switch to."""
        site = cast(UpgradeSite, self.site)
        if site.advertise and candidates:
            self.responseHeaders.setRawHeaders(
                b"Upgrade", [negotiation.formatProtocols(protocolName(p) for p in candidates)]
            )
            self.responseHeaders.addRawHeader(b"Connection", b"Upgrade")
        server.Request.render(self, resrc)

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


class _Star(Resource):
    """The request target C{*}: answered as twisted.web answers it."""

    isLeaf = True

    def render(self, request: server.Request) -> int:
        _compat.answerStar(request)
        return server.NOT_DONE_YET


_STAR = _Star()


class UpgradeChannel(HTTPChannel):
    """
    An L{HTTPChannel} that can hand its connection to another protocol.

    @ivar maxUpgradeBodySize: Largest body an upgrade request may carry;
        a larger one is answered C{413} and the connection closed (R11).
    """

    maxUpgradeBodySize = 1 << 20
    _log = Logger(namespace="txupgrade.channel")
    _pendingRequest: UpgradeAwareRequest | None = None

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        """
        As L{HTTPChannel.checkPersistence}, reading C{Connection} as the token
        list it is (C{close, Upgrade}, several lines), which Twisted does not.
        """
        persistent = bool(super().checkPersistence(request, version))
        if persistent:
            connection = request.requestHeaders.getRawHeaders(b"connection")
            if (
                connection is not None
                and (len(connection) > 1 or b"," in connection[0])
                and b"close" in negotiation.parseConnectionOptions(connection)
            ):
                request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
                return False
        return persistent

    def allHeadersReceived(self) -> None:
        """Note an upgrade offer (R1-R4), bounding its body, then carry on."""
        req = self.requests[-1]
        headers = req.requestHeaders
        self._pendingRequest = None
        offer = None
        upgrade = headers.getRawHeaders(b"upgrade")
        if upgrade is not None:
            try:
                offer = negotiation.offerFromHeaders(
                    _compat.requestVersion(self), upgrade, headers.getRawHeaders(b"connection", ())
                )
            except UpgradeError as error:
                req._upgradeError = error
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
        # Like HTTPChannel after a last request: ignore whatever else arrives.
        self.dataReceived = lambda data: None  # type: ignore[method-assign]
        self.loseConnection()

    def _upgradeRequest(
        self, req: UpgradeAwareRequest, offer: Offer, method: bytes, target: bytes, version: bytes
    ) -> negotiation.UpgradeRequest:
        """The sans-IO view of C{req}, as protocols receive it."""
        content = req.content
        body = b""
        if content is not None:
            content.seek(0)
            body = content.read()
            content.seek(0)
        return negotiation.UpgradeRequest(
            method=method,
            target=target,
            version=version,
            headers=tuple(
                (name.lower(), value)
                for name, values in req.requestHeaders.getAllRawHeaders()
                for value in values
            ),
            body=body,
            offer=offer,
            peer=req.client,
            host=req.host,
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
    @ivar priorKnowledge: Whether a cleartext connection that starts with the
        HTTP/2 preface is served as HTTP/2 (needs the C{h2c} extra).
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
        priorKnowledge: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, **kwargs)
        if not isinstance(protocols, ProtocolRegistry):
            protocols = ProtocolRegistry(protocols)
        self.protocols = protocols
        self.policy = policy
        self.advertise = advertise
        self.priorKnowledge = priorKnowledge
        self.maxUpgradeBodySize = (
            UpgradeChannel.maxUpgradeBodySize if maxUpgradeBodySize is None else maxUpgradeBodySize
        )

    def protocol(self) -> Any:
        """Build the wrapped channel, as L{Site} does."""
        channel = UpgradeChannel()
        channel.maxUpgradeBodySize = self.maxUpgradeBodySize
        return _compat.wrapChannel(channel)
