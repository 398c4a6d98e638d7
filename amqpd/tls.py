"""TLS for the amqps listener: the server's ``ssl.SSLContext``, and ``amqpd gen-certs``.

Rules of this module (process edge; RabbitMQ's ``ssl_options``,
https://www.rabbitmq.com/docs/ssl):
- ``TlsConfig`` mirrors RabbitMQ's keys: certfile, keyfile, cacertfile (``cafile``),
  ``verify_peer`` (RabbitMQ ``verify = verify_peer``: ask for and check a client
  certificate) and ``fail_if_no_peer_cert`` (refuse clients without one). TLS 1.2 at least.
- ``server_context`` loads the files at start, so a wrong path or a key that does not match
  is one config error naming the key, not a failure at the first client.
- ``gen-certs DIR`` makes a development CA and a server and a client certificate signed by
  it (``cryptography``); never for production.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@attrs.frozen
class TlsConfig:
    certfile: Path
    keyfile: Path
    cafile: Path | None = None
    verify_peer: bool = False
    fail_if_no_peer_cert: bool = False


class TlsError(Exception):
    """Which key is wrong and why (the config turns it into ``tls.KEY: ...``)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for key, path in (("certfile", tls.certfile), ("keyfile", tls.keyfile), ("cafile", tls.cafile)):
        if path is not None and not path.is_file():
            # ssl's FileNotFoundError does not say which of the files is missing.
            raise TlsError(key, f"cannot read {path}: no such file")
    try:
        context.load_cert_chain(tls.certfile, tls.keyfile)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError("keyfile", f"cannot use the certificate and key: {exc}") from None
    if tls.cafile is not None:
        try:
            context.load_verify_locations(cafile=tls.cafile)
        except (ssl.SSLError, OSError) as exc:
            raise TlsError("cafile", f"cannot load {tls.cafile}: {exc}") from None
    if tls.verify_peer:
        if tls.cafile is None:
            raise TlsError("verify_peer", "needs tls.cafile to check client certificates with")
        context.verify_mode = ssl.CERT_REQUIRED if tls.fail_if_no_peer_cert else ssl.CERT_OPTIONAL
    elif tls.fail_if_no_peer_cert:
        raise TlsError("fail_if_no_peer_cert", "needs verify_peer = true")
    return context


# ---------------------------------------------------------------------------- gen-certs

_VALID_DAYS = 825


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "amqpd development"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def gen_certs(
    directory: Path, *, hostnames: Sequence[str] = ("localhost",), client_cn: str = "guest"
) -> list[Path]:
    """Write ca.pem, server.pem/server.key, client.pem/client.key into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=_VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("amqpd development CA"))
        .issuer_name(_name("amqpd development CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    written = [directory / "ca.pem"]
    _write(written[0], ca.public_bytes(serialization.Encoding.PEM))

    def leaf(
        name: str, cn: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
        _write(directory / f"{name}.key", _key_pem(key), private=True)
        written.extend([directory / f"{name}.pem", directory / f"{name}.key"])

    sans: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    leaf("server", hostnames[0], ExtendedKeyUsageOID.SERVER_AUTH, sans)
    leaf("client", client_cn, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return written


def gen_certs_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="amqpd gen-certs",
        description="Write a development CA (ca.pem), a server certificate (server.pem, "
        "server.key) and a client certificate (client.pem, client.key) into DIR. For "
        "development and tests only.",
    )
    parser.add_argument("directory", type=Path, metavar="DIR")
    parser.add_argument(
        "--hostname",
        action="append",
        help="name or address the server certificate is for; repeatable "
        "(default: localhost, 127.0.0.1, ::1)",
    )
    parser.add_argument(
        "--client-cn",
        default="guest",
        help="client certificate CN (guest); its subject is CN=<CN>,O=amqpd development, "
        "the EXTERNAL user name under the default ssl_cert_login_from = distinguished_name",
    )
    args = parser.parse_args(argv)
    hosts = args.hostname or ["localhost", "127.0.0.1", "::1"]
    try:
        for path in gen_certs(args.directory, hostnames=hosts, client_cn=args.client_cn):
            print(path)
    except OSError as exc:
        parser.exit(2, f"{parser.prog}: error: cannot write {args.directory}: {exc.strerror}\n")
    return 0
