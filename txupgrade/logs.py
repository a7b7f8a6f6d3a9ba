"""
The daemon's log output: opt-in JSON lines for log shippers.

Every txupgrade event is a C{twisted.logger} event with fields (namespaces
C{txupgrade.upgrade}, C{txupgrade.connection}, C{txupgrade.daemon},
C{txupgrade.drain}, C{txupgrade.limits}, C{txupgrade.plugins}); the text log
shows their format strings, the JSON log every field.

Two ways to get JSON: C{twistd txupgrade --log-format json} (written where
twistd would write its log: C{--logfile}, standard output with C{-n}), or
twistd's own C{--logger txupgrade.logs.jsonLogObserver} (standard output).
"""

from __future__ import annotations

import sys
from typing import IO, Any

from twisted.logger import ILogObserver, jsonFileLogObserver

__all__ = ["jsonLogObserver", "jsonLogging"]


def jsonLogObserver() -> ILogObserver:
    """A JSON-lines observer on standard output (for C{twistd --logger}; RS-free, one event per line)."""
    return jsonFileLogObserver(sys.stdout, recordSeparator="")


def jsonLogging(service: Any, options: Any) -> None:
    """
    Make C{service}, once twistd puts it in its application, give the
    application a JSON observer where twistd would have logged.
    """
    parent = getattr(options, "parent", None)
    logfile = parent.get("logfile") if parent is not None else "-"
    nodaemon = parent.get("nodaemon") if parent is not None else True
    out: IO[str]
    if logfile == "-" or (not logfile and nodaemon):
        out = sys.stdout
    else:
        out = open(logfile or "twistd.log", "a", encoding="utf-8")
    service.logObserver = jsonFileLogObserver(out, recordSeparator="")
