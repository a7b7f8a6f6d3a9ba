"""
Serve a site whose connections can switch to shout/1, without the plugin
system: the protocol is passed in code.

Run it with C{python serve_shout.py [ENDPOINT]} (the txupgrade-shout
distribution installed), then try
C{curl -i http://127.0.0.1:8080/loud} (a 426) and
C{curl -i http://127.0.0.1:8080/} (a page).
"""

import sys

from twisted.internet import endpoints, reactor

from txupgrade import BytesResource, DirectoryResource, UpgradeRequiredResource, UpgradeSite
from txupgrade.plugins.shout import shout


def makeSite():
    """A page at /, and /loud reachable only through shout/1."""
    root = DirectoryResource()
    root.putChild(b"", BytesResource(b"hello\n", "text/plain"))
    # Only at /loud; anything else offered there gets 426 Upgrade Required.
    root.putChild(b"loud", UpgradeRequiredResource([shout]))
    # Connection-wide protocols are the site's second argument; none here.
    return UpgradeSite(root, [])


def main(description):
    """Listen on the endpoint C{description} and run the reactor."""
    endpoint = endpoints.serverFromString(reactor, description)
    listening = endpoint.listen(makeSite())
    listening.addCallback(lambda port: print("listening on", port.getHost().port, flush=True))
    listening.addErrback(lambda failure: (print(failure.value), reactor.stop()))
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tcp:8080:interface=127.0.0.1")
