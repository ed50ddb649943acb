"""A self-signed certificate for 127.0.0.1 made by the real `openssl` (the nginx site's tests and serve's own TLS)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import tiers
from tests.support.timing import seconds


def openssl() -> str:
    return tiers.require("openssl", "openssl is not installed (apt-get install openssl)")


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for CN and subjectAltName 127.0.0.1, valid one day."""
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    subprocess.run(
        [openssl(), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=seconds(60),
    )  # fmt: skip
    return cert, key
