"""The cloud's certificate authority and the servers' identities.

A cloud has one CA (an ECDSA P-256 key and a self-signed certificate) and one
key + certificate per server, signed by the CA, naming the server by a DNS
name such as ``server1.cloud`` and, where wanted, by IP addresses too. Clients
pin the CA certificate (``cloudp2p init --ca FILE``) and check each server's
name against its certificate; servers use the same CA for nothing else yet.

Layout of a PKI directory (0700, every file 0600, written atomically)::

    DIR/ca.crt  DIR/ca.key                       the authority
    DIR/server1.cloud.crt  DIR/server1.cloud.key one pair per server name

``provision(DIR, names)`` creates what is missing and keeps what exists, so
``make cluster``, ``make demo`` and the test harness call it on every start.
The CA key never leaves the directory; a production operator keeps it offline
and copies only ``ca.crt`` and each server's pair to where they are used.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Iterable
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloudp2p.errors import ConfigError
from cloudp2p.files import atomic_write

CA_NAME = "ca"
DEFAULT_CA_DAYS = 3650
DEFAULT_SERVER_DAYS = 825
# A DNS name: dot-separated labels of letters, digits and inner hyphens.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
NAME_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")


def server_name(server_id: int, domain: str = "cloud") -> str:
    """The conventional name of server ``server_id``: ``server1.cloud``."""
    return f"server{server_id}.{domain}"


def check_name(name: str) -> str:
    """A valid DNS name (lower case), else ``ValueError`` saying what is expected."""
    if not isinstance(name, str) or len(name) > 253 or not NAME_RE.match(name):
        raise ValueError(f"must be a DNS name such as server1.cloud (letters, digits, - and .), got {name!r}")
    return name


@attrs.frozen
class Issued:
    """Where one identity's files are."""

    name: str
    certificate: Path
    key: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_private(path: Path, data: bytes) -> None:
    atomic_write(path, data, mode=0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _prepare(directory: str | os.PathLike[str]) -> Path:
    path = Path(directory)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def ca_paths(directory: str | os.PathLike[str]) -> Issued:
    path = Path(directory)
    return Issued(CA_NAME, path / f"{CA_NAME}.crt", path / f"{CA_NAME}.key")


def identity_paths(directory: str | os.PathLike[str], name: str) -> Issued:
    path = Path(directory)
    return Issued(name, path / f"{name}.crt", path / f"{name}.key")


def create_ca(
    directory: str | os.PathLike[str], *, common_name: str = "cloudp2p cloud CA", days: int = DEFAULT_CA_DAYS
) -> Issued:
    """A new CA in ``directory`` (refuses to overwrite one: that would orphan every server)."""
    path = _prepare(directory)
    issued = ca_paths(path)
    if issued.certificate.exists() or issued.key.exists():
        raise ConfigError(f"{path}: a CA exists already ({issued.certificate.name}); not replacing it")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(issued.key, _key_pem(key))
    _write_private(issued.certificate, cert.public_bytes(serialization.Encoding.PEM))
    return issued


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    issued = ca_paths(directory)
    try:
        cert = x509.load_pem_x509_certificate(issued.certificate.read_bytes())
        key = serialization.load_pem_private_key(issued.key.read_bytes(), password=None)
    except FileNotFoundError as e:
        raise ConfigError(f"{directory}: no CA here ({e.filename}); create one first") from None
    except ValueError as e:
        raise ConfigError(f"{directory}: the CA files cannot be read: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{issued.key}: not an EC private key")
    return cert, key


def issue(
    directory: str | os.PathLike[str],
    name: str,
    *,
    ips: Iterable[str] = (),
    days: int = DEFAULT_SERVER_DAYS,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    replace: bool = False,
) -> Issued:
    """A key and a certificate for server ``name`` (plus ``ips`` in its SAN), signed by the CA in
    ``directory``. ``not_before``/``not_after`` override the validity (tests make expired ones)."""
    check_name(name)
    addresses = [ipaddress.ip_address(ip) for ip in ips]
    path = _prepare(directory)
    issued = identity_paths(path, name)
    if not replace and (issued.certificate.exists() or issued.key.exists()):
        raise ConfigError(f"{path}: {name} has a certificate already; not replacing it")
    ca_cert, ca_key = _load_ca(path)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    start = not_before or now - datetime.timedelta(minutes=5)
    end = not_after or now + datetime.timedelta(days=days)
    san: list[x509.GeneralName] = [x509.DNSName(name)]
    san += [x509.IPAddress(a) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(issued.key, _key_pem(key))
    _write_private(issued.certificate, cert.public_bytes(serialization.Encoding.PEM))
    return issued


def provision(
    directory: str | os.PathLike[str], names: Iterable[str], *, ips: Iterable[str] = ()
) -> dict[str, Issued]:
    """Make sure ``directory`` holds a CA and a pair for every name; keep whatever exists.

    Idempotent, for ``make cluster``, ``make demo`` and test harnesses: call it
    before writing server configs. Returns ``{name: Issued}``.
    """
    path = _prepare(directory)
    if not ca_paths(path).certificate.exists():
        create_ca(path)
    ips = list(ips)
    out = {}
    for name in names:
        issued = identity_paths(path, name)
        if not (issued.certificate.exists() and issued.key.exists()):
            issued = issue(path, name, ips=ips, replace=True)
        out[name] = issued
    return out


def describe(path: str | os.PathLike[str]) -> dict[str, object]:
    """What a certificate file says: subject, issuer, names, validity (for ``pki show``)."""
    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a PEM certificate: {e}") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n.value) for n in san]
    except x509.ExtensionNotFound:
        names = []
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "names": names,
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "serial": format(cert.serial_number, "x"),
    }
