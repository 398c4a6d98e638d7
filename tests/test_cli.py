"""The amqpd command: argument parsing, user-error messages, and the real process life cycle."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pika
import pika.exceptions
import pytest

from amqpd import __version__
from amqpd.cli import build_parser, default_data_dir, main
from amqpd.pytest_plugin import parse_ready_line, start_amqpd
from amqpd.server import DEFAULT_LISTEN, ListenAddress, parse_listen, ready_message

# --- --listen ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5672", ListenAddress("127.0.0.1", 5672)),
        ("localhost:0", ListenAddress("localhost", 0)),
        ("[::1]:5672", ListenAddress("::1", 5672)),
        ("[::]:0", ListenAddress("::", 0)),
        ("[fe80::1%eth0]:5672", ListenAddress("fe80::1%eth0", 5672)),
        (":0", ListenAddress(None, 0)),
        ("5673", ListenAddress(None, 5673)),
        ("0.0.0.0:65535", ListenAddress("0.0.0.0", 65535)),
    ],
)
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("localhost", "expected HOST:PORT"),
        ("127.0.0.1:amqp", "port must be a number"),
        ("127.0.0.1:", "port must be a number"),
        ("127.0.0.1:70000", "0-65535"),
        ("::1:5672", r"\[HOST\]:PORT"),
        ("[::1]", r"\[IPV6\]:PORT"),
        ("[::1:5672", r"\[IPV6\]:PORT"),
        ("[]:5672", "empty IPv6 host"),
    ],
)
def test_parse_listen_rejects(text, message):
    with pytest.raises(ValueError, match=message):
        parse_listen(text)


def test_listen_is_repeatable_and_defaults_to_every_interface():
    parser = build_parser()
    args = parser.parse_args(["--listen", "127.0.0.1:0", "--listen", "[::1]:5672"])
    assert args.listen == [ListenAddress("127.0.0.1", 0), ListenAddress("::1", 5672)]
    assert parser.parse_args([]).listen is None  # main() then uses DEFAULT_LISTEN
    assert (ListenAddress(None, 5672),) == DEFAULT_LISTEN


def test_listen_address_str_round_trips():
    for text in ["127.0.0.1:5672", "[::1]:0"]:
        assert str(parse_listen(text)) == text


# --- other options and user errors ---------------------------------------------------------


def test_default_data_dir_follows_xdg(tmp_path):
    assert default_data_dir({"XDG_DATA_HOME": str(tmp_path)}) == tmp_path / "amqpd"
    home_default = Path.home() / ".local" / "share" / "amqpd"
    assert default_data_dir({}) == home_default
    assert default_data_dir({"XDG_DATA_HOME": "relative/dir"}) == home_default


def _usage_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_bad_listen_is_a_clear_usage_error(capsys):
    err = _usage_error(capsys, ["--listen", "nonsense"])
    assert "amqpd: error: argument --listen: bad listen address 'nonsense'" in err


def test_unknown_option_and_bad_log_format(capsys):
    assert "unrecognized arguments: --bogus" in _usage_error(capsys, ["--bogus"])
    assert "invalid choice: 'xml'" in _usage_error(capsys, ["--log-format", "xml"])


def test_missing_config_file(capsys, tmp_path):
    missing = tmp_path / "nope.toml"
    err = _usage_error(capsys, ["--config", str(missing), "--data-dir", str(tmp_path)])
    assert f"amqpd: error: cannot read config file {missing}: No such file" in err


def test_invalid_config_file(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("listen = [\n")
    err = _usage_error(capsys, ["--config", str(bad), "--data-dir", str(tmp_path)])
    assert f"amqpd: error: invalid config file {bad}:" in err


def test_unusable_data_dir(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    err = _usage_error(capsys, ["--data-dir", str(blocker / "sub")])
    assert f"amqpd: error: cannot create data directory {blocker / 'sub'}" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"amqpd {__version__}"


# --- the ready line ------------------------------------------------------------------------


def test_ready_line_parses_in_both_log_formats():
    message = ready_message(["127.0.0.1:40123", "[::1]:40124"])
    assert parse_ready_line(f"2026-01-01T00:00:00Z [info] {message} listeners=[...]") == (
        "127.0.0.1",
        40123,
    )
    as_json = json.dumps({"event": message, "listeners": ["127.0.0.1:40123"], "ready": True})
    assert parse_ready_line(as_json) == ("127.0.0.1", 40123)
    assert parse_ready_line(json.dumps({"event": ready_message(["[::1]:5672"])})) == ("::1", 5672)
    assert parse_ready_line("starting amqpd") is None


# --- the real process ----------------------------------------------------------------------


def test_process_serves_and_exits_0_on_sigterm(tmp_path):
    server = start_amqpd(tmp_path / "data")
    try:
        assert (tmp_path / "data").is_dir()
        params = pika.URLParameters(server.url)
        params.socket_timeout = 10
        conn = pika.BlockingConnection(params)
        conn.channel().queue_declare("cli-test", exclusive=True)
        # SIGTERM with a client connected: it is told why (320) before the socket closes.
        server.terminate()
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
            for _ in range(20):
                conn.process_data_events(time_limit=0.5)
        assert info.value.reply_code == 320
        assert info.value.reply_text == (
            "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
        )
    finally:
        code = server.stop()
    assert code == 0, server.log_tail
    assert "shutting down" in server.log_tail
    assert "Traceback" not in server.log_tail


def test_process_reports_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "amqpd",
                "--listen",
                f"127.0.0.1:{port}",
                "--data-dir",
                tmp_path,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert result.returncode == 1, result.stderr
    assert f"amqpd: error: cannot listen on 127.0.0.1:{port}: Address already in use" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


# --- the pytest plugin ---------------------------------------------------------------------


def _run_pytest(tmp_path: Path, test_source: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_user.py").write_text(textwrap.dedent(test_source))
    environ = {k: v for k, v in os.environ.items() if k != "AMQP_URL"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**environ, **env},
    )


def test_plugin_amqp_url_prefers_the_environment(tmp_path):
    result = _run_pytest(
        tmp_path,
        """
        def test_url(amqp_url, request):
            assert amqp_url == "amqp://guest:guest@example.invalid:5672/%2F"
            # No broker was started for it.
            assert "amqpd_server" not in request.fixturenames
        """,
        AMQP_URL="amqp://guest:guest@example.invalid:5672/%2F",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_plugin_starts_amqpd_for_a_users_test_suite(tmp_path):
    result = _run_pytest(
        tmp_path,
        """
        import socket

        def test_broker(amqp_url, amqpd_server):
            assert amqp_url == amqpd_server.url
            assert amqp_url == f"amqp://guest:guest@127.0.0.1:{amqpd_server.port}/%2F"
            socket.create_connection((amqpd_server.host, amqpd_server.port), timeout=10).close()
        """,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_start_amqpd_reports_a_broker_that_never_got_ready(tmp_path):
    with pytest.raises(RuntimeError, match="did not become ready") as info:
        start_amqpd(tmp_path, extra_args=["--log-format", "xml"])
    assert "invalid choice: 'xml'" in str(info.value)


def test_log_pump_finds_the_ready_line_and_internal_errors(tmp_path):
    from amqpd.pytest_plugin import _LogPump

    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd) as reader:
        pump = _LogPump(reader, tmp_path / "broker.log")
        with os.fdopen(write_fd, "w") as writer:
            writer.write("starting amqpd\n")
            writer.write(ready_message(["127.0.0.1:4000"]) + "\n")
            writer.write("[error] connection crashed; closing it conn=3\nTraceback ...\n")
        assert pump.wait_ready(10) == ("127.0.0.1", 4000)
        pump.join(10)
    assert pump.internal_errors == ["[error] connection crashed; closing it conn=3"]
    assert (tmp_path / "broker.log").read_text().count("\n") == 4


def test_process_applies_the_config_file(tmp_path):
    config = tmp_path / "amqpd.toml"
    config.write_text("[limits]\nheartbeat = 7\nchannel_max = 9\nframe_max = 8192\n")
    server = start_amqpd(tmp_path / "data", extra_args=["--config", str(config)])
    try:
        params = pika.URLParameters(server.url)
        params.socket_timeout = 10
        conn = pika.BlockingConnection(params)
        # pika takes the server's offer when it has no preference of its own.
        assert conn._impl.params.heartbeat == 7
        assert conn._impl.params.channel_max == 9
        assert conn._impl.params.frame_max == 8192
        conn.close()
    finally:
        assert server.stop() == 0, server.log_tail
