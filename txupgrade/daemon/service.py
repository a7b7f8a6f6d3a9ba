"""
What C{twistd txupgrade} runs: the site built from the settings, its
listeners, the start-up log line and the graceful drain at shutdown.

Everything the operator names (a resource, a WebSocket factory, a PEM file,
an endpoint) is loaded and checked while the service is built, before the
reactor runs, so that a mistake is one line and a non-zero exit
(L{DaemonError}), never a traceback or a daemon silently missing a port.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Sequence
from typing import Any, cast

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolNegotiationFactory
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from twisted.python.reflect import namedAny
from twisted.web.resource import IResource, Resource

from txupgrade import _twistedcompat as _compat
from txupgrade.channel import UpgradeSite
from txupgrade.daemon.config import ConfigError, parseMount
from txupgrade.daemon.limits import Limits
from txupgrade.daemon.tracking import ConnectionTracker, peerText
from txupgrade.daemon.workerplan import endpointKind, splitWrappers
from txupgrade.registry import ProtocolRegistry
from txupgrade.resource import DirectoryResource

__all__ = ["DaemonError", "DaemonService", "buildRoot", "loadTLSOptions", "tlsDescriptions"]

_log = Logger(namespace="txupgrade.daemon")


class DaemonError(ConfigError):
    """The daemon cannot start; C{str()} is one line naming the problem."""


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def badEndpoint(description: str, error: BaseException) -> str:
    """
    Why C{serverFromString} refused C{description}, in one line: for an
    C{ssl:} listener, the key or certificate file's problem in words where
    OpenSSL's own reason names none (C{DECODER routines: unsupported}).
    """
    _wrappers, inner = splitWrappers(description)
    if endpointKind(inner) == "ssl":
        arguments = _compat.endpointArguments(inner)
        key = arguments.get("privateKey")
        if key is not None:
            try:
                from txupgrade.protocols.tls import pemProblem
            except ImportError:
                pass
            else:
                problem = pemProblem(key, arguments.get("certKey", key))
                if problem is not None:
                    return f"--listen {description}: {problem}"
    return f"--listen {description}: bad endpoint ({_describe(error)})"


def _load(name: str, what: str) -> Any:
    """The object at dotted C{name}, or L{DaemonError} saying why not."""
    try:
        return namedAny(name)
    except Exception as error:  # noqa: BLE001 - any import-time error is the operator's to see
        raise DaemonError(f"{what} {name!r} cannot be loaded: {_describe(error)}") from None


def loadResource(name: str) -> IResource:
    """The resource at C{name}, or what the callable at C{name} returns."""
    found = _load(name, "--resource")
    if not IResource.providedBy(found) and callable(found):
        try:
            found = found()
        except Exception as error:  # noqa: BLE001 - the operator's code
            raise DaemonError(f"--resource {name!r} failed: {_describe(error)}") from None
    if not IResource.providedBy(found):
        raise DaemonError(
            f"--resource {name!r} is {type(found).__name__}, not a twisted.web resource "
            "nor a callable returning one"
        )
    return found


def loadWebSocketFactory(name: str) -> Any:
    """The autobahn server factory at C{name}, or what the callable at C{name} returns."""
    try:
        from autobahn.twisted.websocket import WebSocketServerFactory
    except ImportError:
        raise DaemonError("--websocket needs autobahn (pip install 'txupgrade[websocket]')") from None
    found = _load(name, "--websocket")
    if not isinstance(found, WebSocketServerFactory) and callable(found):
        try:
            found = found()
        except Exception as error:  # noqa: BLE001 - the operator's code
            raise DaemonError(f"--websocket {name!r} failed: {_describe(error)}") from None
    if not isinstance(found, WebSocketServerFactory):
        raise DaemonError(
            f"--websocket {name!r} is {type(found).__name__}, not an autobahn "
            "WebSocketServerFactory nor a callable returning one"
        )
    return found


def mount(root: Resource, path: str, child: IResource) -> None:
    """Put C{child} at C{path} (C{/a/b}) under C{root}, adding plain parents."""
    segments = [s.encode("utf-8") for s in path.strip("/").split("/")]
    node = root
    for segment in segments[:-1]:
        existing = node.children.get(segment)
        if existing is None:
            existing = DirectoryResource()
            node.putChild(segment, existing)
        elif not isinstance(existing, Resource):
            raise DaemonError(f"--websocket {path}: {segment.decode()!r} is not a plain Resource")
        node = existing
    node.putChild(segments[-1], child)


def buildRoot(settings: dict[str, Any], protocols: ProtocolRegistry, webSocket: bool) -> IResource:
    """
    The site root the settings name (the demo by default), with the
    C{--websocket} factories mounted.

    @param webSocket: Whether WebSocket is enabled (the demo's C{/ws} too).
    """
    mounts = [parseMount(m) for m in settings["websocket"]]
    if mounts and not webSocket:
        raise DaemonError("--websocket given, but the websocket protocol is disabled")
    origins = settings["websocket-origin"] or None
    if settings["resource"] is None:
        from txupgrade.daemon.demo import demoRoot

        root: IResource = demoRoot(
            protocols,
            webSocket=webSocket,
            allowedOrigins=origins,
            maxFramePayload=settings["websocket-max-frame"],
            maxMessagePayload=settings["websocket-max-message"],
        )
    else:
        root = loadResource(settings["resource"])
    if mounts:
        from txupgrade.protocols.websocket import WebSocketEndpoint

        if not isinstance(root, Resource):
            raise DaemonError("--websocket needs a --resource that is a twisted.web Resource")
        for path, name in mounts:
            mount(root, path, WebSocketEndpoint(loadWebSocketFactory(name), origins))
    return root


def loadTLSOptions(path: str) -> Any:
    """
    TLS server options from the PEM file at C{path} (private key and
    certificate chain in one file), by L{txupgrade.protocols.tls.certificateOptionsFromPEM}.
    """
    try:
        from txupgrade.protocols.tls import CertificateError, certificateOptionsFromPEM
    except ImportError:
        raise DaemonError("--tls-certificate needs pyOpenSSL (pip install 'txupgrade[tls]')") from None
    try:
        return certificateOptionsFromPEM(path)
    except CertificateError as error:
        raise DaemonError(f"--tls-certificate {error}") from None


_WRAPPERS = ("haproxy:",)


def tlsDescriptions(descriptions: Sequence[str], certificate: str | None) -> list[str]:
    """
    The endpoint descriptions with C{--tls-certificate} as the key and
    certificate of every C{ssl:} listener (also under C{haproxy:}) that does
    not name its own C{privateKey}.
    """
    result = []
    for description in descriptions:
        inner = description
        while inner.startswith(_WRAPPERS):
            inner = inner.split(":", 1)[1]
        if inner.startswith("ssl:") and "privateKey=" not in inner:
            if certificate is None:
                raise DaemonError(f"--listen {description}: an ssl: listener needs --tls-certificate")
            from txupgrade.protocols.tls import sslListenDescription

            description = description[: len(description) - len(inner)] + sslListenDescription(
                inner, certificate
            )
        result.append(description)
    return result


def listenerText(description: str, address: Any) -> str:
    """
    A listener as the start-up line names it: how clients reach it and where,
    C{tcp:127.0.0.1:8080}, C{ssl:127.0.0.1:8443},
    C{haproxy:tcp:127.0.0.1:8081}, C{unix:/run/txupgrade.sock}.
    """
    wrappers, inner = splitWrappers(description)
    base = peerText(address)  # unix:/path for a UNIX socket
    if getattr(address, "host", None) is not None:
        base = f"{'ssl' if endpointKind(inner) == 'ssl' else 'tcp'}:{base}"
    return ":".join([*wrappers, base])


def prepareTLS(contextFactory: Any, factory: Any) -> list[str]:
    """
    Ready a TLS listener's options for C{factory}: ALPN from its acceptable
    protocols (L{txupgrade.protocols.tls.offerALPN}). A certificate out of its
    validity is served: the warnings to log (L{warnCertificates}).
    """
    from txupgrade.protocols.tls import certificateWarnings, offerALPN

    offerALPN(contextFactory, IProtocolNegotiationFactory(factory).acceptableProtocols)
    return certificateWarnings(contextFactory)


def warnCertificates(warnings: Iterable[str]) -> None:
    """Log each certificate warning once (one file may serve several listeners and the TLS upgrade)."""
    for warning in dict.fromkeys(warnings):
        _log.warn("TLS: {warning}; serving it anyway", warning=warning, tlsWarning=warning)


def upgradeCertificateWarnings(site: UpgradeSite) -> list[str]:
    """The certificate warnings of the site's RFC 2817 TLS upgrade, if it offers one."""
    if "TLS" not in site.protocols.names():
        return []
    from txupgrade.protocols.tls import TLSUpgrade, certificateWarnings

    return [
        w for p in site.protocols if isinstance(p, TLSUpgrade) for w in certificateWarnings(p.contextFactory)
    ]


def prepareEndpoint(endpoint: Any, factory: Any) -> list[str]:
    """
    Make an endpoint from C{serverFromString} hide nothing of C{factory}
    (L{txupgrade.wrappers}): its C{haproxy:} layers pass everything on and
    its TLS layer offers the site's ALPN protocols (L{prepareTLS}, whose
    warnings it returns).
    """
    _compat.hideNothing(endpoint)
    warnings = []
    for layer in _compat.endpointLayers(endpoint):
        contextFactory = _compat.sslContextFactory(layer)
        if contextFactory is not None:
            warnings += prepareTLS(contextFactory, factory)
    return warnings


def listenNow(endpoint: Any, factory: Any, description: str) -> IListeningPort:
    """Listen on C{endpoint} now (before the reactor runs), or raise L{DaemonError} (one line)."""
    outcome: list[Any] = []
    endpoint.listen(factory).addBoth(outcome.append)
    if not outcome:
        raise DaemonError(f"--listen {description}: the endpoint did not listen at once")
    if isinstance(outcome[0], Failure):
        reason = cast(BaseException, outcome[0].value)
        socketError = getattr(reason, "socketError", None)
        text = str(socketError) if socketError is not None else _describe(reason)
        raise DaemonError(f"cannot listen on {description}: {text}")
    return cast(IListeningPort, outcome[0])


def extraEndpoint(reactor: Any, description: str, what: str) -> Any:
    """The endpoint of the C{--what} listener (say C{--metrics}), or L{DaemonError} (one line)."""
    try:
        return serverFromString(reactor, description)
    except Exception as error:  # noqa: BLE001 - Twisted's parsers raise various errors
        raise DaemonError(f"--{what} {description}: bad endpoint ({_describe(error)})") from None


def listenExtra(reactor: Any, description: str, factory: Any, what: str) -> IListeningPort:
    """Bind C{description} for C{factory} now (the C{--what} listener, say C{--metrics})."""
    return listenNow(extraEndpoint(reactor, description, what), factory, description)


def extraText(extraPorts: Sequence[tuple[str, IListeningPort]]) -> str:
    """The start-up line's mention of the extra listeners (C{; metrics on 127.0.0.1:9100})."""
    return "".join(f"; {what} on {peerText(p.getHost())}" for what, p in extraPorts)


def keepOutOfCollections() -> None:
    """
    Keep what start-up built (modules, the site, its resources) out of every
    later garbage collection (C{gc.freeze}): a full collection then walks only
    what the connections made, instead of the whole program each time.
    """
    gc.collect()
    gc.freeze()


class DaemonService(MultiService):
    """
    The site on its listeners: bound by L{listen} (before the reactor runs),
    logged at start, drained at stop.

    @ivar tracker: Tracks the site's connections.
    @ivar ports: The listening ports, once L{listen} succeeded.
    @ivar lineLog: The text log's L{txupgrade.daemon.logs.LineLog} (set by
        L{txupgrade.daemon.logs.fileLogging}): at start, the access lines and the
        connection lines go there preformatted.
    """

    lineLog: Any = None
    #: The log's L{txupgrade.daemon.logs.BatchedOutput}, if it writes one.
    logOutput: Any = None

    def __init__(
        self,
        site: UpgradeSite,
        descriptions: Sequence[str],
        *,
        drainTimeout: float,
        protocolNames: Sequence[str] = (),
        limits: Limits | None = None,
        reactor: Any = None,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.site = site
        self.descriptions = list(descriptions)
        self.drainTimeout = drainTimeout
        self.protocolNames = list(protocolNames)
        self.tracker = ConnectionTracker(site, reactor, limits)
        self.ports: list[IListeningPort] = []
        self.extraPorts: list[tuple[str, IListeningPort]] = []
        self.logObserver: ILogObserver | None = None
        #: The L{txupgrade.daemon.metrics.DaemonMetrics}, with C{--metrics}.
        self.metrics: Any = None

    def setServiceParent(self, parent: Any) -> None:
        """Join C{parent}; give it L{logObserver} (twistd then logs only there)."""
        super().setServiceParent(parent)
        if self.logObserver is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.logObserver)

    def listen(self) -> None:
        """
        Bind every listener now; on the first that fails, close the others
        and raise L{DaemonError}.
        """
        endpoints = []
        for description in self.descriptions:
            try:
                endpoints.append(serverFromString(self.reactor, description))
            except Exception as error:  # noqa: BLE001 - Twisted's parsers raise various errors
                raise DaemonError(badEndpoint(description, error)) from None
        warnings = upgradeCertificateWarnings(self.site)
        for description, endpoint in zip(self.descriptions, endpoints, strict=True):
            try:
                warnings += prepareEndpoint(endpoint, self.site)
            except Exception as error:  # noqa: BLE001 - OpenSSL's errors on a key or certificate
                raise DaemonError(
                    f"--listen {description}: unusable TLS options ({_describe(error)})"
                ) from None
            self.ports.append(self._listenNow(description, endpoint, self.site))
        warnCertificates(warnings)

    def _listenNow(self, description: str, endpoint: Any, factory: Any) -> IListeningPort:
        try:
            return listenNow(endpoint, factory, description)
        except DaemonError:
            for port in self.ports:
                port.stopListening()
            self.ports = []
            raise

    def addListener(self, description: str, factory: Any, what: str) -> None:
        """Also bind C{description} for C{factory} (say, the metrics page)."""
        endpoint = extraEndpoint(self.reactor, description, what)
        self.extraPorts.append((what, self._listenNow(description, endpoint, factory)))

    def addresses(self) -> list[str]:
        """Where each listener listens (L{listenerText})."""
        return [listenerText(d, p.getHost()) for d, p in zip(self.descriptions, self.ports, strict=True)]

    def startService(self) -> None:
        super().startService()
        if self.metrics is not None:
            self.metrics.logOutput = self.logOutput
        if self.lineLog is not None:
            self.tracker.lineLog = self.lineLog
            if self.site.logPath is None and not self.site.quietAccessLog:
                self.site.log = self.lineLog.access  # type: ignore[method-assign]
        extra = extraText(self.extraPorts)
        _log.info(
            "txupgrade serving on {listeners}; upgrade protocols: {protocols}{extra}",
            listeners=", ".join(self.addresses()),
            protocols=", ".join(self.protocolNames) or "none",
            extra=extra,
            daemonEvent="started",
        )

    @inlineCallbacks
    def stopService(self) -> Any:
        """Stop accepting, drain every connection (bounded), then stop the children."""
        _log.info(
            "Shutting down: no new connections; draining {count} open connection(s) for at most {timeout} s",
            count=len(self.tracker.connections),
            timeout=self.drainTimeout,
            daemonEvent="stopping",
        )
        ports, self.ports = self.ports, []
        extra, self.extraPorts = self.extraPorts, []
        stopping = [d for d in (p.stopListening() for p in ports) if isinstance(d, Deferred)]
        yield DeferredList(stopping)
        yield self.tracker.drain(self.drainTimeout)
        for _what, port in extra:
            yield port.stopListening()
        if self.metrics is not None:
            self.metrics.stop()
        yield super().stopService()
