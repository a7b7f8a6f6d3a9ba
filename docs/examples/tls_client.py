"""
Fetch /private of tls_site.py: upgrade the plain connection to TLS
(RFC 2817), and read the answer to the original request over TLS.
"""

from twisted.internet import endpoints, ssl
from twisted.internet.defer import inlineCallbacks

from txupgrade.client import upgradeToTLS


@inlineCallbacks
def fetchPrivate(reactor, port, caPEM):
    """GET /private through the TLS upgrade, trusting the CA in C{caPEM} (bytes)."""
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    options = ssl.optionsForClientTLS("127.0.0.1", trustRoot=ssl.Certificate.loadPEM(caPEM))
    http, response = yield upgradeToTLS(endpoint, options, target=b"/private", host=b"127.0.0.1")
    # The same connection now speaks HTTP/1.1 over TLS and can be asked again.
    again = yield http.request(b"GET", b"/", host=b"127.0.0.1")
    http.transport.loseConnection()
    return response, again
