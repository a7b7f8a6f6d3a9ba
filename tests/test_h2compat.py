"""
Guards for L{txupgrade._h2connection}: the private names of Twisted's HTTP/2
(C{twisted.web._http2}) and of h2 that it overrides or relies on.

These fail loudly, naming what changed, when a Twisted or h2 release renames
or reshapes any of them; fix C{txupgrade/_h2connection.py} then.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

import h2.connection
import h2.utilities
from twisted.copyright import version as twistedVersion
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import _http2

from txupgrade import _h2connection
from txupgrade._h2connection import H2Connection

#: Twisted's private methods that Twisted's own code calls and ours replaces.
OVERRIDDEN = {
    "_requestReceived",
    "_requestDataReceived",
    "_requestAborted",
    "_handlePriorityUpdate",
    "_handleWindowUpdate",
    "_requestDone",
    "_sendPrioritisedData",
}

#: Twisted's private names ours calls or reads as they are.
USED = {
    "_tryToWriteControlData",
    "_flushBufferedControlData",
    "_bufferedControlFrames",
    "_consumerBlocked",
    "_outboundStreamQueues",
    "_stillProducing",
    "_reactor",
}


def selfAttributes(function: object) -> set[str]:
    """The C{self.X} names a function's source reads or writes."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))  # type: ignore[arg-type]
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
    }


class TwistedHTTP2Tests(SynchronousTestCase):
    """Twisted's private HTTP/2 names are as the subclass assumes."""

    def assertHas(self, obj: object, name: str) -> None:
        """C{obj} has C{name}, or the test fails naming the Twisted version."""
        if not hasattr(obj, name):
            self.fail(f"Twisted {twistedVersion}: {obj!r} has no {name!r}; update txupgrade/_h2connection.py")

    def test_names(self) -> None:
        """The module's classes, the end-of-stream sentinel and every private name used exist."""
        for name in ("H2Connection", "H2Stream", "_END_STREAM_SENTINEL"):
            self.assertHas(_http2, name)
        instance = _http2.H2Connection(Clock())
        for name in OVERRIDDEN | USED:
            self.assertHas(instance, name)

    def test_sameState(self) -> None:
        """Our constructor sets every attribute Twisted's sets, except the priority tree."""
        theirs = set(vars(_http2.H2Connection(Clock())))
        ours = set(vars(H2Connection(Clock())))
        self.assertEqual(theirs - ours, {"priority"})
        for name in USED & theirs:
            self.assertIn(name, ours)

    def test_priorityTreeUnused(self) -> None:
        """Every Twisted method that touches C{self.priority} is overridden."""
        touching = {
            name
            for name, member in vars(_http2.H2Connection).items()
            if inspect.isfunction(member) and "priority" in selfAttributes(member)
        }
        self.assertTrue(touching)
        notOverridden = {name for name in touching if name not in vars(H2Connection)}
        self.assertEqual(notOverridden, set(), "these would use the priority tree we do not build")

    def test_privateNamesListed(self) -> None:
        """Every private Twisted attribute our subclass touches is listed here."""
        own = {name for name in vars(H2Connection) if name.startswith("_")} | {
            "_ready",
            "_receiving",
            "_sending",
            "_refusedLogged",
            "_stream1Request",
            "_prefaceMissing",
            "_goAwayLast",
            "_goAwayFinal",
            "_allowedHosts",
            "_resetTokens",
            "_resetTokenTimestamp",
        }
        used = set()
        for member in vars(H2Connection).values():
            if inspect.isfunction(member):
                used |= {n for n in selfAttributes(member) if n.startswith("_") and not n.startswith("__")}
        self.assertEqual(
            used - own - OVERRIDDEN,
            USED
            | {
                "_sendingDeferred",
                "_streamCleanupCallbacks",
                "_maxBufferedControlFrameBytes",
                "_bufferedControlFrameBytes",
            },
        )

    def test_streamCallsBack(self) -> None:
        """H2Stream reaches its connection through the public-looking methods ours keeps."""
        called = set()
        for name in ("receiveDataChunk", "requestDone", "write", "windowUpdated", "resumeProducing"):
            called |= {
                node.attr
                for node in ast.walk(
                    ast.parse(textwrap.dedent(inspect.getsource(getattr(_http2.H2Stream, name))))
                )
                if isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "_conn"
            }
        self.assertEqual(
            called, {"openStreamWindow", "endRequest", "writeDataToStream", "remainingOutboundWindow"}
        )
        for name in called:
            self.assertIn(name, dir(H2Connection))


class H2LibraryTests(SynchronousTestCase):
    """The h2 names the adapter relies on."""

    def test_headersFrameHook(self) -> None:
        """h2 receives HEADERS in C{_receive_headers_frame}, counted by C{open_inbound_streams}."""
        self.assertTrue(callable(getattr(h2.connection.H2Connection, "_receive_headers_frame", None)))
        self.assertIsInstance(h2.connection.H2Connection.__dict__["open_inbound_streams"], property)
        source = inspect.getsource(h2.connection.H2Connection._receive_headers_frame)
        self.assertIn("open_inbound_streams", source)

    def test_validator(self) -> None:
        """h2's header validator rejects connection-specific fields."""
        self.assertEqual(
            h2.utilities.HeaderValidationFlags._fields,
            ("is_client", "is_trailer", "is_response_header", "is_push_promise"),
        )
        with self.assertRaises(h2.exceptions.ProtocolError):
            list(
                h2.utilities.validate_headers(
                    [
                        (b":method", b"GET"),
                        (b":scheme", b"http"),
                        (b":path", b"/"),
                        (b":authority", b"x"),
                        (b"upgrade", b"h2c"),
                    ],
                    _h2connection._REQUEST,
                )
            )
