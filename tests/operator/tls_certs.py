"""Test certificates: a CA and a serving certificate it signed, written as a kubernetes.io/tls
Secret's files (tls.crt, tls.key, ca.crt), for the metrics endpoint's tests (cryptography is a
test requirement, not the operator's)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_tls_dir(directory: Path, dns_names: Sequence[str] = ("localhost",), ips: Sequence[str] = ("127.0.0.1",),
                  cn: str = "sheepdog-metrics") -> Path:
    """A fresh CA and a certificate for `dns_names` and `ips` signed by it, in `directory`."""
    import ipaddress

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name(f"{cn}-ca")).issuer_name(_name(f"{cn}-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(d) for d in dns_names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    # written beside and renamed: a reader never sees half a file
    for name, data in (("ca.crt", ca.public_bytes(serialization.Encoding.PEM)), ("tls.key", _pem_key(key)),
                       ("tls.crt", cert.public_bytes(serialization.Encoding.PEM))):
        tmp = directory / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(directory / name)
    return directory
