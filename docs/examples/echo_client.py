"""
Switch a connection to the demo server's echo protocol, with nothing but a
socket: the request, the 101, then the same connection echoes.

Usage: python echo_client.py [PORT]   (default 8080)
"""

import socket
import sys


def echo(port, message=b"hello, echo"):
    """Upgrade to echo on 127.0.0.1:C{port}; return the 101 head and the echo."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\n"
            b"Connection: Upgrade\r\n"
            b"Upgrade: echo\r\n"
            b"\r\n" + message  # sent in the same segment: it must not be lost
        )
        received = b""
        while not received.endswith(message):
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    head, _, echoed = received.partition(b"\r\n\r\n")
    return head.decode("ascii"), echoed


if __name__ == "__main__":
    head, echoed = echo(int(sys.argv[1]) if len(sys.argv) > 1 else 8080)
    print(head)
    print()
    print(echoed.decode())
