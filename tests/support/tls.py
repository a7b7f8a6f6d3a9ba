"""Certificates for the tests' TLS listeners, made at test time (trustme)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


def certificateFiles() -> tuple[Any, Path, Path]:
    """A trustme CA, a PEM with key and chain for 127.0.0.1, and one without the key."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    directory = Path(tempfile.mkdtemp())
    good = directory / "server.pem"
    good.write_bytes(cert.private_key_and_cert_chain_pem.bytes())
    keyless = directory / "cert-only.pem"
    keyless.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return ca, good, keyless
