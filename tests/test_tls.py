"""amqps: a TLS listener from the config file, with and without client certificates."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pika
import pika.exceptions
import pytest

from amqpd.config import ConfigError, parse_config
from amqpd.pytest_plugin import start_amqpd
from amqpd.tls import gen_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    gen_certs(directory, hostnames=["localhost", "127.0.0.1"])
    return directory


def _config(certs: Path, extra: str = "") -> str:
    return (
        '[listeners]\namqps = ["127.0.0.1:0"]\n[tls]\n'
        f'certfile = "{certs / "server.pem"}"\nkeyfile = "{certs / "server.key"}"\n'
        f'cafile = "{certs / "ca.pem"}"\n{extra}'
    )


def _start(tmp_path: Path, text: str):
    config = tmp_path / "amqpd.toml"
    config.write_text(text)
    server = start_amqpd(tmp_path / "data", extra_args=["--config", str(config)])
    # The ready line lists the plain listener first, then the amqps one.
    line = next(x for x in server.log_path.read_text().splitlines() if "listening on" in x)
    tls_port = int(re.findall(r"127\.0\.0\.1:(\d+)", line.split("listening on", 1)[1])[1])
    return server, tls_port


def _connect(port: int, certs: Path, client_cert: bool) -> pika.BlockingConnection:
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if client_cert:
        context.load_cert_chain(certs / "client.pem", certs / "client.key")
    params = pika.ConnectionParameters(
        "127.0.0.1",
        port,
        ssl_options=pika.SSLOptions(context, "localhost"),
        socket_timeout=10,
    )
    return pika.BlockingConnection(params)


def _round_trip(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", queue, b"over tls")
    assert ch.basic_get(queue, auto_ack=True)[2] == b"over tls"
    conn.close()


def test_amqps_with_pika_ssl_options(tmp_path, certs):
    server, port = _start(tmp_path, _config(certs))
    try:
        _round_trip(_connect(port, certs, client_cert=False))
        _round_trip(_connect(port, certs, client_cert=True))  # optional without verify_peer
    finally:
        assert server.stop() == 0, server.log_tail
    assert not server.internal_errors


def test_client_certificates_required(tmp_path, certs):
    server, port = _start(
        tmp_path, _config(certs, "verify_peer = true\nfail_if_no_peer_cert = true\n")
    )
    try:
        _round_trip(_connect(port, certs, client_cert=True))
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            _connect(port, certs, client_cert=False)
        _round_trip(_connect(port, certs, client_cert=True))  # the broker is fine after it
    finally:
        assert server.stop() == 0, server.log_tail
    assert not server.internal_errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[listeners]\namqps = [":5671"]\n', "listeners.amqps: needs a [tls] section"),
        ('[tls]\nkeyfile = "k"\n', "tls.certfile: is required"),
        ('[tls]\ncertfile = "missing.pem"\nkeyfile = "k"\n', "tls.certfile: cannot read"),
        ("verify_peer = 1", "tls.verify_peer: must be true or false, not an integer"),
        ("verify_peer = true\ncafile_x = 1", "tls.cafile_x: unknown key"),
        ("fail_if_no_peer_cert = true", "tls.fail_if_no_peer_cert: needs verify_peer = true"),
    ],
)
def test_tls_config_errors(certs, text, message):
    import tomllib

    if not text.startswith("["):
        text = (
            f'[tls]\ncertfile = "{certs / "server.pem"}"\nkeyfile = "{certs / "server.key"}"\n'
            + text
        )
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text), certs / "amqpd.toml")
    assert str(info.value).startswith(message)


def test_verify_peer_needs_a_ca(certs):
    import tomllib

    text = (
        f'[tls]\ncertfile = "{certs / "server.pem"}"\nkeyfile = "{certs / "server.key"}"\n'
        "verify_peer = true\n"
    )
    with pytest.raises(ConfigError, match="tls.verify_peer: needs tls.cafile"):
        parse_config(tomllib.loads(text), certs / "amqpd.toml")


def test_gen_certs_subcommand(tmp_path, capsys):
    from amqpd.cli import main

    assert main(["gen-certs", str(tmp_path / "c"), "--client-cn", "alice"]) == 0
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == ["ca.pem", "client.key", "client.pem", "server.key", "server.pem"]
    assert (tmp_path / "c" / "server.key").stat().st_mode & 0o777 == 0o600
    from cryptography import x509

    client = x509.load_pem_x509_certificate((tmp_path / "c" / "client.pem").read_bytes())
    assert client.subject.rfc4514_string() == "CN=alice,O=amqpd development"


_EXTERNAL = '[auth]\nmechanisms = ["PLAIN", "AMQPLAIN", "EXTERNAL"]\n'


def _connect_external(port: int, certs: Path) -> pika.BlockingConnection:
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(certs / "client.pem", certs / "client.key")
    params = pika.ConnectionParameters(
        "127.0.0.1",
        port,
        credentials=pika.credentials.ExternalCredentials(),
        ssl_options=pika.SSLOptions(context, "localhost"),
        socket_timeout=10,
    )
    return pika.BlockingConnection(params)


def test_external_mechanism_logs_in_the_certificates_cn(tmp_path, certs):
    # The client certificate's CN is "guest" (gen_certs' default); common_name must be
    # asked for, as in RabbitMQ (ssl_cert_login_from = common_name).
    login = 'ssl_cert_login_from = "common_name"\n'
    server, port = _start(tmp_path, _config(certs, "verify_peer = true\n") + _EXTERNAL + login)
    try:
        _round_trip(_connect_external(port, certs))
    finally:
        assert server.stop() == 0, server.log_tail


def test_external_with_a_certificate_for_an_unknown_user_is_refused(tmp_path, certs):
    users = '[users.alice]\npassword_hash = "cu7Jv11osgRN5SWsBYQOG5xXinU0MXela0ifLA8FHGc3XKeE"\n'
    server, port = _start(tmp_path, _config(certs, "verify_peer = true\n") + _EXTERNAL + users)
    try:
        with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
            _connect_external(port, certs)
        assert "Login was refused using authentication mechanism EXTERNAL" in str(info.value)
    finally:
        assert server.stop() == 0, server.log_tail


def test_external_is_offered_only_with_a_client_certificate():
    from amqpd.session.config import ConnectionConfig
    from amqpd.session.handshake import offered_mechanisms

    config = ConnectionConfig(auth_mechanisms=("PLAIN", "EXTERNAL"))
    assert offered_mechanisms(config, has_peer_certificate=False) == ("PLAIN",)
    assert offered_mechanisms(config, has_peer_certificate=True) == ("PLAIN", "EXTERNAL")


_DN = "CN=guest,O=amqpd development"  # gen_certs' client subject, as RabbitMQ writes it


def test_external_names_the_user_by_the_distinguished_name_by_default(tmp_path, certs):
    users = (
        f'[users."{_DN}"]\npassword_hash = "cu7Jv11osgRN5SWsBYQOG5xXinU0MXela0ifLA8FHGc3XKeE"\n'
        f'[[permissions]]\nuser = "{_DN}"\nvhost = "/"\n'
        'configure = ".*"\nwrite = ".*"\nread = ".*"\n'
    )
    server, port = _start(tmp_path, _config(certs, "verify_peer = true\n") + _EXTERNAL + users)
    try:
        _round_trip(_connect_external(port, certs))
    finally:
        assert server.stop() == 0, server.log_tail


def test_by_default_a_user_named_by_the_cn_alone_is_not_the_certificates(tmp_path, certs):
    # Only guest exists (no [users]): the DN names nobody, as on a default RabbitMQ.
    server, port = _start(tmp_path, _config(certs, "verify_peer = true\n") + _EXTERNAL)
    try:
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            _connect_external(port, certs)
    finally:
        assert server.stop() == 0, server.log_tail


def test_ssl_cert_login_from_is_checked(certs):
    from amqpd.session.config import ConnectionConfig

    assert ConnectionConfig().ssl_cert_login_from == "distinguished_name"
    doc = {"auth": {"ssl_cert_login_from": "subject_alternative_name"}}
    with pytest.raises(ConfigError, match="auth.ssl_cert_login_from: must be one of"):
        parse_config(doc, Path("amqpd.toml"))
    doc = {"auth": {"ssl_cert_login_from": "common_name"}}
    assert parse_config(doc, Path("amqpd.toml")).connection.ssl_cert_login_from == "common_name"
