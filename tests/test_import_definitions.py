"""``amqpd import-definitions FILE --pid-file P`` against a running amqpd subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from amqpd.broker.passwords import SHA256, hash_password
from amqpd.cli import main
from amqpd.definitions_import import spool_dir
from amqpd.pytest_plugin import start_amqpd

TIMEOUT = 15.0


def _definitions(password_hash: str) -> dict[str, Any]:
    return {
        "rabbit_version": "3.13.7",
        "users": [{"name": "carol", "password_hash": password_hash, "tags": []}],
        "vhosts": [{"name": "imported"}],
        "permissions": [
            {"user": "carol", "vhost": "imported", "configure": ".*", "write": ".*", "read": ".*"}
        ],
        "policies": [
            {
                "vhost": "imported",
                "name": "short",
                "pattern": "^work$",
                "apply-to": "queues",
                "definition": {"max-length": 1},
                "priority": 0,
            }
        ],
        "exchanges": [
            {
                "vhost": "imported",
                "name": "jobs",
                "type": "direct",
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
        ],
        "queues": [
            {
                "vhost": "imported",
                "name": "work",
                "durable": True,
                "auto_delete": False,
                "arguments": {},
            }
        ],
        "bindings": [
            {
                "vhost": "imported",
                "source": "jobs",
                "destination": "work",
                "destination_type": "queue",
                "routing_key": "job",
                "arguments": {},
            }
        ],
        "global_parameters": [{"name": "cluster_name", "value": "rabbit@x"}],
    }


def _connect(port: int, user: str, password: str, vhost: str) -> pika.BlockingConnection:
    params = pika.ConnectionParameters(
        "127.0.0.1", port, vhost, pika.PlainCredentials(user, password), socket_timeout=10
    )
    return pika.BlockingConnection(params)


def _wait_log(server: Any, conn: pika.BlockingConnection, text: str) -> None:
    """Pump ``conn`` (a bounded wait, no sleep) until ``text`` is in the broker's log."""
    deadline = time.monotonic() + TIMEOUT
    while text not in Path(server.log_path).read_text():
        assert time.monotonic() < deadline, f"no {text!r} in the broker log"
        conn.process_data_events(time_limit=0.05)


def _config(*vhosts: str) -> str:
    lines = [f'[users.guest]\npassword_hash = "{hash_password("guest", SHA256).value}"']
    for vhost in ("/", *vhosts):
        lines += [f'[vhosts."{vhost}"]', "[[permissions]]", 'user = "guest"']
        lines += [f'vhost = "{vhost}"', 'configure = ".*"', 'write = ".*"', 'read = ".*"']
    return "\n".join(lines) + "\n"


def test_import_definitions_into_a_running_broker(tmp_path: Path, capsys: Any) -> None:
    config = tmp_path / "amqpd.toml"
    config.write_text(_config())
    pid_file = tmp_path / "amqpd.pid"
    data = tmp_path / "data"
    file = tmp_path / "defs.json"
    file.write_text(json.dumps(_definitions(hash_password("pc", SHA256).value)))
    server = start_amqpd(data, extra_args=["--config", str(config), "--pid-file", str(pid_file)])
    try:
        guest = _connect(server.port, "guest", "guest", "/")
        assert main(["import-definitions", str(file), "--pid-file", str(pid_file)]) == 0
        assert "handed to the broker" in capsys.readouterr().out
        _wait_log(server, guest, "definitions imported")
        log = Path(server.log_path).read_text()
        assert "not imported: global_parameters" in log
        assert not list(spool_dir(pid_file).glob("*.json"))  # the spool file is gone
        conn = _connect(server.port, "carol", "pc", "imported")
        ch = conn.channel()
        ch.confirm_delivery()
        for body in (b"1", b"2"):
            ch.basic_publish("jobs", "job", body, mandatory=True)
        # The imported policy applies to the imported queue: max-length 1.
        assert ch.queue_declare("work", passive=True).method.message_count == 1
        conn.close()
        # A later reload keeps what was imported.
        assert main(["reload", "--pid-file", str(pid_file)]) == 0
        _wait_log(server, guest, "reload done")
        _connect(server.port, "carol", "pc", "imported").close()
        guest.close()
    finally:
        assert server.stop() == 0, server.log_tail
    # The durable exchange, queue and binding reached the data directory.
    config.write_text(_config("imported"))
    server = start_amqpd(data, extra_args=["--config", str(config)])
    try:
        conn = _connect(server.port, "guest", "guest", "imported")
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("jobs", "job", b"after restart", mandatory=True)
        assert ch.queue_declare("work", passive=True).method.message_count == 1
        conn.close()
        # The imported user, vhost, permissions and policy survived the restart too, as in
        # RabbitMQ: the import was kept in the data directory.
        conn = _connect(server.port, "carol", "pc", "imported")
        conn.channel().queue_declare("work", passive=True)
        conn.close()
    finally:
        assert server.stop() == 0, server.log_tail
    assert [p.suffix for p in (data / "imported-definitions").iterdir()] == [".json"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "invalid JSON"),
        ('{"users": [{"name": 1}]}', "users[0].name: must be a string"),
    ],
)
def test_import_definitions_refuses_a_bad_file(
    tmp_path: Path, capsys: Any, content: str, message: str
) -> None:
    file = tmp_path / "defs.json"
    file.write_text(content)
    pid_file = tmp_path / "amqpd.pid"
    pid_file.write_text("1\n")
    with pytest.raises(SystemExit) as info:
        main(["import-definitions", str(file), "--pid-file", str(pid_file)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("amqpd import-definitions: error: ") and message in err
    assert err.count("\n") == 1
    assert not spool_dir(pid_file).exists()


def test_import_definitions_without_a_broker(tmp_path: Path, capsys: Any) -> None:
    file = tmp_path / "defs.json"
    file.write_text("{}")
    pid_file = tmp_path / "amqpd.pid"
    with pytest.raises(SystemExit) as info:
        main(["import-definitions", str(file), "--pid-file", str(pid_file)])
    assert info.value.code == 2
    assert "cannot read pid file" in capsys.readouterr().err


def test_reloader_imports_spooled_files_and_keeps_them(tmp_path: Path) -> None:
    from amqpd.bootstrap import build_broker, reloader
    from amqpd.config import read_config_file
    from amqpd.definitions_import import Spool

    config = tmp_path / "amqpd.toml"
    config.write_text(_config())
    broker = build_broker(read_config_file(config))
    spool = Spool(tmp_path / "spool")
    spool.directory.mkdir()
    good = _definitions(hash_password("pc", SHA256).value)
    bad = {
        "permissions": [
            {"user": "nobody", "vhost": "/", **dict.fromkeys(("configure", "write", "read"), ".*")}
        ]
    }
    (spool.directory / "1.json").write_text(json.dumps(bad))
    (spool.directory / "2.json").write_text(json.dumps(good))
    (spool.directory / "3.json").write_text("{")
    reload = reloader(config, broker, None, spool)
    reload(5.0)
    assert not spool.pending()  # every file taken, usable or not
    assert "carol" in broker.users and "imported" in broker.vhosts
    assert broker.permissions.get("nobody", "/") is None  # the refused file changed nothing
    work = broker.vhosts["imported"].queues["work"]
    assert work.settings.max_length == 1  # the imported policy applies
    reload(6.0)  # a later reload (nothing spooled) keeps the import
    assert "carol" in broker.users and work.settings.max_length == 1


def test_export_definitions_of_a_running_broker(tmp_path: Path, capsys: Any) -> None:
    # `rabbitmqctl export_definitions` for a running amqpd: users with their hashes, vhosts,
    # permissions and the durable topology; transient and exclusive things are not exported.
    pid_file = tmp_path / "amqpd.pid"
    server = start_amqpd(tmp_path / "data", extra_args=["--pid-file", str(pid_file)])
    try:
        conn = _connect(server.port, "guest", "guest", "/")
        ch = conn.channel()
        ch.exchange_declare("orders", "topic", durable=True, arguments={"alternate-exchange": "ae"})
        ch.exchange_declare("scratch", "fanout", durable=False)
        ch.queue_declare("orders.q", durable=True, arguments={"x-max-length": 10})
        ch.queue_declare("transient.q", durable=False)
        ch.queue_declare("", exclusive=True)
        ch.queue_bind("orders.q", "orders", "eu.#")
        ch.queue_bind("orders.q", "amq.direct", "direct-key")
        ch.queue_bind("transient.q", "orders", "us.#")  # a transient end: not exported
        ch.exchange_bind("orders", "amq.topic", "all.#")
        capsys.readouterr()
        assert main(["export-definitions", "--pid-file", str(pid_file)]) == 0
        doc = json.loads(capsys.readouterr().out)
        conn.close()
    finally:
        assert server.stop() == 0, server.log_tail
    assert [u["name"] for u in doc["users"]] == ["guest"]
    assert doc["users"][0]["hashing_algorithm"] == SHA256 and doc["users"][0]["password_hash"]
    assert doc["vhosts"] == [{"name": "/"}]
    assert doc["permissions"] == [
        {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
    ]
    assert doc["exchanges"] == [
        {
            "name": "orders",
            "vhost": "/",
            "type": "topic",
            "durable": True,
            "auto_delete": False,
            "internal": False,
            "arguments": {"alternate-exchange": "ae"},
        }
    ]
    assert doc["queues"] == [
        {
            "name": "orders.q",
            "vhost": "/",
            "durable": True,
            "auto_delete": False,
            "arguments": {"x-max-length": 10},
        }
    ]
    key = {
        (b["source"], b["destination"], b["destination_type"], b["routing_key"])
        for b in doc["bindings"]
    }
    assert key == {
        ("orders", "orders.q", "queue", "eu.#"),
        ("amq.direct", "orders.q", "queue", "direct-key"),
        ("amq.topic", "orders", "exchange", "all.#"),
    }
    # What amqpd exports, amqpd imports.
    exported = tmp_path / "exported.json"
    exported.write_text(json.dumps(doc))
    from amqpd.definitions_io import read_definitions

    imported = read_definitions(exported)
    assert not imported.unsupported


def test_export_definitions_without_a_running_broker(tmp_path: Path, capsys: Any) -> None:
    pid_file = tmp_path / "gone.pid"
    pid_file.write_text("999999\n")
    with pytest.raises(SystemExit) as info:
        main(["export-definitions", "--pid-file", str(pid_file)])
    assert info.value.code == 1
    assert "no broker running (pid 999999)" in capsys.readouterr().err


def test_a_spool_left_by_an_earlier_run_is_cleared_at_start(tmp_path: Path) -> None:
    # A file spooled for a broker that crashed before its SIGHUP (and a half-written
    # temporary) must not be imported by the next run's first reload.
    config = tmp_path / "amqpd.toml"
    config.write_text(_config())
    pid_file = tmp_path / "amqpd.pid"
    spool = spool_dir(pid_file)
    spool.mkdir()
    (spool / "00000000000000000001-1.json").write_text(
        json.dumps(_definitions(hash_password("pc", SHA256).value))
    )
    (spool / ".00000000000000000002-1.tmp").write_text("{")
    server = start_amqpd(
        tmp_path / "data", extra_args=["--config", str(config), "--pid-file", str(pid_file)]
    )
    try:
        guest = _connect(server.port, "guest", "guest", "/")
        log = Path(server.log_path).read_text()
        assert log.count("discarded a definitions import left in the spool") == 2
        assert list(spool.iterdir()) == []
        assert main(["reload", "--pid-file", str(pid_file)]) == 0
        _wait_log(server, guest, "reload done")
        assert "definitions imported" not in Path(server.log_path).read_text()
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            _connect(server.port, "carol", "pc", "imported")
        guest.close()
    finally:
        assert server.stop() == 0, server.log_tail
    assert not (tmp_path / "data" / "imported-definitions").exists()


def test_spool_clear_removes_every_leftover(tmp_path: Path) -> None:
    from amqpd.definitions_import import Spool

    assert Spool(tmp_path / "missing").clear() == []
    spool = Spool(tmp_path / "spool")
    spool.directory.mkdir()
    (spool.directory / "b.json").write_text("{}")
    (spool.directory / ".a.tmp").write_text("{")
    assert spool.clear() == [".a.tmp", "b.json"]
    assert spool.pending() == [] and list(spool.directory.iterdir()) == []


def test_export_leftovers_are_removed_at_start(tmp_path: Path) -> None:
    from amqpd.broker.broker import Broker
    from amqpd.definitions_export import Exporter

    assert Exporter(tmp_path / "missing", Broker()).clear() == []
    exporter = Exporter(tmp_path / "export", Broker())
    exporter.directory.mkdir()
    for name in ("1.request", "2.json", "3.tmp"):
        (exporter.directory / name).write_text("{}")
    assert exporter.clear() == ["1.request", "2.json", "3.tmp"]
    assert list(exporter.directory.iterdir()) == []


@pytest.mark.parametrize("running", [False, True])
def test_export_definitions_into_a_closed_pipe_exits_quietly(tmp_path: Path, running: bool) -> None:
    # `amqpd export-definitions ... | head -1`: the reader is gone before (or while) the
    # output is written. No traceback, no "Exception ignored"; exit 141 as a tool killed
    # by SIGPIPE. The read end is closed before the child writes anything, so every
    # write fails with EPIPE, whatever the output's size.
    pid_file = tmp_path / "amqpd.pid"
    server = (
        start_amqpd(tmp_path / "data", extra_args=["--pid-file", str(pid_file)])
        if running
        else None
    )
    args = ["--pid-file", str(pid_file)] if running else []
    try:
        read_end, write_end = os.pipe()
        os.close(read_end)
        child = subprocess.run(
            [sys.executable, "-m", "amqpd", "export-definitions", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
        os.close(write_end)
    finally:
        if server is not None:
            assert server.stop() == 0, server.log_tail
    assert (child.returncode, child.stderr) == (141, "")


def _other_file_system(tmp_path: Path) -> Path | None:
    """A directory on another file system than ``tmp_path`` (/dev/shm), if there is one."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        return None
    return shm


def test_settle_copies_across_file_systems_and_always_empties_the_spool(tmp_path: Path) -> None:
    import shutil
    import uuid

    from amqpd.definitions_import import Spool

    other = _other_file_system(tmp_path)
    if other is None:
        pytest.skip("no second file system (/dev/shm) to put the spool on")
    spool = Spool(other / f"amqpd-test-spool-{uuid.uuid4().hex}")
    try:
        spool.directory.mkdir()
        file = spool.directory / "1.json"
        file.write_text('{"vhosts": [{"name": "v"}]}')
        keep = tmp_path / "data" / "imported-definitions"
        assert spool.settle(file, keep) is None  # rename fails with EXDEV: copied
        assert (keep / "1.json").read_text() == '{"vhosts": [{"name": "v"}]}'
        assert list(spool.directory.iterdir()) == [] and [p.name for p in keep.iterdir()] == [
            "1.json"
        ]
        # Keeping fails (the place is a file): reported, and the spool is emptied anyway.
        file.write_text("{}")
        blocked = tmp_path / "blocked"
        blocked.write_text("")
        problem = spool.settle(file, blocked)
        assert problem is not None and "cannot keep it in" in problem
        assert spool.pending() == []
    finally:
        shutil.rmtree(spool.directory, ignore_errors=True)
