"""
The plan of C{twistd txupgrade --workers N}, without I/O: which listeners can
be shared, what each worker is told, and how long a dead worker waits before
it is started again.

The supervisor (L{txupgrade.daemon.workers}) binds every C{--listen} endpoint once
and hands the listening file descriptors to its workers; a worker learns
which descriptor serves which description from L{WorkerSpec}, carried in the
C{TXUPGRADE_WORKER} environment variable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ENVIRONMENT",
    "INITIAL_DELAY",
    "MAX_DELAY",
    "STABLE_AFTER",
    "SharedListener",
    "WorkerSpec",
    "restartDelay",
    "shareable",
    "splitWrappers",
    "workerArguments",
]

#: The environment variable that makes a C{twistd txupgrade} a worker.
ENVIRONMENT = "TXUPGRADE_WORKER"

#: The first restart of a dead worker waits this long (seconds) ...
INITIAL_DELAY = 0.25
#: ... each further death in a row doubles it, up to this bound ...
MAX_DELAY = 10.0
#: ... and a worker that lived this long starts the count again.
STABLE_AFTER = 10.0

#: Endpoint wrappers a worker re-applies around its inherited socket.
_WRAPPERS = ("haproxy",)

#: The endpoint kinds whose listening socket a worker can adopt as it is
#: (C{ssl}: the worker wraps TLS itself, with the description's certificate).
_SHAREABLE = ("tcp", "tcp6", "unix", "ssl", "systemd")

#: The families of L{SharedListener.family}.
FAMILIES = ("INET", "INET6", "UNIX")


def splitWrappers(description: str) -> tuple[list[str], str]:
    """
    C{"haproxy:tcp:8080"} as C{(["haproxy"], "tcp:8080")}: the wrapping
    endpoints, outermost first, and the endpoint they wrap.
    """
    wrappers = []
    inner = description
    while True:
        kind, colon, rest = inner.partition(":")
        if colon and kind.strip().lower() in _WRAPPERS:
            wrappers.append(kind.strip().lower())
            inner = rest
        else:
            return wrappers, inner


def endpointKind(description: str) -> str:
    """C{"tcp"} for C{"tcp:8080:interface=127.0.0.1"} (lower case; a bare port is C{tcp})."""
    kind = description.partition(":")[0].strip().lower()
    return "tcp" if kind.isdigit() else kind


def shareable(description: str) -> str | None:
    """
    Why the listener C{description} cannot be shared by workers, or L{None}
    when it can: a worker adopts the socket and re-applies the wrappers and
    TLS itself, which it can do only for the kinds it knows.
    """
    _wrappers, inner = splitWrappers(description)
    kind = endpointKind(inner)
    if kind not in _SHAREABLE:
        known = ", ".join(_SHAREABLE)
        return f"--workers can share {known} listeners (optionally under haproxy:), not {kind}:"
    return None


@dataclass(frozen=True)
class SharedListener:
    """
    One listening socket a worker inherits.

    @ivar fd: Its file descriptor number in the worker.
    @ivar family: C{"INET"}, C{"INET6"} or C{"UNIX"}.
    @ivar description: The C{--listen} description the supervisor bound
        (the worker re-applies its wrappers and TLS).
    """

    fd: int
    family: str
    description: str


@dataclass(frozen=True)
class WorkerSpec:
    """
    What a worker is told by its supervisor.

    @ivar index: Its slot, from 1 (a restarted worker keeps the slot).
    @ivar control: The descriptor of its end of the control socket: when the
        supervisor is gone, the worker reads the end of it and stops.
    @ivar listeners: The sockets it serves, in C{--listen} order.
    """

    index: int
    control: int
    listeners: tuple[SharedListener, ...]

    def toText(self) -> str:
        """The spec as the value of L{ENVIRONMENT}."""
        return json.dumps(
            {
                "index": self.index,
                "control": self.control,
                "listeners": [[lst.fd, lst.family, lst.description] for lst in self.listeners],
            }
        )

    @classmethod
    def fromText(cls, text: str) -> WorkerSpec:
        """
        The spec L{toText} wrote.

        @raise ValueError: C{text} is not one.
        """
        try:
            data = json.loads(text)
            listeners = tuple(
                SharedListener(int(fd), str(family), str(description))
                for fd, family, description in data["listeners"]
            )
            spec = cls(int(data["index"]), int(data["control"]), listeners)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"bad {ENVIRONMENT}: {error}") from None
        for listener in listeners:
            if listener.family not in FAMILIES:
                raise ValueError(f"bad {ENVIRONMENT}: unknown family {listener.family!r}")
        return spec


def restartDelay(deathsInARow: int) -> float:
    """How long a worker waits to start again after its C{deathsInARow}-th death in a row (from 1)."""
    return float(min(MAX_DELAY, INITIAL_DELAY * 2 ** max(0, deathsInARow - 1)))


def workerArguments(settings: Mapping[str, Any], table: Iterable[Any], drop: Iterable[str] = ()) -> list[str]:
    """
    The C{twistd txupgrade} arguments that give a worker the same settings.

    Every setting of C{table} (L{txupgrade.daemon.config.Setting}s: C{name},
    C{kind}) is written out from the merged C{settings}, so the worker needs
    no config file and cannot read a different one; C{drop} names settings
    the supervisor handles itself (C{workers}, C{listen}, ...).
    """
    dropped = set(drop)
    arguments: list[str] = []
    for setting in table:
        name = setting.name
        if name in dropped or name not in settings:
            continue
        value = settings[name]
        if setting.kind == "flag":
            if value:
                arguments.append(f"--{name}")
        elif setting.kind == "list":
            for item in value:
                arguments.append(f"--{name}={item}")
        elif value is not None:
            arguments.append(f"--{name}={value}")
    return arguments
