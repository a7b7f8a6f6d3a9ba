"""
Tests for L{txupgrade.offer}: one offer from headers to outcome, logged once with fields.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from txupgrade.channel import UpgradeSite
from txupgrade.interfaces import IUpgradeProtocol
from txupgrade.negotiation import Accept, Decline, Offer, ProtocolName, Refuse, UpgradeError, UpgradeRequest
from txupgrade.offer import (
    Malformed,
    OfferNegotiation,
    Refused,
    Switch,
    Unswitched,
    peerText,
)
from txupgrade.protocols.echo import EchoProtocol
from txupgrade.resource import DirectoryResource
from txupgrade.testing import MemoryConnection, upgradeRequest


@implementer(IUpgradeProtocol)
class Fixed:
    """A plugin that always gives the same decision."""

    version = None

    def __init__(self, name: str, decision: Any) -> None:
        self.name = name
        self.decision = decision

    def negotiate(self, request: UpgradeRequest) -> Any:
        return self.decision

    def buildProtocol(self, request: UpgradeRequest, site: object) -> EchoProtocol:
        return EchoProtocol()


class OfferNegotiationTests(SynchronousTestCase):
    """
    L{OfferNegotiation.fromHeaders} and the outcome objects.
    """

    def test_fromHeaders(self) -> None:
        """No C{Upgrade}, an ignored one, a valid one and a malformed one."""
        self.assertIsNone(OfferNegotiation.fromHeaders(b"HTTP/1.1", None, [b"upgrade"]))
        self.assertIsNone(OfferNegotiation.fromHeaders(b"HTTP/1.1", [b"a"], [b"keep-alive"]))
        self.assertIsNone(OfferNegotiation.fromHeaders(b"HTTP/1.0", [b"a"], [b"upgrade"]))
        offer = OfferNegotiation.fromHeaders(b"HTTP/1.1", [b"a, b/2"], [b"Upgrade"])
        assert offer is not None
        self.assertEqual(offer.offer, Offer((ProtocolName("a"), ProtocolName("b", "2"))))
        self.assertIsNone(offer.error)
        bad = OfferNegotiation.fromHeaders(b"HTTP/1.1", [b"a@b"], [b"Upgrade"])
        assert bad is not None
        self.assertIsInstance(bad.error, UpgradeError)
        self.assertIsNone(bad.offer)

    def test_outcomesAreFrozen(self) -> None:
        """Outcomes are values, not mutable state."""
        outcome = Unswitched(())
        self.assertRaises(AttributeError, setattr, outcome, "candidates", (1,))
        self.assertEqual(Malformed(UpgradeError("x")).error.statusHint, 400)

    def test_peerText(self) -> None:
        """Addresses read as operators write them."""
        from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

        self.assertEqual(peerText(IPv4Address("TCP", "127.0.0.1", 4000)), "127.0.0.1:4000")
        self.assertEqual(peerText(IPv6Address("TCP", "::1", 4000)), "[::1]:4000")
        self.assertEqual(peerText(UNIXAddress(b"/run/x.sock")), "/run/x.sock")


class DecisionEventTests(SynchronousTestCase):
    """
    Every decision is one structured event in the C{txupgrade.upgrade} namespace.
    """

    def setUp(self) -> None:
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def decisions(self) -> list[tuple[Any, ...]]:
        return [
            (e["upgradeOutcome"], e["protocol"], e["peer"], e["path"], e["status"])
            for e in self.events
            if e.get("log_namespace") == "txupgrade.upgrade"
        ]

    def exchange(
        self, protocols: list[Any], offered: list[str], target: bytes = b"/p?q=1", logSwitches: bool = True
    ) -> bytes:
        site = UpgradeSite(DirectoryResource(), protocols, reactor=Clock())
        site.logSwitches = logSwitches
        conn = MemoryConnection(site)
        conn.send(upgradeRequest(offered, target))
        return conn.received

    def test_acceptedAfterDecline(self) -> None:
        """A decline, then an accept: two events, in order, with peer and path as text."""
        received = self.exchange([Fixed("a", Decline("no")), Fixed("b", Accept())], ["a", "b"])
        self.assertTrue(received.startswith(b"HTTP/1.1 101 "))
        self.assertEqual(
            self.decisions(),
            [
                ("declined", "a", "127.0.0.1:40000", "/p", None),
                ("accepted", "b", "127.0.0.1:40000", "/p", 101),
            ],
        )

    def test_switchesQuietByDefault(self) -> None:
        """A site that does not ask for switch events logs the decline, not the switch."""
        received = self.exchange(
            [Fixed("a", Decline("no")), Fixed("b", Accept())], ["a", "b"], logSwitches=False
        )
        self.assertTrue(received.startswith(b"HTTP/1.1 101 "))
        self.assertEqual(self.decisions(), [("declined", "a", "127.0.0.1:40000", "/p", None)])

    def test_refused(self) -> None:
        """A refusal carries its status and reason."""
        self.exchange([Fixed("a", Refuse(403, reason="policy"))], ["a"])
        (event,) = [e for e in self.events if e.get("upgradeOutcome") == "refused"]
        self.assertEqual((event["status"], event["reason"]), (403, "policy"))

    def test_malformed(self) -> None:
        """A malformed offer is one event with the 400."""
        self.exchange([Fixed("a", Accept())], ["a@b"])
        self.assertEqual(self.decisions(), [("malformed", None, "127.0.0.1:40000", "/p", 400)])

    def test_failed(self) -> None:
        """A plugin answering nonsense is one failure event, with the 500."""
        self.exchange([Fixed("a", "nonsense")], ["a"])
        self.assertEqual(self.decisions(), [("failed", "a", "127.0.0.1:40000", "/p", 500)])
        self.assertEqual(len(self.flushLoggedErrors(UpgradeError)), 1)

    def test_outcomeTypes(self) -> None:
        """L{OfferNegotiation.decide} answers with the documented outcome classes."""
        site = UpgradeSite(DirectoryResource(), reactor=Clock())
        conn = MemoryConnection(site)
        self.assertIsNotNone(conn)
        for decision, kind in ((Accept(), Switch), (Refuse(403), Refused), (Decline(), Unswitched)):
            offer = OfferNegotiation.fromHeaders(b"HTTP/1.1", [b"a"], [b"upgrade"])
            assert offer is not None
            request = _FakeRequest(site)
            outcome = offer.decide(request, DirectoryResource(), [Fixed("a", decision)], "client")
            self.assertIsInstance(outcome, kind)


class _FakeRequest:
    """The attributes of a twisted.web request that L{OfferNegotiation.decide} reads."""

    def __init__(self, site: UpgradeSite) -> None:
        from io import BytesIO

        from twisted.internet.address import IPv4Address
        from twisted.web.http_headers import Headers

        self.method, self.uri, self.clientproto = b"GET", b"/", b"HTTP/1.1"
        self.requestHeaders = Headers({b"host": [b"localhost"]})
        self.content = BytesIO(b"")
        self.client = IPv4Address("TCP", "127.0.0.1", 1)
        self.host = IPv4Address("TCP", "127.0.0.1", 2)
        self.channel = type("Channel", (), {"site": site})()

    def isSecure(self) -> bool:
        return False
