"""Durability through the real CLI: publish with confirms, stop (cleanly or SIGKILL), start
again on the same data directory, and check every confirmed message is there exactly once,
in order, redelivered where it had been delivered.

No sleeps: the kill is triggered by an event the publisher sets after N confirms.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pika
import pika.exceptions
import pytest

from amqpd.pytest_plugin import AmqpdServer, start_amqpd
from amqpd.storage.segment import SUFFIX

PERSISTENT = pika.BasicProperties(delivery_mode=2)


def _channel(server: AmqpdServer) -> tuple[pika.BlockingConnection, object]:
    conn = pika.BlockingConnection(pika.URLParameters(server.url))
    return conn, conn.channel()


def _drain(server: AmqpdServer, queue: str) -> list[tuple[int, bool]]:
    """Every message in ``queue`` as (number, redelivered), acked."""
    conn, ch = _channel(server)
    out = []
    while True:
        method, _props, body = ch.basic_get(queue)  # type: ignore[attr-defined]
        if method is None:
            break
        out.append((int(body), method.redelivered))
        ch.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]
    conn.close()
    return out


def test_clean_restart_keeps_durable_state_and_redelivers_unacked(
    data_dir: Path, servers: list[AmqpdServer]
) -> None:
    server = start_amqpd(data_dir)
    servers.append(server)
    conn, ch = _channel(server)
    ch.exchange_declare("dx", "topic", durable=True)  # type: ignore[attr-defined]
    ch.queue_declare("dq", durable=True)  # type: ignore[attr-defined]
    ch.queue_declare("tq", durable=False)  # type: ignore[attr-defined]
    ch.queue_bind("dq", "dx", "k.#")  # type: ignore[attr-defined]
    ch.queue_bind("tq", "dx", "k.#")  # type: ignore[attr-defined]
    ch.confirm_delivery()  # type: ignore[attr-defined]
    for i in range(100):
        ch.basic_publish("dx", "k.a", b"%d" % i, PERSISTENT)  # type: ignore[attr-defined]
    ch.basic_publish("dx", "k.a", b"999", pika.BasicProperties(delivery_mode=1))  # type: ignore[attr-defined]
    # Take ten: ack the first five, leave five unacked while the broker stops.
    got = [ch.basic_get("dq") for _ in range(10)]  # type: ignore[attr-defined]
    for method, _props, _body in got[:5]:
        ch.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]
    assert server.stop() == 0
    assert "data directory closed" in server.log_path.read_text()

    server = start_amqpd(data_dir)
    servers.append(server)
    log_text = server.log_path.read_text()
    assert "recovered data directory" in log_text and "clean_shutdown=True" in log_text
    conn, ch = _channel(server)
    ch.queue_declare("dq", durable=True, passive=True)  # type: ignore[attr-defined]
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        ch.queue_declare("tq", passive=True)  # type: ignore[attr-defined]
    conn.close()
    assert _drain(server, "dq") == [(i, 5 <= i < 10) for i in range(5, 100)]
    # The binding came back with the exchange: routing still works.
    conn, ch = _channel(server)
    ch.basic_publish("dx", "k.b", b"1000", PERSISTENT)  # type: ignore[attr-defined]
    conn.close()
    assert _drain(server, "dq") == [(1000, False)]
    assert server.stop() == 0


def _publisher(
    server: AmqpdServer, confirmed: list[int], reached: threading.Event, *, threshold: int
) -> None:
    try:
        _conn, ch = _channel(server)
        ch.confirm_delivery()  # type: ignore[attr-defined]
        for i in range(100000):
            ch.basic_publish("", "q", b"%d" % i, PERSISTENT)  # type: ignore[attr-defined]
            confirmed.append(i)  # basic_publish returned: the broker confirmed it
            if len(confirmed) == threshold:
                reached.set()
    except (pika.exceptions.AMQPError, OSError):
        pass  # the broker was killed under us
    finally:
        reached.set()


def _acker(
    server: AmqpdServer,
    acked: list[int],
    *,
    keep_every: int,
    prefetch: int,
    reached: threading.Event | None = None,
    threshold: int = 0,
) -> None:
    # Acks all but every ``keep_every``-th message: those stay unacked (delivered, in doubt
    # at the kill) and, once the prefetch window is full of them, the backlog grows.
    try:
        _conn, ch = _channel(server)
        ch.basic_qos(prefetch_count=prefetch)  # type: ignore[attr-defined]
        for method, _props, body in ch.consume("q"):  # type: ignore[attr-defined]
            if int(body) % keep_every:
                ch.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]
                acked.append(int(body))
                if reached is not None and len(acked) == threshold:
                    reached.set()
    except (pika.exceptions.AMQPError, OSError):
        pass
    finally:
        if reached is not None:
            reached.set()


@pytest.mark.parametrize(
    ("trigger", "threshold"), [("publish", 150), ("publish", 400), ("ack", 300)]
)
def test_sigkill_while_publishing_and_acking_loses_no_confirmed_message(
    data_dir: Path, servers: list[AmqpdServer], trigger: str, threshold: int
) -> None:
    """Killed once the publisher has ``threshold`` confirms, or the consumer has sent
    ``threshold`` acks: both are still running at that moment."""
    server = start_amqpd(data_dir)
    servers.append(server)
    conn, ch = _channel(server)
    ch.queue_declare("q", durable=True)  # type: ignore[attr-defined]
    conn.close()
    confirmed: list[int] = []
    acked: list[int] = []
    reached = threading.Event()
    publisher = threading.Thread(
        target=_publisher,
        args=(server, confirmed, reached if trigger == "publish" else threading.Event()),
        kwargs={"threshold": threshold},
    )
    acker = threading.Thread(
        target=_acker,
        args=(server, acked),
        kwargs=(
            {"keep_every": 2, "prefetch": 40}
            if trigger == "publish"
            else {"keep_every": 10, "prefetch": 500, "reached": reached, "threshold": threshold}
        ),
    )
    publisher.start()
    acker.start()
    assert reached.wait(60)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    publisher.join(30)
    acker.join(30)
    assert len(confirmed if trigger == "publish" else acked) >= threshold

    server = start_amqpd(data_dir)
    servers.append(server)
    assert "clean_shutdown=False" in server.log_path.read_text()
    recovered = _drain(server, "q")
    numbers = [n for n, _ in recovered]
    assert numbers == sorted(set(numbers))  # in order, each once
    missing = set(confirmed) - set(acked) - set(numbers)
    assert not missing, f"confirmed, never acked, and lost: {sorted(missing)[:20]}"
    assert all(n <= max(confirmed, default=-1) + 1 for n in numbers)  # nothing invented
    assert all(redelivered for _, redelivered in recovered)  # after a crash: in doubt
    assert len(set(confirmed) - set(acked)) >= 10  # there was a backlog to recover
    assert server.stop() == 0


def test_a_damaged_tail_is_cut_and_reported(data_dir: Path, servers: list[AmqpdServer]) -> None:
    server = start_amqpd(data_dir)
    servers.append(server)
    conn, ch = _channel(server)
    ch.queue_declare("q", durable=True)  # type: ignore[attr-defined]
    ch.confirm_delivery()  # type: ignore[attr-defined]
    for i in range(10):
        ch.basic_publish("", "q", b"%d" % i, PERSISTENT)  # type: ignore[attr-defined]
    conn.close()
    assert server.stop() == 0
    last = sorted((data_dir / "log").glob("*" + SUFFIX))[-1]
    with last.open("ab") as f:
        f.write(b"\x40\x00\x00\x00garbage: a record cut short by a crash")
    server = start_amqpd(data_dir)
    servers.append(server)
    text = server.log_path.read_text()
    assert "damaged tail" in text and "torn" in text
    assert [n for n, _ in _drain(server, "q")] == list(range(10))
    assert server.stop() == 0


def test_second_broker_on_the_same_data_dir_is_refused(
    data_dir: Path, servers: list[AmqpdServer]
) -> None:
    import subprocess
    import sys

    server = start_amqpd(data_dir)
    servers.append(server)
    result = subprocess.run(
        [sys.executable, "-m", "amqpd", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"amqpd: error: data directory {data_dir} is in use by another amqpd "
        f"(pid {server.process.pid})"
    ]
    assert server.stop() == 0


def test_sigkill_keeps_confirmed_delayed_messages_of_a_durable_delayed_exchange(
    data_dir: Path, servers: list[AmqpdServer]
) -> None:
    # Beyond the delayed-message plugin: a durable x-delayed-message exchange keeps its
    # pending messages on disk, and their confirms wait for the fsync. After a SIGKILL each
    # comes back once, due at the same wall-clock time (overdue ones at once).
    server = start_amqpd(data_dir)
    servers.append(server)
    conn, ch = _channel(server)
    ch.exchange_declare(  # type: ignore[attr-defined]
        "dx", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"}
    )
    ch.queue_declare("dq", durable=True)  # type: ignore[attr-defined]
    ch.queue_bind("dq", "dx", "rk")  # type: ignore[attr-defined]
    ch.confirm_delivery()  # type: ignore[attr-defined]
    for i, delay in enumerate((300, 600, 900)):
        props = pika.BasicProperties(delivery_mode=2, headers={"x-delay": delay})
        ch.basic_publish("dx", "rk", b"%d" % i, props)  # type: ignore[attr-defined]
    # All three confirmed; the first two may already have been routed to dq before the kill.
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()

    server = start_amqpd(data_dir)
    servers.append(server)
    conn, ch = _channel(server)
    got: list[int] = []
    deadline = time.monotonic() + 30
    while len(got) < 3 and time.monotonic() < deadline:
        method, _props, body = ch.basic_get("dq", auto_ack=True)  # type: ignore[attr-defined]
        if method is None:
            conn.process_data_events(0.05)  # a bounded wait for the timer, not a sleep
            continue
        got.append(int(body))
    assert sorted(got) == [0, 1, 2]  # each once, none lost
    method, _props, _body = ch.basic_get("dq")  # type: ignore[attr-defined]
    assert method is None
    conn.close()
    assert server.stop() == 0


def test_a_backlog_beyond_the_memory_budget_is_paged_and_survives_a_restart(
    tmp_path: Path, data_dir: Path, servers: list[AmqpdServer]
) -> None:
    # A budget of 0: every ready body is paged out, persistent ones to the log, transient
    # ones to the spill files; deliveries and basic.get read them back.
    config = tmp_path / "amqpd.toml"
    config.write_text("[storage]\nmemory_budget = 0\n")
    server = start_amqpd(data_dir, extra_args=["--config", str(config)])
    servers.append(server)
    conn, ch = _channel(server)
    ch.queue_declare("dq", durable=True)  # type: ignore[attr-defined]
    ch.queue_declare("tq", durable=False)  # type: ignore[attr-defined]
    ch.confirm_delivery()  # type: ignore[attr-defined]
    for i in range(300):
        ch.basic_publish("", "dq", b"%d" % i + b"." * 1000, PERSISTENT)  # type: ignore[attr-defined]
        ch.basic_publish("", "tq", b"%d" % i + b"-" * 1000)  # type: ignore[attr-defined]
    assert any((data_dir / "spill").iterdir())
    got = []
    for method, _props, body in ch.consume("tq", inactivity_timeout=10):  # type: ignore[attr-defined]
        assert body is not None, "no delivery within 10 s"
        got.append(body)
        ch.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]
        if len(got) == 300:
            break
    assert got == [b"%d" % i + b"-" * 1000 for i in range(300)]
    conn.close()
    assert server.stop() == 0
    assert not any((data_dir / "spill").iterdir())  # transient bodies do not outlive us

    server = start_amqpd(data_dir, extra_args=["--config", str(config)])
    servers.append(server)
    conn, ch = _channel(server)
    bodies = []
    while True:
        method, _props, body = ch.basic_get("dq")  # type: ignore[attr-defined]
        if method is None:
            break
        bodies.append(body)
        ch.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]
    conn.close()
    assert bodies == [b"%d" % i + b"." * 1000 for i in range(300)]
    assert server.stop() == 0


def test_a_new_data_directory_is_logged_as_empty_not_as_a_crash(
    data_dir: Path, servers: list[AmqpdServer]
) -> None:
    server = start_amqpd(data_dir)
    servers.append(server)
    conn, ch = _channel(server)
    ch.queue_declare("q", durable=True)  # type: ignore[attr-defined]
    ch.confirm_delivery()  # type: ignore[attr-defined]
    ch.basic_publish("", "q", b"1", PERSISTENT)  # type: ignore[attr-defined]
    conn.close()
    first = server.log_path.read_text()
    assert "recovered data directory: empty" in first and "empty=True" in first
    assert "clean_shutdown" not in first
    assert server.stop() == 0
    server = start_amqpd(data_dir)
    servers.append(server)
    assert "clean_shutdown=True" in server.log_path.read_text()
    assert _drain(server, "q") == [(1, False)]  # nothing marked redelivered
