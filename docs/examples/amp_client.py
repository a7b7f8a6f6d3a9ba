"""
Call the AMP service of amp_service.py through ``Upgrade: amp``, with
txupgrade's client.

Usage: python amp_client.py [PORT]   (default 8080)
"""

import sys

from twisted.internet import endpoints, task
from twisted.internet.defer import inlineCallbacks
from twisted.protocols import amp

from amp_service import Sum, WhoAmI  # the commands the service defines
from txupgrade.client import UpgradeFailed, upgrade


@inlineCallbacks
def callService(reactor, port):
    """Switch a connection to AMP; return the service's answers."""
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    try:
        protocol = yield upgrade(
            endpoint,
            ["amp"],  # the offer, best first
            lambda response: amp.AMP(),  # the client side, once the 101 is checked
            target=b"/rpc",
            host=b"127.0.0.1",
            headers=[(b"X-Token", b"secret")],  # the service reads the original request
        )
    except UpgradeFailed as failure:  # a 200, a 426, garbage...: no switch
        print("no switch:", failure.status, failure.body)
        raise
    total = yield protocol.callRemote(Sum, a=20, b=22)
    who = yield protocol.callRemote(WhoAmI)
    protocol.transport.loseConnection()
    return total["total"], who


@inlineCallbacks
def main(reactor, port="8080"):
    total, who = yield callService(reactor, int(port))
    print("20 + 22 =", total)
    print("the service saw", who)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
