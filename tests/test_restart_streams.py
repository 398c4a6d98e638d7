"""Stream queues on disk through the real CLI: publish with confirms, stop (cleanly or
SIGKILL), start on the same data directory, replay with ``x-stream-offset: first``: every
confirmed message comes back at the same offset, retention state included.

No sleeps: the kill is triggered by an event the publisher sets after N confirms; reading
stops at a sentinel published after the restart.
"""

from __future__ import annotations

import itertools
import signal
import threading
from pathlib import Path

import pika
import pika.exceptions

from amqpd.pytest_plugin import AmqpdServer, start_amqpd

STREAM_ARGS = {
    "x-queue-type": "stream",
    # Small segments: many segment files, tracking chunks between them, and retention.
    "x-stream-max-segment-size-bytes": 2000,
    "x-max-length-bytes": 20000,
}
SENTINEL = b"sentinel"
_sentinels = itertools.count()


def _channel(server: AmqpdServer) -> tuple[pika.BlockingConnection, object]:
    conn = pika.BlockingConnection(pika.URLParameters(server.url))
    return conn, conn.channel()


def _replay(server: AmqpdServer, queue: str) -> list[tuple[int, bytes]]:
    """(offset, body) of every message from the first retained one, up to the sentinel
    (published here first, so the read has an end), which is left out."""
    conn, ch = _channel(server)
    ch.confirm_delivery()  # type: ignore[attr-defined]
    sentinel = SENTINEL + b"%d" % next(_sentinels)
    ch.basic_publish("", queue, sentinel)  # type: ignore[attr-defined]
    ch.basic_qos(prefetch_count=100)  # type: ignore[attr-defined]
    out: list[tuple[int, bytes]] = []
    done: list[bool] = []

    def on_message(channel: object, method: object, props: object, body: bytes) -> None:
        channel.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]
        if body == sentinel:
            done.append(True)
        elif not done:
            out.append((props.headers["x-stream-offset"], body))  # type: ignore[attr-defined]

    ch.basic_consume(queue, on_message, arguments={"x-stream-offset": "first"})  # type: ignore[attr-defined]
    while not done:
        conn.process_data_events(time_limit=None)
    conn.close()
    return out


def _stream_dirs(data_dir: Path) -> list[str]:
    root = data_dir / "streams"
    return sorted(q.name for v in root.iterdir() for q in v.iterdir()) if root.is_dir() else []


def test_clean_restart_keeps_a_stream_with_its_offsets_and_retention(
    data_dir: Path, servers: list[AmqpdServer]
) -> None:
    server = start_amqpd(data_dir)
    servers.append(server)
    conn, ch = _channel(server)
    ch.queue_declare("s", durable=True, arguments=STREAM_ARGS)  # type: ignore[attr-defined]
    ch.queue_declare("gone", durable=True, arguments={"x-queue-type": "stream"})  # type: ignore[attr-defined]
    ch.confirm_delivery()  # type: ignore[attr-defined]
    for i in range(300):
        ch.basic_publish("", "s", b"message %d " % i + b"x" * 100)  # type: ignore[attr-defined]
    ch.basic_publish("", "gone", b"doomed")  # type: ignore[attr-defined]
    conn.close()
    before = _replay(server, "s")
    assert before[0][0] > 0  # retention dropped the oldest segments
    assert [b for _, b in before][-1].startswith(b"message 299 ")
    assert _stream_dirs(data_dir) == ["gone", "s"]
    conn, ch = _channel(server)
    ch.queue_delete("gone")  # type: ignore[attr-defined]
    count = ch.queue_declare("s", passive=True).method.message_count  # type: ignore[attr-defined]
    conn.close()
    assert _stream_dirs(data_dir) == ["s"]  # a deleted stream's directory goes
    assert server.stop() == 0

    server = start_amqpd(data_dir)
    servers.append(server)
    conn, ch = _channel(server)
    # The same retained offsets (tracking chunks included in the count), so the same
    # retention state.
    assert ch.queue_declare("s", passive=True).method.message_count == count  # type: ignore[attr-defined]
    conn.close()
    after = _replay(server, "s")
    # The same messages at the same offsets (the first replay's sentinel included now);
    # the second sentinel may have filled a segment and made retention drop the oldest.
    start = after[0][0]
    assert start >= before[0][0]
    kept = [item for item in before if item[0] >= start]
    assert after[: len(kept)] == kept
    assert [b[: len(SENTINEL)] for _, b in after[len(kept) :]] == [SENTINEL]
    assert server.stop() == 0


def _publisher(
    server: AmqpdServer, confirmed: list[bytes], reached: threading.Event, *, threshold: int
) -> None:
    try:
        _conn, ch = _channel(server)
        ch.confirm_delivery()  # type: ignore[attr-defined]
        for i in range(100000):
            body = b"%d" % i
            ch.basic_publish("", "s", body)  # type: ignore[attr-defined]
            confirmed.append(body)  # basic_publish returned: the broker confirmed it
            if len(confirmed) == threshold:
                reached.set()
    except (pika.exceptions.AMQPError, OSError):
        pass  # the broker was killed under us
    finally:
        reached.set()


def test_sigkill_while_publishing_to_a_stream_loses_no_confirmed_message(
    data_dir: Path, servers: list[AmqpdServer]
) -> None:
    server = start_amqpd(data_dir)
    servers.append(server)
    conn, ch = _channel(server)
    ch.queue_declare(  # type: ignore[attr-defined]
        "s",
        durable=True,
        arguments={"x-queue-type": "stream", "x-stream-max-segment-size-bytes": 5000},
    )
    conn.close()
    confirmed: list[bytes] = []
    reached = threading.Event()
    publisher = threading.Thread(
        target=_publisher, args=(server, confirmed, reached), kwargs={"threshold": 500}
    )
    publisher.start()
    assert reached.wait(60)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    publisher.join(30)
    assert len(confirmed) >= 500

    server = start_amqpd(data_dir)
    servers.append(server)
    recovered = _replay(server, "s")
    bodies = [b for _, b in recovered]
    # Every confirmed message, in order; perhaps one more (written, its confirm cut off).
    assert bodies[: len(confirmed)] == confirmed
    assert len(bodies) - len(confirmed) <= 1
    offsets = [o for o, _ in recovered]
    assert offsets == sorted(set(offsets)) and offsets[0] == 0
    assert server.stop() == 0


def test_a_torn_stream_tail_is_cut_and_reported(data_dir: Path, servers: list[AmqpdServer]) -> None:
    server = start_amqpd(data_dir)
    servers.append(server)
    conn, ch = _channel(server)
    ch.queue_declare("s", durable=True, arguments={"x-queue-type": "stream"})  # type: ignore[attr-defined]
    ch.confirm_delivery()  # type: ignore[attr-defined]
    for i in range(10):
        ch.basic_publish("", "s", b"%d" % i)  # type: ignore[attr-defined]
    conn.close()
    assert server.stop() == 0
    (segment,) = (data_dir / "streams" / "%2F" / "s").glob("*.seg")
    segment.write_bytes(segment.read_bytes()[:-3])  # the last chunk's write cut short

    server = start_amqpd(data_dir)
    servers.append(server)
    assert "recovered stream after cutting off a damaged tail" in server.log_path.read_text()
    assert [b for _, b in _replay(server, "s")] == [b"%d" % i for i in range(9)]
    assert server.stop() == 0


def _policy_config(path: Path, definition: str | None) -> Path:
    lines = []
    if definition is not None:
        lines += ["[[policies]]", 'name = "retention"', 'pattern = "^s$"']
        lines += ['apply_to = "queues"', f"definition = {{ {definition} }}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_stream_keeps_the_segment_size_a_policy_gave_it_across_a_restart(
    data_dir: Path, servers: list[AmqpdServer], tmp_path: Path
) -> None:
    # Declared under a 1000-byte segment policy: 600-byte bodies fill a segment every two
    # messages, and each later segment starts with a tracking chunk (offsets 2, 5, ...).
    config = _policy_config(tmp_path / "amqpd.toml", '"stream-max-segment-size-bytes" = 1000')
    server = start_amqpd(data_dir, extra_args=["--config", str(config)])
    servers.append(server)
    conn, ch = _channel(server)
    ch.queue_declare("s", durable=True, arguments={"x-queue-type": "stream"})  # type: ignore[attr-defined]
    ch.confirm_delivery()  # type: ignore[attr-defined]
    for i in range(3):
        ch.basic_publish("", "s", b"%d" % i + b"x" * 599)  # type: ignore[attr-defined]
    conn.close()
    assert server.stop() == 0
    assert (data_dir / "streams" / "%2F" / "s" / "segment-size").read_text() == "1000"
    # Restarted without the policy: the stream still rolls at 1000 bytes (RabbitMQ keeps
    # a stream's segment size), while a new policy's byte limit applies to it.
    _policy_config(config, '"max-length-bytes" = 100000')
    server = start_amqpd(data_dir, extra_args=["--config", str(config)])
    servers.append(server)
    conn, ch = _channel(server)
    ch.confirm_delivery()  # type: ignore[attr-defined]
    for i in range(3, 5):
        ch.basic_publish("", "s", b"%d" % i + b"x" * 599)  # type: ignore[attr-defined]
    conn.close()
    replayed = _replay(server, "s")
    assert [offset for offset, _ in replayed] == [0, 1, 3, 4, 6]
