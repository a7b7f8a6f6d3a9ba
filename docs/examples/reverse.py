from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

from txupgrade.protocols.stream import StreamUpgrade


class Reverse(LineReceiver):
    def connectionMade(self):
        self.sendLine(self.upgradeRequest.path)  # the original request's path

    def lineReceived(self, line):
        self.sendLine(line[::-1])


reverse = StreamUpgrade("reverse", Factory.forProtocol(Reverse), version="1")
