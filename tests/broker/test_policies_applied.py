"""Policies applied to queues and exchanges, and re-applied live when they change.

Every rule was checked on the oracle (RabbitMQ 3.10.8, rabbitmqctl set_policy) first;
rabbit_amqqueue_process:process_args_policy/1 is the source. Time is passed as numbers.
"""

from __future__ import annotations

from typing import Any

import pytest

from amqpd.broker.broker import Broker
from amqpd.broker.definitions import Definitions, UserDefinition
from amqpd.broker.limits import VhostLimits
from amqpd.broker.message import Message
from amqpd.broker.policies import Policy, matching
from amqpd.broker.queue import Queue
from amqpd.broker.queue_settings import QueueSettings, effective_settings
from amqpd.broker.vhost import VirtualHost


def pol(definition: dict[str, Any], *, name: str = "p", pattern: str = "^q", **kw: Any) -> Policy:
    return Policy("/", name, pattern, definition, **kw)


def drain(q: Queue, now: float | None = None) -> list[bytes]:
    out = []
    while (e := q.get(now)) is not None:
        q.ack(e)
        out.append(e.message.body)
    return out


def fanouts(vhost: VirtualHost, *names: str) -> None:
    """A fanout exchange NAME with a queue NAME-q bound to it, for each name."""
    for name in names:
        vhost.declare_exchange(name, "fanout")
        vhost.declare_queue(name + "-q")
        vhost.bind_queue(name + "-q", name, "")


def fill(q: Queue, msg: Any, n: int, now: float = 0.0) -> None:
    for i in range(n):
        assert q.enqueue(msg(f"m{i}".encode()), now)


# -- precedence, per key (effective_settings) -----------------------------------------------
@pytest.mark.parametrize(
    ("key", "arg", "policy_value", "field", "expected"),
    [
        ("message-ttl", 10000, 100, "message_ttl", 100),
        ("message-ttl", 100, 10000, "message_ttl", 100),
        ("expires", 60000, 1500, "expires", 1500),
        ("expires", 1500, 60000, "expires", 1500),
        ("max-length", 5, 2, "max_length", 2),
        ("max-length", 2, 5, "max_length", 2),
        ("max-length-bytes", 10, 20, "max_length_bytes", 10),
        ("max-length-bytes", 20, 10, "max_length_bytes", 10),
    ],
)
def test_numeric_limits_take_the_minimum(
    key: str, arg: int, policy_value: int, field: str, expected: int
) -> None:
    settings = effective_settings({"x-" + key: arg}, pol({key: policy_value}))
    assert getattr(settings, field) == expected
    assert getattr(effective_settings({}, pol({key: policy_value})), field) == policy_value
    assert getattr(effective_settings({"x-" + key: arg}, None), field) == arg


@pytest.mark.parametrize(
    ("key", "arg", "policy_value", "field"),
    [
        ("dead-letter-exchange", "dlx-arg", "dlx-pol", "dead_letter_exchange"),
        ("dead-letter-routing-key", "rk-arg", "rk-pol", "dead_letter_routing_key"),
        ("overflow", "drop-head", "reject-publish", "overflow"),
    ],
)
def test_the_argument_beats_the_policy(key: str, arg: str, policy_value: str, field: str) -> None:
    assert getattr(effective_settings({"x-" + key: arg}, pol({key: policy_value})), field) == arg
    assert getattr(effective_settings({}, pol({key: policy_value})), field) == policy_value


def test_each_key_is_resolved_on_its_own() -> None:
    # oracle: a DLX argument with a policy's DLRK dead-letters to the argument's exchange
    # with the policy's routing key.
    settings = effective_settings(
        {"x-dead-letter-exchange": b"dlx-arg"},
        pol({"dead-letter-exchange": "dlx-pol", "dead-letter-routing-key": "rk-pol"}),
    )
    assert (settings.dead_letter_exchange, settings.dead_letter_routing_key) == (
        "dlx-arg",
        "rk-pol",
    )


def test_queue_mode_and_version_are_accepted_and_ignored() -> None:
    settings = effective_settings({}, pol({"queue-mode": "lazy", "queue-version": 2}))
    assert settings == QueueSettings(policy="p")


# -- which policy applies ------------------------------------------------------------------
def test_only_the_highest_priority_policy_applies_never_a_merge() -> None:
    low = pol({"message-ttl": 50}, name="low", priority=1)
    high = pol({"max-length": 3}, name="high", priority=2)
    assert matching([low, high], "queue", "q1") is high
    settings = effective_settings({}, matching([low, high], "queue", "q1"))
    assert (settings.max_length, settings.message_ttl) == (3, None)


def test_equal_priorities_pick_the_first_by_name() -> None:
    b, a, c = (pol({"max-length": n}, name=x) for n, x in ((2, "b"), (3, "a"), (4, "c")))
    assert matching([b, a, c], "queue", "q") is a


@pytest.mark.parametrize(
    ("apply_to", "queue", "exchange"),
    [("queues", True, False), ("exchanges", False, True), ("all", True, True)],
)
def test_apply_to(apply_to: str, queue: bool, exchange: bool) -> None:
    p = pol({"max-length": 1}, apply_to=apply_to)
    assert (matching([p], "queue", "q") is p) == queue
    assert (matching([p], "exchange", "q") is p) == exchange


def test_the_pattern_is_an_unanchored_regex() -> None:
    p = pol({"max-length": 1}, pattern="mid")
    assert matching([p], "queue", "xmidx") is p
    assert matching([p], "queue", "xmxd") is None


# -- applied at declare --------------------------------------------------------------------
def test_a_policy_applies_to_a_new_queue(vhost: VirtualHost, msg: Any) -> None:
    vhost.set_policies([pol({"max-length": 1})])
    q = vhost.declare_queue("q1")
    assert q.settings.policy == "p"
    fill(q, msg, 3)
    assert drain(q) == [b"m2"]
    other = vhost.declare_queue("other")  # the pattern does not match
    fill(other, msg, 3)
    assert other.message_count == 3


def test_redeclare_compares_the_declared_arguments_only(vhost: VirtualHost) -> None:
    vhost.set_policies([pol({"max-length": 1, "message-ttl": 5})])
    vhost.declare_queue("q1", arguments={"x-max-length": 10})
    # Equivalent: same arguments; the policy's values are not the queue's arguments.
    vhost.declare_queue("q1", arguments={"x-max-length": 10})


def test_message_ttl_policy_expires_new_messages(vhost: VirtualHost, msg: Any) -> None:
    vhost.set_policies([pol({"message-ttl": 100})])
    q = vhost.declare_queue("q1", arguments={"x-message-ttl": 10000}, now=0.0)
    q.enqueue(msg(b"a"), 0.0)
    assert q.next_deadline() == pytest.approx(0.1)
    assert drain(q, 0.2) == []
    assert q.statistics().expired == 1


# -- re-applied live -----------------------------------------------------------------------
def test_a_lower_max_length_drops_the_head_at_once(vhost: VirtualHost, msg: Any) -> None:
    q = vhost.declare_queue("q1", arguments={"x-max-length": 5})
    fill(q, msg, 5)
    vhost.set_policies([pol({"max-length": 2})])
    assert q.message_count == 2
    vhost.set_policies([])  # removed: back to the argument's 5
    fill(q, msg, 5)
    assert q.message_count == 5


def test_drop_head_dead_letters_through_the_new_policy_dlx(vhost: VirtualHost, msg: Any) -> None:
    fanouts(vhost, "dlx")
    dlq = vhost.queues["dlx-q"]
    q = vhost.declare_queue("q1")
    fill(q, msg, 3)
    # process_args_policy sets the DLX before the max-length that drops.
    vhost.set_policies([pol({"max-length": 1, "dead-letter-exchange": "dlx"})])
    assert q.message_count == 1
    assert [e.message.body for e in iter(dlq.get, None)] == [b"m0", b"m1"]


def test_a_reject_publish_queue_drops_nothing_when_the_limit_falls(
    vhost: VirtualHost, msg: Any
) -> None:
    q = vhost.declare_queue("q1", arguments={"x-overflow": "reject-publish"})
    fill(q, msg, 5)
    vhost.set_policies([pol({"max-length": 2})])
    assert q.message_count == 5  # oracle: maybe_drop_head only under drop-head
    assert not q.enqueue(msg(b"late"))


def test_limits_are_set_before_the_overflow(vhost: VirtualHost, msg: Any) -> None:
    # oracle: {max-length 2, overflow reject-publish} on a drop-head queue of 5 leaves 2:
    # init_max_length runs while the overflow is still drop-head.
    q = vhost.declare_queue("q1")
    fill(q, msg, 5)
    vhost.set_policies([pol({"max-length": 2, "overflow": "reject-publish"})])
    assert q.message_count == 2
    assert not q.enqueue(msg(b"late"))


def test_overflow_back_to_drop_head_drops(vhost: VirtualHost, msg: Any) -> None:
    vhost.set_policies([pol({"max-length": 5, "overflow": "reject-publish"})])
    q = vhost.declare_queue("q1", arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    fill(q, msg, 2)
    vhost.set_policies([pol({"max-length": 1})])  # overflow still the argument's
    assert q.message_count == 2
    plain = vhost.declare_queue("q2")
    vhost.set_policies([pol({"max-length": 1, "overflow": "reject-publish"})])
    fill(plain, msg, 1)
    vhost.set_policies([pol({"max-length": 5})])
    assert plain.enqueue(msg(b"x")) and plain.message_count == 2
    vhost.set_policies([pol({"max-length": 1, "overflow": "drop-head"})])
    assert drain(plain) == [b"x"]  # init_overflow(drop-head): maybe_drop_head


def test_a_new_ttl_applies_to_later_messages_only(vhost: VirtualHost, msg: Any) -> None:
    # oracle: messages queued before the policy keep their (absent or longer) expiry.
    q = vhost.declare_queue("q1", arguments={"x-message-ttl": 10000}, now=0.0)
    q.enqueue(msg(b"before"), 0.0)
    vhost.set_policies([pol({"message-ttl": 100})], now=1.0)
    q.enqueue(msg(b"after"), 1.0)
    assert q.message_count == 2
    assert drain(q, 2.0) == [b"before"]  # "after" expired at 1.1


def test_a_ttl_policy_on_a_queue_without_ttl_starts_its_expiry(
    vhost: VirtualHost, msg: Any
) -> None:
    q = vhost.declare_queue("q1", now=0.0)
    q.enqueue(msg(b"before"), 0.0)
    vhost.set_policies([pol({"message-ttl": 100})], now=1.0)
    q.enqueue(msg(b"after"), 1.0)
    vhost.tick(1.2)
    assert q.message_count == 2  # "after" is behind a message that never expires
    assert drain(q, 1.2) == [b"before"]


def test_an_expires_policy_counts_from_the_change(vhost: VirtualHost) -> None:
    # oracle: x-expires 100000 declared, policy expires 1500 set seconds later: the queue
    # went ~1.5 s after the policy (init_exp/2 restarts the timer).
    vhost.declare_queue("q1", arguments={"x-expires": 100000}, now=0.0)
    vhost.set_policies([pol({"expires": 1500})], now=10.0)
    assert vhost.next_deadline() == pytest.approx(11.5)
    vhost.tick(11.4)
    assert "q1" in vhost.queues
    vhost.tick(11.5)
    assert "q1" not in vhost.queues


def test_an_unchanged_policy_is_not_re_applied(vhost: VirtualHost) -> None:
    p = pol({"expires": 1500})
    vhost.set_policies([p], now=0.0)
    vhost.declare_queue("q1", now=0.0)
    vhost.set_policies([p, pol({"max-length": 1}, name="other", pattern="^x")], now=1.0)
    assert vhost.next_deadline() == pytest.approx(1.5)  # the lease did not restart


def test_a_new_dlx_is_used_for_the_next_dead_lettering(vhost: VirtualHost, msg: Any) -> None:
    fanouts(vhost, "x1", "x2")
    q = vhost.declare_queue("q1")
    vhost.set_policies([pol({"dead-letter-exchange": "x1"})])
    for _ in range(2):
        q.enqueue(msg(b"r"))
        e = q.get()
        assert e is not None
        q.discard(e)
        vhost.set_policies([pol({"dead-letter-exchange": "x2"}, name="p2", priority=3)])
    assert (vhost.queues["x1-q"].message_count, vhost.queues["x2-q"].message_count) == (1, 1)
    # The higher-priority policy replaces the other entirely: its DLRK is gone too.
    assert q.settings.dead_letter_routing_key is None


def test_a_dlx_argument_beats_the_policy_when_dead_lettering(vhost: VirtualHost, msg: Any) -> None:
    fanouts(vhost, "xa", "xp")
    vhost.set_policies([pol({"dead-letter-exchange": "xp", "dead-letter-routing-key": "k"})])
    q = vhost.declare_queue("q1", arguments={"x-dead-letter-exchange": "xa"})
    q.enqueue(msg(b"r"))
    e = q.get()
    assert e is not None
    q.discard(e)
    got = vhost.queues["xa-q"].get()
    assert got is not None and got.message.routing_key == "k"
    assert vhost.queues["xp-q"].message_count == 0


# -- exchanges: alternate-exchange ---------------------------------------------------------
def _unroutable(vhost: VirtualHost, exchange: str) -> list[str]:
    return [q.name for q in vhost.route(exchange, Message(exchange, "nowhere", b"", b"m"))]


def test_alternate_exchange_policy(vhost: VirtualHost) -> None:
    fanouts(vhost, "ae-pol", "ae-arg")
    vhost.declare_exchange("x1", "direct")
    vhost.declare_exchange("x2", "direct", arguments={"alternate-exchange": "ae-arg"})
    assert _unroutable(vhost, "x1") == []
    vhost.set_policies([pol({"alternate-exchange": "ae-pol"}, pattern="^x", apply_to="exchanges")])
    assert _unroutable(vhost, "x1") == ["ae-pol-q"]
    assert _unroutable(vhost, "x2") == ["ae-arg-q"]  # the argument beats the policy
    vhost.declare_exchange("x3", "direct")  # declared under the policy
    assert _unroutable(vhost, "x3") == ["ae-pol-q"]
    vhost.set_policies([])
    assert _unroutable(vhost, "x1") == []


def test_a_queue_policy_does_not_touch_exchanges(vhost: VirtualHost) -> None:
    fanouts(vhost, "ae")
    vhost.declare_exchange("x1", "direct")
    vhost.set_policies([pol({"alternate-exchange": "ae"}, pattern="^x", apply_to="queues")])
    assert _unroutable(vhost, "x1") == []


# -- through the broker (start and reload) -------------------------------------------------
def _definitions(*policies: Policy) -> Definitions:
    return Definitions(
        vhosts={"/": VhostLimits(), "v": VhostLimits()},
        users=(UserDefinition("guest", None),),
        policies=policies,
    )


def test_apply_definitions_re_applies_policies_per_vhost(msg: Any) -> None:
    broker = Broker()
    broker.apply_definitions(_definitions())
    q = broker.vhosts["/"].declare_queue("q1")
    qv = broker.vhosts["v"].declare_queue("q1")
    fill(q, msg, 3)
    fill(qv, msg, 3)
    broker.apply_definitions(_definitions(Policy("v", "p", "^q", {"max-length": 1})), now=1.0)
    assert (q.message_count, qv.message_count) == (3, 1)
    broker.apply_definitions(_definitions())
    assert qv.settings == QueueSettings()


def test_a_vhost_added_later_gets_its_policies() -> None:
    broker = Broker()
    broker.add_policy(Policy("later", "p", ".*", {"max-length": 1}))
    vhost = broker.add_vhost("later")
    assert vhost.declare_queue("q").settings.max_length == 1
    assert broker.vhosts["/"].declare_queue("q").settings.max_length is None
