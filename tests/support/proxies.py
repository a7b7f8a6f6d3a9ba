"""
Real reverse proxies (nginx, HAProxy) in front of a test site, for the
end-to-end tests through proxies.

Each proxy runs as a child of the test's reactor (L{reactor.spawnProcess}),
in the foreground, with a config file written to a temporary directory and
listening on a loopback port. Neither binary can listen on port 0, so a free
port is picked by binding a socket to C{127.0.0.1:0} and closing it; a start
that loses that race (the port got taken meanwhile) is retried on a new port.

A proxy counts as started only once it answers, on its port, a probe with a
random token that only its own config knows: a connect that succeeds could
reach some other program that took the port.

The cleanups stop the proxy (C{SIGTERM}, then C{SIGKILL} for it and its
workers after a bound), wait until it has exited, and remove the directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.support.http import parseResponse, request
from tests.support.net import RawClient, freePort, reactor
from tests.support.processes import binaryOrSkip

NGINX = "/usr/sbin/nginx"
HAPROXY = "/usr/sbin/haproxy"

#: The bound, in seconds, of a proxy's start (until it answers the probe).
START_TIMEOUT = 10.0

#: How long a proxy gets to exit after C{SIGTERM}, then after C{SIGKILL}.
STOP_TIMEOUT = 5.0

#: How many free ports a start tries before giving up.
START_ATTEMPTS = 5

#: The path the proxy itself answers (with its token), never the site.
READY_PATH = "/__txupgrade_proxy_ready"

#: What the binaries say when their port is taken.
_ADDRESS_IN_USE = b"Address already in use"


def nginxConfig(directory: Path, listenPort: int, backendPort: int, token: str) -> str:
    """
    An nginx config serving C{127.0.0.1:listenPort}, proxying to the backend.

    C{/} is proxied as nginx's documentation says to for WebSocket
    (C{proxy_http_version 1.1}, C{Upgrade} and C{Connection} passed on);
    C{/plain/} is proxied to C{/} with neither, as an operator who forgot
    them would have it.
    """
    return _nginx(
        directory,
        listenPort,
        token,
        "",
        nginxUpgradeLocation(backendPort)
        + f"""
        location /plain/ {{
            proxy_pass http://127.0.0.1:{backendPort}/;
            proxy_http_version 1.1;
            proxy_read_timeout 30s;
        }}
""",
    )


def nginxUpgradeLocation(
    backendPort: int, connection: str = "$connection_upgrade", readTimeout: str | None = "30s"
) -> str:
    """
    An nginx C{location /} proxying to C{127.0.0.1:backendPort} as nginx's
    documentation says to for WebSocket: C{proxy_http_version 1.1},
    C{Upgrade} passed on, C{Connection} set to C{connection} (by default the
    config's map: C{upgrade} when the client asked for one, else C{close}),
    and C{proxy_read_timeout readTimeout} unless it is C{None}.
    """
    timeout = f"            proxy_read_timeout {readTimeout};\n" if readTimeout is not None else ""
    return f"""\
        location / {{
            proxy_pass http://127.0.0.1:{backendPort};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection {connection};
{timeout}        }}
"""


def _nginx(directory: Path, listenPort: int, token: str, upstreams: str, locations: str) -> str:
    """
    An nginx config in C{directory}: one worker, no access log, the
    WebSocket C{Connection} map, C{upstreams}, and a server on
    C{127.0.0.1:listenPort} with the ready probe's location and C{locations}.
    """
    # Workers started by root switch to "nobody" unless told otherwise, and
    # could then not use the temporary directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = {name: directory / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    return f"""\
{user}worker_processes 1;
pid {directory / "nginx.pid"};
error_log stderr notice;
events {{
    worker_connections 64;
}}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' close;
    }}
{upstreams}
    server {{
        listen 127.0.0.1:{listenPort};

        location = {READY_PATH} {{
            return 200 "{token}";
        }}

{locations}    }}
}}
"""


def _haproxy(listenPort: int, token: str, backend: str, name: str = "back") -> str:
    """An HAProxy config in C{mode http} on C{127.0.0.1:listenPort}: the ready path, then backend C{name}."""
    return f"""\
global
    maxconn 100

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout tunnel 30s

frontend front
    bind 127.0.0.1:{listenPort}
    http-request return status 200 content-type text/plain string "{token}" if {{ path {READY_PATH} }}
    default_backend {name}

backend {name}
{backend}"""


def haproxyConfig(listenPort: int, backendPort: int, token: str) -> str:
    """An HAProxy config in C{mode http} serving C{127.0.0.1:listenPort}."""
    return _haproxy(listenPort, token, f"    server site 127.0.0.1:{backendPort}\n")


def _processTable() -> dict[int, tuple[int, str]]:
    """Every process: C{{pid: (parent pid, start time)}} (Linux C{/proc}; empty elsewhere)."""
    table: dict[int, tuple[int, str]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        # The second field (the command) is in parentheses and may hold spaces.
        fields = stat.rsplit(")", 1)[-1].split()
        table[int(entry)] = (int(fields[1]), fields[19])
    return table


def _descendants(pid: int) -> dict[int, str]:
    """The living descendants of C{pid}: C{{pid: start time}}."""
    table = _processTable()
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, started) in table.items():
            if ppid == parent and child not in found:
                found[child] = started
                frontier.append(child)
    return found


class ProxyProcess(ProcessProtocol):
    """
    One proxy child (nginx's master, or HAProxy), and what it wrote.

    Twisted reports the end (L{processEnded}) once the process is reaped and
    its output pipes are closed: nginx's workers hold them too, so the end
    comes once they are gone as well.

    @ivar output: Everything it wrote, stdout and stderr together.
    @ivar endReason: Why it ended, once it has.
    @ivar stopping: Whether its end is expected (L{stop} was called, or a
        start gave up on it).
    @ivar workers: Its descendants once it was ready, C{{pid: start time}},
        to be killed even if it is gone (they outlive a killed nginx master).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.output = bytearray()
        self._endWaiters: list[Callable[[], None]] = []
        self.endReason: Failure | None = None
        self.stopping = False
        self.workers: dict[int, str] = {}

    def outReceived(self, data: bytes) -> None:
        self.output += data

    def errReceived(self, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        self.endReason = reason
        waiters, self._endWaiters = self._endWaiters, []
        for waiter in waiters:
            waiter()

    @property
    def ended(self) -> bool:
        """Whether Twisted has reported the end (reaped, pipes closed)."""
        return self.endReason is not None

    @property
    def exited(self) -> bool:
        """Whether the process itself has exited (its workers may linger)."""
        return self.ended or self.transport is None or self.transport.pid is None

    def noteWorkers(self) -> None:
        """Remember its current descendants (see L{workers})."""
        if not self.exited:
            assert self.transport is not None
            self.workers = _descendants(self.transport.pid)

    def describe(self) -> str:
        """The proxy's name, how it ended (if it has) and its output."""
        if self.endReason is not None:
            state = f"ended: {self.endReason.value!r}"
        else:
            state = "exited" if self.exited else "running"
        text = bytes(self.output).decode("utf-8", "replace")
        return f"{self.name} ({state}); its output:\n{text}"

    def _waitEnded(self, seconds: float) -> Deferred[bool]:
        """Fire with whether it ended within C{seconds}."""
        if self.ended:
            return succeed(True)
        d: Deferred[bool] = Deferred()
        call = reactor.callLater(seconds, d.callback, False)

        def ended() -> None:
            if call.active():
                call.cancel()
                d.callback(True)

        self._endWaiters.append(ended)
        return d

    def _signalAll(self, signum: int) -> None:
        """Send C{signum} to it (while not reaped) and to its known and current descendants."""
        targets: dict[int, str | None] = dict(self.workers)
        if not self.exited:
            assert self.transport is not None
            targets.update(_descendants(self.transport.pid))
            targets[self.transport.pid] = None
        table = _processTable()
        for pid, started in targets.items():
            # A worker seen before must still be that process, not a reused pid.
            if started is not None and table.get(pid, (0, None))[1] != started:
                continue
            try:
                os.kill(pid, signum)
            except OSError:
                pass

    @inlineCallbacks
    def stop(self) -> Any:
        """
        C{SIGTERM}, and wait for the end; after L{STOP_TIMEOUT}, C{SIGKILL}
        everything (and fail: a proxy should stop on C{SIGTERM}).
        """
        if self.ended:
            return
        self.stopping = True
        self._signalAll(signal.SIGTERM)
        if (yield self._waitEnded(STOP_TIMEOUT)):
            return
        self._signalAll(signal.SIGKILL)
        if not (yield self._waitEnded(STOP_TIMEOUT)):
            raise AssertionError(f"{self.name} did not end after SIGKILL: {self.describe()}")
        raise AssertionError(f"{self.name} did not end {STOP_TIMEOUT} s after SIGTERM: {self.describe()}")


@inlineCallbacks
def probe(port: int, token: str) -> Any:
    """
    Ask C{port} for L{READY_PATH}: C{None} if nothing accepts the connection,
    else whether the answer holds C{token}.
    """
    client = RawClient()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=1)
    try:
        yield connectProtocol(endpoint, client).addTimeout(2, reactor)
    except Exception:
        return None
    try:
        client.send(request(target=READY_PATH.encode("ascii"), headers=[(b"Connection", b"close")]))
        yield client.waitForClose(2.0)
    except Exception:
        pass
    finally:
        yield client.close()
    try:
        response = parseResponse(client.data)
    except AssertionError:
        return False
    return response.code == 200 and response.body == token.encode("ascii")


@inlineCallbacks
def _waitReady(process: ProxyProcess, port: int, token: str) -> Any:
    """C{"ready"}, C{"ended"} (it exited), C{"foreign"} (someone else answered) or C{"timeout"}."""
    deadline = reactor.seconds() + START_TIMEOUT
    while reactor.seconds() < deadline:
        if process.exited:
            return "ended"
        answer = yield probe(port, token)
        if answer is True:
            if process.exited:
                return "ended"
            process.noteWorkers()
            return "ready"
        if answer is False:
            return "foreign"
        yield deferLater(reactor, 0.05, lambda: None)
    return "timeout"


@inlineCallbacks
def startProxy(
    test: TestCase,
    kind: str,
    backendPort: int,
    config: Callable[[Path, int, str], str] | None = None,
) -> Any:
    """
    Start the C{kind} (C{"nginx"} or C{"haproxy"}) proxy in front of
    C{127.0.0.1:backendPort}; return the port it serves.

    C{config}, when given, writes the config instead:
    C{config(directory, listenPort, token)} (see L{pairConfig}).

    The test's cleanups stop it and remove its directory; register the
    backend's cleanups first, so that they run after the proxy is gone (the
    proxy may hold idle connections to the backend until then).
    """
    if kind == "nginx":
        executable = binaryOrSkip(NGINX, "nginx")
    elif kind == "haproxy":
        executable = binaryOrSkip(HAPROXY, "haproxy")
    else:
        raise ValueError(kind)
    directory = Path(tempfile.mkdtemp(prefix=f"txupgrade-{kind}-"))
    test.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    failures: list[str] = []
    for attempt in range(START_ATTEMPTS):
        port = freePort()
        token = os.urandom(12).hex()
        path = directory / f"{kind}-{attempt}.conf"
        if config is not None:
            path.write_text(config(directory, port, token))
        elif kind == "nginx":
            path.write_text(nginxConfig(directory, port, backendPort, token))
        else:
            path.write_text(haproxyConfig(port, backendPort, token))
        if kind == "nginx":
            argv = [executable, "-p", str(directory), "-e", "stderr", "-c", str(path), "-g", "daemon off;"]
        else:
            argv = [executable, "-f", str(path), "-db"]
        process = ProxyProcess(kind)
        reactor.spawnProcess(process, executable, argv, env=dict(os.environ), path=str(directory))
        test.addCleanup(_stopAndCheck, process)
        outcome = yield _waitReady(process, port, token)
        if outcome == "ready":
            return port
        process.stopping = True  # an exit expected (and reported) here
        yield process.stop()
        failures.append(f"port {port}: {outcome}; {process.describe()}")
        if outcome == "timeout" or (outcome == "ended" and _ADDRESS_IN_USE not in process.output):
            break
    raise AssertionError(f"{kind} did not start:\n" + "\n".join(failures))


@inlineCallbacks
def _stopAndCheck(process: ProxyProcess) -> Any:
    """Stop C{process}; fail if it had exited before it was told to."""
    exitedEarly = process.exited and not process.stopping
    yield process.stop()
    if exitedEarly:
        raise AssertionError(f"the proxy exited during the test: {process.describe()}")


def nginxPairConfig(backendPorts: list[int]) -> Callable[[Path, int, str], str]:
    """
    The config writer (for L{startProxy}) of nginx balancing over several
    txupgrade instances, as docs/operators.md shows it: an C{upstream}
    (round robin), the client's C{Host} passed on, C{Upgrade}/C{Connection}
    as nginx's WebSocket documentation says, C{X-Forwarded-For} added.
    """
    servers = "".join(f"        server 127.0.0.1:{port};\n" for port in backendPorts)

    def write(directory: Path, listenPort: int, token: str) -> str:
        return _nginx(
            directory,
            listenPort,
            token,
            f"""
    upstream txupgrade {{
{servers}    }}
""",
            """\
        location / {
            proxy_pass http://txupgrade;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 30s;
        }
""",
        )

    return write


def haproxyPairConfig(backendPorts: list[int], sendProxy: str = "") -> Callable[[Path, int, str], str]:
    """
    The config writer (for L{startProxy}) of HAProxy in C{mode http}
    balancing round robin over several txupgrade instances, each server line
    ending with C{sendProxy} (C{"send-proxy"}, C{"send-proxy-v2"} or nothing),
    as docs/operators.md shows it.
    """
    suffix = f" {sendProxy}" if sendProxy else ""
    servers = "".join(
        f"    server site{i} 127.0.0.1:{port}{suffix}\n" for i, port in enumerate(backendPorts, 1)
    )

    def write(directory: Path, listenPort: int, token: str) -> str:
        return _haproxy(listenPort, token, "    balance roundrobin\n" + servers, "txupgrade")

    return write
