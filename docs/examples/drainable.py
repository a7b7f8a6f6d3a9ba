"""
A protocol that says goodbye when the server shuts down: on SIGTERM,
C{twistd txupgrade} calls C{drain()} on every upgraded protocol providing
IDrainable, then aborts whatever is still open after --drain-timeout.
"""

from twisted.internet.protocol import Protocol
from zope.interface import implementer

from txupgrade import Accept, IUpgradeProtocol
from txupgrade.interfaces import IDrainable


@implementer(IDrainable)
class Chat(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)

    def drain(self):
        # Must not raise, and should return at once: tell the peer, then close
        # once what is written has gone out.
        self.transport.write(b"server going away\n")
        self.transport.loseConnection()


# The whole IUpgradeProtocol, as in every example: each one stands alone.
@implementer(IUpgradeProtocol)
class ChatUpgrade:
    name = "chat"
    version = None

    def negotiate(self, request):
        return Accept()

    def buildProtocol(self, request, site):
        return Chat()


chat = ChatUpgrade()
