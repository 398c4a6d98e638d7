"""Permission checks, topic permissions, vhost limits and policy validation (broker level)."""

from __future__ import annotations

import pytest

from amqpd.broker.broker import Broker
from amqpd.broker.limits import VhostLimits
from amqpd.broker.permissions import Access, Permission, PermissionTable, TopicPermission
from amqpd.broker.policies import Policy, matching, validate_definition
from amqpd.errors import AccessRefused, NotAllowed, PreconditionFailed


def _access(configure="^c-", write="^w-", read="^r-") -> tuple[PermissionTable, Access]:
    table = PermissionTable()
    table.set("u", "/", Permission(configure, write, read))
    return table, Access(table, "u", "/")


def test_regexes_are_unanchored_searches_and_empty_denies():
    _, access = _access(configure="c-", write="", read=".*")
    access.configure("queue", "abc-q")  # found in the middle
    with pytest.raises(AccessRefused):
        access.write("queue", "")
    access.read("exchange", "")


def test_refusal_text_is_rabbitmqs():
    _, access = _access()
    with pytest.raises(AccessRefused) as info:
        access.write("exchange", "r-x")
    assert info.value.reply_text == (
        "ACCESS_REFUSED - access to exchange 'r-x' in vhost '/' refused for user 'u'"
    )


def test_default_exchange_is_checked_as_amq_default():
    _, access = _access(write="^amq\\.default$")
    access.write("exchange", "")
    _, access = _access()
    with pytest.raises(AccessRefused, match="exchange 'amq.default' in vhost '/'"):
        access.write("exchange", "")


def test_changes_apply_to_the_next_check():
    table, access = _access()
    access.configure("queue", "c-1")
    table.set("u", "/", Permission("", "", ""))
    with pytest.raises(AccessRefused):
        access.configure("queue", "c-1")
    table.clear("u", "/")
    with pytest.raises(AccessRefused):
        access.read("queue", "r-1")


def test_publish_check_remembers_an_exchange_until_the_table_changes():
    table, access = _access()
    access.publish("w-x")
    access.publish("w-x")  # the remembered answer
    with pytest.raises(AccessRefused, match=r"exchange 'amq\.default'"):
        access.publish("")
    table.set("u", "/", Permission("", "", ""))  # revoked: the next publish is refused
    with pytest.raises(AccessRefused, match="exchange 'w-x'"):
        access.publish("w-x")
    table.set("u", "/", Permission("", ".*", ""))
    access.publish("w-x")
    access.publish("")


def test_topic_permissions_only_restrict_topic_exchanges():
    table, access = _access()
    assert not access.topic_restricted
    table.set_topic("u", "/", TopicPermission("t", write="^{username}\\.", read="^r\\."))
    assert access.topic_restricted
    access.check_topic("write", "t", "topic", "u.k")
    access.check_topic("write", "t", "direct", "anything")  # not a topic exchange
    access.check_topic("write", "other", "topic", "anything")  # no entry for it
    with pytest.raises(AccessRefused) as info:
        access.check_topic("read", "t", "topic", "w.k")
    assert info.value.detail == (
        "access to topic 'w.k' in exchange 't' in vhost '/' refused for user 'u'"
    )


def test_vhost_limits():
    limits = VhostLimits(max_connections=1, max_queues=0)
    limits.check_connection("v", "u", 0)
    with pytest.raises(NotAllowed) as info:
        limits.check_connection("v", "u", 1)
    assert info.value.detail == (
        "access to vhost 'v' refused for user 'u': connection limit (1) is reached"
    )
    with pytest.raises(PreconditionFailed) as info2:
        limits.check_queue("v", "q", 0)
    assert info2.value.detail == "cannot declare queue 'q': queue limit in vhost 'v' (0) is reached"
    VhostLimits(max_queues=-1).check_queue("v", "q", 10**6)


def test_broker_open_connection_checks_vhost_then_limit_then_access():
    broker = Broker()
    guest = broker.users["guest"]
    with pytest.raises(NotAllowed, match="vhost nope not found"):
        broker.open_connection(object(), guest, "nope")
    broker.add_vhost("v", VhostLimits(max_connections=1))
    with pytest.raises(NotAllowed, match="access to vhost 'v' refused for user 'guest'$"):
        broker.open_connection(object(), guest, "v")
    broker.set_permissions("guest", "v", Permission())
    owner = object()
    vhost, access = broker.open_connection(owner, guest, "v")
    assert vhost is broker.vhosts["v"] and access.vhost == "v"
    with pytest.raises(NotAllowed, match="connection limit \\(1\\) is reached"):
        broker.open_connection(object(), guest, "v")
    broker.close_connection(owner)
    broker.open_connection(object(), guest, "v")


def test_vhost_queue_limit_counts_only_new_queues():
    broker = Broker()
    vhost = broker.vhosts["/"]
    vhost.limits = VhostLimits(max_queues=1)
    vhost.declare_queue("a")
    vhost.declare_queue("a")  # a redeclare is fine
    with pytest.raises(PreconditionFailed, match="queue limit in vhost '/' \\(1\\) is reached"):
        vhost.declare_queue("b")


@pytest.mark.parametrize(
    ("definition", "problem"),
    [
        ({}, ("", "a policy definition may not be empty")),
        ({"message-ttl": -1}, ("message-ttl", "must be a non-negative integer")),
        ({"expires": 0}, ("expires", "must be a positive integer")),
        (
            {"overflow": "drop-tail"},
            ("overflow", "must be one of 'drop-head', 'reject-publish', 'reject-publish-dlx'"),
        ),
        (
            {"max-priority": 5},
            ("max-priority", "is not a policy key (use the x-max-priority argument)"),
        ),
        ({"bogus": 1}, ("bogus", "is not a recognised policy key")),
        ({"ha-mode": "exactly"}, ("ha-params", "is required when ha-mode is 'exactly'")),
        ({"ha-mode": "all", "ha-params": 2}, ("ha-params", "is not allowed when ha-mode is 'all'")),
        ({"dead-letter-exchange": 1}, ("dead-letter-exchange", "must be a string")),
    ],
)
def test_policy_definition_validation(definition, problem):
    assert validate_definition(definition)[0] == problem


def test_valid_policy_definitions_and_matching():
    assert validate_definition({"ha-mode": "exactly", "ha-params": 2, "message-ttl": 0}) == []
    low = Policy("/", "low", "^q", {"max-length": 1}, "all", 0)
    high = Policy("/", "high", "^q\\.", {"max-length": 2}, "queues", 5)
    xs = Policy("/", "xs", ".*", {"alternate-exchange": "ae"}, "exchanges", 9)
    assert matching([low, high, xs], "queue", "q.1") is high
    assert matching([low, high, xs], "queue", "qq") is low
    assert matching([low, high, xs], "exchange", "q.1") is xs


def _defs(users=("guest",), vhosts=("/",), perms=(("guest", "/"),)):
    from amqpd.broker.definitions import Definitions, UserDefinition
    from amqpd.broker.passwords import SHA256, hash_password

    return Definitions(
        vhosts={v: VhostLimits() for v in vhosts},
        users=tuple(UserDefinition(u, hash_password(u, SHA256)) for u in users),
        permissions=tuple((u, v, Permission()) for u, v in perms),
    )


def test_apply_definitions_reports_connections_to_close_and_keeps_full_vhosts():
    broker = Broker(default_user=False)
    broker.apply_definitions(
        _defs(
            ("guest", "alice"),
            ("/", "gone", "full"),
            (("guest", "/"), ("alice", "/"), ("guest", "gone"), ("guest", "full")),
        )
    )
    alice, guest = broker.users["alice"], broker.users["guest"]
    a, g = object(), object()
    broker.open_connection(a, alice, "/")
    broker.open_connection(g, guest, "gone")
    _, access = broker.open_connection(object(), guest, "full")
    broker.vhosts["full"].declare_queue("q").enqueue(_message())
    report = broker.apply_definitions(_defs())
    assert sorted(report.to_close, key=str) == sorted(
        [(a, "user 'alice' is deleted"), (g, "vhost 'gone' is deleted")], key=str
    )
    assert report.kept_vhosts == ["full"]
    assert set(broker.vhosts) == {"/", "full"}
    assert "alice" not in broker.users
    access.read("queue", "q")  # the kept vhost keeps its permissions
    assert "deleted vhost 'gone'" in report.changes and "deleted user 'alice'" in report.changes


def _message():
    from amqpd.broker.message import Message

    return Message("", "q", b"", b"body")


def test_user_limits():
    from amqpd.broker.limits import UserLimits

    limits = UserLimits(max_connections=1, max_channels=2)
    limits.check_connection("u", 0)
    with pytest.raises(NotAllowed) as info:
        limits.check_connection("u", 1)
    assert (
        info.value.detail == "connection refused for user 'u': user connection limit (1) is reached"
    )
    with pytest.raises(NotAllowed) as info:
        limits.check_channel("u", 2)
    assert info.value.detail == (
        "number of channels opened for user 'u' has reached the maximum allowed user limit of (2)"
    )
    UserLimits(max_channels=-1).check_channel("u", 10**6)
