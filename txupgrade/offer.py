"""
One request's upgrade offer, from its headers to an outcome.

Theory of operation
===================
Rule 1: an L{OfferNegotiation} owns everything about one offer. The channel
creates it when a request's headers are in (L{OfferNegotiation.fromHeaders});
the request keeps it and, once the path's resource is known, asks it for an
outcome (L{OfferNegotiation.decide}); a L{Pending} outcome is finished with
L{OfferNegotiation.resume}. Nothing else reads or writes the offer.

Rule 2: every outcome is a small frozen object saying what the request must
do: L{Switch} (write the C{101}, hand the connection over), L{Unswitched}
(render as usual, advertising the candidates, R5), L{Refused} (a plugin's
HTTP error), L{Failed} (a plugin broke: C{500}), L{Malformed} (a bad
C{Upgrade}: C{400}, R15) or L{Pending} (a plugin answered with a Deferred).

Rule 3: every decision is logged once, here, as a structured event in the
C{txupgrade.upgrade} namespace with the fields C{upgradeOutcome},
C{protocol}, C{peer} (C{host:port}), C{path}, C{status} and C{reason}, so that
log observers and metrics read fields rather than text. A switch, the hot
path, is already in the access log (status 101); its event costs about as
much as a tenth of the switch itself, so it is emitted only for a site whose
C{logSwitches} is set; the site's C{onAccept} observers (the daemon's
metrics) hear of each switch without an event. A plugin that fails is logged with
its traceback, rate-limited per protocol (L{txupgrade.reporting.PluginFailures}):
a plugin failing on every request must not flood the log.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import unquote
from twisted.web.resource import IResource, Resource

from txupgrade import negotiation
from txupgrade.interfaces import IConnectionOnly, IUpgradeProtocol, IUpgradeResource
from txupgrade.negotiation import Accept, Decline, Offer, ProtocolName, Refuse, UpgradeError
from txupgrade.registry import protocolName
from txupgrade.reporting import pluginFailed

__all__ = [
    "Failed",
    "Malformed",
    "OfferNegotiation",
    "Outcome",
    "Pending",
    "Refused",
    "Switch",
    "Unswitched",
    "peerText",
]

_log = Logger(namespace="txupgrade.upgrade")


@dataclass(frozen=True, slots=True)
class Switch:
    """Write C{head} (the C{101}), then give the connection to C{protocol} (R8)."""

    protocol: Any
    head: bytes
    upgrade: IUpgradeProtocol
    #: The protocol as the C{101} names it first (C{echo}, C{TLS/1.2}).
    name: str
    #: The plugin's extra headers (in C{head} too), for an HTTP/2 stream's C{200}.
    headers: negotiation.Headers = ()


@dataclass(frozen=True, slots=True)
class Unswitched:
    """No candidate took the offer: render as usual, advertising C{candidates} (R5)."""

    candidates: tuple[IUpgradeProtocol, ...]


@dataclass(frozen=True, slots=True)
class Refused:
    """A plugin refused the request with an HTTP error; HTTP/1.1 goes on."""

    refusal: Refuse
    upgrade: IUpgradeProtocol


@dataclass(frozen=True, slots=True)
class Failed:
    """A plugin raised or answered nonsense: log it, answer C{500}."""

    failure: Failure
    upgrade: IUpgradeProtocol


@dataclass(frozen=True, slots=True)
class Malformed:
    """The C{Upgrade} field breaks the grammar: answer C{error.statusHint} (R15)."""

    error: UpgradeError


@dataclass(frozen=True, slots=True)
class Pending:
    """A plugin's C{negotiate} returned C{deferred}; L{OfferNegotiation.resume} with its result."""

    deferred: Deferred[Any]
    upgrade: IUpgradeProtocol


Outcome = Union[Switch, Unswitched, Refused, Failed, Malformed, Pending]  # noqa: UP007 - runtime alias on 3.10


def peerText(address: object) -> str:
    """An address as operators read it: C{127.0.0.1:4000}, C{[::1]:4000}, a socket path."""
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
    return str(address)


def staticResource(root: IResource, target: bytes) -> IResource | None:
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
        child = node.children.get(unquote(segment) if b"%" in segment else segment)  # type: ignore[attr-defined]
        if child is None:
            return None
        node = child
    return node


def _candidates(resrc: IResource, siteWide: Iterable[IUpgradeProtocol]) -> tuple[IUpgradeProtocol, ...]:
    """The resource's own protocols, then the site's, without repeats."""
    if not IUpgradeResource.providedBy(resrc):
        return tuple(siteWide)
    ordered = list(resrc.upgradeProtocols)
    seen = {id(p) for p in ordered}
    ordered.extend(p for p in siteWide if id(p) not in seen)
    return tuple(ordered)


def _nameOf(protocol: IUpgradeProtocol) -> tuple[str, str | None]:
    return protocol.name, protocol.version


class OfferNegotiation:
    """
    One request's upgrade offer and its trip through the candidates (R6).

    @ivar offer: The client's valid offer, or L{None} when C{error} is set.
    @ivar error: Why the C{Upgrade} field was refused (R15), or L{None}.
    @ivar allowedHosts: The host names the site answers to (L{None}: any),
        passed on to protocols in L{negotiation.UpgradeRequest.allowedHosts}.
    """

    def __init__(
        self,
        offer: Offer | None = None,
        error: UpgradeError | None = None,
        allowedHosts: frozenset[str] | None = None,
    ) -> None:
        self.offer = offer
        self.error = error
        self.allowedHosts = allowedHosts
        self._request: Any = None
        self._upgradeRequest: negotiation.UpgradeRequest | None = None
        self._candidates: tuple[IUpgradeProtocol, ...] = ()
        self._remaining: Iterable[tuple[ProtocolName, IUpgradeProtocol]] = iter(())

    @classmethod
    def fromHeaders(
        cls,
        version: bytes,
        upgrade: Sequence[bytes] | None,
        connection: Sequence[bytes],
        allowedHosts: frozenset[str] | None = None,
        maxOffered: int = negotiation.MAX_OFFERED,
    ) -> OfferNegotiation | None:
        """The negotiation for a request's headers, or L{None} when it makes no offer (R1-R4)."""
        if upgrade is None:
            return None
        try:
            offer = negotiation.offerFromHeaders(version, upgrade, connection, maxOffered)
        except UpgradeError as error:
            return cls(error=error)
        return None if offer is None else cls(offer, allowedHosts=allowedHosts)

    def decide(
        self,
        request: Any,
        resrc: IResource,
        protocols: Iterable[IUpgradeProtocol],
        policy: Literal["client", "server"],
    ) -> Outcome:
        """
        Ask the candidates for C{resrc}, best first, until one answers.

        @param request: The twisted.web request carrying the offer, whose
            C{method}, C{uri}, C{clientproto}, headers and body are set.
        @param protocols: The site's connection-wide protocols.
        """
        self._request = request
        if self.error is not None:
            limitLog = getattr(request.channel.site, "limitLog", None)
            if self.error.limit is not None and limitLog is not None:
                # A limit hit: counted every time, logged rate-limited.
                limitLog.hit(self.error.limit, peerText(request.client), reason=str(self.error))
            else:
                _logDecision(request, "malformed", None, self.error.statusHint, str(self.error))
            return Malformed(self.error)
        assert self.offer is not None
        self._candidates = _candidates(resrc, protocols)
        if request.clientproto == b"HTTP/2":
            # Extended CONNECT (RFC 8441): only protocols that can live on a stream.
            self._candidates = tuple(p for p in self._candidates if not IConnectionOnly.providedBy(p))
        order = negotiation.selectionOrder(self.offer, self._candidates, _nameOf, policy)
        if order:
            self._upgradeRequest = _upgradeRequest(request, self.offer, self.allowedHosts)
        self._remaining = iter(order)
        return self._run()

    def resume(self, decision: object) -> Outcome:
        """Go on after the L{Pending} candidate's C{decision}."""
        return self._judge(decision, self._pending) or self._run()

    def failPending(self, reason: Failure) -> Failed:
        """The L{Pending} candidate's Deferred failed."""
        return self._failed(reason, self._pending)

    _pending: IUpgradeProtocol

    def _run(self) -> Outcome:
        for _offered, protocol in self._remaining:
            try:
                decision = protocol.negotiate(self._upgradeRequest)
            except Exception:  # noqa: BLE001 - a plugin may raise anything; answer 500
                return self._failed(Failure(), protocol)
            if isinstance(decision, Deferred):
                self._pending = protocol
                return Pending(decision, protocol)
            outcome = self._judge(decision, protocol)
            if outcome is not None:
                return outcome
        return Unswitched(self._candidates)

    def _judge(self, decision: object, protocol: IUpgradeProtocol) -> Outcome | None:
        """What one candidate's decision means; L{None} for a C{Decline}."""
        request = self._request
        if isinstance(decision, Decline):
            _logDecision(request, "declined", protocol, None, decision.reason)
            return None
        try:
            if isinstance(decision, Refuse):
                if not 400 <= decision.status <= 599:
                    raise UpgradeError(f"refusal status {decision.status} is not an error", 500)
                negotiation.validateHeaders(decision.headers)
                _logDecision(request, "refused", protocol, decision.status, decision.reason)
                return Refused(decision, protocol)
            if not isinstance(decision, Accept):
                raise UpgradeError(f"negotiate returned {decision!r}", 500)
            named = decision.upgrade or (protocolName(protocol),)
            head = negotiation.switchingResponse(named, decision.headers)
            newProtocol = decision.protocol
            if newProtocol is None:
                newProtocol = protocol.buildProtocol(self._upgradeRequest, request.channel.site)
            if newProtocol is None:
                raise UpgradeError("buildProtocol returned None", 500)
        except Exception:  # noqa: BLE001 - a plugin may raise anything; answer 500
            return self._failed(Failure(), protocol)
        site = request.channel.site
        if site.logSwitches:
            _logDecision(request, "accepted", protocol, 101, "")
        accepted = getattr(site, "onAccept", None)
        if accepted:
            name = protocolName(protocol)
            for observer in accepted:
                observer(name)
        return Switch(newProtocol, head, protocol, named[0], decision.headers)

    def _failed(self, reason: Failure, protocol: IUpgradeProtocol) -> Failed:
        pluginFailed(
            self._request.channel.site,
            _log,
            protocolName(protocol),
            "negotiate",
            reason,
            "Upgrade protocol {protocol} failed on {path} from {peer}",
            upgradeOutcome="failed",
            peer=peerText(self._request.client),
            path=_pathText(self._request.uri),
            status=500,
            reason=reason.getErrorMessage(),
        )
        return Failed(reason, protocol)


def _pathText(target: bytes) -> str:
    return target.split(b"?", 1)[0].decode("utf-8", "replace")


_DECISION_FORMATS = {
    "accepted": "Upgrade to {protocol} accepted for {path} from {peer}",
    "declined": "Upgrade to {protocol} declined for {path} from {peer}: {reason}",
    "refused": "Upgrade to {protocol} refused for {path} from {peer} with {status}: {reason}",
    "malformed": "Malformed Upgrade for {path} from {peer} answered {status}: {reason}",
}


def _logDecision(
    request: Any, outcome: str, protocol: IUpgradeProtocol | None, status: int | None, reason: str
) -> None:
    """
    One structured event per decision (Rule 3). A switch or a decline is
    routine (debug: filtered out by default, but there for metrics and
    debugging); a refusal or a malformed offer is worth an operator's look.
    """
    emit = _log.debug if outcome in ("accepted", "declined") else _log.info
    emit(
        _DECISION_FORMATS[outcome],
        upgradeOutcome=outcome,
        protocol=protocolName(protocol) if protocol is not None else None,
        peer=peerText(request.client),
        path=_pathText(request.uri),
        status=status,
        reason=reason,
    )


def _upgradeRequest(
    request: Any, offer: Offer, allowedHosts: frozenset[str] | None
) -> negotiation.UpgradeRequest:
    """The sans-IO view of a twisted.web C{request}, as protocols receive it."""
    content = request.content
    body = b""
    if isinstance(content, io.BytesIO):
        body = content.getvalue()  # the whole body, wherever the file is
    elif content is not None:
        content.seek(0)
        body = content.read()
        content.seek(0)
    return negotiation.UpgradeRequest(
        method=request.method,
        target=request.uri,
        version=request.clientproto,
        headers=tuple(
            [
                (name.lower(), value)
                for name, values in request.requestHeaders.getAllRawHeaders()
                for value in values
            ]
        ),
        body=body,
        offer=offer,
        peer=request.client,
        host=request.host,
        secure=request.isSecure(),
        allowedHosts=allowedHosts,
    )
