"""
Tests of the shout/1 plugin, in memory, through txupgrade's real channel.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txupgrade import DirectoryResource, IUpgradeProtocol, UpgradeSite
from txupgrade.plugins.shout import shout
from txupgrade.testing import MemoryConnection, upgradeRequest


class ShoutTests(SynchronousTestCase):
    """The shout/1 protocol."""

    def connect(self, chunkSize=None):
        """A connection to a site offering shout/1, timeouts on a fake clock."""
        site = UpgradeSite(DirectoryResource(), [shout], reactor=Clock())
        conn = MemoryConnection(site, chunkSize=chunkSize)
        self.addCleanup(conn.close)
        return conn

    def test_provides(self):
        """The plugin provides IUpgradeProtocol."""
        self.assertTrue(verifyObject(IUpgradeProtocol, shout))

    def test_shouts(self):
        """After the 101 it answers the body, then shouts, one byte at a time."""
        conn = self.connect(chunkSize=1)
        conn.send(upgradeRequest(["shout/1"], method=b"POST", body=b"hi") + b"abc")
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"))
        self.assertIn(b"\r\nX-Shout: ready\r\n", conn.received)
        self.assertTrue(conn.received.endswith(b"\r\n\r\nYOU SAID: HI\nABC"))
        conn.send(b"more")
        self.assertTrue(conn.received.endswith(b"ABCMORE"))

    def test_otherVersion(self):
        """shout/2 is not shout/1: the request is answered as plain HTTP."""
        conn = self.connect()
        conn.send(upgradeRequest(["shout/2"]))
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 404 "))
        self.assertIn(b"\r\nUpgrade: shout/1\r\n", conn.received)

    def test_declinesPut(self):
        """A PUT is declined: plain HTTP answers it."""
        conn = self.connect()
        conn.send(upgradeRequest(["shout/1"], method=b"PUT", body=b""))
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 404 "))

    def test_quiet(self):
        """X-Quiet is refused with 403, and the connection goes on in HTTP/1.1."""
        conn = self.connect()
        conn.send(upgradeRequest(["shout/1"], headers=[(b"X-Quiet", b"1")]))
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 403 "))
        self.assertTrue(conn.received.endswith(b"no shouting here\n"))
        conn.send(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        self.assertEqual(conn.received.count(b"HTTP/1.1 "), 2)
