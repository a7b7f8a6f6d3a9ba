"""
C{twistd txupgrade}: options and the service they build.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from txupgrade.channel import UpgradeChannel, UpgradeSite
from txupgrade.demo import demoRoot
from txupgrade.registry import ProtocolRegistry, protocolName

__all__ = ["Options", "makeService"]

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"


class Options(usage.Options):
    """Command-line options of C{twistd txupgrade}."""

    synopsis = "[options]"
    longdesc = (
        "Serve a demo site on one or more endpoints; every connection can switch "
        "to any discovered upgrade protocol (see txupgrade.plugins)."
    )
    optParameters = [
        ["timeout", None, 60.0, "HTTP idle timeout in seconds (not applied after a switch).", float],
        [
            "max-upgrade-body",
            None,
            UpgradeChannel.maxUpgradeBodySize,
            "Largest body an upgrade request may carry, in bytes (413 beyond).",
            int,
        ],
        ["policy", None, "client", "Whose preference picks the protocol: client or server."],
        ["access-log", None, None, "Write a combined access log to this file."],
        [
            "tls-certificate",
            None,
            None,
            "PEM file with the private key and certificate (chain): enables the RFC 2817 "
            "TLS upgrade (Upgrade: TLS/1.2) and serves ssl: listeners that name no key.",
        ],
    ]
    optFlags = [
        ["no-advertise", None, "Do not list available protocols in Upgrade on other answers."],
        [
            "no-prior-knowledge",
            None,
            "Do not serve HTTP/2 to cleartext connections that start with its preface.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["disable"] = []

    def opt_disable(self, name: str) -> None:
        """Do not offer this discovered protocol, e.g. h2c behind a reverse proxy (repeatable)."""
        self["disable"].append(name.lower())

    def opt_listen(self, description: str) -> None:
        """Listen on this Twisted server endpoint (repeatable; default tcp:8080:interface=127.0.0.1)."""
        self["listen"].append(description)

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if self["policy"] not in ("client", "server"):
            raise usage.UsageError("--policy must be client or server")
        self["tls-options"] = None
        if self["tls-certificate"] is not None:
            from txupgrade.tls import CertificateError, certificateOptionsFromPEM, sslListenDescription

            try:
                self["tls-options"] = certificateOptionsFromPEM(self["tls-certificate"])
            except CertificateError as error:
                raise usage.UsageError(f"--tls-certificate: {error}") from None
            self["listen"] = [sslListenDescription(d, self["tls-certificate"]) for d in self["listen"]]


def makeSite(options: Options | dict[str, Any], protocols: ProtocolRegistry | None = None) -> UpgradeSite:
    """The demo site with every discovered protocol."""
    if protocols is None:
        protocols = ProtocolRegistry.fromPlugins()
    disabled = set(options.get("disable", ()))
    if disabled:
        unknown = disabled - {p.name.lower() for p in protocols} - {n.lower() for n in protocols.names()}
        if unknown:
            raise usage.UsageError(f"--disable: no such protocol: {', '.join(sorted(unknown))}")
        protocols = ProtocolRegistry(
            p for p in protocols if p.name.lower() not in disabled and protocolName(p).lower() not in disabled
        )
    tlsOptions = options.get("tls-options")
    if tlsOptions is not None:
        from txupgrade.tls import TLSUpgrade

        protocols.register(TLSUpgrade(tlsOptions))
    return UpgradeSite(
        demoRoot(protocols),
        protocols,
        policy=options["policy"],
        advertise=not options["no-advertise"],
        maxUpgradeBodySize=options["max-upgrade-body"],
        timeout=options["timeout"],
        logPath=options["access-log"],
        priorKnowledge=not options.get("no-prior-knowledge", False),
    )


def makeService(options: Options) -> IService:
    """One listening service per C{--listen}, sharing one site."""
    from twisted.internet import reactor

    site = makeSite(options)
    service = MultiService()
    for description in options["listen"]:
        endpoint = serverFromString(reactor, description)
        StreamServerEndpointService(endpoint, site).setServiceParent(service)
    return service
