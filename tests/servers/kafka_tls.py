"""Throwaway certificates for the secured test brokers, made with the ``openssl`` CLI.

Test code only. A :class:`CertificateAuthority` is a self-signed CA (a day's validity) that
issues certificates: a server certificate for 127.0.0.1 / localhost (the broker) and client
certificates (``CN=<name>``, for mutual TLS). Keys are EC P-256 in unencrypted PKCS#8 PEM
(``BEGIN PRIVATE KEY``), which Kafka's PEM key stores, librdkafka and Python's ``ssl`` all
read; :meth:`Certificate.encrypted_key` writes an encrypted copy for key-password tests.
Each certificate also has a PEM *key store* file: the key followed by the certificate, the form
Kafka's ``ssl.keystore.type=PEM`` with ``ssl.keystore.location`` takes.

>>> ca = CertificateAuthority(tmp_path, "ca")  # doctest: +SKIP
>>> broker = ca.issue("broker", server=True)  # doctest: +SKIP
>>> worker = ca.issue("worker")  # doctest: +SKIP
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Certificate", "CertificateAuthority", "openssl"]

#: Key algorithm of every key: EC keys are generated in milliseconds (RSA 2048: ~0.1-1 s each).
_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
_DAYS = "1"


def openssl(*args: object) -> None:
    """Run ``openssl`` with ``args``; raise with its output if it fails."""
    command = ["openssl", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")


@dataclass(frozen=True)
class Certificate:
    """A certificate (``<name>.pem``), its key (``<name>.key``) and a PEM key store with both."""

    name: str
    cert: Path
    key: Path
    keystore: Path

    def encrypted_key(self, password: str) -> Path:
        """The key encrypted with ``password`` (PKCS#8, AES-256), in ``<name>.encrypted.key``."""
        path = self.key.with_name(f"{self.name}.encrypted.key")
        openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", self.key, "-out", path,
                "-passout", f"pass:{password}")  # fmt: skip
        return path


class CertificateAuthority:
    """A self-signed CA in ``folder`` (``<name>.pem``, ``<name>.key``) that issues certificates."""

    def __init__(self, folder: Path, name: str = "ca") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.cert = self.folder / f"{name}.pem"
        self.key = self.folder / f"{name}.key"
        openssl(
            "req", "-x509", *_KEY, "-days", _DAYS, "-subj", f"/CN=streamdrift test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", self.key, "-out", self.cert,
        )  # fmt: skip

    def issue(self, name: str, *, server: bool = False) -> Certificate:
        """A certificate signed by this CA: ``CN=<name>``; with ``server``, for TLS servers on
        127.0.0.1 / localhost (subject alternative names), else for TLS clients."""
        key, csr, cert = (self.folder / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
        extensions = self.folder / f"{name}.ext"
        usage = "serverAuth" if server else "clientAuth"
        lines = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
                 f"extendedKeyUsage={usage}"]  # fmt: skip
        if server:
            lines.append("subjectAltName=IP:127.0.0.1,DNS:localhost")
        extensions.write_text("\n".join(lines) + "\n")
        openssl("req", *_KEY, "-subj", f"/CN={name}", "-keyout", key, "-out", csr)
        openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key, "-CAcreateserial",
                "-days", _DAYS, "-extfile", extensions, "-out", cert)  # fmt: skip
        keystore = self.folder / f"{name}.keystore.pem"
        keystore.write_text(key.read_text() + cert.read_text())
        return Certificate(name, cert, key, keystore)
