"""server/storage.py and the delayed schedules' bucket files: ``<data-dir>/delay-buckets``
is emptied at start, attached before recovery, used, and emptied again at close."""

from __future__ import annotations

from pathlib import Path

from amqpd.broker.broker import Broker
from amqpd.broker.message import Message
from amqpd.protocol.properties import BasicProperties
from amqpd.server.storage import DELAY_BUCKETS_DIR, open_storage
from amqpd.storage.delaybuckets import bucket_name


def test_open_storage_empties_the_bucket_directory_and_attaches_it(tmp_path: Path) -> None:
    stale = tmp_path / DELAY_BUCKETS_DIR
    stale.mkdir()
    (stale / bucket_name(3)).write_bytes(b"a previous run's")
    broker = Broker()
    durable = open_storage(tmp_path, broker)
    try:
        assert list(stale.iterdir()) == []
        assert broker.delay_buckets is not None
        vh = broker.vhosts["/"]
        args = {"x-delayed-type": "direct"}
        vh.declare_exchange("dx", "x-delayed-message", durable=True, arguments=args)
        raw = BasicProperties(headers={"x-delay": 3_600_000}).encode()
        for _ in range(3000):
            vh.route_message("dx", Message("dx", "rk", raw, b"x" * 10), 0.0)
        durable.commit()
        vh.tick(0.0)
        assert any(stale.iterdir()) and vh.delayed.in_memory == 0
    finally:
        durable.close()
        if broker.delay_buckets is not None:
            broker.delay_buckets.close()
    assert list(stale.iterdir()) == []
