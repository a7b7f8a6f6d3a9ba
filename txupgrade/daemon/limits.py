"""
The daemon's connection limits: what they are, how a hit is answered, and
how hits are logged (once, rate-limited) and counted.

The limits are enforced by L{txupgrade.daemon.tracking} on every connection of the
site; the limits on the request itself (body before a switch: 413; request
line 414; header 431; the C{Upgrade} list, C{max-upgrade-offers}: 16
elements and 64 bytes each by default, 400) are the channel's (R11, R15);
the tracker lends the site its L{LimitLog}, so the last one is counted and
logged with the others.

  - C{max-connections}: open connections of the process; one more is
    answered C{503} (with C{Retry-After}) and closed.
  - C{max-connections-per-client}: the same, per client address (the
    proxy's address behind a proxy without the PROXY protocol).
  - C{request-head-timeout}: seconds from a connection's start, or from the
    first byte of a later request, until the request head is complete;
    past it, C{408} and close (slowloris). The HTTP idle timeout
    (C{timeout}) is separate: it closes a connection that sends nothing.
  - C{idle-timeout PROTOCOL=SECONDS}: an upgraded connection of that
    protocol with no byte in either direction for that long is closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger

from txupgrade import negotiation

# LimitLog lived here before the core took it (txupgrade.reporting).
from txupgrade.reporting import LimitLog

__all__ = ["LimitLog", "Limits", "parseIdleTimeout", "refusal"]

_log = Logger(namespace="txupgrade.limits")

_REASONS = {
    "max-connections": (503, "The server has too many connections; try again.\n"),
    "max-connections-per-client": (503, "Too many connections from your address; try again.\n"),
    "request-head-timeout": (408, "The request head took too long.\n"),
}


@dataclass(frozen=True)
class Limits:
    """
    The limits of one site (0 switches a limit off).

    @ivar idleTimeouts: Seconds of silence allowed, by upgraded protocol
        name (as in the C{101}; C{name} also matches C{name/version}).
    """

    maxConnections: int = 0
    maxConnectionsPerClient: int = 0
    requestHeadTimeout: float = 30.0
    idleTimeouts: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def fromSettings(cls, settings: Mapping[str, Any]) -> Limits:
        """The limits the daemon's settings (L{txupgrade.daemon.config}) give."""
        return cls(
            maxConnections=settings["max-connections"],
            maxConnectionsPerClient=settings["max-connections-per-client"],
            requestHeadTimeout=settings["request-head-timeout"],
            idleTimeouts=dict(parseIdleTimeout(t) for t in settings["idle-timeout"]),
        )

    def idleTimeoutFor(self, protocol: str) -> float:
        """The idle timeout of an upgraded C{protocol}, 0 if none."""
        lowered = protocol.lower()
        for name, seconds in self.idleTimeouts.items():
            wanted = name.lower()
            if wanted == lowered or ("/" not in wanted and lowered.split("/", 1)[0] == wanted):
                return seconds
        return 0.0


def parseIdleTimeout(text: str) -> tuple[str, float]:
    """
    C{"websocket=300"} as C{("websocket", 300.0)}.

    @raise ValueError: not C{NAME=SECONDS} with a positive number.
    """
    name, equals, seconds = text.partition("=")
    value = float(seconds) if equals and name.strip() else -1.0
    if value <= 0:
        raise ValueError(f"--idle-timeout wants PROTOCOL=SECONDS (a positive number), not {text!r}")
    return name.strip(), value


def refusal(limit: str) -> bytes:
    """The whole response (with C{Connection: close}) that answers a hit of C{limit}."""
    status, body = _REASONS[limit]
    headers = ((b"Retry-After", b"1"),) if status == 503 else ()
    return negotiation.simpleResponse(status, headers, body.encode("ascii"), close=True)
