"""
How the core reports what goes wrong, without flooding the log: plugin
failures (L{PluginFailures}) and limit hits (L{LimitLog}), each counted
and logged at most once per L{LogRateLimit.interval} per kind.

The channel and the built-in protocols report through these; the daemon
(L{txupgrade.daemon}) reads the counts for its metrics and sets the limits.
The log namespaces (C{txupgrade.limits}, the reporting module's own) are
what operators filter on, so they stay as they were before the move.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["LimitLog", "LogRateLimit", "PluginFailures", "pluginFailed"]

_limitsLog = Logger(namespace="txupgrade.limits")


class LogRateLimit:
    """
    When to write a line about a recurring kind of event: the first at once,
    then at most one per L{interval} seconds per kind; the events in between
    are counted, and the next line says how many there were.
    """

    interval = 10.0

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._lastLogged: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def due(self, kind: str) -> int | None:
        """One more event of C{kind}: L{None} if no line is due, else how many went unlogged before it."""
        now = self._now()
        last = self._lastLogged.get(kind)
        if last is not None and now - last < self.interval:
            self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
            return None
        self._lastLogged[kind] = now
        return self._unlogged.pop(kind, 0)


class PluginFailures:
    """
    Exceptions of upgrade plugins and of the protocols they build, by
    protocol: every one counted (and passed to L{onFailure}, for metrics),
    logged with its traceback at most once per L{LogRateLimit.interval} per
    protocol, so a plugin failing on every request cannot flood the log.

    @ivar counts: Failures so far, by protocol name.
    @ivar onFailure: Called with C{(protocol, stage)} on every failure; the
        stage is C{negotiate} (C{negotiate} or C{buildProtocol} raised or
        answered nonsense: the request got C{500}), C{start} (the new
        protocol's C{makeConnection}) or the stream protocol's method.
    """

    def __init__(self, now: Callable[[], float]) -> None:
        self.counts: dict[str, int] = {}
        self.onFailure: list[Callable[[str, str], None]] = []
        self._limit = LogRateLimit(now)

    def failed(
        self, log: Logger, protocol: str, stage: str, failure: Failure, text: str, **fields: Any
    ) -> None:
        """Count one failure of C{protocol}; log it (C{text}: a format) unless one was logged lately."""
        self.counts[protocol] = self.counts.get(protocol, 0) + 1
        for observer in self.onFailure:
            observer(protocol, stage)
        more = self._limit.due(protocol)
        if more is not None:
            _logFailure(log, protocol, stage, failure, text, more, fields)


def pluginFailed(
    site: object, log: Logger, protocol: str, stage: str, failure: Failure, text: str, **fields: Any
) -> None:
    """Report a plugin's failure through C{site.pluginFailures} (rate-limited), else log it."""
    failures = getattr(site, "pluginFailures", None)
    if failures is not None:
        failures.failed(log, protocol, stage, failure, text, **fields)
    else:
        _logFailure(log, protocol, stage, failure, text, 0, fields)


def _logFailure(
    log: Logger, protocol: str, stage: str, failure: Failure, text: str, more: int, fields: dict[str, Any]
) -> None:
    log.failure(
        text + "{unloggedText}",
        failure,
        protocol=protocol,
        failureStage=stage,
        unlogged=more,
        unloggedText=f" (and {more} more failure(s) of {protocol} since the last line)" if more else "",
        **fields,
    )


class LimitLog:
    """
    Counts every limit hit, and logs them: the first hit of a limit at
    once, then at most one line per L{LogRateLimit.interval} seconds per limit, saying
    how many more there were (a flood never floods the log).

    @ivar counts: Hits so far, by limit name.
    @ivar onHit: Called with the limit name on every hit (metrics).
    """

    def __init__(self, now: Callable[[], float]) -> None:
        self.counts: dict[str, int] = {}
        self.onHit: list[Callable[[str], None]] = []
        self.rate = LogRateLimit(now)

    def hit(self, limit: str, peer: str, **fields: Any) -> None:
        """Count a hit of C{limit} by C{peer}; log it unless one was logged lately."""
        self.counts[limit] = self.counts.get(limit, 0) + 1
        for observer in self.onHit:
            observer(limit)
        more = self.rate.due(limit)
        if more is None:
            return
        _limitsLog.info(
            "Limit {limit} hit by {peer}{detail}{more}",
            limit=limit,
            peer=peer,
            detail="".join(f"; {k} {v}" for k, v in fields.items()),
            more=f" (and {more} more hit(s) since the last line)" if more else "",
            limitHit=limit,
            unlogged=more,
            total=self.counts[limit],
            **fields,
        )
