"""
One plain port; /private is served only over TLS, reached through the
RFC 2817 upgrade (``Upgrade: TLS/1.2``) on the same connection.
"""

from twisted.web.static import Data

from txupgrade import DirectoryResource, UpgradeSite
from txupgrade.tls import TLSRequiredResource, TLSUpgrade, certificateOptionsFromPEM


def makeSite(pem):
    """The site, with the key and certificate (one PEM file) at C{pem}."""
    tls = TLSUpgrade(certificateOptionsFromPEM(pem))
    root = DirectoryResource()
    root.putChild(b"", Data(b"public\n", "text/plain"))
    # Over plain HTTP: 426 with Upgrade: TLS/1.2, HTTP/1.1; over TLS: the page.
    root.putChild(b"private", TLSRequiredResource(Data(b"secret\n", "text/plain"), tls))
    # Connection-wide, so that any path may ask for TLS.
    return UpgradeSite(root, [tls])
