"""
TLS bad input through real C{twistd txupgrade} processes.

At start-up, a PEM file that cannot serve TLS (no key, no certificate, a key
that does not match, a file that cannot be read), given with
C{--tls-certificate} or named in an C{ssl:...:privateKey=:certKey=}
endpoint, stops the daemon with one line naming the problem and exit status
1; an expired (or not yet valid) certificate is served, with a warning.

At run time, each bad handshake on an C{ssl:} listener (a ClientHello with
no common ALPN protocol, a TLS 1.0 ClientHello, plain HTTP or garbage on the
TLS port, a handshake never finished within C{--request-head-timeout} of the
accept) and plain text sent after a C{101} to C{TLS/1.2} on a C{tcp:}
listener closes only that connection, is logged once (the lines of the
daemon's log that name the connection's port and its handshake are
counted), is counted on the C{--metrics} page
(C{txupgrade_tls_handshake_failures_total{reason}}, or the limit's
C{txupgrade_limit_hits_total}), and the daemon goes on serving: a
keep-alive TLS connection opened before the bad one answers a second
request after it, and a new connection is answered C{200}.

Why end to end: the messages, the exit status, the log lines and the
metrics are what an operator sees; only the real process, its real
listeners and OpenSSL on both sides show them.

Each test starts its own daemon (trial's janitor kills the reactor's child
processes at the end of each test, and a reason's failure is logged at most
once per 10 seconds, so one daemon a case keeps the log count exact). The
blocking clients run in threads (L{inThread}) with socket timeouts of
L{CLIENT_TIMEOUT}; every address is on 127.0.0.1.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.ssl import Certificate as PEMCertificate
from twisted.internet.ssl import optionsForClientTLS
from twisted.trial.unittest import TestCase

from tests.support.daemon import LOCAL, Daemon, runToEnd, startDaemon
from tests.support.http import Response, holdsResponses, parseResponses, request, scrapeMetrics, upgrade
from tests.support.matrix import (
    CLIENT_TIMEOUT,
    ECHO_GET_BODY,
    Certificate,
    Target,
    makeCertificate,
    readHead,
    readResponse,
    tlsUpgrade,
)
from tests.support.net import RawClient, connectClient, inThread, reactor, wait

SSL_LOCAL = "ssl:0:interface=127.0.0.1"

#: The request-head deadline of the handshake tests, in seconds.
HEAD_TIMEOUT = 2.0

#: The path of the request that shows the daemon still serves; its access
#: line, once logged, means every line about the bad connection is in.
AFTER_PATH = b"/echo?after"
_AFTER_LINE = b'"GET ' + AFTER_PATH + b' HTTP/1.1" 200'

_METRICS_PORT = re.compile(rb"metrics on 127\.0\.0\.1:(\d+)")


def _pemFiles(directory: Path) -> dict[str, Path]:
    """
    Write into C{directory} the broken PEM files: a certificate alone, a
    key alone, a key with another key's certificate; and the key and the
    certificate of that other pair apart (for the endpoint form).
    """
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    other = ca.issue_cert("127.0.0.1")
    chain = b"".join(blob.bytes() for blob in issued.cert_chain_pems)
    contents = {
        "certonly.pem": chain,
        "keyonly.pem": issued.private_key_pem.bytes(),
        "mismatch.pem": other.private_key_pem.bytes() + chain,
        "otherkey.pem": other.private_key_pem.bytes(),
        "cert.pem": chain,
    }
    paths = {}
    for name, data in contents.items():
        path = directory / name
        path.write_bytes(data)
        paths[name] = path
    (directory / "adirectory.pem").mkdir()
    return paths


def _byLabel(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> dict[str, float]:
    """The samples called C{name}, by the value of their one label."""
    result = {}
    for (sampleName, labels), value in samples.items():
        if sampleName == name:
            [(_, label)] = labels
            result[label] = value
    return result


def _closedAfter(sock: socket.socket, data: bytes = b"") -> tuple[bytes, str]:
    """Read until the server closes: what came, and how it closed (C{eof} or C{reset})."""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data, "reset"
        if not chunk:
            return data, "eof"
        data += chunk


def _localPort(sock: socket.socket) -> int:
    """The client's port, as the daemon's log names the peer."""
    port: int = sock.getsockname()[1]
    return port


def _clientHello() -> bytes:
    """The first flight of Python's default TLS client: a ClientHello (TLS 1.2 and 1.3)."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def _tls10ClientHello() -> bytes:
    """
    A ClientHello made by hand whose highest version is TLS 1.0: no
    C{supported_versions} extension, one TLS 1.0 cipher suite. Made by hand
    so that no client library's policy can refuse to send it.
    """
    body = b"\x03\x01" + os.urandom(32) + b"\x00" + b"\x00\x04\x00\x2f\x00\xff" + b"\x01\x00"
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake


def _offerALPN(target: Target, protocols: list[str]) -> dict[str, Any]:
    """A TLS handshake offering only C{protocols} by ALPN: the client's port, and how it ended."""
    with target.connectPlain() as sock:
        port = _localPort(sock)
        try:
            with target.tlsContext(protocols).wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                return {"port": port, "error": None, "alpn": tls.selected_alpn_protocol()}
        except ssl.SSLError as error:
            return {"port": port, "error": str(error)}


def _sendRaw(port: int, data: bytes) -> dict[str, Any]:
    """Send C{data} on a new connection to C{port}; what came back until the server closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(data)
        received, close = _closedAfter(sock)
        return {"port": _localPort(sock), "received": received, "close": close}


def _silent(port: int) -> dict[str, Any]:
    """Connect to C{port} and send nothing: how long until the server closed, and how."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as sock:
        started = time.monotonic()
        received, close = _closedAfter(sock)
        return {
            "port": _localPort(sock),
            "seconds": time.monotonic() - started,
            "received": received,
            "close": close,
        }


def _trickleHello(port: int, interval: float) -> dict[str, Any]:
    """
    Send a real ClientHello to C{port} a byte every C{interval} seconds, never
    its last byte: how long until the server closed, how, and how many bytes
    went.
    """
    hello = _clientHello()
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as sock:
        local = _localPort(sock)
        started = time.monotonic()
        sock.settimeout(interval)
        sent, close = 0, "still open"
        while sent < len(hello) - 1 and time.monotonic() - started < CLIENT_TIMEOUT:
            try:
                sock.sendall(hello[sent : sent + 1])
                sent += 1
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                close = "reset"
                break
            close = "eof" if not chunk else f"data {chunk!r}"
            break
        return {
            "port": local,
            "seconds": time.monotonic() - started,
            "close": close,
            "sent": sent,
            "length": len(hello),
        }


def _plainAfterSwitch(port: int) -> dict[str, Any]:
    """
    On the plain listener C{port}: C{Upgrade: TLS/1.2}, then, after the
    C{101}, a plain-text request instead of a ClientHello. What was seen.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(upgrade(b"TLS/1.2", target=b"/echo"))
        head, after = readHead(sock)
        seen: dict[str, Any] = {
            "port": _localPort(sock),
            "code": head.code,
            "upgrade": head.header(b"upgrade"),
        }
        sock.sendall(request(target=b"/echo"))
        seen["received"], seen["close"] = _closedAfter(sock, after)
        return seen


def _getEcho(target: Target, path: bytes) -> Response:
    """C{GET path} on a new connection to C{target} (verifying the certificate over TLS)."""
    with target.connect() as sock:
        sock.sendall(request(target=path, headers=[(b"Connection", b"close")]))
        return readResponse(sock)


def _insecureContext() -> ssl.SSLContext:
    """A client context that checks no certificate (to reach one out of its validity)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _getInsecurely(port: int) -> tuple[bytes, Response]:
    """C{GET /echo} over TLS without checking the certificate: the certificate served (DER), the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as plain:
        with _insecureContext().wrap_socket(plain, server_hostname="127.0.0.1") as sock:
            served = sock.getpeercert(binary_form=True)
            assert served is not None
            sock.sendall(request(target=b"/echo", headers=[(b"Connection", b"close")]))
            return served, readResponse(sock)


def _upgradeInsecurely(port: int) -> dict[str, Any]:
    """RFC 2817 on the plain listener C{port}, without checking the certificate: what was seen."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(upgrade(b"TLS/1.2", target=b"/echo"))
        head, _ = readHead(sock)
        seen: dict[str, Any] = {"code": head.code}
        if head.code == 101:
            with _insecureContext().wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                seen["served"] = tls.getpeercert(binary_form=True)
                answer = readResponse(tls)
                seen["answer"] = (answer.code, answer.body)
        return seen


def handshakeLines(daemon: Daemon, port: int) -> list[str]:
    """
    The daemon's log lines about the handshake of the connection from the
    client port C{port}: those that name the peer (as C{127.0.0.1:PORT}, or
    as an address object's C{repr}) and say C{handshake}.
    """
    peer = re.compile(rf"127\.0\.0\.1:{port}\b|host='127\.0\.0\.1', port={port}\)")
    return [
        line
        for line in daemon.output.decode("utf-8", "replace").splitlines()
        if "handshake" in line and peer.search(line)
    ]


class _Directory:
    """A test's temporary directory, with the certificate files the daemon reads."""

    directory: Path

    def makeDirectory(self) -> Path:
        """A temporary directory, removed at cleanup; the daemon runs in it."""
        test: Any = self
        try:
            import trustme  # noqa: F401
        except ImportError as error:
            raise test.skipTest(f"needs the test extra (trustme): {error}") from None
        self.directory = Path(tempfile.mkdtemp(prefix="txupgrade-tlsbad-"))
        test.addCleanup(shutil.rmtree, self.directory, True)
        return self.directory


class StartUpTests(_Directory, TestCase):
    """A PEM that cannot serve TLS stops the daemon with one line; one out of its validity is served."""

    timeout = 90

    def assertOneLine(self, daemon: Daemon, expected: Sequence[str], args: Any) -> None:
        """
        C{daemon} exited 1, never serving, after exactly one line on standard
        error that starts with C{txupgrade: } and contains each of C{expected}.
        """
        stderr = daemon.stderr.decode("utf-8", "replace")
        output = daemon.output.decode("utf-8", "replace")
        self.assertEqual(daemon.exitCode, 1, (args, output))
        self.assertEqual(len(stderr.splitlines()), 1, (args, stderr))
        self.assertTrue(stderr.startswith("txupgrade: "), (args, stderr))
        for text in expected:
            self.assertIn(text, stderr, args)
        self.assertNotIn("Traceback", output, args)
        self.assertNotIn("serving on", output, args)

    @inlineCallbacks
    def runAll(self, cases: Sequence[tuple[list[str], Sequence[str]]]) -> Any:
        """Run a daemon per case (at once, each until it ends); check each one's single line."""
        runs = [runToEnd(self, args, cwd=str(self.directory)) for args, _ in cases]
        results = yield DeferredList(runs, fireOnOneErrback=True, consumeErrors=True)
        for (_, daemon), (args, expected) in zip(results, cases, strict=True):
            self.assertOneLine(daemon, expected, args)

    @inlineCallbacks
    def test_brokenCertificateFile(self) -> Any:
        """
        C{--tls-certificate} with a certificate but no key, a key but no
        certificate, a key that does not match the certificate, a missing
        file, a directory (and, when not root, a file without read
        permission): exit 1 and one line naming the file and the problem.
        """
        self.makeDirectory()
        _pemFiles(self.directory)
        problems = {
            "certonly.pem": "no private key in the PEM file",
            "keyonly.pem": "no certificate in the PEM file",
            "mismatch.pem": "unusable key or certificate: key values mismatch",
            "missing.pem": "cannot read the TLS certificate: No such file or directory",
            "adirectory.pem": "cannot read the TLS certificate: Is a directory",
        }
        if os.geteuid() != 0:  # root reads any file
            locked = self.directory / "locked.pem"
            shutil.copy(self.directory / "mismatch.pem", locked)
            locked.chmod(0)
            problems["locked.pem"] = "cannot read the TLS certificate: Permission denied"
        cases = [
            (
                ["--tls-certificate", name, "--listen", SSL_LOCAL],
                [f"txupgrade: --tls-certificate {name}: {problem}"],
            )
            for name, problem in problems.items()
        ]
        yield self.runAll(cases)

    @inlineCallbacks
    def test_brokenEndpointFiles(self) -> Any:
        """
        C{ssl:0:...:privateKey=K:certKey=C} with a key that does not match the
        certificate, a missing key file, a missing certificate file: exit 1
        and one line naming the endpoint (so the files) and the problem.
        """
        self.makeDirectory()
        _pemFiles(self.directory)
        endpoints = {
            f"{SSL_LOCAL}:privateKey=otherkey.pem:certKey=cert.pem": (
                "Certificate public and private keys do not match"
            ),
            f"{SSL_LOCAL}:privateKey=missing.pem:certKey=cert.pem": (
                "missing.pem: cannot read the TLS private key: No such file or directory"
            ),
            f"{SSL_LOCAL}:privateKey=otherkey.pem:certKey=missing.pem": (
                "missing.pem: cannot read the TLS certificate: No such file or directory"
            ),
        }
        cases = [
            (["--listen", endpoint], [f"txupgrade: --listen {endpoint}: ", problem])
            for endpoint, problem in endpoints.items()
        ]
        yield self.runAll(cases)

    @inlineCallbacks
    def test_endpointFilesWithoutKeyOrCertificate(self) -> Any:
        """
        The endpoint form with a C{privateKey=} file that holds no key, and
        with a C{certKey=} file that holds no certificate: exit 1 and one
        line that says, in words, what is missing (as C{--tls-certificate}'s
        line does), not only OpenSSL's decoder error.
        """
        self.makeDirectory()
        _pemFiles(self.directory)
        noKey = f"{SSL_LOCAL}:privateKey=certonly.pem:certKey=cert.pem"
        noCertificate = f"{SSL_LOCAL}:privateKey=keyonly.pem:certKey=keyonly.pem"
        runs = [runToEnd(self, ["--listen", e], cwd=str(self.directory)) for e in (noKey, noCertificate)]
        results = yield DeferredList(runs, fireOnOneErrback=True, consumeErrors=True)
        (_, keyless), (_, certificateless) = results
        self.assertOneLine(keyless, [f"txupgrade: --listen {noKey}: "], noKey)
        self.assertOneLine(certificateless, [f"txupgrade: --listen {noCertificate}: "], noCertificate)
        # What the line says beyond the endpoint's own text (which names the files).
        keylessProblem = keyless.stderr.decode().split(noKey, 1)[1]
        certificatelessProblem = certificateless.stderr.decode().split(noCertificate, 1)[1]
        self.assertRegex(keylessProblem, r"(?i)private key")
        self.assertRegex(certificatelessProblem, r"(?i)certificate")

    def makeCertificates(self) -> dict[str, Any]:
        """
        An expired certificate (key and chain in C{expired.pem}) and one not
        valid for two more days (C{future-key.pem} and C{future-cert.pem}):
        each certificate's DER, subject and the date its warning names.
        """
        import trustme
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        now = datetime.now(timezone.utc)
        ca = trustme.CA()
        expired = ca.issue_cert(
            "127.0.0.1", not_before=now - timedelta(days=30), not_after=now - timedelta(days=2)
        )
        future = ca.issue_cert(
            "127.0.0.1", not_before=now + timedelta(days=2), not_after=now + timedelta(days=30)
        )
        expired.private_key_and_cert_chain_pem.write_to_path(str(self.directory / "expired.pem"))
        future.private_key_pem.write_to_path(str(self.directory / "future-key.pem"))
        (self.directory / "future-cert.pem").write_bytes(b"".join(b.bytes() for b in future.cert_chain_pems))
        expiredLeaf = x509.load_pem_x509_certificate(expired.cert_chain_pems[0].bytes())
        futureLeaf = x509.load_pem_x509_certificate(future.cert_chain_pems[0].bytes())
        return {
            "expiredDER": expiredLeaf.public_bytes(Encoding.DER),
            "expiredWarning": f"TLS: certificate {expiredLeaf.subject.rfc4514_string()} expired on "
            f"{expiredLeaf.not_valid_after_utc:%Y-%m-%d}; serving it anyway",
            "futureDER": futureLeaf.public_bytes(Encoding.DER),
            "futureWarning": f"TLS: certificate {futureLeaf.subject.rfc4514_string()} is not valid before "
            f"{futureLeaf.not_valid_before_utc:%Y-%m-%d}; serving it anyway",
        }

    @inlineCallbacks
    def test_expiredCertificateServedWithWarning(self) -> Any:
        """
        An expired certificate (C{--tls-certificate}, on an C{ssl:} listener)
        and one not valid yet (an C{ssl:} endpoint's own files): the daemon
        starts, logs one warning for each naming the certificate and the
        date, and serves each certificate on its listener (C{GET /echo}:
        C{200}).
        """
        self.makeDirectory()
        made = self.makeCertificates()
        daemon = yield startDaemon(
            self,
            [
                "--tls-certificate",
                "expired.pem",
                "--listen",
                SSL_LOCAL,
                "--listen",
                f"{SSL_LOCAL}:privateKey=future-key.pem:certKey=future-cert.pem",
            ],
            cwd=str(self.directory),
        )
        expiredPort, futurePort = daemon.ports
        for port, der in ((expiredPort, made["expiredDER"]), (futurePort, made["futureDER"])):
            served, response = yield inThread(_getInsecurely, port)
            self.assertEqual(served, der)
            self.assertEqual((response.code, response.body), (200, ECHO_GET_BODY))
        lines = daemon.output.decode().splitlines()
        for warning in (made["expiredWarning"], made["futureWarning"]):
            found = [line for line in lines if warning in line]
            self.assertEqual(len(found), 1, (warning, daemon.output))
            self.assertIn("[txupgrade.daemon#warn]", found[0])

    @inlineCallbacks
    def test_expiredCertificateForUpgradeWarns(self) -> Any:
        """
        C{--tls-certificate} with an expired certificate and only a C{tcp:}
        listener (the RFC 2817 upgrade serves it): the daemon starts, the
        upgrade serves that certificate, and the start-up log warns that it
        expired, as it does on an C{ssl:} listener.
        """
        self.makeDirectory()
        made = self.makeCertificates()
        daemon = yield startDaemon(
            self, ["--tls-certificate", "expired.pem", "--listen", LOCAL], cwd=str(self.directory)
        )
        seen = yield inThread(_upgradeInsecurely, daemon.ports[0])
        self.assertEqual(seen, {"code": 101, "served": made["expiredDER"], "answer": (200, ECHO_GET_BODY)})
        warned = [line for line in daemon.output.decode().splitlines() if made["expiredWarning"] in line]
        self.assertEqual(len(warned), 1, daemon.output)


class RunTimeTests(_Directory, TestCase):
    """Each bad handshake closes only its connection, is logged once and counted; the daemon serves on."""

    timeout = 60

    daemon: Daemon
    certificate: Certificate
    tlsTarget: Target
    plainPort: int
    metricsPort: int

    @inlineCallbacks
    def serve(self, *extra: str) -> Any:
        """
        Start a daemon with an C{ssl:} listener and a C{tcp:} one (with the
        TLS upgrade: C{--tls-certificate}), C{--metrics} and C{extra}.
        """
        self.certificate = makeCertificate(self.makeDirectory())
        self.daemon = yield startDaemon(
            self,
            [
                "--tls-certificate",
                "server.pem",
                "--listen",
                SSL_LOCAL,
                "--listen",
                LOCAL,
                "--metrics",
                LOCAL,
                *extra,
            ],
            cwd=str(self.directory),
        )
        tlsPort, self.plainPort = self.daemon.ports
        self.tlsTarget = Target(tlsPort, None, True, self.certificate.ca)
        match = _METRICS_PORT.search(self.daemon.output)
        assert match is not None, self.daemon.output
        self.metricsPort = int(match.group(1))

    @inlineCallbacks
    def keepAlive(self) -> Any:
        """A keep-alive TLS connection (ALPN C{http/1.1}, certificate verified) that got its first answer."""
        port = self.tlsTarget.port
        assert port is not None
        options = optionsForClientTLS(
            "127.0.0.1",
            trustRoot=PEMCertificate.loadPEM(self.certificate.ca.read_bytes()),
            acceptableProtocols=[b"http/1.1"],
        )
        endpoint = wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5))
        client = yield connectClient(self, port, endpoint)
        yield self.askOn(client, 1)
        return client

    @inlineCallbacks
    def askOn(self, client: RawClient, count: int) -> Any:
        """Send C{client}'s C{count}th request; all its C{count} answers are C{200} with the echo body."""
        client.send(request(target=b"/echo?keepalive=%d" % count))
        data = yield client.waitFor(lambda data: holdsResponses(data, count))
        responses, _ = parseResponses(data)
        self.assertEqual([(r.code, r.body) for r in responses], [(200, ECHO_GET_BODY)] * count)

    @inlineCallbacks
    def servesOn(self, kept: RawClient) -> Any:
        """
        After the bad connection: C{kept} (opened before it) answers a second
        request, a new TLS connection gets C{200}; once that answer's access
        line is logged (so every line about the bad connection is too), fire
        with the metrics.
        """
        yield self.askOn(kept, 2)
        response = yield inThread(_getEcho, self.tlsTarget, AFTER_PATH)
        self.assertEqual((response.code, response.body), (200, ECHO_GET_BODY))
        yield wait(lambda: _AFTER_LINE in self.daemon.output)
        samples = yield inThread(scrapeMetrics, self.metricsPort)
        return samples

    def assertLoggedOnce(self, port: int, text: str) -> None:
        """Exactly one line of the log is about the handshake of the connection from C{port}: C{text}'s."""
        lines = handshakeLines(self.daemon, port)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(text, lines[0])

    @inlineCallbacks
    def assertFailedOnce(self, kept: RawClient, seen: dict[str, Any], reason: str, detail: str = "") -> Any:
        """
        The daemon L{servesOn} C{kept}; its metrics count one failed TLS
        handshake, for C{reason}, and no limit hit; one line is logged about
        the bad connection's handshake (C{seen}'s port): C{reason}, C{detail}.
        """
        samples = yield self.servesOn(kept)
        self.assertEqual(_byLabel(samples, "txupgrade_tls_handshake_failures_total"), {reason: 1.0})
        self.assertEqual(_byLabel(samples, "txupgrade_limit_hits_total"), {})
        port = seen["port"]
        self.assertLoggedOnce(port, f"TLS handshake with 127.0.0.1:{port} failed: {reason}{detail}")

    def assertClosedWithoutHTTP(self, seen: dict[str, Any]) -> None:
        """The server closed the connection with nothing, or a TLS alert: never an HTTP answer."""
        self.assertIn(seen["close"], ("eof", "reset"), seen)
        received = seen["received"]
        self.assertTrue(received == b"" or received[:1] == b"\x15", seen)

    @inlineCallbacks
    def test_noCommonALPN(self) -> Any:
        """
        A ClientHello offering only C{foo} by ALPN: the client gets the fatal
        C{no_application_protocol} alert; one line naming the peer, the
        reason and what it offered; counted as C{no application protocol}.
        """
        yield self.serve()
        kept = yield self.keepAlive()
        seen = yield inThread(_offerALPN, self.tlsTarget, ["foo"])
        self.assertIsNotNone(seen["error"], seen)
        self.assertIn("no application protocol", seen["error"].lower())
        yield self.assertFailedOnce(kept, seen, "no application protocol", " (ALPN offered: foo)")

    @inlineCallbacks
    def test_tls10ClientHello(self) -> Any:
        """
        A ClientHello offering TLS 1.0 at most: the server answers the fatal
        C{protocol_version} alert and closes; one line, counted as
        C{unsupported protocol}.
        """
        yield self.serve()
        kept = yield self.keepAlive()
        seen = yield inThread(_sendRaw, self.tlsTarget.port, _tls10ClientHello())
        self.assertClosedWithoutHTTP(seen)
        alert = seen["received"]
        # An alert record: type 21, two bytes of version, length 2, fatal (2) protocol_version (70).
        self.assertEqual((alert[:1], alert[3:]), (b"\x15", b"\x00\x02\x02\x46"), seen)
        yield self.assertFailedOnce(kept, seen, "unsupported protocol")

    @inlineCallbacks
    def test_plainHTTPOnTLSPort(self) -> Any:
        """
        A plain-text HTTP request on the TLS port: closed without an HTTP
        answer; one line, counted as C{http request}.
        """
        yield self.serve()
        kept = yield self.keepAlive()
        seen = yield inThread(_sendRaw, self.tlsTarget.port, request(target=b"/echo"))
        self.assertClosedWithoutHTTP(seen)
        yield self.assertFailedOnce(kept, seen, "http request")

    @inlineCallbacks
    def test_garbageOnTLSPort(self) -> Any:
        """
        64 random bytes (seeded: not a TLS record) on the TLS port: closed
        without an answer; one line, counted as C{wrong version number}.
        """
        yield self.serve()
        kept = yield self.keepAlive()
        garbage = random.Random(2817).randbytes(64)
        self.assertNotIn(garbage[0], range(0x14, 0x19))  # no TLS record type
        seen = yield inThread(_sendRaw, self.tlsTarget.port, garbage)
        self.assertClosedWithoutHTTP(seen)
        yield self.assertFailedOnce(kept, seen, "wrong version number")

    @inlineCallbacks
    def test_repeatedFailuresLoggedOnceCountedEach(self) -> Any:
        """
        Three plain-text requests on the TLS port within 10 s: each closed,
        each counted (3), one line logged for the reason (the rate limit).
        """
        yield self.serve()
        kept = yield self.keepAlive()
        ports = []
        for _ in range(3):
            seen = yield inThread(_sendRaw, self.tlsTarget.port, request(target=b"/echo"))
            self.assertClosedWithoutHTTP(seen)
            ports.append(seen["port"])
        samples = yield self.servesOn(kept)
        self.assertEqual(_byLabel(samples, "txupgrade_tls_handshake_failures_total"), {"http request": 3.0})
        self.assertEqual([len(handshakeLines(self.daemon, port)) for port in ports], [1, 0, 0])
        self.assertEqual(self.daemon.output.count(b"failed: http request"), 1, self.daemon.output)

    def assertHeadDeadlineHit(self, samples: Any, port: int) -> None:
        """The handshake's deadline hit: one limit line naming the peer, counted as that limit only."""
        self.assertEqual(_byLabel(samples, "txupgrade_limit_hits_total"), {"request-head-timeout": 1.0})
        self.assertEqual(_byLabel(samples, "txupgrade_tls_handshake_failures_total"), {})
        self.assertLoggedOnce(
            port,
            f"Limit request-head-timeout hit by 127.0.0.1:{port}; "
            f"seconds {HEAD_TIMEOUT}; during the TLS handshake",
        )

    @inlineCallbacks
    def test_handshakeNeverStarted(self) -> Any:
        """
        With C{--request-head-timeout 2}, a connection that never sends its
        ClientHello is closed by the server about 2 s after it was accepted
        (not before 1 s, before 10 s); logged once, counted as that limit.
        """
        yield self.serve("--request-head-timeout", str(HEAD_TIMEOUT))
        kept = yield self.keepAlive()
        seen = yield inThread(_silent, self.tlsTarget.port)
        self.assertClosedWithoutHTTP(seen)
        self.assertGreaterEqual(seen["seconds"], 1.0, seen)
        self.assertLess(seen["seconds"], 10.0, seen)
        samples = yield self.servesOn(kept)
        self.assertHeadDeadlineHit(samples, seen["port"])

    @inlineCallbacks
    def test_handshakeNeverFinished(self) -> Any:
        """
        With C{--request-head-timeout 2}, a real ClientHello sent a byte
        every 0.25 s and never finished: the trickle does not extend the
        deadline, which counts from the accept; closed after about 2 s (not
        before 1 s, before 10 s); logged once, counted as that limit.
        """
        yield self.serve("--request-head-timeout", str(HEAD_TIMEOUT))
        kept = yield self.keepAlive()
        seen = yield inThread(_trickleHello, self.tlsTarget.port, 0.25)
        self.assertIn(seen["close"], ("eof", "reset"), seen)
        self.assertGreaterEqual(seen["seconds"], 1.0, seen)
        self.assertLess(seen["seconds"], 10.0, seen)
        self.assertGreater(seen["sent"], 4, seen)  # it did trickle past the first second
        self.assertLess(seen["sent"], seen["length"] - 1, seen)
        samples = yield self.servesOn(kept)
        self.assertHeadDeadlineHit(samples, seen["port"])

    @inlineCallbacks
    def test_plainTextAfterSwitchToTLS(self) -> Any:
        """
        On the C{tcp:} listener, C{Upgrade: TLS/1.2} gets its C{101}, then
        the client sends a plain-text request instead of a ClientHello: the
        connection is closed without an HTTP answer, counted as C{http
        request}; the next RFC 2817 upgrade still works (C{200} over TLS); and
        the failure is logged once (one line about that connection's
        handshake).
        """
        yield self.serve()
        kept = yield self.keepAlive()
        seen = yield inThread(_plainAfterSwitch, self.plainPort)
        self.assertEqual((seen["code"], seen["upgrade"]), (101, [b"TLS/1.2, HTTP/1.1"]), seen)
        self.assertClosedWithoutHTTP(seen)
        yield self.assertFailedOnce(kept, seen, "http request")
        plainTarget = Target(self.plainPort, None, False, self.certificate.ca)
        switched = yield inThread(tlsUpgrade, plainTarget)
        self.assertEqual((switched["code"], switched["answer"]), (101, (200, ECHO_GET_BODY)), switched)
        self.assertEqual(len(handshakeLines(self.daemon, seen["port"])), 1)
