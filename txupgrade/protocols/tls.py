"""
RFC 2817 TLS upgrade: C{Upgrade: TLS/1.2} turns a plain connection into TLS.

Theory of operation
===================
L{TLSUpgrade} accepts C{TLS/1.0} to C{TLS/1.3} on a connection that is not
TLS yet (RFC 2817 §3.2) and answers C{101} with C{Upgrade: TLS/1.x,
HTTP/1.1} (layers ascending). L{_TLSSwitch} then takes the connection:

  1. It becomes the transport's own protocol and calls C{startTLS}; the
     C{101} already written goes out in plain text first. ClientHello bytes
     that arrived behind the request (the channel hands them over as the
     first C{dataReceived}) are fed to the TLS layer.
  2. Once the handshake completes (never before: an answer written during
     the handshake can deadlock), the HTTP channel that read the request
     takes the connection back (L{_twistedcompat.resumeChannel}: it was
     held, not thrown away, by L{UpgradeChannel.switchProtocol}) and
     answers the original request over TLS, its headers without the
     upgrade's: the same request object when the switch came before
     twisted.web processed it (a static path), else a new one with the same
     head and body (see L{_twistedcompat.injectRequest}). The connection
     goes on as HTTP/1.1 over TLS.
  3. A handshake that fails, or does not finish within
     L{TLSUpgrade.handshakeTimeout} seconds, is logged and the connection
     closed.

L{TLSRequiredResource} answers C{426} with C{Upgrade: TLS/1.2, HTTP/1.1}
(RFC 2817 §4.2) on a plain connection, and serves its resource over TLS.
L{certificateOptionsFromPEM} loads the key and certificate chain.

Needs the C{tls} extra (pyOpenSSL).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from OpenSSL.SSL import Error as SSLError
from twisted.internet.interfaces import IHandshakeListener, IProtocol, ITLSTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource
from twisted.web.server import Request
from zope.interface import implementer

from txupgrade import _twistedcompat as _compat
from txupgrade import negotiation
from txupgrade.interfaces import IConnectionOnly, IUpgradeProtocol, IUpgradeResource
from txupgrade.negotiation import Accept, Decision, Decline, UpgradeRequest
from txupgrade.offer import peerText
from txupgrade.resource import PlainResource

__all__ = [
    "NoApplicationProtocol",
    "TLSRequiredResource",
    "TLSUpgrade",
    "certificateOptionsFromPEM",
    "certificateWarnings",
    "offerALPN",
    "pemProblem",
    "sslListenDescription",
]

_log = Logger(namespace="txupgrade.tls")

#: The TLS versions RFC 2817 tokens may name.
TLS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
_PEM_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")


class CertificateError(ValueError):
    """A PEM file that cannot serve TLS; the message says why in one line."""


def certificateOptionsFromPEM(path: str | Path, **options: Any) -> Any:
    """
    TLS server options from one PEM file holding the private key and the
    certificate, optionally followed by the intermediate certificates,
    loaded as C{cryptography} objects.

    @param options: More L{twisted.internet.ssl.CertificateOptions} arguments.
    @raise CertificateError: when the file is unreadable, has no key, no
        certificate, or a key that does not match the certificate.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from OpenSSL import SSL
    from twisted.internet import ssl

    problem = pemProblem(path, path)
    if problem is not None:
        missing = problem.endswith("in the PEM file")
        raise CertificateError(f"{problem} (put the key and certificate in one file)" if missing else problem)
    data = Path(path).read_bytes()
    try:
        key = load_pem_private_key(data, password=None)
        certificates = x509.load_pem_x509_certificates(data)
        # Twisted's hints still name pyOpenSSL's types; it takes cryptography's.
        chain: Any = certificates[1:] or None
        result = ssl.CertificateOptions(
            privateKey=cast(Any, key), certificate=cast(Any, certificates[0]), extraCertChain=chain, **options
        )
        result.getContext()  # checks that the key matches the certificate
    except (SSL.Error, ValueError, TypeError) as error:
        raise CertificateError(f"{path}: unusable key or certificate: {_errorText(error)}") from None
    return result


def pemProblem(keyPath: str | Path, certificatePath: str | Path) -> str | None:
    """
    What makes these PEM files unusable before any parsing (one line naming
    the file: unreadable, no private key, no certificate), or L{None}.
    """
    for path, pattern, what in (
        (keyPath, _PEM_KEY, "private key"),
        (certificatePath, _PEM_CERTIFICATE, "certificate"),
    ):
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            # One file holding both is "the TLS certificate" (--tls-certificate).
            file = what if keyPath != certificatePath else "certificate"
            return f"{path}: cannot read the TLS {file}: {error.strerror}"
        if not pattern.search(data):
            return f"{path}: no {what} in the PEM file"
    return None


def _errorText(error: Exception) -> str:
    """OpenSSL's reason (C{key values mismatch}) for its errors, else the message."""
    for entry in error.args[0] if error.args and isinstance(error.args[0], list) else ():
        if isinstance(entry, tuple) and len(entry) == 3:
            return str(entry[2])
    return str(error)


def certificateWarnings(contextFactory: Any, now: datetime | None = None) -> list[str]:
    """One line per certificate of C{contextFactory} that is expired or not valid yet: served anyway."""
    from cryptography import x509

    if now is None:
        now = datetime.now(timezone.utc)
    lines = []
    for certificate in map(_cryptographyObject, [contextFactory.certificate, *contextFactory.extraCertChain]):
        if not isinstance(certificate, x509.Certificate):
            continue
        subject = certificate.subject.rfc4514_string()
        if certificate.not_valid_after_utc < now:
            lines.append(f"certificate {subject} expired on {certificate.not_valid_after_utc:%Y-%m-%d}")
        elif certificate.not_valid_before_utc > now:
            lines.append(
                f"certificate {subject} is not valid before {certificate.not_valid_before_utc:%Y-%m-%d}"
            )
    return lines


def _cryptographyObject(value: Any) -> Any:
    """A pyOpenSSL key or certificate as its C{cryptography} object; anything else as it is."""
    if hasattr(value, "to_cryptography_key"):
        return value.to_cryptography_key()
    if hasattr(value, "to_cryptography"):
        return value.to_cryptography()
    return value


class NoApplicationProtocol(SSLError):
    """A client offered by ALPN only protocols the server does not speak."""

    def __init__(self, offered: Sequence[bytes]) -> None:
        # OpenSSL's error queue shape: Twisted's TLS layer reads its last reason.
        super().__init__([("SSL routines", "", "no application protocol")])
        #: What the client offered, as text (for the log).
        self.offered = ", ".join(p.decode("ascii", "replace") for p in offered)


def offerALPN(contextFactory: Any, protocols: Callable[[], Sequence[bytes]]) -> None:
    """
    Have the TLS connections of C{contextFactory} (Twisted's
    C{CertificateOptions}) choose by ALPN the first of C{protocols()} that
    the client offers (C{http/1.0} too, as HTTP/1.1's channel serves it).

    A client offering none gets the fatal C{no_application_protocol} alert,
    as RFC 7301 §3.2 says the server SHALL (and as nginx does), rather than
    Twisted's empty selection, which OpenSSL answers with C{internal_error}.
    The keys are converted to C{cryptography} objects first (pyOpenSSL's own
    are deprecated) and the context is built now, so a bad key fails at
    start-up.
    """
    contextFactory.privateKey = _cryptographyObject(contextFactory.privateKey)
    contextFactory.certificate = _cryptographyObject(contextFactory.certificate)
    contextFactory.extraCertChain = [_cryptographyObject(c) for c in contextFactory.extraCertChain]

    def select(connection: Any, offered: list[bytes]) -> bytes:
        for protocol in protocols():
            if protocol in offered:
                return protocol
        if b"http/1.0" in offered:
            return b"http/1.0"
        raise NoApplicationProtocol(offered)

    contextFactory.getContext().set_alpn_select_callback(select)


def sslListenDescription(description: str, pem: str | Path) -> str:
    """
    C{description} with C{privateKey=pem} added when it is an C{ssl:} server
    endpoint that names no key (C{certKey} then defaults to the same file);
    any other description unchanged.
    """
    if not description.startswith("ssl:") or re.search(r"(?:^|:)privateKey=", description):
        return description
    escaped = str(pem).replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")
    return f"{description}:privateKey={escaped}"


@implementer(IUpgradeProtocol, IConnectionOnly)
class TLSUpgrade:
    """
    The C{TLS} upgrade token (C{TLS/1.0} to C{TLS/1.3}), RFC 2817.

    @ivar contextFactory: The server's TLS options (an
        C{IOpenSSLServerConnectionCreator}, e.g. from
        L{certificateOptionsFromPEM}).
    @ivar handshakeTimeout: Seconds from the C{101} to a finished handshake.
    """

    name = "TLS"
    version = None

    def __init__(self, contextFactory: Any, *, handshakeTimeout: float = 15.0) -> None:
        self.contextFactory = contextFactory
        self.handshakeTimeout = handshakeTimeout

    def negotiate(self, request: UpgradeRequest) -> Decision:
        """Accept a known TLS version on a plain connection."""
        if request.secure:
            return Decline("the connection is already TLS")
        for offered in request.offer.protocols:
            if offered.key == "tls" and offered.version in TLS_VERSIONS:
                return Accept(upgrade=(str(offered), "HTTP/1.1"))
        return Decline("no TLS version this server knows was offered")

    def buildProtocol(self, request: UpgradeRequest, site: Any) -> _TLSSwitch:
        """The protocol that runs the handshake, then serves C{request}."""
        return _TLSSwitch(self, request, site)


def _carryHeaders(headers: Headers, request: UpgradeRequest) -> None:
    """
    Edit the original request's C{headers} into what the site sees over TLS:
    without C{Upgrade}, the C{upgrade} option of C{Connection}, and C{Expect}
    (the C{100} was sent before the C{101}); the body is already decoded, so
    its framing becomes a C{Content-Length}.
    """
    headers.removeHeader(b"upgrade")
    kept = []
    for value in headers.getRawHeaders(b"connection", ()):
        options = [o.strip() for o in value.split(b",")]
        options = [o for o in options if o and o.lower() != b"upgrade"]
        if options:
            kept.append(b", ".join(options))
    if kept:
        headers.setRawHeaders(b"connection", kept)
    else:
        headers.removeHeader(b"connection")
    for name in _BODY_FIELDS:
        headers.removeHeader(name)
    if request.announcesBody:
        headers.setRawHeaders(b"content-length", [b"%d" % len(request.body)])


#: The fields about the upgrade request's body: its framing, and C{Expect}.
_BODY_FIELDS = (b"expect", b"transfer-encoding", b"content-length")


@implementer(IProtocol, IHandshakeListener)
class _TLSSwitch:
    """One connection's TLS upgrade: handshake, then HTTP/1.1 over TLS."""

    def __init__(self, upgrade: TLSUpgrade, request: UpgradeRequest, site: Any) -> None:
        self.upgrade = upgrade
        self.request = request
        self.site = site
        self.transport: Any = None
        self.http: Any = None
        self._channel: Any = None
        self._httpRequest: Any = None
        self._wrapper: Any = None
        self._timer: Any = None
        self._done = False

    def holdChannel(self, channel: Any, request: Request) -> None:
        """Keep the HTTP channel, its wrapper and the request it switched on: they answer over TLS."""
        self._channel = channel
        self._httpRequest = request
        self._wrapper = _compat.channelWrapper(channel)

    def makeConnection(self, transport: Any) -> None:
        """Start TLS on the connection (after the plain C{101})."""
        self.transport = transport
        if not ITLSTransport.providedBy(transport) or self._channel is None:
            _log.error(
                "TLS upgrade from {peer}: the transport cannot start TLS; closing",
                peer=peerText(self.request.peer),
            )
            self._release()
            transport.abortConnection()
            return
        transport.startTLS(self.upgrade.contextFactory)
        self._timer = self.site.reactor.callLater(self.upgrade.handshakeTimeout, self._timedOut)

    def connectionMade(self) -> None:
        """Nothing: L{makeConnection} does the work."""

    def dataReceived(self, data: bytes) -> None:
        """Before the handshake: raw bytes that came behind the request; after: HTTP."""
        if self.http is not None:
            self.http.dataReceived(data)
        elif not self._done:
            _compat.feedTLS(self.transport, data)

    def handshakeCompleted(self) -> None:
        """The connection is TLS: the held channel serves the original request over it."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._done = True
        request = self.request
        channel, req, wrapper = self._channel, self._httpRequest, self._wrapper
        self._release()
        try:
            headers = req.requestHeaders
            _carryHeaders(headers, request)
            _compat.resumeChannel(channel, wrapper, self.site.timeOut)
            self.http = wrapper
            if req.prepath is None:
                # Switched before twisted.web processed it: answer it now, as read.
                req.code, req.code_message = 200, b"OK"
                req.content.seek(0, 2)
                channel.requests = [req]
                req.requestReceived(req.method, req.uri, req.clientproto)
            else:
                # Switched from render: twisted.web is done with that request
                # object; a new one with the same head and body is answered.
                _compat.injectRequest(
                    wrapper,
                    request.method,
                    request.target,
                    request.version,
                    [(name, value) for name, values in headers.getAllRawHeaders() for value in values],
                    request.body,
                )
        except Exception:  # noqa: BLE001 - the site's failure closes only this connection
            _log.failure(
                "TLS upgrade from {peer}: serving the original request failed", peer=peerText(request.peer)
            )
            self.transport.abortConnection()

    def _release(self) -> None:
        """Drop the held channel, request and wrapper (resumed, or never to be)."""
        self._channel = self._httpRequest = self._wrapper = None

    def _timedOut(self) -> None:
        self._timer = None
        _log.info(
            "TLS upgrade from {peer}: no handshake within {timeout} s; closing",
            peer=peerText(self.request.peer),
            timeout=self.upgrade.handshakeTimeout,
        )
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure) -> None:
        """End the HTTP channel, or log a handshake that never completed."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._release()
        http, self.http = self.http, None
        if http is not None:
            http.connectionLost(reason)
        elif not self._done:
            self._done = True
            if isinstance(reason.value, SSLError) and getattr(self.site, "tracker", None) is not None:
                return  # the daemon's tracker logs (rate-limited) and counts a failed handshake
            _log.info(
                "TLS upgrade from {peer} ended before the handshake completed: {reason}",
                peer=peerText(self.request.peer),
                reason=_errorText(cast(Exception, reason.value)),
            )


@implementer(IUpgradeResource)
class TLSRequiredResource(PlainResource):
    """
    C{resource}, served only over TLS (RFC 2817 §4.2).

    On a plain connection, a request offering C{TLS/1.x} switches (the
    path binds L{upgrade}), and any other gets C{426 Upgrade Required}
    with C{Upgrade: TLS/1.2, HTTP/1.1}. Over TLS, C{resource} answers as
    usual, children included.
    """

    def __init__(self, resource: IResource, upgrade: TLSUpgrade) -> None:
        super().__init__()
        self.resource = resource
        # A leaf stays a leaf: its render sees the rest of the path.
        self.isLeaf = bool(getattr(resource, "isLeaf", False))
        self.upgradeProtocols = (upgrade,)
        self._426 = negotiation.upgradeRequiredHeaders(("TLS/1.2", "HTTP/1.1"))

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        """Over TLS the wrapped resource's child; otherwise this resource (426)."""
        if request.isSecure():
            return self.resource.getChildWithDefault(path, request)
        return self

    def render(self, request: Request) -> bytes:
        """Over TLS render the wrapped resource; otherwise answer C{426}."""
        if request.isSecure():
            return self.resource.render(request)
        request.setResponseCode(426, b"Upgrade Required")
        request.responseHeaders.removeHeader(b"Upgrade")
        for name, value in self._426:
            request.responseHeaders.setRawHeaders(name, [value])
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"This resource is served over TLS only: upgrade with Upgrade: TLS/1.2.\n"
