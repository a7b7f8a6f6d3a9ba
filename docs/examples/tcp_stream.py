"""
A Docker-style raw stream: ``POST /containers/ID/attach`` with ``Upgrade: tcp``.

The client's bytes are the container's standard input and come straight back
as its output; when the client shuts down its sending side (end of input),
the "container" says goodbye and closes, as ``cat`` would exit.
"""

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from txupgrade import Decline, Refuse
from txupgrade.protocols.stream import StreamUpgrade


@implementer(IHalfCloseableProtocol)
class Attached(Protocol):
    def connectionMade(self):
        self.container = self.upgradeRequest.path.split(b"/")[2]

    def dataReceived(self, data):
        self.transport.write(data)  # stdin comes back on stdout

    def readConnectionLost(self):  # the client closed stdin
        self.transport.write(b"[container %s exited]\n" % self.container)
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass


def attachOnly(request):
    parts = request.path.split(b"/")
    if request.method != b"POST":
        return Decline("attach is a POST")
    if len(parts) != 4 or parts[1] != b"containers" or parts[3] != b"attach":
        return Refuse(404, body=b"no such container endpoint\n")
    return True


tcp = StreamUpgrade(
    "tcp",
    Factory.forProtocol(Attached),
    check=attachOnly,
    headers=((b"Content-Type", b"application/vnd.docker.raw-stream"),),
)
