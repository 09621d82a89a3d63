"""Mutual TLS between agents and brokers: certificates that name a role and a host, and credentials that follow
certificate files as they are rotated.

A certificate's subject says who holds it: OU is the role ("broker" or "agent"), CN the name — a host id for an
agent, so an agent can act only for its own host (the broker checks Register.host_id against CN) and can never pose
as a broker (OU). Production takes certificates from any CA; `cloudseat-broker certs` makes a development CA and
certificates (ECDSA P-256) for local systems and tests.

Rotation: the broker's server credentials re-read their files when they change (gRPC asks before each handshake),
so a renewed certificate or a new CA bundle is served without a restart; connections already open keep theirs.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import ssl
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES = ("broker", "agent")


@dataclasses.dataclass(frozen=True, slots=True)
class CertFiles:
    """One party's PEM files: its certificate (chain), its key, and the CA bundle it trusts for its peers."""

    cert: Path
    key: Path
    ca: Path

    def check(self, flag: str) -> None:
        for name, path in (("certificate", self.cert), ("key", self.key), ("CA bundle", self.ca)):
            if not path.is_file():
                raise ValueError(f"{flag}: the {name} {str(path)!r} does not exist")


def identity(pem: bytes) -> tuple[str, str]:
    """(role, name) of the first certificate in `pem`: its subject's OU and CN."""
    cert = x509.load_pem_x509_certificate(pem)
    role = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not role or not name:
        return "", ""
    return str(role[0].value), str(name[0].value)


# -- credentials ---------------------------------------------------------------------------------------------


class ServerCredentials:
    """Server credentials that follow the files' changes. With `require_client_cert` (the agents' port) every
    client must present a certificate that chains to the CA bundle; without (the port for token holders: seats,
    venues, providers, consoles) clients connect with plain TLS and prove themselves with tokens."""

    def __init__(self, files: CertFiles, *, require_client_cert: bool) -> None:
        files.check("--tls")
        self.files = files
        self.require_client_cert = require_client_cert
        self._stamp: tuple[float, ...] | None = None
        self.reloads = 0

    def _mtimes(self) -> tuple[float, ...]:
        return tuple(os.stat(p).st_mtime_ns for p in (self.files.cert, self.files.key, self.files.ca))

    def _config(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self.files.key.read_bytes(), self.files.cert.read_bytes())],
            root_certificates=self.files.ca.read_bytes(),
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC calls this before each handshake: a new configuration when a file changed, else None (keep)."""
        try:
            stamp = self._mtimes()
            if stamp == self._stamp:
                return None
            config = self._config()
        except (OSError, ValueError):
            return None  # a file mid-rewrite: keep serving the last good pair, try again next handshake
        self._stamp = stamp
        self.reloads += 1
        return config

    def credentials(self) -> grpc.ServerCredentials:
        self._stamp = self._mtimes()
        return grpc.dynamic_ssl_server_credentials(
            self._config(), self._fetch, require_client_authentication=self.require_client_cert
        )


def server_ssl_context(files: CertFiles) -> ssl.SSLContext:
    """TLS for an HTTPS server (the consoles) with the broker's certificate and key, following their changes like
    ServerCredentials: each handshake (through the SNI callback) switches to a context loaded afresh once a file
    changed; a file mid-rewrite keeps the last good pair."""
    files.check("--tls")

    def load() -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(files.cert, files.key)
        return ctx

    def stamp() -> tuple[float, ...]:
        return tuple(os.stat(p).st_mtime_ns for p in (files.cert, files.key))

    outer = load()
    latest: list[tuple[tuple[float, ...], ssl.SSLContext]] = [(stamp(), outer)]

    def pick(sock: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        try:
            now = stamp()
            if now != latest[0][0]:
                latest[0] = (now, load())
        except (OSError, ssl.SSLError):
            pass  # keep the last good pair
        if latest[0][1] is not outer:
            sock.context = latest[0][1]

    outer.sni_callback = pick
    return outer


def channel_credentials(files: CertFiles) -> grpc.ChannelCredentials:
    """What an agent (or any mTLS client) presents, trusting brokers signed by the CA bundle."""
    files.check("tls")
    return grpc.ssl_channel_credentials(
        root_certificates=files.ca.read_bytes(),
        private_key=files.key.read_bytes(),
        certificate_chain=files.cert.read_bytes(),
    )


def client_credentials(ca: Path) -> grpc.ChannelCredentials:
    """TLS for a token-carrying client (a seat, a console, a tool): it checks the broker, the token says who it is."""
    return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())


# -- the development CA --------------------------------------------------------------------------------------


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(pem)


def make_ca(folder: Path, *, days: int = 365) -> tuple[Path, Path]:
    """A new development CA in `folder`: (ca.pem, ca.key)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudseat development CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    ca_pem, ca_key = folder / "ca.pem", folder / "ca.key"
    ca_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, ca_key)
    return ca_pem, ca_key


def issue(
    ca_pem: Path,
    ca_key: Path,
    folder: Path,
    *,
    role: str,
    name: str,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    days: int = 90,
) -> CertFiles:
    """A certificate for `role` ("broker" or "agent") named `name`, signed by the CA: FOLDER/NAME.pem and .key.
    The certificate carries `hosts` (IP addresses or DNS names) as subject alternative names, an agent's its name
    too: the hosts of its site ask it for image chunks by host id (gpu_agent.peers)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    ca = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    if not isinstance(signer, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_key}: the CA key must be an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    # An agent's certificate also serves its site's peers (gpu_agent.peers): they ask for it by host id.
    usages = (
        [ExtendedKeyUsageOID.SERVER_AUTH]
        if role == "broker"
        else [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    )
    if role == "agent":
        names.insert(0, x509.DNSName(name))
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cloudseat"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
    )
    cert = builder.sign(signer, hashes.SHA256())
    folder.mkdir(parents=True, exist_ok=True)
    files = CertFiles(cert=folder / f"{name}.pem", key=folder / f"{name}.key", ca=ca_pem)
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, files.key)
    return files
