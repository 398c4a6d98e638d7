"""SIGHUP reload of a running amqpd: users, vhosts and permissions change live."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pika
import pika.exceptions
import pytest

from amqpd.broker.passwords import SHA256, hash_password
from amqpd.pytest_plugin import start_amqpd

TIMEOUT = 15.0


def _config(users: dict[str, str], vhosts: list[str], perms: list[tuple[str, str]]) -> str:
    lines = []
    for name, password in users.items():
        lines += [f"[users.{name}]", f'password_hash = "{hash_password(password, SHA256).value}"']
    for vhost in vhosts:
        lines.append(f'[vhosts."{vhost}"]')
    for user, vhost in perms:
        lines += ["[[permissions]]", f'user = "{user}"', f'vhost = "{vhost}"']
        lines += ['configure = ".*"', 'write = ".*"', 'read = ".*"']
    return "\n".join(lines) + "\n"


def _connect(port: int, user: str, password: str, vhost: str = "/") -> pika.BlockingConnection:
    params = pika.ConnectionParameters(
        "127.0.0.1", port, vhost, pika.PlainCredentials(user, password), socket_timeout=10
    )
    return pika.BlockingConnection(params)


def _closed_by_broker(conn: pika.BlockingConnection) -> tuple[int, str]:
    """Pump ``conn`` until the broker closes it (bounded); its close code and text."""
    deadline = time.monotonic() + TIMEOUT
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.05)
    return info.value.reply_code, info.value.reply_text


def _wait_log(server, conn: pika.BlockingConnection, text: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while text not in Path(server.log_path).read_text():
        assert time.monotonic() < deadline, f"no {text!r} in the broker log"
        conn.process_data_events(time_limit=0.05)


def test_sighup_applies_users_vhosts_and_permissions(tmp_path):
    config = tmp_path / "amqpd.toml"
    guest = {"guest": "guest"}
    config.write_text(
        _config(
            {**guest, "alice": "pa"},
            ["/", "gone", "keep"],
            [("guest", "/"), ("alice", "/"), ("guest", "gone"), ("guest", "keep")],
        )
    )
    server = start_amqpd(tmp_path / "data", extra_args=["--config", str(config)])
    try:
        alice = _connect(server.port, "alice", "pa")
        in_gone = _connect(server.port, "guest", "guest", "gone")
        in_keep = _connect(server.port, "guest", "guest", "keep")
        keep_ch = in_keep.channel()
        keep_ch.queue_declare("held")
        keep_ch.basic_publish("", "held", b"still here")
        keep_ch.queue_declare("held", passive=True)  # a round trip: the publish is in

        # alice and vhost "gone" go, bob comes, "keep" is dropped but holds a message.
        config.write_text(_config({**guest, "bob": "pb"}, ["/"], [("guest", "/"), ("bob", "/")]))
        server.process.send_signal(signal.SIGHUP)
        assert _closed_by_broker(alice) == (320, "CONNECTION_FORCED - user 'alice' is deleted")
        assert _closed_by_broker(in_gone) == (320, "CONNECTION_FORCED - vhost 'gone' is deleted")
        _connect(server.port, "bob", "pb").close()
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            _connect(server.port, "alice", "pa")
        _wait_log(server, in_keep, "vhost not deleted: it still holds messages")
        assert in_keep.is_open
        method, _, body = keep_ch.basic_get("held", auto_ack=True)
        assert body == b"still here"

        # An invalid file changes nothing.
        config.write_text("[users.bob]\npassword_hash = 1\n")
        server.process.send_signal(signal.SIGHUP)
        _wait_log(server, in_keep, "reload refused, nothing changed")
        _connect(server.port, "bob", "pb").close()

        # The operator confirms: now the vhost goes, messages and all.
        confirmed = _config({**guest, "bob": "pb"}, ["/"], [("guest", "/"), ("bob", "/")])
        config.write_text(confirmed + '[reload]\ndelete_vhosts_with_messages = ["keep"]\n')
        server.process.send_signal(signal.SIGHUP)
        assert _closed_by_broker(in_keep) == (320, "CONNECTION_FORCED - vhost 'keep' is deleted")
    finally:
        code = server.stop()
    assert code == 0, server.log_tail
    assert "users.bob.password_hash: must be a string, not an integer" in server.log_tail
    assert "Traceback" not in server.log_tail


def test_amqpd_reload_signals_the_broker_named_by_its_pid_file(tmp_path):
    from amqpd.cli import main

    config = tmp_path / "amqpd.toml"
    config.write_text(_config({"guest": "guest", "alice": "pa"}, ["/"], [("alice", "/")]))
    pid_file = tmp_path / "amqpd.pid"
    server = start_amqpd(
        tmp_path / "data", extra_args=["--config", str(config), "--pid-file", str(pid_file)]
    )
    try:
        assert pid_file.read_text() == f"{server.process.pid}\n"
        alice = _connect(server.port, "alice", "pa")
        config.write_text(_config({"guest": "guest"}, ["/"], [("guest", "/")]))
        assert main(["reload", "--pid-file", str(pid_file)]) == 0
        assert _closed_by_broker(alice) == (320, "CONNECTION_FORCED - user 'alice' is deleted")
    finally:
        assert server.stop() == 0, server.log_tail
    assert not pid_file.exists()  # removed on exit


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read pid file"), ("junk", "does not hold a process id: 'junk'")],
)
def test_amqpd_reload_errors(tmp_path, capsys, content, message):
    from amqpd.cli import main

    pid_file = tmp_path / "amqpd.pid"
    if content is not None:
        pid_file.write_text(content)
    with pytest.raises(SystemExit) as info:
        main(["reload", "--pid-file", str(pid_file)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("amqpd reload: error: ") and message in err and err.count("\n") == 1
