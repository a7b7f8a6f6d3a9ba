"""
An echo protocol that stops reading from a peer that does not read: what it
writes is bounded by the transport's buffer, not by what the peer sends.
"""

from twisted.internet.protocol import Protocol
from zope.interface import implementer

from txupgrade import Accept, IUpgradeProtocol
from txupgrade.daemon.demo import PauseReadingWhileFull


class BoundedEcho(Protocol):
    def connectionMade(self):
        # Twisted pauses this producer while the write buffer is full.
        self.transport.registerProducer(PauseReadingWhileFull(self.transport), True)

    def dataReceived(self, data):
        self.transport.write(data)


# The whole IUpgradeProtocol, as in every example: each one stands alone.
@implementer(IUpgradeProtocol)
class BoundedEchoUpgrade:
    name = "bounded-echo"
    version = None

    def negotiate(self, request):
        return Accept()

    def buildProtocol(self, request, site):
        return BoundedEcho()


boundedEcho = BoundedEchoUpgrade()
