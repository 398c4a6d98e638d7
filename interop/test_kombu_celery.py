"""Celery over kombu/py-amqp: an in-process worker runs tasks and returns results through the
rpc:// result backend (per-client reply queue, results published to the default exchange).

Skipped when celery is not installed (it is in the project's test extras)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

celery = pytest.importorskip("celery")
from celery.contrib.testing.worker import start_worker  # noqa: E402


def test_kombu_celery_worker_rpc_backend(amqp_url: str, names: Any) -> None:
    tag = uuid.uuid4().hex[:10]
    queue = names.queue("celery")
    names.exchanges.append(queue)  # celery declares a direct exchange named like the queue
    app = celery.Celery(f"interop-{tag}", broker=amqp_url, backend="rpc://")
    app.conf.update(
        task_always_eager=False,
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_routing_key=queue,
        worker_enable_remote_control=False,  # no pidbox fanout exchange/queue
        worker_send_task_events=False,
        broker_connection_retry_on_startup=False,
        broker_connection_timeout=5,
        # The worker's event loop only wakes up for timers; with heartbeats off, stopping the
        # worker waits for a long poll (~10 s).  A 2 s heartbeat makes shutdown take < 1 s.
        broker_heartbeat=2,
        result_expires=60,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
    )

    @app.task(name=f"interop.add.{tag}")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name=f"interop.fail.{tag}")
    def fail() -> None:
        raise KeyError("boom")

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        r = add.delay(2, 3)
        assert r.get(timeout=10) == 5
        results = [add.apply_async((i, i)) for i in range(5)]
        assert [res.get(timeout=10) for res in results] == [2 * i for i in range(5)]
        bad = fail.delay()
        with pytest.raises(KeyError):
            bad.get(timeout=10)
        assert bad.state == "FAILURE"
