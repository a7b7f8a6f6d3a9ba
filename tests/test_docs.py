"""
The protocol-author guide's example works as docs/protocol-authors.md says.
"""

from __future__ import annotations

import importlib.util
import pathlib

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from zope.interface.verify import verifyObject

from txupgrade import IUpgradeProtocol, UpgradeSite
from txupgrade.testing import MemoryConnection, upgradeRequest

_EXAMPLE = pathlib.Path(__file__).parent.parent / "docs" / "examples" / "shout.py"


def _loadExample() -> object:
    spec = importlib.util.spec_from_file_location("shout_example", _EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ShoutExampleTests(SynchronousTestCase):
    """The C{shout} example of the guide."""

    def setUp(self) -> None:
        self.shout = _loadExample().shout  # type: ignore[attr-defined]

    def test_provides(self) -> None:
        """The example object provides IUpgradeProtocol."""
        self.assertTrue(verifyObject(IUpgradeProtocol, self.shout))

    def test_guideSnippet(self) -> None:
        """The guide's in-memory snippet passes, one byte at a time."""
        site = UpgradeSite(Resource(), [self.shout], reactor=Clock())
        conn = MemoryConnection(site, chunkSize=1)
        conn.send(upgradeRequest(["shout/1"], method=b"POST", body=b"hi") + b"abc")
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"))
        self.assertIn(b"\r\nX-Shout: ready\r\n", conn.received)
        self.assertTrue(conn.received.endswith(b"YOU SAID: HI\nABC"))
        conn.close()

    def test_versionMustMatch(self) -> None:
        """C{shout/2} is not C{shout/1}: the request is served as plain HTTP."""
        site = UpgradeSite(Resource(), [self.shout], reactor=Clock())
        conn = MemoryConnection(site)
        conn.send(upgradeRequest(["shout/2"]))
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 404 "), conn.received[:40])
        self.assertIn(b"\r\nUpgrade: shout/1\r\n", conn.received)
        conn.close()

    def test_refuse(self) -> None:
        """A refusal answers its status and the connection serves HTTP/1.1 after."""
        site = UpgradeSite(Resource(), [self.shout], reactor=Clock())
        conn = MemoryConnection(site)
        conn.send(upgradeRequest(["shout/1"], headers=((b"X-Quiet", b"1"),)))
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 403 "), conn.received[:40])
        self.assertTrue(conn.received.endswith(b"no shouting here\n"))
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(conn.received.count(b"HTTP/1.1 "), 2)
        conn.close()
