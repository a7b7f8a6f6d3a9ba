"""
The daemon's log output: text as twistd writes it or opt-in JSON lines for
log shippers, written in batches (one system call per batch of lines, not
per line). (The rate limits that keep a flood of one kind of event from
flooding the log are the core's: L{txupgrade.reporting}.)

Every txupgrade event is a C{twisted.logger} event with fields (namespaces
C{txupgrade.upgrade}, C{txupgrade.connection}, C{txupgrade.daemon},
C{txupgrade.drain}, C{txupgrade.limits}, C{txupgrade.plugins}); the text log
shows their format strings, the JSON log every field.

The two lines a busy daemon writes most, an access line per request and a
C{txupgrade.connection} line per closed upgraded connection, are written to
the text log by L{LineLog}: preformatted, byte for byte as the text
observer would write their events, straight into the batch (formatting a
C{twisted.logger} event costs about as much as serving the request). With
JSON they are events like the others.

A log that cannot be written (a full disk, a file gone read-only) does not
stop the daemon: the lines are dropped and counted (L{BatchedOutput.dropped}),
and standard error says so once.

Two ways to get JSON: C{twistd txupgrade --log-format json} (written where
twistd would write its log: C{--logfile}, standard output with C{-n}), or
twistd's own C{--logger txupgrade.daemon.logs.jsonLogObserver} (standard output).
"""

from __future__ import annotations

import re
import sys
from typing import IO, Any, cast

from twisted.logger import ILogObserver, formatTime, jsonFileLogObserver, textFileLogObserver
from twisted.python.logfile import LogFile
from twisted.web.http import datetimeToLogString

from txupgrade._twistedcompat import ACCESS_LOG_HOST_ADDRESSES as _HOST_ADDRESSES
from txupgrade._twistedcompat import accessLogEscape as _twistedEscape
from txupgrade._twistedcompat import headerFields as _headerFields

# Where they lived before the core took them (txupgrade.reporting).
from txupgrade.reporting import LogRateLimit, PluginFailures, pluginFailed

__all__ = [
    "BatchedOutput",
    "LineLog",
    "LogRateLimit",
    "PluginFailures",
    "fileLogging",
    "jsonLogObserver",
    "logOutput",
    "pluginFailed",
]


def jsonLogObserver() -> ILogObserver:
    """A JSON-lines observer on standard output (for C{twistd --logger}; RS-free, one event per line)."""
    return jsonFileLogObserver(sys.stdout, recordSeparator="")


class BatchedOutput:
    """
    A log output that, while the reactor runs, keeps lines and writes them
    together at most L{delay} seconds later (or at L{limit} characters): one
    system call per batch, not per line (and a C{--workers} supervisor wakes
    once per batch); before and after the reactor runs, and at shutdown, at
    once. A process killed outright loses at most L{delay} seconds of lines.
    """

    delay = 0.05
    limit = 1 << 16

    def __init__(self, out: Any, reactor: Any = None, stderr: IO[str] | None = None) -> None:
        self._out = out
        self._reactor = reactor
        self._stderr = stderr
        self._parts: list[str] = []
        self._size = 0
        self._call: Any = None
        self._triggered = False
        #: Lines that could not be written (a full disk, an unwritable file).
        self.dropped = 0

    def write(self, text: str) -> None:
        """Keep C{text}; write it now, or schedule the batch's write."""
        self._parts.append(text)
        self._size += len(text)
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = self._reactor = globalReactor
        if not self._triggered:
            self._triggered = True
            reactor.addSystemEventTrigger("after", "shutdown", self.writeNow)
        if not reactor.running or self._size >= self.limit:
            self.writeNow()
        elif self._call is None:
            self._call = reactor.callLater(self.delay, self.writeNow)

    def flush(self) -> None:
        """Nothing: the observer flushes after every line; batches are written by L{writeNow}."""

    def writeNow(self) -> None:
        """Write what is kept."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._parts:
            text, self._parts, self._size = "".join(self._parts), [], 0
            try:
                self._out.write(text)
                self._out.flush()
            except (OSError, ValueError) as error:  # ValueError: a closed file
                self._lost(text, error)

    def _lost(self, text: str, error: Exception) -> None:
        """Count the lines of C{text} as dropped; say so on standard error the first time."""
        if not self.dropped:
            stderr = self._stderr if self._stderr is not None else sys.__stderr__
            if stderr is not None:
                try:
                    stderr.write(f"txupgrade: cannot write the log ({error}); dropping lines, serving on\n")
                    stderr.flush()
                except (OSError, ValueError):
                    pass
        self.dropped += text.count("\n") or 1


class LineLog:
    """
    The daemon's frequent lines, written into the text log's L{BatchedOutput}
    preformatted: the same bytes the text observer (C{textFileLogObserver})
    writes for the same event, without building and formatting the event.

    @ivar clock: What tells the time (the reactor).
    """

    def __init__(self, output: BatchedOutput, clock: Any) -> None:
        self.output = output
        self.clock = clock
        self._second = -1
        self._stamp = ""
        self._logDate = ""

    def stamps(self) -> tuple[str, str]:
        """This second's log time stamp (RFC 3339, local) and access-log date, made once a second."""
        now = self.clock.seconds()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = formatTime(now)
            self._logDate = datetimeToLogString(now)  # bracketed, as HTTPFactory._updateLogDateTime
        return self._stamp, self._logDate

    def line(self, system: str, text: str) -> None:
        """A line of C{system} (C{namespace#level}) saying C{text}."""
        stamp, _ = self.stamps()
        self.output.write(f"{stamp} [{system}] {text}\n")

    def access(self, request: Any) -> None:
        """The access line of C{request}, as twisted.web writes it into twistd's log."""
        stamp, logDate = self.stamps()
        self.output.write(f"{stamp} [twisted.python.log#info] {accessLine(logDate, request)}\n")


#: Bytes that twisted.web's access-log escaping leaves as they are: printable
#: ASCII but for the quote characters and the backslash.
_PLAIN = re.compile(rb"[ !#-&(-\[\]-~]*")


#: Escaped values already seen (methods, versions, addresses, paths, agents
#: recur): short ones only, and at most L{_ESCAPED_LIMIT} of them.
_ESCAPED: dict[bytes | str, str] = {}
_ESCAPED_LIMIT = 1024
_ESCAPED_LONGEST = 256


def _escape(value: bytes | str) -> str:
    """C{twisted.web.http._escape}, without its C{repr} for the common plain value, remembered."""
    escaped = _ESCAPED.get(value)
    if escaped is not None:
        return escaped
    raw = value if isinstance(value, bytes) else value.encode("ascii")
    escaped = raw.decode("ascii") if _PLAIN.fullmatch(raw) else cast(str, _twistedEscape(raw))
    if len(raw) <= _ESCAPED_LONGEST and len(_ESCAPED) < _ESCAPED_LIMIT:
        _ESCAPED[value] = escaped
    return escaped


def accessLine(timestamp: str, request: Any) -> str:
    """
    C{twisted.web.http.combinedLogFormatter}'s line, byte for byte (the
    daemon's access log format stays twisted.web's), with the cheap escape.
    """
    client = request.getClientAddress()
    fields = _headerFields(request.requestHeaders)
    referrer = fields.get(b"Referer")  # the last value, as Request.getHeader
    agent = fields.get(b"User-Agent")
    values = (
        client.host if isinstance(client, _HOST_ADDRESSES) else b"-",
        request.method,
        request.uri,
        request.clientproto,
        (referrer and referrer[-1]) or b"-",
        (agent and agent[-1]) or b"-",
    )
    # The values seen before, looked up together (no Python call each); the rest escaped.
    escaped = list(map(_ESCAPED.get, values))
    if None in escaped:
        pairs = zip(escaped, values, strict=True)
        escaped = [_escape(value) if found is None else found for found, value in pairs]
    ip, method, uri, version, referrerText, agentText = escaped
    return (
        f'"{ip}" - - {timestamp} "{method} {uri} {version}" '
        f"{request.code:d} {request.sentLength or '-'} "
        f'"{referrerText}" "{agentText}"'
    )


def logOutput(options: Any) -> IO[str] | LogFile | None:
    """
    Where twistd would write its log, given C{twistd txupgrade}'s options:
    standard output, or the C{--logfile} (rotated as twistd rotates it);
    L{None} with C{--syslog}.
    """
    parent = getattr(options, "parent", None)
    if parent is None:
        return sys.stdout
    if parent.get("syslog"):
        return None
    logfile, nodaemon = parent.get("logfile"), parent.get("nodaemon")
    if logfile == "-" or (not logfile and nodaemon):
        return sys.stdout
    return LogFile.fromFullPath(logfile or "twistd.log")


def fileLogging(service: Any, options: Any, logFormat: str, lineLog: bool = True) -> None:
    """
    Make C{service}, once twistd puts it in its application, give the
    application an observer writing where twistd would have logged, in
    C{logFormat} (C{text}, as twistd's own, or C{json}), in batches
    (L{BatchedOutput}, its C{logOutput}); nothing with C{--syslog}. In text,
    and with C{lineLog}, the service also gets the L{LineLog} of that output.
    """
    out = logOutput(options)
    if out is None:
        return
    output = BatchedOutput(out)
    service.logOutput = output
    batched = cast(IO[str], output)
    if logFormat == "json":
        service.logObserver = jsonFileLogObserver(batched, recordSeparator="")
    else:
        service.logObserver = textFileLogObserver(batched)
        if lineLog:
            service.lineLog = LineLog(output, service.reactor)
