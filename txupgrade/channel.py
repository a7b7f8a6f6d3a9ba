"""
The Twisted glue: an HTTP/1.1 channel and site that switch protocols in place.

Theory of operation
===================
L{UpgradeChannel} refuses, before anything else sees them, requests whose
framing an intermediary could read differently (R16: no or several C{Host},
obs-fold, a C{Transfer-Encoding} other than C{chunked}), heads over the size
limit (414, 431) and hosts the site does not serve. Otherwise it lets
L{HTTPChannel} do what it does: answer earlier pipelined requests first
(R13), send C{100 Continue} (R10), read the whole body (R11), bounding the
body of an upgrade request.

An offer belongs to one L{OfferNegotiation}, made by the channel from the
headers and kept by the request (L{UpgradeAwareRequest.upgrade}). It is
decided once the resource for the path is known, so that path-bound
protocols (L{IUpgradeResource}) and the site's connection-wide ones are tried
together in the client's order (R6): at once in
L{UpgradeAwareRequest.requestReceived} when the path crosses only static
C{putChild} children (no twisted.web processing, so a switch costs less than
an answer), else in L{UpgradeAwareRequest.render} after twisted.web's own
traversal. On a L{Switch}, L{UpgradeChannel.switchProtocol} writes the
C{101}, detaches the HTTP machinery and hands the transport and every
trailing byte to the new protocol (R8, R12); every other outcome is answered
through the usual twisted.web processing.
"""

from __future__ import annotations

import functools
import io
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource, Resource

from txupgrade import _twistedcompat as _compat
from txupgrade import negotiation
from txupgrade.interfaces import IUpgradeProtocol
from txupgrade.negotiation import UpgradeError
from txupgrade.offer import (
    Failed,
    Malformed,
    OfferNegotiation,
    Outcome,
    Pending,
    Refused,
    Switch,
    Unswitched,
    peerText,
    staticResource,
)
from txupgrade.registry import ProtocolRegistry, protocolName
from txupgrade.reporting import LimitLog, PluginFailures, pluginFailed

__all__ = ["UpgradeAwareRequest", "UpgradeChannel", "UpgradeSite"]


class UpgradeAwareRequest(server.Request):
    """
    A request that negotiates an upgrade offer before it is rendered.

    When the path's resource is static (see L{staticResource}), the decision
    is made as soon as the request is read, before twisted.web processes it:
    a switch then costs less than answering the request would. Otherwise it
    is made in L{render}, once twisted.web's traversal found the resource.
    Only a switch happens outside twisted.web: a refusal, an error, a wait
    or a plain answer go through the usual processing.

    A site's custom request factory must subclass this one.

    @ivar upgrade: The request's upgrade offer, set by the channel when the
        headers carry one (R1-R4), else L{None}.
    """

    upgrade: OfferNegotiation | None = None
    _outcome: Outcome | None = None

    def gotLength(self, length: int | None) -> None:
        """
        An HTTP/2 CONNECT has no length: what DATA comes before its answer is
        held in memory (the stream's flow-control window bounds it), not in
        the temporary file twisted.web opens for a body of unknown length.
        """
        if length is None and getattr(self.channel, "command", None) == b"CONNECT":
            self.content = io.BytesIO()
            return
        super().gotLength(length)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """Decide an offer for a static path at once; else process as usual."""
        offer = self.upgrade
        if offer is not None and offer.error is None:
            site = cast(UpgradeSite, self.channel.site)  # type: ignore[attr-defined]
            resrc = staticResource(site.resource, path)
            if resrc is not None:
                self.method, self.uri, self.clientproto = command, path, version
                outcome = offer.decide(self, resrc, site.protocols, site.policy)
                if isinstance(outcome, Switch):
                    self.site = site
                    self._switch(outcome)
                    return
                self._outcome = outcome
        super().requestReceived(command, path, version)

    def render(self, resrc: IResource) -> None:
        """Act on the offer's outcome (switch, refuse, wait) or render C{resrc} (R5)."""
        offer = self.upgrade
        if offer is None:
            return super().render(resrc)
        outcome, self._outcome = self._outcome, None
        if outcome is None:
            site = cast(UpgradeSite, self.site)
            outcome = offer.decide(self, resrc, site.protocols, site.policy)
        self._act(offer, outcome, resrc)

    def _act(self, offer: OfferNegotiation, outcome: Outcome, resrc: IResource) -> None:
        """Carry out C{outcome} as the answer to this (processed) request."""
        match outcome:
            case Switch():
                self._switch(outcome)
            case Unswitched(candidates):
                if self.method == b"CONNECT" and self.clientproto == b"HTTP/2":
                    # Extended CONNECT with no protocol to take it (RFC 8441 §4, RFC 9220 §3).
                    self._answer(501, (), b"No protocol of that name is offered on this path.\n")
                else:
                    self._renderPlain(resrc, candidates)
            case Refused(refusal):
                self._answer(refusal.status, refusal.headers, refusal.body)
            case Failed():
                self._answer(500, (), b"The upgrade failed on the server.\n")
            case Malformed(error):
                self._answer(error.statusHint, (), str(error).encode("utf-8", "replace"))
            case Pending(deferred):

                def decided(decision: object) -> None:
                    if not _compat.requestGone(self):
                        self._act(offer, offer.resume(decision), resrc)

                def failed(reason: Failure) -> None:
                    if not _compat.requestGone(self):
                        self._act(offer, offer.failPending(reason), resrc)

                deferred.addCallbacks(decided, failed)

    def _handleStar(self) -> None:
        """
        Negotiate an offer made on C{*} (C{OPTIONS *} with C{Upgrade: h2c}, as
        C{nghttp -u} sends) with the site's protocols, which twisted.web would
        otherwise answer before any negotiation.
        """
        if self.upgrade is None:
            _compat.answerStar(self)
            return
        self.render(_STAR)

    def _switch(self, outcome: Switch) -> None:
        self.upgrade = None
        switchStream = getattr(self.channel, "switchStream", None)
        if switchStream is not None:
            # An HTTP/2 stream's extended CONNECT: a 200, and the stream is the transport.
            switchStream(self, outcome)
            return
        cast(UpgradeChannel, self.channel).switchProtocol(self, outcome.protocol, outcome.head, outcome.name)

    def _renderPlain(self, resrc: IResource, candidates: Sequence[IUpgradeProtocol]) -> None:
        """Render C{resrc} without switching, listing what we could switch to."""
        site = cast(UpgradeSite, self.site)
        if site.advertise and candidates:
            self.responseHeaders.setRawHeaders(
                b"Upgrade", [negotiation.formatProtocols(protocolName(p) for p in candidates)]
            )
            self.responseHeaders.addRawHeader(b"Connection", b"Upgrade")
        server.Request.render(self, resrc)

    def _answer(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes) -> None:
        """Finish this request with a small error response, keeping HTTP/1.1 intact."""
        self.setResponseCode(status, negotiation.reasonPhrase(status))
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


#: What a folded header line starts with (obs-fold, RFC 9112 §5.2).
_FOLD_STARTS = (b" ", b"\t")


class UpgradeChannel(HTTPChannel):
    """
    An L{HTTPChannel} that can hand its connection to another protocol.

    @ivar maxUpgradeBodySize: Largest body an upgrade request may carry;
        a larger one is answered C{413} and the connection closed (R11).
    """

    maxUpgradeBodySize = 1 << 20
    _log = Logger(namespace="txupgrade.channel")
    _bodyLimited: UpgradeAwareRequest | None = None
    #: Whether this read's lines are checked (C{lineReceived} is L{_checkedLineReceived}).
    _checkingLines = False

    def _checkedLineReceived(self, line: bytes) -> None:
        """Refuse an oversized head (414, 431) and obs-fold (R16) before Twisted parses the line."""
        if _compat.headBytesReceived(self) + len(line) > self.totalHeadersSize:
            self.lineLengthExceeded(line)
        elif line[:1] in (b" ", b"\t") and not _compat.readingRequestLine(self):
            self._reject(400, "obsolete line folding in a header")
        else:
            super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        """Answer a request line over the limit with 414, a header with 431, and close."""
        if _compat.readingRequestLine(self):
            self._reject(414, "the request line is too long")
        else:
            self._reject(431, "the request's header fields are too large")

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        """
        As L{HTTPChannel.checkPersistence}, reading C{Connection} as the token
        list it is (C{close, Upgrade}, several lines), which Twisted does not.
        """
        persistent = bool(super().checkPersistence(request, version))
        if persistent:
            connection = _compat.headerFields(request.requestHeaders).get(b"Connection")
            if (
                connection is not None
                and (len(connection) > 1 or b"," in connection[0])
                and b"close" in negotiation.parseConnectionOptions(connection)
            ):
                request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
                return False
        return persistent

    def dataReceived(self, data: bytes) -> None:
        """
        Parse C{data}, unless the channel already chose to close: over TLS,
        reading goes on after C{loseConnection} (for the peer's close_notify),
        and Twisted's parser, left mid-request by a C{400}, would raise.
        """
        if getattr(self.transport, "disconnecting", False):
            return
        # Lines are checked (_checkedLineReceived) only while the lines this
        # read can complete (with those held from earlier reads) could hold
        # one the checks refuse: one past the head's size limit, or one that
        # starts with a space or a tab. Any other read's lines go to Twisted's
        # parser directly, one Python call a line fewer.
        lines = _compat.lineBuffer(self) + data  # (no copy while nothing is held)
        checking = (
            _compat.headBytesReceived(self) + len(lines) > self.totalHeadersSize
            or lines[:1] in _FOLD_STARTS
            or b"\n " in lines
            or b"\n\t" in lines
        )
        if checking is not self._checkingLines:
            if checking:
                self.lineReceived = self._checkedLineReceived  # type: ignore[method-assign]
            else:
                # (Not the no-op a closing channel may have set in its place.)
                current = self.__dict__.get("lineReceived")
                if getattr(current, "__func__", None) is UpgradeChannel._checkedLineReceived:
                    del self.lineReceived
            self._checkingLines = checking
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        """Refuse ambiguous framing (R16) and foreign hosts; note an offer (R1-R4), bounding its body."""
        req = self.requests[-1]
        fields = _compat.headerFields(req.requestHeaders)
        version = _compat.requestVersion(self)
        self._bodyLimited = None
        hosts = fields.get(b"Host", ())
        try:
            negotiation.checkFraming(version, hosts, fields.get(b"Transfer-Encoding", ()))
        except UpgradeError as error:
            self._reject(400, str(error))
            return
        allowed = self.site.allowedHostsFor(req.host)  # type: ignore[attr-defined]
        if hosts and allowed is not None and not negotiation.hostAllowed(hosts[0], allowed):
            self._reject(400, f"this server does not serve the host {hosts[0].decode('latin-1')!r}")
            return
        offer = OfferNegotiation.fromHeaders(
            version,
            fields.get(b"Upgrade"),
            fields.get(b"Connection", ()),
            allowed,
            self.site.maxUpgradeOffers,  # type: ignore[attr-defined]
        )
        if offer is not None and offer.error is None:
            if self.length is not None and self.length > self.maxUpgradeBodySize:
                self._refuseBody()
                return
            self._bodyLimited = req
        req.upgrade = offer
        super().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        """Read the body, refusing an upgrade request's body past the limit."""
        limited = self._bodyLimited
        super().rawDataReceived(data)
        if limited is not None and self._bodyLimited is limited and self._bodyTooLarge(limited):
            self._refuseBody()

    def allContentReceived(self) -> None:
        """Dispatch the request (its offer is settled in render), within the limit."""
        limited, self._bodyLimited = self._bodyLimited, None
        if limited is not None and self._bodyTooLarge(limited):
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
        self._bodyLimited = None
        self._reject(413, "the upgrade request's body is too large")

    def _reject(self, status: int, reason: str) -> None:
        """Answer C{status} (logged once, with the reason), ignore what else arrives, and close."""
        self._log.info(
            "Rejected a request from {peer} with {status}: {reason}",
            peer=peerText(self._transport().getPeer()),
            status=status,
            reason=reason,
            rejectStatus=status,
        )
        body = (reason[:1].upper() + reason[1:] + ".\n").encode("utf-8", "replace")
        response = negotiation.simpleResponse(status, (), body, close=True)
        if _compat.requestMethod(self) == b"HEAD":
            # A response to HEAD ends with its head (RFC 9112 §6.3).
            response = response[: len(response) - len(body)]
        self._transport().write(response)
        # Nothing more is dispatched (HTTPChannel dispatches a request whose
        # length is 0 after its headers), and, like HTTPChannel after a last
        # request, whatever else arrives is ignored.
        self.length = None
        self.dataReceived = self.lineReceived = lambda *args: None  # type: ignore[method-assign]
        self.loseConnection()

    def switchProtocol(
        self, req: UpgradeAwareRequest, protocol: Any, head: bytes, name: str | None = None
    ) -> None:
        """
        Write the C{101} C{head}, and give the connection to C{protocol}
        (C{name}, as the head names it first).

        Every byte after the request goes to C{protocol}, in order, exactly
        once (R12); the HTTP channel and C{req} are released. A protocol that
        serves HTTP/1.1 on the connection again later (the TLS upgrade) has a
        C{holdChannel(channel, request)} method: it gets this channel and
        C{req} before the swap, to resume them rather than build another
        channel. The channel's wrapper hears of the switch
        (C{protocolSwitched}) once the head is written.
        """
        if name is None:
            name = negotiation.upgradedName(head)
        trailing = _compat.takeTrailingData(self)
        _compat.releaseChannel(self)
        hold = getattr(protocol, "holdChannel", None)
        if hold is not None:
            hold(self, req)
        wrapper = _compat.channelWrapper(self)
        transport = _compat.swapProtocol(self, protocol)
        transport.write(head)
        wrapper.protocolSwitched(name, len(trailing))
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
            pluginFailed(
                self.factory,
                self._log,
                name,
                "start",
                Failure(),
                "Upgraded protocol {protocol} failed to start ({protocolObject!r}); closing",
                protocolObject=protocol,
            )
            transport.abortConnection()


def _isLoopback(address: object) -> bool:
    """Whether a listening address is on the loopback interface."""
    if isinstance(address, (IPv4Address, IPv6Address)):
        return _isLoopbackHost(address.host)
    return False


@functools.lru_cache(maxsize=64)
def _isLoopbackHost(host: str) -> bool:
    """L{_isLoopback} for one address; a server has few, asked on every request."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class UpgradeSite(server.Site):
    """
    A L{server.Site} whose connections can switch protocols via C{Upgrade}.

    @ivar protocols: The connection-wide protocols, served on every path.
    @ivar policy: C{"client"} (the client's preference decides, the default)
        or C{"server"} (the order of L{protocols} decides).
    @ivar advertise: Whether a response to a request whose offer was not
        taken lists, in C{Upgrade}, what the site could switch to (R5).
    @ivar allowedHosts: The host names requests may name in C{Host}
        (lower-case, without port; C{"*.example.com"} for subdomains,
        C{"*"} for any), L{None} for any, or C{"auto"} (the default):
        L{negotiation.LOOPBACK_HOSTS} on a loopback listener, any elsewhere.
        Any other C{Host} is answered C{400} before a switch is considered:
        the defence against DNS rebinding, where a foreign page reaches a
        local server under its own name. WebSocket's same-origin check
        compares the C{Origin} with these names.
    @ivar priorKnowledge: Whether a cleartext connection that starts with the
        HTTP/2 preface is served as HTTP/2 (needs the C{h2c} extra).
    @ivar alpnH2: Whether TLS listeners offer HTTP/2 by ALPN C{h2}
        (needs the C{h2c} extra); otherwise TLS clients get HTTP/1.1.
    @ivar extendedConnect: Whether HTTP/2 connections offer extended CONNECT
        (RFC 8441, C{SETTINGS_ENABLE_CONNECT_PROTOCOL}): a C{CONNECT} with
        C{:protocol NAME} is negotiated by the same protocols as C{Upgrade:
        NAME}, those that can live on a stream (not L{txupgrade.interfaces.IConnectionOnly}), and
        the stream carries the protocol's bytes (WebSocket: RFC 8441 §5).
        On by default; with no protocol that can live on a stream, nothing is advertised.
    @ivar maxUpgradeOffers: The most protocols one C{Upgrade} field may list
        (and 64 bytes each); a longer one is answered C{400} (R15).
    @ivar limitLog: Where limit hits are counted and logged (rate-limited):
        the daemon's L{txupgrade.daemon.tracking.ConnectionTracker} sets its own;
        L{None} (the default) logs each as a malformed offer.
    """

    requestFactory = UpgradeAwareRequest
    #: What wraps each channel: the connection the transport calls.
    connectionClass: type[_compat.ChannelWrapper] = _compat.ChannelWrapper
    #: The daemon's L{txupgrade.daemon.tracking.ConnectionTracker}, once it tracks
    #: this site: it admits each connection (limits) and counts it.
    tracker: Any = None
    #: Whether every accepted switch is also a C{txupgrade.upgrade} log
    #: event (debug level), besides its access-log line; refusals and
    #: malformed offers always are.
    logSwitches = False
    #: Whether the access log is off (C{--no-access-log}).
    quietAccessLog = False
    limitLog: LimitLog | None = None

    def __init__(
        self,
        resource: IResource,
        protocols: ProtocolRegistry | Iterable[IUpgradeProtocol] = (),
        *,
        policy: Literal["client", "server"] = "client",
        advertise: bool = True,
        maxUpgradeBodySize: int | None = None,
        priorKnowledge: bool = True,
        alpnH2: bool = True,
        extendedConnect: bool = True,
        allowedHosts: Iterable[str] | Literal["auto"] | None = "auto",
        maxUpgradeOffers: int = negotiation.MAX_OFFERED,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, **kwargs)
        if not isinstance(protocols, ProtocolRegistry):
            protocols = ProtocolRegistry(protocols)
        self.protocols = protocols
        self.policy = policy
        self.advertise = advertise
        self.priorKnowledge = priorKnowledge
        self.alpnH2 = alpnH2
        self.extendedConnect = extendedConnect
        self.maxUpgradeOffers = maxUpgradeOffers
        #: Plugin failures, counted and logged rate-limited (L{PluginFailures}).
        self.pluginFailures = PluginFailures(self.reactor.seconds)
        #: Called with the protocol's name on each accepted switch (the
        #: daemon's metrics count them so, without a log event per switch).
        self.onAccept: list[Callable[[str], None]] = []
        #: What HTTP/2 connections refused, by kind (C{malformed}: a stream
        #: reset PROTOCOL_ERROR; C{refused-stream}: past
        #: SETTINGS_MAX_CONCURRENT_STREAMS; C{foreign-host}: a 400;
        #: C{connect-tunnel}: a plain CONNECT's 501; C{protocol-error}: a
        #: connection ended with GOAWAY; C{too-many-resets}: ENHANCE_YOUR_CALM).
        self.http2Refusals: dict[str, int] = {}
        self.maxUpgradeBodySize = (
            UpgradeChannel.maxUpgradeBodySize if maxUpgradeBodySize is None else maxUpgradeBodySize
        )
        if allowedHosts is None or allowedHosts == "auto":
            self.allowedHosts: frozenset[str] | Literal["auto"] | None = allowedHosts
        else:
            self.allowedHosts = frozenset(h.lower() for h in allowedHosts)

    def allowedHostsFor(self, host: object) -> frozenset[str] | None:
        """The host names a request arriving at the local address C{host} may name (L{None}: any)."""
        allowed = self.allowedHosts
        if allowed == "auto":
            return negotiation.LOOPBACK_HOSTS if _isLoopback(host) else None
        return cast("frozenset[str] | None", allowed)

    def acceptableProtocols(self) -> list[bytes]:
        """The ALPN protocols of TLS connections, preferred first: C{h2} (see L{alpnH2}), C{http/1.1}."""
        if self.alpnH2 and _compat.http2Available():
            return [b"h2", b"http/1.1"]
        return [b"http/1.1"]

    def protocol(self) -> Any:
        """Build the wrapped channel, as L{twisted.web.server.Site} does."""
        channel = UpgradeChannel()
        channel.maxUpgradeBodySize = self.maxUpgradeBodySize
        return _compat.wrapChannel(channel, self.connectionClass)

    def buildProtocol(self, addr: Any) -> Any:
        """A connection; through the L{tracker}, when there is one."""
        if self.tracker is None:
            return super().buildProtocol(addr)
        return self.tracker.admit(addr, super().buildProtocol)
