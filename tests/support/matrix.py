"""
The composition matrix (L{tests.test_e2e_matrix}): where a client reaches a
C{twistd txupgrade} listener (L{Target}), the certificate made at test time,
HAProxy in C{mode tcp} sending the PROXY protocol, and the blocking clients
(raw sockets, Python C{ssl}, C{websockets}) run in threads.

Every socket here has a timeout of L{CLIENT_TIMEOUT}, shorter than the bound
of L{tests.support.net.inThread}, so each client's thread ends too.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.support.http import Response, parseHead, parseResponse, parseResponses
from tests.support.net import freePort, reactor
from tests.support.processes import NODE_DIR
from tests.support.proxies import startProxy
from tests.support.websocket import echoAndClose

#: The socket timeout of every blocking client, in seconds.
CLIENT_TIMEOUT = 8.0

#: What L{txupgrade.protocols.echo.EchoResource} answers to C{GET /echo}.
ECHO_GET_BODY = b"echo: POST a body and get it back, or Upgrade: echo\n"


@dataclass(frozen=True)
class Certificate:
    """
    A trustme CA and a certificate for C{127.0.0.1}, as files: C{server}
    (key and chain in one PEM), C{key} and C{cert} apart, and the C{ca}.

    @ivar spki: The base64 SHA-256 of the certificate's public key, for
        Chromium's C{--ignore-certificate-errors-spki-list}.
    """

    server: Path
    key: Path
    cert: Path
    ca: Path
    spki: str


def makeCertificate(directory: Path) -> Certificate:
    """Write a fresh CA and a C{127.0.0.1} certificate into C{directory}."""
    import trustme
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    server, key, cert, caPath = (directory / n for n in ("server.pem", "k.pem", "c.pem", "ca.pem"))
    server.write_bytes(issued.private_key_and_cert_chain_pem.bytes())
    key.write_bytes(issued.private_key_pem.bytes())
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    caPath.write_bytes(ca.cert_pem.bytes())
    leaf = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
    der = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    spki = base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")
    return Certificate(server, key, cert, caPath, spki)


@dataclass(frozen=True)
class Target:
    """
    One listener of a daemon, as a client reaches it: over TCP (C{port}),
    TLS on TCP (C{secure}), or a Unix socket (C{path}).

    @ivar ca: The CA file that verifies the server's certificate.
    """

    port: int | None
    path: str | None
    secure: bool
    ca: Path

    @property
    def host(self) -> bytes:
        """The C{Host} a client names: C{localhost} on a Unix socket."""
        if self.path is not None:
            return b"localhost"
        assert self.port is not None
        return b"127.0.0.1:%d" % self.port

    def url(self, scheme: str, path: str = "/") -> str:
        """C{http://127.0.0.1:PORT/...} (or C{https}, C{ws}, C{wss}; C{localhost} on a Unix socket)."""
        if self.secure:
            scheme += "s"
        return f"{scheme}://{self.host.decode('ascii')}{path}"

    def curlArgs(self, path: str = "/") -> list[str]:
        """What curl needs to reach C{path} here: the URL, the Unix socket or CA."""
        extra = ["--unix-socket", self.path] if self.path is not None else []
        if self.secure:
            extra += ["--cacert", str(self.ca)]
        return [*extra, self.url("http", path)]

    def tlsContext(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        """A client context that verifies the test certificate, offering C{alpn} (none by default)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if alpn is not None:
            context.set_alpn_protocols(alpn)
        return context

    def connectPlain(self) -> socket.socket:
        """A connected socket, below any TLS."""
        if self.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(CLIENT_TIMEOUT)
            sock.connect(self.path)
            return sock
        assert self.port is not None
        return socket.create_connection(("127.0.0.1", self.port), timeout=CLIENT_TIMEOUT)

    def connect(self, alpn: list[str] | None = None) -> socket.socket:
        """A connected socket, with the TLS handshake done (offering C{alpn}) on a secure target."""
        sock = self.connectPlain()
        if not self.secure:
            return sock
        try:
            return self.tlsContext(alpn).wrap_socket(sock, server_hostname="127.0.0.1")
        except BaseException:
            sock.close()
            raise


def readHead(sock: socket.socket, data: bytes = b"") -> tuple[Response, bytes]:
    """Read until a response head is in: the head, and the bytes after it."""
    while (parsed := parseHead(data)) is None:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {data!r}")
        data += chunk
    return parsed


def readResponse(sock: socket.socket) -> Response:
    """Read one whole response (framed by its length, chunks, or the close)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return parseResponse(data)
        data += chunk
        try:
            responses, _ = parseResponses(data)
        except AssertionError:
            continue  # a body still coming
        if responses:
            return responses[0]


def requestBytes(target: Target, path: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """A body-less C{GET path} naming the target's host, with C{headers}."""
    lines = [b"GET " + path + b" HTTP/1.1", b"Host: " + target.host]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def echoUpgrade(target: Target, payload: bytes) -> dict[str, Any]:
    """
    C{GET /echo} with C{Upgrade: echo} (ALPN C{http/1.1} on TLS): the
    C{101}'s status and C{Upgrade}, the ALPN chosen, and the bytes echoed.
    """
    with target.connect(alpn=["http/1.1"] if target.secure else None) as sock:
        alpn = sock.selected_alpn_protocol() if isinstance(sock, ssl.SSLSocket) else None
        sock.sendall(requestBytes(target, b"/echo", [(b"Connection", b"Upgrade"), (b"Upgrade", b"echo")]))
        head, echoed = readHead(sock)
        if head.code == 101:
            sock.sendall(payload)
            while len(echoed) < len(payload):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                echoed += chunk
        return {"code": head.code, "upgrade": head.header(b"upgrade"), "alpn": alpn, "echoed": echoed}


def tlsUpgrade(target: Target) -> dict[str, Any]:
    """
    RFC 2817 on a cleartext target: C{GET /echo} with C{Upgrade: TLS/1.2};
    after a C{101}, the TLS handshake on the same socket and the original
    request's answer read over TLS. Returns what was seen.
    """
    sock = target.connectPlain()
    try:
        sock.sendall(requestBytes(target, b"/echo", [(b"Connection", b"Upgrade"), (b"Upgrade", b"TLS/1.2")]))
        head, after = readHead(sock)
        seen: dict[str, Any] = {"code": head.code, "upgrade": head.header(b"upgrade"), "after": after}
        if head.code != 101:
            return seen
        tls = target.tlsContext().wrap_socket(sock, server_hostname="127.0.0.1")
        sock = tls
        seen["version"] = tls.version()
        answer = readResponse(tls)
        seen["answer"] = (answer.code, answer.body)
        return seen
    finally:
        sock.close()


def tlsUpgradeOnTLS(target: Target) -> Response:
    """C{Upgrade: TLS/1.2} on a connection that is TLS already: the answer (which must not be a C{101})."""
    with target.connect() as sock:
        sock.sendall(
            requestBytes(
                target,
                b"/echo",
                [(b"Connection", b"Upgrade, close"), (b"Upgrade", b"TLS/1.2")],
            )
        )
        return readResponse(sock)


def alpnOutcome(target: Target, offered: list[str]) -> tuple[str | None, str | None]:
    """
    A TLS handshake offering C{offered} by ALPN: C{(chosen protocol, None)},
    or C{(None, the SSLError's reason and text)} when it fails.
    """
    try:
        with target.connect(alpn=offered) as sock:
            assert isinstance(sock, ssl.SSLSocket)
            return sock.selected_alpn_protocol(), None
    except ssl.SSLError as error:
        return None, f"{error.reason} {error}"


def webSocketEcho(target: Target) -> dict[str, Any]:
    """
    With the C{websockets} client at C{/ws}: echo a text and a 64 KiB binary
    message, close with 1000. What was seen.
    """
    from websockets.sync.client import connect, unix_connect

    text = "hello matrix \N{SNOWMAN}"
    blob = os.urandom(64 * 1024)
    options: dict[str, Any] = {"open_timeout": CLIENT_TIMEOUT, "close_timeout": CLIENT_TIMEOUT}
    if target.secure:
        options["ssl"] = target.tlsContext()
    if target.path is not None:
        conn = unix_connect(target.path, target.url("ws", "/ws"), **options)
    else:
        conn = connect(target.url("ws", "/ws"), **options)
    status, textBack, blobBack, received = echoAndClose(conn, text, blob, CLIENT_TIMEOUT)
    return {
        "status": status,
        "text": textBack == text,
        "blob": blobBack == blob,
        "close": None if received is None else received.code,
    }


def haproxyTCPConfig(backendPort: int, sendProxy: str) -> tuple[Callable[[Path, int, str], str], list[int]]:
    """
    A config writer for L{startProxy}: HAProxy in C{mode tcp} forwarding a
    port of its own to C{backendPort} with C{sendProxy} (C{send-proxy} or
    C{send-proxy-v2}), and an C{http} frontend on the probe port that only
    answers the ready probe. The list gets the forwarding port of each
    config written (the last one is the one serving).
    """
    forwarding: list[int] = []

    def write(directory: Path, probePort: int, token: str) -> str:
        port = freePort()
        forwarding.append(port)
        return f"""\
global
    maxconn 100

defaults
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout tunnel 30s

frontend ready
    mode http
    bind 127.0.0.1:{probePort}
    http-request return status 200 content-type text/plain string "{token}"

frontend front
    mode tcp
    bind 127.0.0.1:{port}
    default_backend txupgrade

backend txupgrade
    mode tcp
    server site 127.0.0.1:{backendPort} {sendProxy}
"""

    return write, forwarding


@inlineCallbacks
def startTCPHAProxy(test: TestCase, backendPort: int, sendProxy: str) -> Any:
    """Start HAProxy in C{mode tcp} before C{backendPort} (L{haproxyTCPConfig}); fire with its port."""
    write, forwarding = haproxyTCPConfig(backendPort, sendProxy)
    yield startProxy(test, "haproxy", backendPort, config=write)
    return forwarding[-1]


#: Loaded (C{node -r}) before C{browser_check.js}: Chromium, as that script
#: launches it, also trusts the test certificate's key (by its SPKI hash).
CHROMIUM_TRUST_JS = """\
"use strict";
const playwright = require(require.resolve("playwright-core", { paths: [process.cwd()] }));
const launch = playwright.chromium.launchPersistentContext.bind(playwright.chromium);
playwright.chromium.launchPersistentContext = (directory, options) =>
  launch(directory, {
    ...options,
    args: [...(options.args || []), "--ignore-certificate-errors-spki-list=" + process.env.TXUPGRADE_SPKI],
  });
"""


class _Collect(ProcessProtocol):
    """Collect a child's output; call C{done(out, err, exitCode)} at its end."""

    def __init__(self, done: Callable[[bytes, bytes, int | None], None]) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.done = done

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.done(bytes(self.out), bytes(self.err), getattr(reason.value, "exitCode", None))


def runNode(node: str, args: list[str], env: dict[str, str], seconds: float) -> Any:
    """
    Run C{node ARGS} in C{tests/node} with C{env} added to the environment;
    fire with C{(out, err, exitCode)}. Killed (and failing) after C{seconds}.
    """
    ended: Deferred[tuple[bytes, bytes, int | None]] = Deferred()
    timedOut: list[bool] = []

    def done(out: bytes, err: bytes, code: int | None) -> None:
        if killer.active():
            killer.cancel()
        if timedOut:
            ended.errback(AssertionError(f"node {args} still running after {seconds} s; killed: {err!r}"))
        else:
            ended.callback((out, err, code))

    process = reactor.spawnProcess(
        _Collect(done), node, [node, *args], env=dict(os.environ, **env), path=str(NODE_DIR)
    )

    def kill() -> None:
        timedOut.append(True)
        process.signalProcess("KILL")

    killer = reactor.callLater(seconds, kill)
    return ended
