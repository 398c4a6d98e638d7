"""Policies as a client sees them, with pika; the same tests pass on RabbitMQ.

A policy is set where each broker takes it from: against RabbitMQ (``AMQP_URL``) with
``rabbitmqctl set_policy`` through ``RABBITMQ_CTL`` (skipped without it); against amqpd in
the config file of an amqpd of its own (``configured_amqpd``), rewritten and re-read with
SIGHUP, as an operator would. Policy and queue names carry a random run id; every policy
is cleared at the end. Each rule was observed on RabbitMQ 3.10.8 first
(rabbit_amqqueue_process:process_args_policy/1, rabbit_policy:get_arg/3).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from access_env import AccessSpec, run_id, to_toml
from helpers import wait_for

RID = run_id()

#: guest with full access to "/", as on a default RabbitMQ.
_BASE_CONFIG = to_toml(AccessSpec(users=(), vhosts={}, permissions=()))


class Policies:
    """Set and clear policies on the broker under test; ``url`` is where to connect."""

    def __init__(self, url: str, ctl: list[str] | None = None, server: Any = None) -> None:
        self.url = url
        self._ctl = ctl
        self._server = server
        self._policies: dict[str, dict[str, Any]] = {}
        # amqpd: a connection to pump while waiting for the reload (no sleeps).
        self._pump = pika.BlockingConnection(pika.URLParameters(url)) if ctl is None else None

    def name(self, suffix: str) -> str:
        return f"pol-{RID}-{suffix}"

    def set(
        self,
        suffix: str,
        pattern: str,
        definition: dict[str, Any],
        *,
        priority: int = 0,
        apply_to: str = "queues",
    ) -> None:
        name = self.name(suffix)
        entry = {"pattern": pattern, "definition": definition}
        self._policies[name] = {**entry, "priority": priority, "apply_to": apply_to}
        if self._ctl is not None:
            self._run(
                "set_policy", "-p", "/", "--priority", str(priority), "--apply-to", apply_to,
                name, pattern, json.dumps(definition),
            )  # fmt: skip
        else:
            self._reload()

    def clear(self, suffix: str) -> None:
        name = self.name(suffix)
        if self._policies.pop(name, None) is None:
            return
        if self._ctl is not None:
            self._run("clear_policy", "-p", "/", name)
        else:
            self._reload()

    def clear_all(self) -> None:
        for name in list(self._policies):
            self.clear(name.removeprefix(f"pol-{RID}-"))

    def _run(self, *args: str) -> None:
        assert self._ctl is not None
        result = subprocess.run(
            [*self._ctl, *args], capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")

    def _reload(self) -> None:
        server = self._server
        config = Path(server.data_dir).parent / "amqpd.toml"
        lines = [_BASE_CONFIG]
        for name, p in self._policies.items():
            lines += ["[[policies]]", f"name = {json.dumps(name)}", 'vhost = "/"']
            lines += [f"pattern = {json.dumps(p['pattern'])}", f"priority = {p['priority']}"]
            lines += [f"apply_to = {json.dumps(p['apply_to'])}"]
            items = ", ".join(
                f"{json.dumps(k)} = {json.dumps(v)}" for k, v in p["definition"].items()
            )
            lines += [f"definition = {{ {items} }}", ""]
        config.write_text("\n".join(lines))
        log = Path(server.log_path)
        before = log.read_text().count("reload done")
        os.kill(server.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 15
        assert self._pump is not None
        while log.read_text().count("reload done") == before:
            assert time.monotonic() < deadline, "amqpd did not reload"
            self._pump.process_data_events(time_limit=0.02)

    def close(self) -> None:
        if self._pump is not None and self._pump.is_open:
            self._pump.close()


@pytest.fixture(scope="module")
def policies(request: pytest.FixtureRequest) -> Iterator[Policies]:
    amqp_url = os.environ.get("AMQP_URL")
    if amqp_url:
        command = os.environ.get("RABBITMQ_CTL")
        if not command:
            pytest.skip("AMQP_URL points at another broker and RABBITMQ_CTL is not set")
        controller = Policies(amqp_url, ctl=shlex.split(command))
    else:
        server = request.getfixturevalue("configured_amqpd")(_BASE_CONFIG)
        controller = Policies(server.url, server=server)
    yield controller
    controller.clear_all()
    controller.close()


@pytest.fixture
def pconn(policies: Policies) -> Iterator[pika.BlockingConnection]:
    conn = pika.BlockingConnection(pika.URLParameters(policies.url))
    yield conn
    if conn.is_open:
        conn.close()


@pytest.fixture
def qname(policies: Policies, pconn: pika.BlockingConnection) -> Iterator[Any]:
    """``qname(suffix)``: a queue/exchange name under this run's id; deleted at the end."""
    made: list[str] = []

    def make(suffix: str) -> str:
        name = policies.name(suffix)
        made.append(name)
        return name

    yield make
    ch = pconn.channel()
    for name in made:
        for delete in (ch.queue_delete, ch.exchange_delete):
            try:
                delete(name)
            except pika.exceptions.ChannelClosed:
                ch = pconn.channel()


def confirming(conn: pika.BlockingConnection) -> Any:
    """A channel in confirm mode (a refused publish raises NackError)."""
    ch = conn.channel()
    ch.confirm_delivery()
    return ch


def depth(ch: Any, queue: str) -> int:
    return int(ch.queue_declare(queue, passive=True).method.message_count)


def reject_one(ch: Any, queue: str) -> None:
    """Publish a message to ``queue``, get it and reject it (dead-lettered, "rejected")."""
    ch.basic_publish("", queue, b"rejected")
    method = ch.basic_get(queue)[0]
    ch.basic_reject(method.delivery_tag, requeue=False)


def fanouts(ch: Any, *pairs: tuple[str, str]) -> None:
    """Declare each (fanout exchange, queue) pair, the queue bound to the exchange."""
    for exchange, queue in pairs:
        ch.exchange_declare(exchange, "fanout")
        ch.queue_declare(queue)
        ch.queue_bind(queue, exchange)


def test_a_lower_max_length_policy_drops_at_once_and_clearing_restores_the_argument(
    policies: Policies, pconn: pika.BlockingConnection, qname: Any
) -> None:
    q = qname("ml")
    ch = confirming(pconn)
    ch.queue_declare(q, arguments={"x-max-length": 5})
    for i in range(5):
        ch.basic_publish("", q, f"m{i}".encode())
    policies.set("ml", f"^{q}$", {"max-length": 2})
    wait_for(pconn, lambda: depth(ch, q) == 2, what="the head to be dropped")
    policies.clear("ml")
    for i in range(5, 10):
        ch.basic_publish("", q, f"m{i}".encode())
    assert depth(ch, q) == 5  # back to the argument's limit
    got = [ch.basic_get(q, auto_ack=True)[2] for _ in range(5)]
    assert got == [b"m5", b"m6", b"m7", b"m8", b"m9"]


def test_the_lower_of_argument_and_policy_ttl_applies_to_new_messages(
    policies: Policies, pconn: pika.BlockingConnection, qname: Any
) -> None:
    q = qname("ttl")
    ch = confirming(pconn)
    ch.queue_declare(q, arguments={"x-message-ttl": 60000})
    ch.basic_publish("", q, b"before")
    policies.set("ttl", f"^{q}$", {"message-ttl": 1})
    ch.basic_publish("", q, b"after")
    # "before" keeps its expiry; "after" expires behind it (1 ms), so it is never got.
    assert ch.basic_get(q, auto_ack=True)[2] == b"before"
    wait_for(pconn, lambda: ch.basic_get(q, auto_ack=True)[0] is None, what="expiry")
    assert depth(ch, q) == 0


def test_the_dlx_argument_beats_the_policy_but_each_key_is_its_own(
    policies: Policies, pconn: pika.BlockingConnection, qname: Any
) -> None:
    ch = confirming(pconn)
    xa, xp = qname("dlx-a"), qname("dlx-p")
    qa, qp = qname("dlq-a"), qname("dlq-p")
    fanouts(ch, (xa, qa), (xp, qp))
    src = qname("dsrc")
    ch.queue_declare(src, arguments={"x-dead-letter-exchange": xa})
    policies.set("dlx", f"^{src}$", {"dead-letter-exchange": xp, "dead-letter-routing-key": "k"})
    reject_one(ch, src)
    got: list[Any] = []

    def dead_lettered() -> bool:
        method, _props, _body = ch.basic_get(qa, auto_ack=True)
        if method is not None:
            got.append(method)
        return bool(got)

    # Dead-lettering is asynchronous on RabbitMQ: poll (bounded) until it arrived.
    wait_for(pconn, dead_lettered, what="the dead-lettered message")
    assert got[0].routing_key == "k"  # the argument's DLX with the policy's DLRK
    assert depth(ch, qp) == 0


def test_a_new_policy_dlx_is_used_for_the_next_dead_lettering(
    policies: Policies, pconn: pika.BlockingConnection, qname: Any
) -> None:
    ch = confirming(pconn)
    x, dq = qname("dlx-new"), qname("dlq-new")
    fanouts(ch, (x, dq))
    src = qname("dsrc-new")
    ch.queue_declare(src)
    policies.set("dlx-new", f"^{src}$", {"dead-letter-exchange": x})
    reject_one(ch, src)
    wait_for(pconn, lambda: depth(ch, dq) == 1, what="the dead-lettered message")


def test_only_the_highest_priority_policy_applies(
    policies: Policies, pconn: pika.BlockingConnection, qname: Any
) -> None:
    q = qname("prio")
    ch = confirming(pconn)
    ch.queue_declare(q)
    policies.set("prio-low", f"^{q}$", {"message-ttl": 1}, priority=1)
    policies.set("prio-high", f"^{q}$", {"max-length": 3}, priority=2)
    for _ in range(5):
        ch.basic_publish("", q, b"p")
    assert depth(ch, q) == 3
    # No merge: the low-priority policy's TTL does not apply.
    assert ch.basic_get(q, auto_ack=True)[2] == b"p"


def test_overflow_argument_beats_the_policy(
    policies: Policies, pconn: pika.BlockingConnection, qname: Any
) -> None:
    ch = confirming(pconn)
    with_arg, without = qname("ov-arg"), qname("ov-none")
    ch.queue_declare(with_arg, arguments={"x-max-length": 1, "x-overflow": "drop-head"})
    ch.queue_declare(without, arguments={"x-max-length": 1})
    policies.set("ov", f"^({with_arg}|{without})$", {"overflow": "reject-publish"})
    ch.basic_publish("", with_arg, b"1")
    ch.basic_publish("", with_arg, b"2")  # drop-head: acked
    ch.basic_publish("", without, b"1")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", without, b"2")
    assert (depth(ch, with_arg), depth(ch, without)) == (1, 1)


def test_alternate_exchange_policy_and_argument(
    policies: Policies, pconn: pika.BlockingConnection, qname: Any
) -> None:
    ch = confirming(pconn)
    ae_p, ae_a = qname("ae-p"), qname("ae-a")
    qp, qa = qname("aeq-p"), qname("aeq-a")
    fanouts(ch, (ae_p, qp), (ae_a, qa))
    plain, with_arg = qname("x-plain"), qname("x-arg")
    ch.exchange_declare(plain, "direct")
    ch.exchange_declare(with_arg, "direct", arguments={"alternate-exchange": ae_a})
    policies.set(
        "ae", f"^({plain}|{with_arg})$", {"alternate-exchange": ae_p}, apply_to="exchanges"
    )
    ch.basic_publish(plain, "nowhere", b"1", mandatory=True)
    ch.basic_publish(with_arg, "nowhere", b"2", mandatory=True)
    assert (depth(ch, qp), depth(ch, qa)) == (1, 1)


# -- streams: retention from policies (rabbit_stream_queue:update_stream_conf/2) ---------------
# 600-byte bodies in 1000-byte segments: the second message fills a segment on RabbitMQ and on
# amqpd alike (interop/test_pika_streams.py), and each later segment starts with a tracking
# chunk that takes an offset: six messages sit at offsets 0, 1 | 3, 4 | 6, 7 | and 8 is the
# new segment's tracking chunk. A full segment is about 1400 bytes on amqpd and, with
# RabbitMQ's larger record encoding, at most about 2200 there, so a 2500-byte limit keeps
# exactly one full segment besides the new one on both. A policy change is evaluated at
# once on RabbitMQ too (osiris_log:update_retention/2, since osiris#37), asynchronously:
# the test waits (bounded) for it to show.
STREAM = {"x-queue-type": "stream"}


def _body(i: int) -> bytes:
    return b"%d" % i + b"x" * 599


def _publish_stream(conn: pika.BlockingConnection, q: str, start: int, n: int) -> None:
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(start, start + n):
        ch.basic_publish("", q, _body(i))
    ch.close()


def _offsets_from_first(conn: pika.BlockingConnection, q: str) -> list[int]:
    """The offsets a consumer from "first" gets (at least one delivery, bounded wait)."""
    ch = conn.channel()
    ch.basic_qos(prefetch_count=100)
    got: list[int] = []
    ch.basic_consume(
        q,
        lambda c, m, p, b: (got.append(p.headers["x-stream-offset"]), c.basic_ack(m.delivery_tag)),
        arguments={"x-stream-offset": "first"},
    )
    wait_for(conn, lambda: bool(got), what=f"deliveries from the start of {q}")
    ch.queue_declare(q, passive=True)  # a round trip: what was sent before it is in
    conn.process_data_events(time_limit=0)
    ch.close()
    return got


def test_a_stream_policy_beats_the_argument_and_changes_apply_to_the_running_stream(
    policies: Policies, pconn: pika.BlockingConnection, qname: Any
) -> None:
    q = qname("st-bytes")
    # Set before the declaration, so RabbitMQ's writer starts with it (no propagation race).
    policies.set("st-bytes", f"^{q}$", {"max-length-bytes": 10_000_000})
    pconn.channel().queue_declare(
        q,
        durable=True,
        arguments={**STREAM, "x-stream-max-segment-size-bytes": 1000, "x-max-length-bytes": 1100},
    )
    _publish_stream(pconn, q, 0, 6)
    # The policy's 10 MB, not the lower argument: nothing was dropped at the roll-overs.
    assert _offsets_from_first(pconn, q) == [0, 1, 3, 4, 6, 7]
    # A lower limit applies at once, without a publish: only one full segment stays.
    policies.set("st-bytes", f"^{q}$", {"max-length-bytes": 2500})
    wait_for(pconn, lambda: _offsets_from_first(pconn, q) == [6, 7], what="old segments to go")
    # Cleared: the argument's 1100 bytes apply to the running stream, also at once.
    policies.clear("st-bytes")
    _publish_stream(pconn, q, 6, 1)  # offset 9, in the new segment
    wait_for(pconn, lambda: _offsets_from_first(pconn, q) == [9], what="the argument's limit")


def test_a_stream_takes_its_segment_size_from_the_policy_at_declaration_only(
    policies: Policies, pconn: pika.BlockingConnection, qname: Any
) -> None:
    q = qname("st-seg")
    policies.set("st-seg", f"^{q}$", {"stream-max-segment-size-bytes": 1000})
    pconn.channel().queue_declare(q, durable=True, arguments=STREAM)
    _publish_stream(pconn, q, 0, 5)
    # 1000-byte segments (the default is 500 MB): tracking chunks at offsets 2 and 5.
    assert _offsets_from_first(pconn, q) == [0, 1, 3, 4, 6]
    # A changed segment size does not reach a stream that exists (RabbitMQ 3.13: fixed at
    # creation; 3.10 applied it at the stream's next restart only).
    policies.set("st-seg", f"^{q}$", {"stream-max-segment-size-bytes": 10_000_000})
    _publish_stream(pconn, q, 5, 2)
    assert _offsets_from_first(pconn, q) == [0, 1, 3, 4, 6, 7, 9]
