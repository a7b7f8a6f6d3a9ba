"""
Shared helpers of the test suite, one module a concern:

  - L{tests.support.net}: real listeners on 127.0.0.1 (L{listen}, over TCP or
    TLS), the site that tracks its connections (L{TrackingSite}), the raw
    Twisted client that keeps every byte (L{RawClient}), bounded waits, and a
    recording push producer.
  - L{tests.support.http}: request bytes, the one HTTP response parser (h11),
    and the small test resources and upgrade protocols.
  - L{tests.support.http2}: the h2-library client that records each stream's
    answer, the bytes of h2c upgrades, and the site the HTTP/2 tests serve.
  - L{tests.support.websocket}: RFC 6455 frames and handshakes, the blocking
    client for tests run in a thread, the echo round of a C{websockets}
    client, and the recording autobahn server.
  - L{tests.support.processes}: bounded child processes, Python children that
    serve (output kept, ports read from it), and the binaries the end-to-end
    tests need (missing: skip locally, fail in CI).
  - L{tests.support.proxies}: real nginx and HAProxy in front of a test site.
  - L{tests.support.daemon}: C{twistd txupgrade} as a real child process.
  - L{tests.support.matrix}: the targets, certificate and blocking clients of
    the composition matrix (L{tests.test_e2e_matrix}).
"""
