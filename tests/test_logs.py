"""
The daemon's log output (L{txupgrade.daemon.logs}): the preformatted lines are the
bytes the text observer writes for the same events, a log that cannot be
written drops and counts lines without stopping anything, and a daemon
stopped with lines still batched writes them all.
"""

from __future__ import annotations

import errno
import io
import os
import signal
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import inlineCallbacks
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, globalLogPublisher, textFileLogObserver
from twisted.python import log as legacyLog
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from tests.support.daemon import LOCAL, spawnDaemon
from tests.support.net import inThread, withTimeout
from txupgrade.daemon.logs import BatchedOutput, LineLog, accessLine
from txupgrade.daemon.tracking import _CLOSED, ConnectionTracker


class _Clock:
    """A clock standing still at C{now}."""

    def __init__(self, now: float) -> None:
        self.now = now

    def seconds(self) -> float:
        return self.now


class _Unwritable:
    """A log file on a full disk."""

    def __init__(self) -> None:
        self.attempts = 0

    def write(self, text: str) -> None:
        self.attempts += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self) -> None:
        pass


def _slowPath(emit: Any) -> tuple[str, float]:
    """What the text observer writes for what C{emit()} logs globally, and the event's time."""
    out = io.StringIO()
    times: list[float] = []
    observer = textFileLogObserver(out)

    def both(event: dict[str, Any]) -> None:
        times.append(event["log_time"])
        observer(event)

    globalLogPublisher.addObserver(both)
    try:
        emit()
    finally:
        globalLogPublisher.removeObserver(both)
    return out.getvalue(), times[0]


def _fastPath(now: float, write: Any) -> str:
    """What C{write(lineLog)} writes, the clock at C{now}."""
    out = io.StringIO()
    write(LineLog(BatchedOutput(out, MemoryReactorClock()), _Clock(now)))
    return out.getvalue()


class LineLogTests(SynchronousTestCase):
    """The preformatted lines are byte for byte what the events would have written."""

    def test_accessLine(self) -> None:
        """An access line: as twisted.web's C{Site.log} writes it through twistd's log."""
        request = Request(DummyChannel())
        request.method, request.uri, request.clientproto = b"GET", b'/echo?x="1"', b"HTTP/1.1"
        request.code, request.sentLength = 101, 0
        request.requestHeaders.setRawHeaders(b"user-agent", [b'curl/8 "quoted"'])
        request.requestHeaders.setRawHeaders(b"referer", [b"http://example/"])
        from twisted.web.http import combinedLogFormatter, datetimeToLogString

        def slow() -> None:
            # What HTTPFactory.log writes: its _logDateTime is datetimeToLogString()'s.
            line = combinedLogFormatter(datetimeToLogString(), request) + "\n"
            legacyLog.logfile.write(line)

        expected, when = _slowPath(slow)
        self.assertIn('"GET /echo?x=\\"1\\" HTTP/1.1" 101', expected)
        self.assertRegex(expected, r' - - \[\d\d/\w{3}/\d{4}:[\d:]{8} [+-]\d{4}\] "GET ')
        self.assertEqual(_fastPath(when, lambda lines: lines.access(request)), expected)

    @settings(max_examples=300, deadline=None)
    @given(
        method=st.binary(max_size=12),
        uri=st.binary(max_size=40),
        version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b'HTTP/"1', b"\xff"]),
        agents=st.lists(st.binary(max_size=30), max_size=2),
        referrers=st.lists(st.binary(max_size=30), max_size=2),
        client=st.sampled_from(
            [
                IPv4Address("TCP", "127.0.0.1", 1),
                IPv6Address("TCP", "::1", 1),
                UNIXAddress(b"/run/s.sock"),
                None,
            ]
        ),
        code=st.integers(100, 599),
        length=st.sampled_from([0, None, 17]),
    )
    def test_accessLineFormat(
        self,
        method: bytes,
        uri: bytes,
        version: bytes,
        agents: list[bytes],
        referrers: list[bytes],
        client: Any,
        code: int,
        length: int | None,
    ) -> None:
        """L{accessLine} writes what twisted.web's C{combinedLogFormatter} does, for any bytes."""
        from twisted.web.http import combinedLogFormatter

        request = Request(DummyChannel())
        request.method, request.uri, request.clientproto = method, uri, version
        request.code, request.sentLength = code, length
        request.client = client
        if agents:
            request.requestHeaders.setRawHeaders(b"user-agent", agents)
        if referrers:
            request.requestHeaders.setRawHeaders(b"referer", referrers)
        stamp = "[07/Dec/2026:01:02:03 +0000]"
        self.assertEqual(accessLine(stamp, request), combinedLogFormatter(stamp, request))

    def test_connectionLine(self) -> None:
        """A closed upgraded connection's line: as its C{txupgrade.connection} event writes."""
        fields = {"protocol": "echo", "peer": "127.0.0.1:1", "duration": 1.23456, "bytesIn": 5, "bytesOut": 7}
        log = Logger(namespace="txupgrade.connection")
        expected, when = _slowPath(lambda: log.info(_CLOSED, connectionEvent="closed", **fields))
        self.assertIn(
            "echo connection from 127.0.0.1:1 closed after 1.235 s, 5 bytes in, 7 bytes out", expected
        )
        connection = SimpleNamespace(**{k: v for k, v in fields.items() if k != "duration"})
        self.assertEqual(
            _fastPath(
                when,
                lambda lines: ConnectionTracker.logClosed(
                    SimpleNamespace(lineLog=lines),  # type: ignore[arg-type]
                    connection,  # type: ignore[arg-type]
                    fields["duration"],  # type: ignore[arg-type]
                ),
            ),
            expected,
        )

    def test_escapesRemembered(self) -> None:
        """Escaped values are remembered, short ones only and boundedly; each is still twisted.web's."""
        from twisted.web.http import _escape as twistedEscape

        from txupgrade.daemon import logs

        self.patch(logs, "_ESCAPED", {})
        values = [b'/path/%d"' % i for i in range(logs._ESCAPED_LIMIT + 50)] + [b"x" * 300]
        for value in values + values:
            self.assertEqual(logs._escape(value), twistedEscape(value))
        self.assertEqual(len(logs._ESCAPED), logs._ESCAPED_LIMIT)
        self.assertNotIn(b"x" * 300, logs._ESCAPED)


class BadOutputTests(SynchronousTestCase):
    """A log that cannot be written, and a line longer than a batch."""

    def test_fullDisk(self) -> None:
        """The lines are dropped and counted; standard error says so once; nothing raises."""
        stderr = io.StringIO()
        reactor = MemoryReactorClock()
        reactor.running = True
        out = _Unwritable()
        batched = BatchedOutput(out, reactor, stderr=stderr)
        batched.write("a\nb\n")
        reactor.advance(BatchedOutput.delay)
        batched.write("c\n")
        reactor.advance(BatchedOutput.delay)
        self.assertEqual((out.attempts, batched.dropped), (2, 3))
        self.assertEqual(stderr.getvalue().count("\n"), 1)
        self.assertIn("cannot write the log", stderr.getvalue())
        self.assertIn(os.strerror(errno.ENOSPC), stderr.getvalue())

    def test_oversizeLine(self) -> None:
        """A line longer than a batch is written whole, at once, in one write."""
        writes: list[str] = []
        out = io.StringIO()
        out.write = writes.append  # type: ignore[method-assign]
        reactor = MemoryReactorClock()
        reactor.running = True
        batched = BatchedOutput(out, reactor)
        line = "x" * (3 * BatchedOutput.limit) + "\n"
        batched.write("before\n")
        batched.write(line)
        self.assertEqual(writes, ["before\n" + line])


class DaemonLogTests(TestCase):
    """The log of a real C{twistd txupgrade}."""

    timeout = 120

    @inlineCallbacks
    def test_drainWritesBufferedLines(self) -> Any:
        """SIGTERM right after a burst of requests: every access line is in the log file."""
        import http.client
        import tempfile

        path = os.path.join(tempfile.mkdtemp(prefix="txupgrade-log-"), "twistd.log")
        daemon = spawnDaemon(self, ["--listen", LOCAL], twistdArgs=[f"--logfile={path}"])
        daemon.started.addErrback(lambda _: None)  # the start-up line is in the file
        port = yield withTimeout(inThread(_listeningPort, daemon.transport.pid), 60)
        count = 200

        def burst() -> list[int]:
            statuses = []
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            for index in range(count):
                connection.request("GET", f"/echo?n={index}")
                response = connection.getresponse()
                response.read()
                statuses.append(response.status)
            connection.close()
            return statuses

        statuses = yield inThread(burst)
        self.assertEqual(statuses, [200] * count)
        daemon.signal("TERM")
        yield withTimeout(daemon.ended, 30)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        self.assertIn("Drained", text)
        found = sorted(
            int(line.split("/echo?n=")[1].split(" ")[0]) for line in text.splitlines() if "/echo?n=" in line
        )
        self.assertEqual(found, list(range(count)))

    @inlineCallbacks
    def test_unwritableLog(self) -> Any:
        """With the log on a full disk (C{/dev/full}) the daemon serves on and says so once."""
        import urllib.request

        if not os.path.exists("/dev/full"):
            self.fail("/dev/full is needed")
        daemon = spawnDaemon(self, ["--listen", LOCAL], twistdArgs=["--logfile=/dev/full"])
        daemon.started.addErrback(lambda _: None)  # its start-up line is lost with the rest
        # The log says nothing (it cannot): find the port by asking the kernel.
        port = yield withTimeout(inThread(_listeningPort, daemon.transport.pid), 60)

        def fetch() -> list[int]:
            return [
                urllib.request.urlopen(f"http://127.0.0.1:{port}/echo", timeout=10).status for _ in range(5)
            ]

        self.assertEqual((yield inThread(fetch)), [200] * 5)
        daemon.signal(signal.SIGTERM.name[3:])
        yield withTimeout(daemon.ended, 30)
        self.assertEqual(daemon.stderr.decode().count("cannot write the log"), 1, daemon.stderr)


def _listeningPort(pid: int, seconds: float = 45.0) -> int:
    """The TCP port process C{pid} listens on, once it does."""
    import time

    import psutil

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for connection in psutil.Process(pid).net_connections("tcp"):
            if connection.status == psutil.CONN_LISTEN:
                return int(connection.laddr.port)
        time.sleep(0.1)
    raise TimeoutError(f"process {pid} did not listen in {seconds} s")
