"""
One plain port; /private is served only over TLS, reached through the
RFC 2817 upgrade (``Upgrade: TLS/1.2``) on the same connection.
"""


from txupgrade import BytesResource, DirectoryResource, UpgradeSite
from txupgrade.protocols.tls import TLSRequiredResource, TLSUpgrade, certificateOptionsFromPEM


def makeSite(pem):
    """The site, with the key and certificate (one PEM file) at C{pem}."""
    tls = TLSUpgrade(certificateOptionsFromPEM(pem))
    root = DirectoryResource()
    root.putChild(b"", BytesResource(b"public\n", "text/plain"))
    # Over plain HTTP: 426 with Upgrade: TLS/1.2, HTTP/1.1; over TLS: the page.
    root.putChild(b"private", TLSRequiredResource(BytesResource(b"secret\n", "text/plain"), tls))
    # Connection-wide, so that any path may ask for TLS.
    return UpgradeSite(root, [tls])
