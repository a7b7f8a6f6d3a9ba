"""
An AMP service reachable with ``Upgrade: amp``: the AMP protocol is Twisted's
own, unchanged; only the last line puts it behind the upgrade.
"""

from twisted.internet.protocol import Factory
from twisted.protocols import amp

from txupgrade.protocols.stream import StreamUpgrade


class Sum(amp.Command):
    arguments = [(b"a", amp.Integer()), (b"b", amp.Integer())]
    response = [(b"total", amp.Integer())]


class WhoAmI(amp.Command):
    response = [(b"path", amp.Unicode()), (b"token", amp.Unicode())]


class Calculator(amp.AMP):
    @Sum.responder
    def sum(self, a, b):
        return {"total": a + b}

    @WhoAmI.responder
    def whoAmI(self):
        request = self.upgradeRequest  # the HTTP request that opened this connection
        return {"path": request.path.decode(), "token": (request.getHeader(b"x-token") or b"").decode()}


amp_ = StreamUpgrade("amp", Factory.forProtocol(Calculator))
